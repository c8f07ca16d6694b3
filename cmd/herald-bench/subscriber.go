package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// subscriber is what every subscribing connection shares, whatever its
// transport: the checks of what it receives and its latency histogram.
// The connection's reader goroutine owns everything but recv.
type subscriber struct {
	idx     int
	ch      int           // global channel index
	streams []streamCheck // by publisher id
	seq     seqCheck      // Herald's sequence numbers, when the stream has them
	recv    atomic.Uint64 // run messages received, duplicates included
	hist    *Histogram
	loss    Loss
	lastAt  int64         // receipt time of the last run message
	reads   func() uint64 // reads (RESP) or frames (WebSocket) received so far
	err     error         // why the connection ended early
	done    chan struct{}
	close   func()
	closing *atomic.Bool // the run is over: a read error is expected
}

func newSubscriber(idx, ch, publishers int, hist *Histogram, closing *atomic.Bool) *subscriber {
	return &subscriber{
		idx: idx, ch: ch, streams: make([]streamCheck, publishers), hist: hist,
		done: make(chan struct{}), closing: closing,
	}
}

// deliver checks and times one payload received at unix time at.
func (s *subscriber) deliver(payload []byte, at int64) {
	pub, c, ts, err := decodePayload(payload)
	if err != nil || int(pub) >= len(s.streams) {
		s.loss.Foreign++
		return
	}
	s.streams[pub].observe(c)
	s.hist.Record(time.Duration(at - ts))
	s.lastAt = at
	s.recv.Add(1)
}

// ended records how the connection ended.
func (s *subscriber) ended(err error) {
	if !s.closing.Load() {
		s.loss.Disconnects++
		s.err = err
	}
	close(s.done)
}

// result returns the subscriber's loss, given how many messages each
// publisher had acknowledged on this subscriber's channel.
func (s *subscriber) result(acked func(pub, ch int) uint64) Loss {
	l := s.loss
	for pub := range s.streams {
		l.Add(s.streams[pub].loss(acked(pub, s.ch)))
	}
	l.Add(s.seq.l)
	return l
}

// respSubscriber is a RESP connection subscribed to one channel with
// SUBSCRIBE, or HERALD.SUBSCRIBE for sequence numbers.
type respSubscriber struct {
	*subscriber
	conn   net.Conn
	rd     *respReader
	herald bool
}

// dialRESPSubscriber connects, subscribes and waits for the confirmation:
// every message published after it returns is owed to this subscriber.
func dialRESPSubscriber(ctx context.Context, s *subscriber, addr, channel string, herald bool) (*respSubscriber, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	rs := &respSubscriber{subscriber: s, conn: conn, rd: newRESPReader(conn, 16<<10), herald: herald}
	s.close = func() { conn.Close() }
	s.reads = func() uint64 { return rs.rd.reads }
	cmd, confirm := "SUBSCRIBE", "subscribe"
	if herald {
		cmd, confirm = "HERALD.SUBSCRIBE", "hsubscribe"
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write(appendCommand(nil, cmd, channel)); err != nil {
		conn.Close()
		return nil, err
	}
	v, err := rs.rd.next()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s %s on %s: %w", cmd, channel, addr, err)
	}
	if !v.isArray() || len(v.elems) < 2 || !bytes.Equal(v.elems[0].str, []byte(confirm)) {
		conn.Close()
		return nil, fmt.Errorf("%s %s on %s: unexpected reply %s", cmd, channel, addr, v)
	}
	conn.SetDeadline(time.Time{})
	return rs, nil
}

var (
	bMessage  = []byte("message")
	bPMessage = []byte("pmessage")
	bSMessage = []byte("smessage")
	bHMessage = []byte("hmessage")
	bHResume  = []byte("hresume")
)

// readLoop receives until the connection closes.
func (rs *respSubscriber) readLoop() {
	for {
		v, err := rs.rd.next()
		if err != nil {
			rs.ended(err)
			return
		}
		if !v.isArray() || len(v.elems) == 0 {
			rs.loss.Foreign++
			continue
		}
		e := v.elems
		switch kind := e[0].str; {
		case len(e) == 3 && (bytes.Equal(kind, bMessage) || bytes.Equal(kind, bSMessage)):
			rs.deliver(e[2].str, rs.rd.readAt)
		case len(e) == 4 && bytes.Equal(kind, bPMessage):
			rs.deliver(e[3].str, rs.rd.readAt)
		case len(e) == 6 && bytes.Equal(kind, bHMessage):
			rs.seq.message(uint64(e[2].num), uint64(e[3].num))
			rs.deliver(e[5].str, rs.rd.readAt)
		case len(e) == 6 && bytes.Equal(kind, bHResume):
			rs.seq.resume(uint64(e[3].num), uint64(e[4].num))
		default:
			rs.loss.Foreign++
		}
	}
}
