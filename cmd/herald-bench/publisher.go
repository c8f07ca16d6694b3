package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// publisherConfig describes one publishing connection.
type publisherConfig struct {
	id       uint32
	addr     string
	channels []int    // global channel indexes, published to round-robin
	names    []string // every channel's name, by global index
	verb     verb     // the command each message is sent with
	pipeline int      // most publishes awaiting a reply
	size     int      // payload bytes
	messages uint64   // at most this many; 0: until ctx ends
	rate     float64  // messages/s; 0: as fast as pipeline and gate allow
	gate     *window  // may be nil
	ackHist  *Histogram
}

// verb is the command a publisher sends each message with; the zero verb
// is PUBLISH.
type verb string

const (
	verbPublish       verb = "PUBLISH"
	verbHeraldPublish verb = "HERALD.PUBLISH" // replies with the sequence number
	// verbXAdd appends each message to a Redis stream named after the
	// channel, trimmed to about xaddMaxLen entries: what a Redis user
	// keeps messages with, durable when the server's append-only file is
	// synced before each reply (appendfsync always).
	verbXAdd verb = "XADD"
)

// verbFor returns the verb the --herald-publish and --xadd flags choose.
func verbFor(herald, xadd bool) verb {
	switch {
	case herald:
		return verbHeraldPublish
	case xadd:
		return verbXAdd
	}
	return verbPublish
}

// xaddMaxLen is how many entries XADD keeps in a stream (approximately, as
// MAXLEN ~ trims): as many as Herald retains per channel by default.
const xaddMaxLen = 100

func (v verb) String() string {
	if v == "" {
		return string(verbPublish)
	}
	return string(v)
}

// prefix returns the command for a message to channel, up to and
// including the bulk header of its payload of size bytes.
func (v verb) prefix(channel string, size int) []byte {
	var b []byte
	if v == verbXAdd {
		// XADD channel MAXLEN ~ 100 * m payload
		b = append(b, "*8\r\n"...)
		for _, a := range []string{"XADD", channel, "MAXLEN", "~", strconv.Itoa(xaddMaxLen), "*", "m"} {
			b = appendBulk(b, a)
		}
	} else {
		b = append(b, "*3\r\n"...)
		b = appendBulk(b, v.String())
		b = appendBulk(b, channel)
	}
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(size), 10)
	return append(b, '\r', '\n')
}

// publisher is one pipelined RESP connection publishing benchmark
// messages. A writer goroutine keeps up to pipeline publishes in flight,
// refilling as many as the reader freed in one write; the reader matches
// replies to sends in order (RESP replies come in command order).
type publisher struct {
	cfg  publisherConfig
	conn net.Conn
	rd   *respReader

	// ring holds each in-flight publish's send time and channel, by send
	// index modulo pipeline.
	ringAt []atomic.Int64
	ringCh []atomic.Int32
	free   atomic.Int64  // pipeline slots free
	wake   chan struct{} // the reader freed slots

	sent     atomic.Uint64   // publishes written
	replies  atomic.Uint64   // replies read (acknowledgements and errors)
	acked    atomic.Uint64   // successful replies
	errs     atomic.Uint64   // error replies
	replied  []atomic.Uint64 // replies by global channel index
	counters []uint64        // next payload counter by global channel index; writer-owned
	lastAck  atomic.Int64    // when the last reply arrived (unix ns)

	mu       sync.Mutex
	firstErr string // first error reply, for the report
	readErr  error
	done     chan struct{} // reader finished
}

func dialPublisher(ctx context.Context, cfg publisherConfig) (*publisher, error) {
	if cfg.pipeline < 1 {
		cfg.pipeline = 1
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("connect publisher %d to %s: %w", cfg.id, cfg.addr, err)
	}
	p := &publisher{
		cfg:      cfg,
		conn:     conn,
		rd:       newRESPReader(conn, 64<<10),
		ringAt:   make([]atomic.Int64, cfg.pipeline),
		ringCh:   make([]atomic.Int32, cfg.pipeline),
		wake:     make(chan struct{}, 1),
		replied:  make([]atomic.Uint64, len(cfg.names)),
		counters: make([]uint64, len(cfg.names)),
		done:     make(chan struct{}),
	}
	p.free.Store(int64(cfg.pipeline))
	// A PING first: the connection works and the server is not refusing
	// clients (max clients) before the run starts.
	if _, err := roundTrip(conn, p.rd, "PING"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("publisher %d on %s: %w", cfg.id, cfg.addr, err)
	}
	return p, nil
}

