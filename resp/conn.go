package resp

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/herald-broker/herald/broker"
)

// conn is one client connection. Its reader goroutine (serve) parses and runs
// commands and queues their replies in the client's outbox; its writer
// goroutine (writeLoop) drains the outbox to the socket. Messages from the
// broker go into the same outbox, so replies and pushes are written in the
// order they were queued.
type conn struct {
	srv *Server
	nc  net.Conn
	cl  *broker.Client
	out *broker.Outbox
	id  uint64
	ip  string // remote IP, for the per-IP limit

	ctx      context.Context // ends when the connection does
	cancel   context.CancelFunc
	stopping atomic.Bool // server shutdown: finish the current commands and close
	linger   atomic.Bool // the reader stopped with input unread: serve closes with lingerClose

	// Owned by the reader goroutine.
	rep       reply
	user      *User // nil until authenticated
	replyOff  bool  // CLIENT REPLY OFF
	replySkip bool  // CLIENT REPLY SKIP: suppress the next command's reply
	suppress  bool  // the running command's reply is suppressed
	publishes []pendingPublish
	limiter   *broker.RateLimiter // Config.MaxRequestRate; nil: none

	// Owned by the writer goroutine.
	raw  syscall.RawConn // nc's descriptor; nil if it has none (TLS)
	slot broker.SlotHolder

	// Shown by CLIENT LIST and INFO; guarded by mu.
	mu         sync.Mutex
	name       string
	libName    string
	libVer     string
	db         int
	proto      int
	lastCmd    string
	lastActive time.Time
	created    time.Time
	addr       string
	laddr      string
	userName   string // user's name, for CLIENT LIST and CLIENT KILL USER
}

// pendingPublish is a PUBLISH waiting to be committed together with the
// publishes that follow it in the same pipeline.
type pendingPublish struct {
	msg      broker.Publish
	herald   bool // HERALD.PUBLISH: reply with the position too
	suppress bool // CLIENT REPLY OFF or SKIP was in effect
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:     s,
		nc:      nc,
		proto:   2,
		created: time.Now(),
		addr:    nc.RemoteAddr().String(),
		laddr:   nc.LocalAddr().String(),
	}
	c.lastActive = c.created
	c.setUser(s.acl.initial())
	c.limiter = broker.NewRateLimiter(s.cfg.MaxRequestRate, 0)
	c.rep.proto = 2
	c.cl = s.broker.NewClient(formatRESP2)
	c.cl.OnFail(c.closeIfSlow)
	c.out = c.cl.Outbox()
	c.id = c.cl.ID()
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.raw = broker.RawConn(nc)
	c.slot = broker.NewSlotHolder(s.slots)
	return c
}

// serve runs the connection until it ends.
func (c *conn) serve() {
	log := c.srv.cfg.Logger
	log.Debug("client connected", "client", c.id, "remote", c.addr)
	defer log.Debug("client disconnected", "client", c.id, "remote", c.addr)
	writerDone := make(chan struct{})
	go func() {
		c.writeLoop()
		close(writerDone)
	}()
	err := c.readLoop()
	// Subscriptions go before the client can see the connection end: a
	// publisher that sees it closed counts it no more, as with Redis.
	c.cl.UnsubscribeAll()
	c.cancel()
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		c.rep.err("ERR " + pe.Error())
		c.flushReplies()
		c.linger.Store(true)
		c.out.CloseWhenDrained()
	case err == nil, errors.Is(err, errQuit):
		// QUIT, or the client closed its side: write what is queued
		// (a client may half-close after sending its last command).
		c.out.CloseWhenDrained()
	case errors.Is(err, errQueryBufferLimit):
		// No reply to the command, but, as in Redis, the replies to the
		// commands before it are written.
		c.srv.cfg.Logger.Warn("closing client that reached max query buffer length", "remote", c.addr, "client", c.id)
		c.linger.Store(true)
		c.out.CloseWhenDrained()
	default:
		c.out.Close()
	}
	<-writerDone
	if c.linger.Load() {
		c.lingerClose()
	}
	c.nc.Close()
	c.cl.Close()
	c.srv.forget(c)
}

var errQuit = errors.New("quit")

// errSecurityAttack closes, without a reply, a connection that sent an
// HTTP request.
var errSecurityAttack = errors.New("possible security attack")

func (c *conn) readLoop() error {
	rd := newCmdReader(newGuard(c.nc, int64(c.srv.cfg.ProtoMaxBulkLen), int64(c.srv.cfg.MaxQueryBuffer), func() bool { return c.user != nil }))
	for {
		args, err := rd.next()
		if args == nil && err == nil {
			// Every command read so far has run: commit its publishes
			// and send its replies before waiting for more.
			c.flushPublishes()
			c.flushReplies()
			if c.out.Err() != nil {
				return nil // closed by the writer: slow consumer, write error, CLIENT KILL
			}
			if err = rd.fill(); err == nil {
				continue
			}
		}
		if err == nil {
			err = c.exec(args)
		}
		if err != nil {
			c.flushPublishes()
			c.flushReplies()
			return c.inputError(err)
		}
	}
}

// inputError is what ends the reader, given the error that stopped it: from
// reading, parsing or running a command.
func (c *conn) inputError(err error) error {
	switch {
	case c.stopping.Load():
		return errQuit
	case err == io.EOF:
		return nil
	case strings.HasPrefix(err.Error(), "Protocol error: "):
		// redcon's own framing errors carry Redis's text.
		return &protocolError{strings.TrimPrefix(err.Error(), "Protocol error: ")}
	}
	return err
}

