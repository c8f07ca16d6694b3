package broker

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
)

// Client is one connection's presence in the broker: its subscriptions and
// the outbox its transport writes from. The transport owns the connection
// and runs one writer goroutine that drains Outbox.
//
// Subscribe, Unsubscribe, SubscribeFrom and Close change what the client
// receives; they are meant to be called from the connection's own goroutine,
// one at a time, but are safe to call concurrently. Once Subscribe returns,
// every message the log delivers afterwards reaches the client; once
// Unsubscribe returns, none does.
type Client struct {
	b      *Broker
	id     uint64
	out    *Outbox
	fmt    atomic.Pointer[formatBox]
	onFail atomic.Pointer[func(error)]

	mu     sync.Mutex
	subs   [numKinds]map[string]*subscription
	counts [numKinds]atomic.Int32
	closed bool
}

type formatBox struct{ f Format }

// NewClient registers a new client that receives frames encoded by f.
func (b *Broker) NewClient(f Format) *Client {
	c := &Client{b: b, id: b.nextClientID.Add(1)}
	c.out = NewOutbox(b.cfg.Outbox, func(err error) {
		if err == ErrSlowConsumer {
			b.slow.Add(1)
			b.cfg.Logger.Warn("disconnecting slow consumer", "client", c.id)
		}
		if fn := c.onFail.Load(); fn != nil {
			(*fn)(err)
		}
	})
	c.out.dropped = &b.dropped
	c.SetFormat(f)
	b.clients.Add(1)
	b.live.Store(c.id, c)
	return c
}

// OnFail sets a function called once when the client's outbox fails: with
// ErrSlowConsumer when it passed its limits, ErrClosed when closed. The
// transport closes the connection there, at once, rather than when its
// writer next looks (it may be blocked writing to a client that stopped
// reading). fn runs on the goroutine that caused the failure, possibly
// while the broker delivers a message: it must not block or call the
// broker; it may start a goroutine that does.
func (c *Client) OnFail(fn func(error)) { c.onFail.Store(&fn) }

// ID returns the client's unique id (CLIENT ID).
func (c *Client) ID() uint64 { return c.id }

// Outbox returns the queue the client's transport writes from.
func (c *Client) Outbox() *Outbox { return c.out }

// SetFormat changes how messages are encoded for the client from now on
// (HELLO switching between RESP2 and RESP3).
func (c *Client) SetFormat(f Format) { c.fmt.Store(&formatBox{f}) }

func (c *Client) format() Format { return c.fmt.Load().f }

// Subscribe adds a subscription of kind k (KindChannel, KindPattern,
// KindShard, or KindSequenced for a live-only sequenced subscription) and
// reports whether it is new. Subscribing twice is harmless.
func (c *Client) Subscribe(k Kind, name string) bool {
	_, added := c.add(k, name, nil)
	return added
}

// SubscribeFrom adds a sequenced subscription to channel that resumes after
// from: messages published while it replays history are held back, and the
// returned CatchUp's Run replays the retained messages after from and then
// switches the subscription to live delivery, without a gap or a duplicate at
// the switch. It returns nil if the client already has a sequenced
// subscription to channel.
func (c *Client) SubscribeFrom(channel string, from Position) *CatchUp {
	st := &seqState{catchingUp: true}
	s, added := c.add(KindSequenced, channel, st)
	if !added {
		return nil
	}
	return &CatchUp{c: c, s: s, from: from}
}

// SubscribeLatest adds a live sequenced subscription to channel that first
// tells the subscriber where its stream starts: its Run delivers a Resume
// frame (Recovered true) whose From is the sequence number of the first
// message the subscription will receive, so the subscriber has a position
// to resume from even before its first message arrives. It returns nil if
// the client already has a sequenced subscription to channel.
func (c *Client) SubscribeLatest(channel string) *CatchUp {
	cu := c.SubscribeFrom(channel, Position{})
	if cu != nil {
		cu.latest = true
	}
	return cu
}

