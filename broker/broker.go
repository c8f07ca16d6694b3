package broker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// DefaultMaxPayload is the default largest payload a publish may carry.
const DefaultMaxPayload = 1 << 20

// DefaultMaxChannelLen is the default longest channel name or pattern.
const DefaultMaxChannelLen = 1024

// Config configures a Broker. The zero value of each field means its default.
type Config struct {
	// Outbox bounds each client's queue of undelivered frames.
	Outbox OutboxLimits
	// MaxPayload is the largest payload a publish may carry, in bytes.
	// Default 1 MiB.
	MaxPayload int
	// MaxChannelLen is the longest channel name or pattern, in bytes, that
	// may be published to or subscribed to. Default 1024.
	MaxChannelLen int
	// ReplayPage is how many retained messages a catch-up reads and queues
	// at a time before it waits for the client to take them. Default 1000.
	ReplayPage int
	// Logger receives the broker's logs. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Outbox = c.Outbox.withDefaults()
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxChannelLen <= 0 {
		c.MaxChannelLen = DefaultMaxChannelLen
	}
	if c.ReplayPage <= 0 {
		c.ReplayPage = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Broker routes published messages to subscribed clients. It holds the
// subscriptions of this node's clients, sends publishes through its Log, and
// fans each message the Log delivers out to the matching clients' outboxes.
type Broker struct {
	cfg Config
	log Log
	reg registry

	// deliverMu makes DeliverBatch calls one at a time: messages are fanned
	// out in log order, and per-message frame caches and
	// sequenced-subscription state need no further locking.
	deliverMu sync.Mutex
	// Under deliverMu: the outboxes whose writers wait to be woken at the
	// end of the batch, and the frames queued since the last wake-up.
	wake   []*Outbox
	queued int

	nextClientID atomic.Uint64
	clients      atomic.Int64
	live         sync.Map // client id -> *Client, for Stats
	accepted     atomic.Uint64
	published    atomic.Uint64
	delivered    atomic.Uint64
	dropped      atomic.Uint64
	slow         atomic.Uint64
}

// New returns a broker with no log attached; call SetLog before publishing.
func New(cfg Config) *Broker {
	b := &Broker{cfg: cfg.withDefaults()}
	b.reg.init()
	return b
}

// SetLog attaches the log publishes go through. It must be called once,
// before the broker is shared with transports. (The log is built after the
// broker because the log delivers into it.)
func (b *Broker) SetLog(l Log) { b.log = l }

// Log returns the attached log.
func (b *Broker) Log() Log { return b.log }

// Config returns the broker's configuration with defaults filled in.
func (b *Broker) Config() Config { return b.cfg }

// Publish commits msgs through the log and returns their receipts once each
// is committed and delivered on this node.
func (b *Broker) Publish(ctx context.Context, msgs []Publish) ([]Receipt, error) {
	if b.log == nil {
		return nil, ErrNoLog
	}
	for i := range msgs {
		if len(msgs[i].Payload) > b.cfg.MaxPayload {
			return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(msgs[i].Payload), b.cfg.MaxPayload)
		}
		if err := b.CheckChannel(msgs[i].Channel); err != nil {
			return nil, err
		}
	}
	receipts, err := b.log.Publish(ctx, msgs)
	if err == nil {
		b.accepted.Add(uint64(len(msgs)))
	}
	return receipts, err
}

// CheckChannel returns ErrChannelTooLong, wrapped with the sizes, when name
// (a channel or a pattern) is longer than Config.MaxChannelLen. Publish
// checks it; transports check it before they subscribe.
func (b *Broker) CheckChannel(name string) error {
	if len(name) > b.cfg.MaxChannelLen {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrChannelTooLong, len(name), b.cfg.MaxChannelLen)
	}
	return nil
}