// run publishes until ctx ends or the message budget is spent, then waits
// up to drain for the outstanding replies and closes the connection.
func (p *publisher) run(ctx context.Context, drain time.Duration) {
	go p.readLoop()
	p.writeLoop(ctx)
	deadline := time.Now().Add(drain)
	for p.replies.Load() < p.sent.Load() && time.Now().Before(deadline) {
		select {
		case <-p.done:
			deadline = time.Now()
		case <-time.After(time.Millisecond):
		}
	}
	p.conn.Close()
	<-p.done
}

func (p *publisher) writeLoop(ctx context.Context) {
	// Per channel: the command up to the payload's bulk header.
	prefix := make([][]byte, len(p.cfg.names))
	for _, ch := range p.cfg.channels {
		prefix[ch] = p.cfg.verb.prefix(p.cfg.names[ch], p.cfg.size)
	}
	payload, _ := newPayload(p.cfg.size)
	buf := make([]byte, 0, 64<<10)
	start := time.Now()
	var interval float64
	if p.cfg.rate > 0 {
		interval = float64(time.Second) / p.cfg.rate
	}
	var k uint64 // messages written
	defer func() { p.sent.Store(k) }()
	// Refill the pipeline once a quarter of it is free, not slot by slot:
	// on loopback every write runs the receiver's TCP path too, so fewer,
	// larger writes leave more of the machine to the server.
	refill := max(1, int64(p.cfg.pipeline)/4)
	for ctx.Err() == nil && (p.cfg.messages == 0 || k < p.cfg.messages) {
		n, need := p.free.Load(), refill
		if interval > 0 {
			need = 1 // at a fixed rate, send when due
		}
		if p.cfg.messages > 0 {
			need = min(need, int64(p.cfg.messages-k))
		}
		if n < need {
			select {
			case <-p.wake:
			case <-ctx.Done():
			}
			continue
		}
		if p.cfg.messages > 0 && uint64(n) > p.cfg.messages-k {
			n = int64(p.cfg.messages - k)
		}
		now := time.Now()
		if interval > 0 {
			due := int64(float64(now.Sub(start))/interval) + 1 - int64(k)
			if due <= 0 {
				next := start.Add(time.Duration(float64(k) * interval))
				sleepCtx(ctx, time.Until(next))
				continue
			}
			n = min(n, due)
		}
		buf = buf[:0]
		var i int64
		for ; i < n; i++ {
			ch := p.cfg.channels[int(k)%len(p.cfg.channels)]
			if p.cfg.gate != nil && !p.cfg.gate.tryAcquire(ch) {
				if i == 0 {
					p.cfg.gate.wait(ctx, ch)
				}
				break
			}
			at := now.UnixNano()
			if interval > 0 {
				// The time it was due: a publisher that falls behind its
				// schedule shows as latency (coordinated omission).
				at = start.Add(time.Duration(float64(k) * interval)).UnixNano()
			}
			encodePayload(payload, p.cfg.id, p.counters[ch], at)
			p.counters[ch]++
			slot := k % uint64(len(p.ringAt))
			p.ringAt[slot].Store(at)
			p.ringCh[slot].Store(int32(ch))
			buf = append(buf, prefix[ch]...)
			buf = append(buf, payload...)
			buf = append(buf, '\r', '\n')
			k++
		}
		if i == 0 {
			continue
		}
		p.free.Add(-i)
		p.sent.Store(k)
		if _, err := p.conn.Write(buf); err != nil {
			p.setReadErr(fmt.Errorf("write: %w", err))
			return
		}
	}
}