func (c *Client) add(k Kind, name string, st *seqState) (*subscription, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false
	}
	if c.subs[k] == nil {
		c.subs[k] = make(map[string]*subscription)
	}
	if _, ok := c.subs[k][name]; ok {
		return nil, false
	}
	if k == KindSequenced && st == nil {
		st = &seqState{}
	}
	s := &subscription{client: c, kind: k, name: name, seq: st}
	c.subs[k][name] = s
	c.counts[k].Add(1)
	// Registered under c.mu, so that a concurrent Unsubscribe or Close
	// cannot remove it first. Lock order: c.mu, then registry locks;
	// nothing takes them the other way round.
	c.b.reg.add(s)
	return s, true
}

// Unsubscribe removes a subscription and reports whether it existed.
func (c *Client) Unsubscribe(k Kind, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.subs[k][name]
	if ok {
		delete(c.subs[k], name)
		c.counts[k].Add(-1)
		c.b.reg.remove(s)
	}
	return ok
}

// Has reports whether the client has a subscription of kind k to name.
func (c *Client) Has(k Kind, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.subs[k][name]
	return ok
}

// Subscriptions returns the names of the client's subscriptions of kind k,
// sorted.
func (c *Client) Subscriptions(k Kind) []string {
	c.mu.Lock()
	names := make([]string, 0, len(c.subs[k]))
	for name := range c.subs[k] {
		names = append(names, name)
	}
	c.mu.Unlock()
	sort.Strings(names)
	return names
}

// Count returns the number of the client's subscriptions of the given kinds.
func (c *Client) Count(kinds ...Kind) int {
	n := 0
	for _, k := range kinds {
		n += int(c.counts[k].Load())
	}
	return n
}

// UnsubscribeAll removes every subscription; once it returns, no message
// reaches the client. The outbox stays open, so what is queued can still
// be written (RESET, and a connection ending cleanly).
func (c *Client) UnsubscribeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.subs {
		for _, s := range c.subs[k] {
			c.b.reg.remove(s)
		}
		c.subs[k] = nil
		c.counts[k].Store(0)
	}
}

// Close removes every subscription and closes the outbox. It is idempotent.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.UnsubscribeAll()
	c.out.Close()
	c.b.clients.Add(-1)
	c.b.live.Delete(c.id)
}

// CatchUp is a sequenced subscription's pending replay of history; see
// Client.SubscribeFrom.
type CatchUp struct {
	c      *Client
	s      *subscription
	from   Position
	latest bool        // SubscribeLatest: no replay, only the start position
	info   ChannelInfo // for latest: the channel's state after registration
}

// Run replays the retained messages after the starting position, preceded
// by a Resume frame saying whether the replay is complete, then delivers the
// live messages that arrived meanwhile and leaves the subscription live. It
// reads history in pages and waits for the client to take each page before
// reading the next, so a long replay holds at most about two pages in
// memory. If Run fails, the subscription still goes live, after a Resume
// frame that says nothing was recovered.
func (cu *CatchUp) Run(ctx context.Context) error {
	var err error
	if cu.latest {
		err = cu.locate()
	} else {
		err = cu.replay(ctx)
	}
	cu.goLive(err)
	return err
}

// locate reads the channel's state for a SubscribeLatest subscription. It
// runs after the subscription is registered, so every message after the
// last sequence number it reads is held back for the subscription.
func (cu *CatchUp) locate() error {
	if cu.c.b.log == nil {
		return ErrNoLog
	}
	var err error
	cu.info, err = cu.c.b.log.Info(Global, cu.s.name)
	return err
}