// DeliverBatch fans msgs out, in order, to this node's matching
// subscriptions, and stores in n[i] how many msgs[i] reached, counted as
// Redis counts the PUBLISH reply: a client subscribed to the channel and
// to a matching pattern counts twice. The Log calls it for every batch of
// committed messages, in log order, once they are readable through
// Log.History. It never blocks on a client. Writers are woken once the
// batch is queued (or every maxQueuedBeforeWake frames of a large one), so
// a subscriber gets the batch's messages in one write, not one write each.
func (b *Broker) DeliverBatch(msgs []*Message, n []int) {
	b.deliverMu.Lock()
	defer b.deliverMu.Unlock()
	for i, m := range msgs {
		n[i] = b.deliver(m)
	}
	b.wakeWriters()
}

// maxQueuedBeforeWake bounds how many frames a batch's fan-out queues
// before it wakes the writers waiting: the first subscribers do not wait
// for the last of a long batch.
const maxQueuedBeforeWake = 1 << 16

func (b *Broker) deliver(m *Message) int {
	n := b.deliverChannel(m)
	if m.Namespace == Global {
		n += b.deliverPatterns(m)
	}
	m.frames = nil
	b.published.Add(1)
	b.delivered.Add(uint64(n))
	return n
}

// push queues a fanned-out frame in out; its writer is woken once the
// batch being delivered is queued. The caller holds deliverMu.
func (b *Broker) push(out *Outbox, frame []byte) bool {
	ok, wake := out.push(frame, true)
	if wake {
		b.wake = append(b.wake, out)
	}
	if b.queued++; b.queued >= maxQueuedBeforeWake {
		b.wakeWriters()
	}
	return ok
}

func (b *Broker) wakeWriters() {
	for _, o := range b.wake {
		o.signal()
	}
	clear(b.wake)
	b.wake = b.wake[:0]
	b.queued = 0
}