func (p *publisher) readLoop() {
	defer close(p.done)
	var idx uint64
	var pending int64
	for {
		v, err := p.rd.next()
		if err != nil {
			if idx < p.sent.Load() {
				p.setReadErr(err)
			}
			return
		}
		slot := idx % uint64(len(p.ringAt))
		idx++
		at, ch := p.ringAt[slot].Load(), p.ringCh[slot].Load()
		if v.typ == '-' {
			p.errs.Add(1)
			p.mu.Lock()
			if p.firstErr == "" {
				p.firstErr = string(v.str)
			}
			p.mu.Unlock()
		} else {
			p.acked.Add(1)
			p.cfg.ackHist.Record(time.Duration(p.rd.readAt - at))
		}
		p.replied[ch].Add(1)
		p.replies.Store(idx)
		p.lastAck.Store(p.rd.readAt)
		pending++
		if p.rd.buffered() == 0 || pending >= int64(len(p.ringAt)/2+1) {
			p.free.Add(pending)
			pending = 0
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (p *publisher) setReadErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.readErr == nil && !errors.Is(err, net.ErrClosed) {
		p.readErr = err
	}
}

// unanswered returns the publishes that got no reply.
func (p *publisher) unanswered() uint64 { return p.sent.Load() - p.replies.Load() }

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// window bounds, per channel, the messages published and not yet received
// by every subscriber of the channel. With it, "as fast as possible" means
// as fast as the slowest subscriber receives, which is the rate a server can
// sustain without dropping anyone: open-loop publishing faster than that
// only fills the server's buffers until it disconnects subscribers as slow.
type window struct {
	size int64
	sent []atomic.Int64     // by channel
	subs [][]*atomic.Uint64 // receive counters of each channel's subscribers
	// floor caches, per channel, a receive count every subscriber has
	// reached; cursor the subscriber found behind last time, likely still
	// the one to wait for.
	floor  []atomic.Int64
	cursor []atomic.Int64
}

func newWindow(size int, channels int) *window {
	return &window{
		size:   int64(size),
		sent:   make([]atomic.Int64, channels),
		subs:   make([][]*atomic.Uint64, channels),
		floor:  make([]atomic.Int64, channels),
		cursor: make([]atomic.Int64, channels),
	}
}

func (w *window) addSubscriber(ch int, recv *atomic.Uint64) { w.subs[ch] = append(w.subs[ch], recv) }

// tryAcquire takes one message of channel ch's window, if open.
func (w *window) tryAcquire(ch int) bool {
	if !w.open(ch) {
		return false
	}
	w.sent[ch].Add(1)
	return true
}

// open reports whether ch may have one more message in flight: whether
// every subscriber has received all but size-1 of those sent. It starts
// from the subscriber that was behind last time and stops at the first
// one still behind, so waiting costs little however many subscribers
// there are.
func (w *window) open(ch int) bool {
	need := w.sent[ch].Load() - w.size + 1
	if need <= w.floor[ch].Load() {
		return true
	}
	subs := w.subs[ch]
	c := int(w.cursor[ch].Load())
	for i := range subs {
		j := (c + i) % len(subs)
		if int64(subs[j].Load()) < need {
			w.cursor[ch].Store(int64(j))
			return false
		}
	}
	w.floor[ch].Store(need)
	return true
}

// wait blocks until ch's window has room or ctx ends.
func (w *window) wait(ctx context.Context, ch int) {
	for ctx.Err() == nil && !w.open(ch) {
		sleepCtx(ctx, 50*time.Microsecond)
	}
}

// lag returns the largest number of messages in flight on a channel.
func (w *window) lag() int64 {
	var m int64
	for ch := range w.sent {
		sent := w.sent[ch].Load()
		for _, r := range w.subs[ch] {
			m = max(m, sent-int64(r.Load()))
		}
	}
	return m
}

// addPublishers adds the publishers' counts, errors and failures to res,
// and returns the time (Unix ns) of the last reply any of them got.
func addPublishers(res *Result, pubs []*publisher) (lastAck int64) {
	for _, p := range pubs {
		res.Sent += p.sent.Load()
		res.Published += p.acked.Load()
		res.Loss.Errors += p.errs.Load() + p.unanswered()
		lastAck = max(lastAck, p.lastAck.Load())
		if p.firstErr != "" {
			res.Failures = append(res.Failures, fmt.Sprintf("publisher %d: first error reply: %s", p.cfg.id, p.firstErr))
		}
		if p.readErr != nil {
			res.Loss.Disconnects++
			res.Failures = append(res.Failures, fmt.Sprintf("publisher %d: %v", p.cfg.id, p.readErr))
		}
	}
	return lastAck
}

// channelsOf returns the channels publisher i of n publishes to: one each
// when there are no more channels than publishers, otherwise every n-th.
func channelsOf(i, n, channels int) []int {
	if channels <= n {
		return []int{i % channels}
	}
	var chs []int
	for c := i; c < channels; c += n {
		chs = append(chs, c)
	}
	return chs
}