func (cu *CatchUp) replay(ctx context.Context) error {
	b, c, s := cu.c.b, cu.c, cu.s
	st := s.seq // while catchingUp, only this goroutine touches st.pos
	if b.log == nil {
		return ErrNoLog
	}
	page := b.cfg.ReplayPage
	h, err := b.log.History(Global, s.name, HistoryQuery{After: cu.from.Seq, Limit: page})
	if err != nil {
		return err
	}
	if cu.from.Seq > h.Last || cu.from.Epoch != 0 && cu.from.Epoch != h.Epoch {
		// The client has seen what this node has not: it comes from a
		// node further ahead. Catch up with the log before judging the
		// position a gap; without a quorum, judge by what is here.
		if err := b.log.Sync(ctx); err == nil {
			if h, err = b.log.History(Global, s.name, HistoryQuery{After: cu.from.Seq, Limit: page}); err != nil {
				return err
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r := resumeFor(cu.from, h)
	if h.Epoch != 0 && cu.from.Seq > r.From-1 {
		// The position is not in this epoch's stream: replay from the
		// oldest retained message instead.
		if h, err = b.log.History(Global, s.name, HistoryQuery{After: r.From - 1, Limit: page}); err != nil {
			return err
		}
	}
	f := c.format()
	if !cu.push(f.AppendResume(nil, s.name, r)) {
		return cu.pushErr()
	}
	st.pos = Position{Epoch: h.Epoch, Seq: r.From - 1}
	if h.Epoch == 0 {
		st.pos = Position{}
	}
	epoch := h.Epoch
	for {
		for _, m := range h.Messages {
			if m.Seq <= st.pos.Seq {
				continue
			}
			if m.Seq != st.pos.Seq+1 {
				// Retention dropped messages while the replay waited
				// for the client: say where the stream continues.
				if !cu.push(f.AppendResume(nil, s.name, Resume{Epoch: m.Epoch, From: m.Seq, Last: m.Seq - 1})) {
					return cu.pushErr()
				}
			}
			if !cu.push(m.frame(f, KindSequenced, "")) {
				return cu.pushErr()
			}
			st.pos.Seq = m.Seq
		}
		if len(h.Messages) < page || st.pos.Seq >= h.Last {
			return nil
		}
		if err := c.out.WaitEmpty(ctx); err != nil {
			return err
		}
		if h, err = b.log.History(Global, s.name, HistoryQuery{After: st.pos.Seq, Limit: page}); err != nil {
			return err
		}
		if h.Epoch != epoch {
			return nil // the channel was reset meanwhile; live delivery announces it
		}
	}
}

// push queues a replayed frame unless the subscription has been removed
// meanwhile. It holds the channel's registry lock, which Unsubscribe and
// Close take to remove the subscription, so that once they return no frame
// for it is queued. It reports false if the frame was not queued.
func (cu *CatchUp) push(frame []byte) bool {
	sh := cu.c.b.reg.shard(cu.s.name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return !cu.s.removed && cu.c.out.Push(frame)
}

// pushErr is why push failed: the outbox's error, or ErrClosed when the
// subscription was removed.
func (cu *CatchUp) pushErr() error {
	if err := cu.c.out.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// goLive delivers the messages held back during the replay and switches the
// subscription to live delivery.
func (cu *CatchUp) goLive(replayErr error) {
	b, s := cu.c.b, cu.s
	sh := b.reg.shard(s.name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := s.seq
	if s.removed {
		st.pending = nil
		st.pendingBytes = 0
		return
	}
	switch {
	case replayErr != nil:
		if cu.c.out.Err() == nil {
			cu.c.out.Push(cu.c.format().AppendResume(nil, s.name, Resume{}))
		}
		st.pos = Position{}
	case cu.latest:
		// The stream starts at the first message held back, if any: it
		// came after registration (or was being delivered then).
		// Otherwise right after the last message locate saw.
		r := Resume{Recovered: true, Epoch: cu.info.Epoch, From: cu.info.LastSeq + 1}
		if len(st.pending) > 0 {
			r.Epoch, r.From = st.pending[0].Epoch, st.pending[0].Seq
		}
		r.Last = r.From - 1
		cu.c.out.Push(cu.c.format().AppendResume(nil, s.name, r))
		st.pos = Position{Epoch: r.Epoch, Seq: r.Last}
	}
	for _, m := range st.pending {
		b.pushSequenced(s, m, false)
	}
	st.pending = nil
	st.pendingBytes = 0
	st.catchingUp = false
}

// resumeFor decides how a stream resumed after from continues, given the
// channel's history h.
func resumeFor(from Position, h History) Resume {
	r := Resume{Epoch: h.Epoch, Last: h.Last}
	switch {
	case h.Epoch == 0:
		// The channel has no state: nothing was ever published, or it
		// was forgotten. A client that saw nothing has missed nothing.
		r.Recovered = from == Position{}
		r.From = 1
	case from.Epoch != 0 && from.Epoch != h.Epoch, from.Seq > h.Last:
		r.From = h.First
	case from.Seq+1 >= h.First:
		r.Recovered = true
		r.From = from.Seq + 1
	default:
		r.From = h.First
	}
	return r
}