// writeLoop writes what the outbox holds, a batch at a time, until the
// outbox closes or a write fails.
func (c *conn) writeLoop() {
	defer c.cancel()
	var frames [][]byte
	for {
		var err error
		// No done channel: the writer stops only when the outbox closes, so
		// a clean close writes everything queued first.
		frames, err = c.out.Next(nil, frames[:0])
		sub := len(frames) > 0 && err == nil && c.subscribed()
		if sub {
			// A subscriber writes under a write slot (see Config.WriteSlots):
			// while it waits for one, the deliverer queues more for it, and
			// one write carries all of it. (Replies to a publisher go at
			// once: it waits for them.)
			c.slot.Take()
			frames, err = c.out.TryNext(frames)
		}
		if len(frames) > 0 {
			var werr error
			if sub && c.raw != nil && sizeAtMost(frames, sendNowMax) {
				werr = c.sendNow(frames)
			} else {
				if sub {
					// A write that may wait holds no slot (see
					// broker.SlotHolder): over TLS, which cannot write
					// without waiting, or a batch too large to gather.
					c.slot.Stall()
				}
				c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
				bufs := net.Buffers(frames)
				_, werr = bufs.WriteTo(c.nc)
			}
			clear(frames)
			c.slot.Give()
			if werr != nil {
				c.out.Close()
				c.nc.Close()
				return
			}
		}
		if err != nil {
			if !c.linger.Load() {
				c.nc.Close() // also ends the reader, if it still runs
			}
			return
		}
	}
}

// sendNowMax is the most a subscriber's write gathers into one buffer for
// sendNow; a larger batch is written from its frames, without a slot.
const sendNowMax = 64 << 10

func sizeAtMost(frames [][]byte, limit int) bool {
	n := 0
	for _, f := range frames {
		if n += len(f); n > limit {
			return false
		}
	}
	return true
}

// sendNow writes a subscriber's frames, gathered in one buffer: what the
// socket takes at once, then, if that is not all, the rest under the write
// deadline, after giving the write slot back.
func (c *conn) sendNow(frames [][]byte) error {
	buf := sendBufs.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= sendNowMax { // a buffer grown past it is not kept
			*buf = (*buf)[:0]
			sendBufs.Put(buf)
		}
	}()
	b := (*buf)[:0]
	for _, f := range frames {
		b = append(b, f...)
	}
	*buf = b
	n := broker.WriteNow(c.raw, b)
	if n == len(b) {
		c.slot.Sent()
		return nil
	}
	c.slot.Stall()
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := c.nc.Write(b[n:])
	c.nc.SetWriteDeadline(time.Time{})
	return err
}

var sendBufs = sync.Pool{New: func() any { return new([]byte) }}

// lingerTimeout and lingerMaxBytes bound how long and how much lingerClose
// reads from a client before closing.
const (
	lingerTimeout  = 500 * time.Millisecond
	lingerMaxBytes = 4 << 20
)

// lingerClose ends a connection whose reader stopped with the client's
// input unread (a protocol error, the query buffer limit). Closing a socket
// with unread input makes the kernel reset the connection, and a reset
// throws away the replies still on their way to the client: the replies to
// the commands before the bad one, which Redis writes. So it first sends
// FIN after what was written, then reads and discards what the client
// still sends until the client closes, lingerTimeout passes or
// lingerMaxBytes are read; serve closes the socket after.
func (c *conn) lingerClose() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, io.LimitReader(c.nc, lingerMaxBytes))
}

// closeIfSlow closes the connection as soon as its outbox fails as a slow
// consumer. The writer would notice only at its next Next, and it may be
// blocked until WriteTimeout writing to a client that has stopped reading,
// the client staying subscribed and counted meanwhile; Redis closes such a
// client at once. Closing the socket ends the writer's write and the
// reader's read; serve then removes the subscriptions.
func (c *conn) closeIfSlow(err error) {
	if errors.Is(err, broker.ErrSlowConsumer) {
		c.srv.cfg.Logger.Info("client disconnected: output buffer limit", "remote", c.addr, "client", c.id)
		c.nc.Close()
	}
}

// closeGracefully ends the connection once the commands it is running have
// been answered and everything queued for it has been written: the reader
// stops at its next read, and serve closes the outbox when drained.
func (c *conn) closeGracefully() {
	c.stopping.Store(true)
	c.nc.SetReadDeadline(time.Now())
}

// kill ends the connection at once (CLIENT KILL).
func (c *conn) kill() {
	c.out.Close()
	c.nc.Close()
}

// flushReplies queues the replies built so far.
func (c *conn) flushReplies() {
	if len(c.rep.b) == 0 {
		return
	}
	c.out.PushReply(c.rep.b)
	c.rep.b = nil
}

// setProto switches the connection between RESP2 and RESP3.
func (c *conn) setProto(p int) {
	c.rep.proto = p
	c.mu.Lock()
	c.proto = p
	c.mu.Unlock()
	c.cl.SetFormat(formatFor(p))
}

// setUser authenticates the connection as u (nil: not authenticated).
func (c *conn) setUser(u *User) {
	c.user = u
	name := "default"
	if u != nil {
		name = u.name
	}
	c.mu.Lock()
	c.userName = name
	c.mu.Unlock()
}

func (c *conn) subscribed() bool {
	return c.cl.Count(broker.KindChannel, broker.KindPattern, broker.KindShard, broker.KindSequenced) > 0
}