func (b *Broker) deliverChannel(m *Message) int {
	sh := b.reg.shard(m.Channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	set := sh.channels[regKey{m.Namespace, m.Channel}]
	if set == nil {
		return 0
	}
	for _, s := range set.subs {
		c := s.client
		switch s.kind {
		case KindSequenced:
			if s.seq.catchingUp {
				b.holdPending(s, m)
				continue
			}
			b.pushSequenced(s, m, true)
		default:
			b.push(c.out, m.frame(c.format(), s.kind, ""))
		}
	}
	return len(set.subs)
}

func (b *Broker) deliverPatterns(m *Message) int {
	b.reg.patMu.RLock()
	defer b.reg.patMu.RUnlock()
	n := 0
	for _, p := range b.reg.patList {
		if !Match(p, m.Channel) {
			continue
		}
		set := b.reg.patterns[p]
		for _, s := range set.subs {
			c := s.client
			b.push(c.out, m.frame(c.format(), KindPattern, p))
		}
		n += len(set.subs)
	}
	return n
}

// holdPending keeps m for a subscription that is still replaying history. A
// subscription whose pending messages pass its outbox limits fails as a slow
// consumer.
func (b *Broker) holdPending(s *subscription, m *Message) {
	if s.client.out.Err() != nil {
		return // failed already: its connection is closing
	}
	st := s.seq
	cp := *m // the copy's frame cache belongs to this subscription alone
	cp.frames = nil
	st.pending = append(st.pending, &cp)
	st.pendingBytes += len(m.Payload) + len(m.Channel)
	lim := &b.cfg.Outbox
	if len(st.pending) > lim.MaxFrames || st.pendingBytes > lim.HardBytes {
		st.pending = nil
		st.pendingBytes = 0
		s.client.out.fail(ErrSlowConsumer)
	}
}

// pushSequenced delivers m to a sequenced subscription, in order and at most
// once: a message at or before the last delivered position is skipped, and a
// change of epoch, or a jump in sequence, is announced first with a Resume
// frame whose Recovered is false. The caller holds the channel's registry
// lock; delivering says it is the deliverer, under deliverMu.
func (b *Broker) pushSequenced(s *subscription, m *Message, delivering bool) bool {
	st := s.seq
	c := s.client
	f := c.format()
	switch {
	case st.pos.Epoch == m.Epoch && m.Seq <= st.pos.Seq:
		return false // already delivered from history
	case st.pos.Epoch != 0 && (st.pos.Epoch != m.Epoch || m.Seq != st.pos.Seq+1):
		b.pushFrom(delivering, c.out, f.AppendResume(nil, s.name, Resume{Epoch: m.Epoch, From: m.Seq, Last: m.Seq - 1}))
	}
	st.pos = Position{Epoch: m.Epoch, Seq: m.Seq}
	b.pushFrom(delivering, c.out, m.frame(f, KindSequenced, ""))
	return true
}

// pushFrom pushes as the deliverer does (b.push), or as any other
// goroutine must (Outbox.Push).
func (b *Broker) pushFrom(delivering bool, out *Outbox, frame []byte) {
	if delivering {
		b.push(out, frame)
	} else {
		out.Push(frame)
	}
}

// Receivers returns how many of this node's subscriptions a message
// published to channel in ns would reach now, counted as DeliverBatch counts.
func (b *Broker) Receivers(ns Namespace, channel string) int {
	n := b.reg.numSub(ns, channel)
	if ns == Global {
		b.reg.patMu.RLock()
		for _, p := range b.reg.patList {
			if Match(p, channel) {
				n += len(b.reg.patterns[p].subs)
			}
		}
		b.reg.patMu.RUnlock()
	}
	return n
}

// Channels returns the channels of ns that have subscribers and match
// pattern ("" matches every channel), sorted (PUBSUB CHANNELS and
// SHARDCHANNELS).
func (b *Broker) Channels(ns Namespace, pattern string) []string {
	return b.reg.channels(ns, pattern)
}

// NumSub returns the number of subscriptions to channel in ns (PUBSUB NUMSUB
// and SHARDNUMSUB).
func (b *Broker) NumSub(ns Namespace, channel string) int {
	return b.reg.numSub(ns, channel)
}

// NumPat returns the number of distinct patterns subscribed to (PUBSUB
// NUMPAT).
func (b *Broker) NumPat() int { return b.reg.numPat() }

// Stats is a snapshot of the broker's counters.
type Stats struct {
	Clients        int64  // clients connected
	Channels       int    // channels with subscribers
	ShardChannels  int    // shard channels with subscribers
	Patterns       int    // distinct patterns subscribed to
	Subscriptions  int    // subscriptions of every kind, of every client
	Accepted       uint64 // messages published through this node and acknowledged
	Published      uint64 // messages delivered by the log to this node
	Delivered      uint64 // frames pushed to subscribers
	Dropped        uint64 // frames discarded by outboxes that failed as slow consumers
	SlowDisconnect uint64 // clients disconnected for exceeding outbox limits
	OutboxFrames   int64  // frames queued in every client's outbox
	OutboxBytes    int64  // bytes queued in every client's outbox
}

// Stats returns the broker's counters. It visits every client's outbox, so
// it costs a lock per client: it is meant for INFO and metric scrapes.
func (b *Broker) Stats() Stats {
	st := Stats{
		Clients:        b.clients.Load(),
		Channels:       b.reg.countChannels(Global),
		ShardChannels:  b.reg.countChannels(Shard),
		Patterns:       b.reg.numPat(),
		Subscriptions:  b.reg.countSubscriptions(),
		Accepted:       b.accepted.Load(),
		Published:      b.published.Load(),
		Delivered:      b.delivered.Load(),
		Dropped:        b.dropped.Load(),
		SlowDisconnect: b.slow.Load(),
	}
	b.live.Range(func(_, v any) bool {
		frames, bytes := v.(*Client).out.Len()
		st.OutboxFrames += int64(frames)
		st.OutboxBytes += int64(bytes)
		return true
	})
	return st
}
