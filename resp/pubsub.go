package resp

import (
	"errors"
	"fmt"

	"github.com/herald-broker/herald/broker"
)

// queuePublish adds a PUBLISH, SPUBLISH or HERALD.PUBLISH to the batch that
// is committed when the pipeline reaches a different command or its end, so
// that a pipeline of publishes costs one round through the log, not one per
// message.
func (c *conn) queuePublish(cmd *command, args [][]byte) {
	ns := broker.Global
	if cmd.name == "spublish" {
		ns = broker.Shard
	}
	c.publishes = append(c.publishes, pendingPublish{
		// The payload points into the input buffer: flushPublishes,
		// which runs before the next read, copies it.
		msg:      broker.Publish{Namespace: ns, Channel: string(args[1]), Payload: args[2]},
		herald:   cmd.name == "herald.publish",
		suppress: c.suppress,
	})
}

// flushPublishes commits the queued publishes and writes their replies.
func (c *conn) flushPublishes() {
	if len(c.publishes) == 0 {
		return
	}
	// The payloads move out of the input buffer, which the next read
	// reuses, into one of their own: the log may hold msgs after Publish
	// returns (a publish given up on can still be committed).
	size := 0
	for i := range c.publishes {
		size += len(c.publishes[i].msg.Payload)
	}
	payloads := make([]byte, 0, size)
	msgs := make([]broker.Publish, len(c.publishes))
	for i := range c.publishes {
		msgs[i] = c.publishes[i].msg
		start := len(payloads)
		payloads = append(payloads, msgs[i].Payload...)
		msgs[i].Payload = payloads[start:len(payloads):len(payloads)]
	}
	receipts, err := c.srv.broker.Publish(c.ctx, msgs)
	for i, p := range c.publishes {
		mark := len(c.rep.b)
		switch {
		case err != nil:
			c.rep.err(errorReply(err))
		case p.herald:
			c.rep.array(3)
			c.rep.int(int64(receipts[i].Seq))
			c.rep.int(int64(receipts[i].Epoch))
			c.rep.int(int64(receipts[i].Receivers))
		default:
			c.rep.int(int64(receipts[i].Receivers))
		}
		if p.suppress {
			c.rep.b = c.rep.b[:mark]
		}
	}
	clear(c.publishes)
	c.publishes = c.publishes[:0]
}

// errorReply turns an error from the broker or its log into a reply in
// Redis's style.
func errorReply(err error) string {
	switch {
	case errors.Is(err, broker.ErrNoQuorum):
		return "CLUSTERDOWN " + err.Error()
	case errors.Is(err, broker.ErrTimeout):
		return "TRYAGAIN " + err.Error()
	case errors.Is(err, broker.ErrPayloadTooLarge):
		return "ERR " + err.Error()
	default:
		return "ERR " + err.Error()
	}
}

// subscriptionCount returns the count Redis puts in a (un)subscribe
// confirmation of kind k: channels and patterns together, shard channels
// apart, and Herald's sequenced subscriptions apart.
func (c *conn) subscriptionCount(k broker.Kind) int {
	switch k {
	case broker.KindShard:
		return c.cl.Count(broker.KindShard)
	case broker.KindSequenced:
		return c.cl.Count(broker.KindSequenced)
	default:
		return c.cl.Count(broker.KindChannel, broker.KindPattern)
	}
}

// confirm queues a (un)subscribe confirmation. Like Redis, it is sent even
// under CLIENT REPLY OFF or SKIP, in RESP2 too: it is a push, not a reply,
// so it is queued at once, out of reach of exec's suppression.
func (c *conn) confirm(kind string, name []byte, count int) {
	c.rep.pushHeader(3)
	c.rep.bulkString(kind)
	if name == nil {
		c.rep.null()
	} else {
		c.rep.bulk(name)
	}
	c.rep.int(int64(count))
	c.flushReplies()
}

// subscribe returns the handler of SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE.
//
// Each confirmation is queued before its subscription is registered, so no
// message of the new subscription can precede it, and the outbox is held
// until registration is done, so the client cannot read the confirmation
// before a publisher can see the subscription.
func subscribe(k broker.Kind, confirmation string) func(*conn, [][]byte) error {
	return func(c *conn, args [][]byte) error {
		c.out.Hold()
		defer c.out.Release()
		for _, name := range args[1:] {
			ch := string(name)
			n := c.subscriptionCount(k)
			if !c.cl.Has(k, ch) {
				n++
			}
			c.confirm(confirmation, name, n)
			c.cl.Subscribe(k, ch)
		}
		return nil
	}
}

// unsubscribe returns the handler of UNSUBSCRIBE, PUNSUBSCRIBE or
// SUNSUBSCRIBE. With no arguments it removes every subscription of its
// kind. Each confirmation is queued after its subscription is gone, so every
// message of the subscription precedes it.
func unsubscribe(k broker.Kind, confirmation string) func(*conn, [][]byte) error {
	return func(c *conn, args [][]byte) error {
		names := args[1:]
		if len(names) == 0 {
			for _, ch := range c.cl.Subscriptions(k) {
				names = append(names, []byte(ch))
			}
			if len(names) == 0 {
				c.confirm(confirmation, nil, c.subscriptionCount(k))
				return nil
			}
		}
		for _, name := range names {
			c.cl.Unsubscribe(k, string(name))
			c.confirm(confirmation, name, c.subscriptionCount(k))
		}
		return nil
	}
}

func cmdPubsubChannels(ns broker.Namespace) func(*conn, [][]byte) error {
	return func(c *conn, args [][]byte) error {
		if len(args) > 3 {
			c.rep.err(subcommandSyntax(args))
			return nil
		}
		pattern := ""
		if len(args) == 3 {
			pattern = string(args[2])
		}
		chans := c.srv.broker.Channels(ns, pattern)
		c.rep.array(len(chans))
		for _, ch := range chans {
			c.rep.bulkString(ch)
		}
		return nil
	}
}

func cmdPubsubNumsub(ns broker.Namespace) func(*conn, [][]byte) error {
	return func(c *conn, args [][]byte) error {
		chans := args[2:]
		// A flat array in both protocols, as Redis 7 replies.
		c.rep.array(2 * len(chans))
		for _, ch := range chans {
			c.rep.bulk(ch)
			c.rep.int(int64(c.srv.broker.NumSub(ns, string(ch))))
		}
		return nil
	}
}

func cmdPubsubNumpat(c *conn, args [][]byte) error {
	c.rep.int(int64(c.srv.broker.NumPat()))
	return nil
}

func cmdPubsubHelp(c *conn, args [][]byte) error {
	writeHelp(&c.rep, "PUBSUB",
		"CHANNELS [<pattern>]", "    Return the currently active channels matching a <pattern> (default: '*').",
		"NUMPAT", "    Return number of subscriptions to patterns.",
		"NUMSUB [<channel> ...]", "    Return the number of subscribers for the specified channels, excluding",
		"    pattern subscriptions(default: no channels).",
		"SHARDCHANNELS [<pattern>]", "    Return the currently active shard level channels matching a <pattern> (default: '*').",
		"SHARDNUMSUB [<shardchannel> ...]", "    Return the number of subscribers for the specified shard level channel(s)")
	return nil
}

// subcommandSyntax is Redis's reply to a known subcommand given the wrong
// arguments.
func subcommandSyntax(args [][]byte) string {
	return fmt.Sprintf("ERR unknown subcommand or wrong number of arguments for '%s'. Try %s HELP.",
		cstr(args[1], 128), upper(args[0]))
}
