package wsbridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/herald-broker/herald/broker"
)

// WebSocket close codes Herald uses, besides the standard 1000 (normal),
// 1001 (server going away), 1003 (binary frame: unsupported) and 1009
// (message too big).
const (
	// CloseBadRequest closes a connection that sent a frame that is not a
	// JSON request.
	CloseBadRequest websocket.StatusCode = 4000
	// CloseSlowConsumer closes a connection whose outbox passed its limits:
	// it did not read fast enough.
	CloseSlowConsumer websocket.StatusCode = 4001
	// CloseTooManySubscriptions closes a connection that asked for more
	// subscriptions than Config.MaxSubscriptions.
	CloseTooManySubscriptions websocket.StatusCode = 4002
	// CloseTokenExpired closes a connection when its token's "exp" passes:
	// reconnect with a fresh token, and resume.
	CloseTokenExpired websocket.StatusCode = 4003
	// CloseRateLimited closes a connection that sent requests faster than
	// Config.MaxRequestRate.
	CloseRateLimited websocket.StatusCode = 4004
)

// request is a client's message: one JSON object per WebSocket text frame.
type request struct {
	ID      json.RawMessage `json:"id,omitempty"`
	Op      string          `json:"op"`
	Channel string          `json:"channel,omitempty"`
	Pattern string          `json:"pattern,omitempty"`
	// Since resumes a channel subscription after this sequence number;
	// Epoch is the epoch the client saw it in.
	Since  *uint64 `json:"since,omitempty"`
	Epoch  uint64  `json:"epoch,omitempty"`
	Data   string  `json:"data,omitempty"`
	Base64 bool    `json:"base64,omitempty"`
}

// wsConn is one WebSocket connection: a broker client, a reader goroutine
// and a writer goroutine.
type wsConn struct {
	s    *Server
	c    *websocket.Conn
	cl   *broker.Client
	out  *broker.Outbox
	ctx  context.Context
	stop context.CancelFunc
	subs int // subscriptions held (channels and patterns)

	grant   *grant              // what the token allows; nil: anonymous
	limiter *broker.RateLimiter // Config.MaxRequestRate; nil: none

	closeOnce sync.Once
	closing   atomic.Pointer[closeRequest] // set by closeWith

	// While a history replay runs on its own goroutine, later requests
	// wait in queue, so that they take effect in order while the reader
	// keeps reading (coder/websocket answers pongs only while reading).
	workMu  sync.Mutex
	working bool
	queue   []*request

	pinger   *time.Timer  // runs keepAlive
	pingSent atomic.Int64 // monotime of the last ping; 0: none yet
	expiry   *time.Timer  // the token's expiry; nil without one
	remote   string
	// release gives back the connection's place under the HTTP
	// connection limits.
	release func()
	raw     net.Conn  // under c: the writer sets its write deadline
	live    *liveConn // what c reads through: when the peer last sent
	br      *bufio.Reader
	socket  syscall.RawConn // the socket under raw, to wait on; nil: not a plain socket
	fw      *frameWriter    // under c's write buffer: gathers each message into one write
	// readMu is held by whoever reads br outside coder/websocket's Read:
	// the reader taking pongs, the writer in the close handshake.
	readMu sync.Mutex

	// The writer: a goroutine that runs while the outbox has frames.
	wmu      sync.Mutex
	wdone    sync.Cond         // signalled when a writer stops
	writing  bool              // a writer runs
	wstopped bool              // the connection is over: no writer may start
	slot     broker.SlotHolder // owned by the running writer
}

// maxQueuedRequests bounds the requests a connection may send while one of
// its replays runs.
const maxQueuedRequests = 1024

// closeRequest is the close frame the writer sends once the outbox is
// drained.
type closeRequest struct {
	code   websocket.StatusCode
	reason string
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	subs, err := parseChannelQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	g, release, ok := s.gate(w, r, subs)
	if !ok {
		return
	}
	hj := &smallBuffers{ResponseWriter: w}
	c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{
		OriginPatterns:     s.cfg.AllowedOrigins,
		InsecureSkipVerify: s.cfg.AllowAnyOrigin,
	})
	if err != nil {
		// Accept has written the response (403 for a foreign origin).
		s.cfg.Logger.Debug("websocket handshake refused", "remote", r.RemoteAddr, "err", err)
		release()
		return
	}
	c.SetReadLimit(s.readLimit())
	hj.restoreEarly()
	ctx, stop := context.WithCancel(s.baseCtx)
	conn := &wsConn{s: s, c: c, raw: hj.conn, live: hj.live, br: hj.br, socket: hj.socket, fw: hj.fw, ctx: ctx, stop: stop, release: release,
		grant: g, limiter: broker.NewRateLimiter(s.cfg.MaxRequestRate, 0)}
	conn.cl = s.broker.NewClient(jsonFormat{})
	conn.cl.OnFail(conn.dropIfSlow)
	conn.out = conn.cl.Outbox()
	conn.wdone.L = &conn.wmu
	conn.slot = broker.NewSlotHolder(s.slots)
	conn.out.OnReady(conn.kick)
	s.track(conn, true)
	s.numWS.Add(1)
	conn.remote = r.RemoteAddr
	s.cfg.Logger.Debug("websocket connected", "client", conn.cl.ID(), "remote", conn.remote)
	// The connection lives on in a goroutine of its own, and this
	// handler's returns: its stack grew deep parsing the request and the
	// handshake, and an idle connection should not keep it.
	go conn.serve(subs)
}

// serve starts the connection: the subscriptions asked for in the URL,
// then the reader. A writer goroutine runs only while the outbox has
// something to send (see kick).
func (c *wsConn) serve(subs []subRequest) {
	// The pinger is armed once set: keepAlive uses it.
	c.pinger = time.AfterFunc(math.MaxInt64, c.keepAlive)
	c.pinger.Reset(c.s.cfg.PingInterval)
	if c.grant != nil && !c.grant.expires.IsZero() {
		c.expiry = time.AfterFunc(time.Until(c.grant.expires), c.expire)
	}
	for _, sub := range subs {
		req := &request{Op: "subscribe", Channel: sub.channel, Epoch: sub.from.Epoch}
		if sub.resume {
			req.Since = &sub.from.Seq
		}
		if c.dispatch(req) != nil {
			c.finish()
			return
		}
	}
	go c.read()
}

// read handles the connection's next request, then hands reading over to
// a fresh goroutine; when the connection ends it finishes it. Handling a
// request grows a goroutine's stack, and an idle connection waits in its
// reader: a fresh one, waiting outside coder/websocket's Read (see
// awaitFrame), keeps the smallest stack a goroutine has.
func (c *wsConn) read() {
	if c.awaitFrame() && c.readOne() {
		go c.read()
		return
	}
	c.finish()
}

// awaitFrame waits for the peer's next frame other than a pong, and
// reports whether the connection is still open. It waits for the socket
// itself, and takes pongs off the stream, so that the reader waits in
// coder/websocket's Read (whose stack is twice the size) only while a
// frame is arriving. Where the socket cannot be waited for that way it
// returns at once.
func (c *wsConn) awaitFrame() bool {
	if !shallowWaits || c.socket == nil {
		return true
	}
	for {
		if c.br.Buffered() == 0 && waitReadable(c.socket) != nil {
			return false
		}
		c.readMu.Lock()
		if c.closing.Load() != nil {
			// The writer may be in the close handshake, which
			// reads too: the library's Read takes its turn.
			c.readMu.Unlock()
			return true
		}
		took, err := takePong(c.br)
		c.readMu.Unlock()
		if err != nil {
			return false
		}
		if !took {
			return true
		}
	}
}

// finish ends the connection once its reader is done.
func (c *wsConn) finish() {
	if c.closing.Load() != nil {
		// The server is closing the connection: the writer sends what
		// is queued, then the close frame, and waits for the client's
		// (bounded by WriteTimeout and the library's close timeouts).
		c.waitWriterDone()
	}
	c.stop()
	c.c.CloseNow() // ends a write in progress: writes do not watch ctx
	c.stopWriter()
	c.pinger.Stop()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.cl.Close()
	c.s.track(c, false)
	c.release()
	c.s.numWS.Add(-1)
	c.s.cfg.Logger.Debug("websocket disconnected", "client", c.cl.ID(), "remote", c.remote)
}

// readOne reads and handles one request, and reports whether the
// connection goes on.
func (c *wsConn) readOne() bool {
	// Read has no context that can end: the library would arm a hook
	// on it for every read. The connection's end (CloseNow) ends a read.
	typ, data, err := c.c.Read(context.Background())
	if err != nil {
		return false
	}
	if !c.limiter.Allow(time.Now()) {
		c.s.cfg.Logger.Info("websocket client disconnected: request rate", "client", c.cl.ID())
		c.closeWith(CloseRateLimited, "request rate exceeded")
		return false
	}
	if typ != websocket.MessageText {
		c.closeWith(websocket.StatusUnsupportedData, "binary frames are not part of the protocol")
		return false
	}
	var req request
	if err := json.Unmarshal(data, &req); err != nil {
		c.closeWith(CloseBadRequest, "malformed request: not a JSON object")
		return false
	}
	if len(req.ID) > 0 {
		// The id is echoed in the reply, and replies are one per
		// line: drop the whitespace (line breaks too) JSON allows in it.
		var id bytes.Buffer
		json.Compact(&id, req.ID)
		req.ID = id.Bytes()
	}
	return c.dispatch(&req) == nil
}

var errTooManyRequests = errors.New("too many requests while history is replayed")

// dispatch handles a request now, or queues it behind a running replay. It
// returns an error when the connection must close.
func (c *wsConn) dispatch(req *request) error {
	c.workMu.Lock()
	if c.working {
		if len(c.queue) >= maxQueuedRequests {
			c.workMu.Unlock()
			c.closeWith(CloseBadRequest, errTooManyRequests.Error())
			return errTooManyRequests
		}
		c.queue = append(c.queue, req)
		c.workMu.Unlock()
		return nil
	}
	c.workMu.Unlock()
	cu, err := c.handle(req)
	if err != nil || cu == nil {
		return err
	}
	c.workMu.Lock()
	c.working = true
	c.workMu.Unlock()
	go c.work(cu)
	return nil
}

// work runs a replay, then the requests queued behind it (and the replays
// they start), then stops.
func (c *wsConn) work(cu *broker.CatchUp) {
	for cu != nil {
		if err := cu.Run(c.ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, broker.ErrClosed) {
			c.s.cfg.Logger.Warn("history replay failed", "client", c.cl.ID(), "err", err)
		}
		cu = nil
		for cu == nil {
			c.workMu.Lock()
			if len(c.queue) == 0 {
				c.working = false
				c.workMu.Unlock()
				return
			}
			req := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.workMu.Unlock()
			var err error
			if cu, err = c.handle(req); err != nil {
				return // closing: the reader stops queueing soon
			}
		}
	}
}

// handle runs one request. It returns the replay a subscribe starts, which
// the caller runs, and an error only when the connection must close.
func (c *wsConn) handle(req *request) (*broker.CatchUp, error) {
	switch req.Op {
	case "subscribe":
		if code, reason := c.refuseSubscribe(req); code != "" {
			c.replyError(req.ID, code, reason)
			return nil, nil
		}
		switch {
		case req.Channel != "" && req.Pattern == "":
			var from broker.Position
			if req.Since != nil {
				from = broker.Position{Epoch: req.Epoch, Seq: *req.Since}
			}
			cu, err := c.subscribe(req.ID, broker.KindSequenced, req.Channel, from, req.Since != nil)
			if err != nil {
				c.closeWith(CloseTooManySubscriptions, err.Error())
			}
			return cu, err
		case req.Pattern != "" && req.Channel == "":
			if _, err := c.subscribe(req.ID, broker.KindPattern, req.Pattern, broker.Position{}, false); err != nil {
				c.closeWith(CloseTooManySubscriptions, err.Error())
				return nil, err
			}
		default:
			c.replyError(req.ID, "bad_request", "subscribe needs one of channel or pattern")
		}
	case "unsubscribe":
		switch {
		case req.Channel != "" && req.Pattern == "":
			if c.cl.Unsubscribe(broker.KindSequenced, req.Channel) {
				c.subs--
			}
			c.reply(req.ID, "unsubscribed", "channel", req.Channel)
		case req.Pattern != "" && req.Channel == "":
			if c.cl.Unsubscribe(broker.KindPattern, req.Pattern) {
				c.subs--
			}
			c.reply(req.ID, "unsubscribed", "pattern", req.Pattern)
		default:
			c.replyError(req.ID, "bad_request", "unsubscribe needs one of channel or pattern")
		}
	case "publish":
		c.publish(req)
	case "ping":
		c.reply(req.ID, "pong", "", "")
	default:
		c.replyError(req.ID, "bad_request", "unknown op "+strconv.Quote(req.Op))
	}
	return nil, nil
}

// subscribe adds a sequenced subscription to a channel (KindSequenced) or
// a pattern subscription (KindPattern). The confirmation is queued before
// the subscription is registered, with the outbox held meanwhile, so the
// client sees the confirmation first and misses nothing published after it.
// With resume, a channel first gets the retained messages after from, as
// HERALD.SUBSCRIBE ... SINCE does: subscribe returns that replay for the
// caller to run. Without, the channel's resume event (sent at once) gives
// the position its stream starts from, so the client can resume even if it
// is cut off before its first message.
func (c *wsConn) subscribe(id json.RawMessage, k broker.Kind, name string, from broker.Position, resume bool) (*broker.CatchUp, error) {
	key := "channel"
	if k == broker.KindPattern {
		key = "pattern"
	}
	if c.cl.Has(k, name) {
		c.reply(id, "subscribed", key, name)
		return nil, nil
	}
	if c.subs >= c.s.cfg.MaxSubscriptions {
		return nil, errTooManySubscriptions
	}
	c.out.Hold()
	c.reply(id, "subscribed", key, name)
	var cu *broker.CatchUp
	switch {
	case k == broker.KindPattern:
		c.cl.Subscribe(k, name)
	case resume:
		cu = c.cl.SubscribeFrom(name, from)
	default:
		cu = c.cl.SubscribeLatest(name)
	}
	c.subs++
	c.out.Release()
	if cu != nil && !resume {
		// Only the channel's position to read: no need for the worker.
		if err := cu.Run(c.ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, broker.ErrClosed) {
			c.s.cfg.Logger.Warn("reading the channel's position failed", "channel", name, "err", err)
		}
		return nil, nil
	}
	return cu, nil
}

var errTooManySubscriptions = errors.New("too many subscriptions")

// refuseSubscribe returns the error code and message that refuse a
// subscribe request, or "": neither or both of channel and pattern
// (bad_request), a name over the length limit (bad_request), or one the
// token does not grant (forbidden).
func (c *wsConn) refuseSubscribe(req *request) (code, msg string) {
	name, pattern := req.Channel, false
	if req.Pattern != "" {
		name, pattern = req.Pattern, true
	}
	if (req.Channel == "") == (req.Pattern == "") {
		return "bad_request", "subscribe needs one of channel or pattern"
	}
	if err := c.s.broker.CheckChannel(name); err != nil {
		return "bad_request", err.Error()
	}
	if !c.grant.canSubscribe(name, pattern) {
		return "forbidden", "the token does not grant " + strconv.Quote(name)
	}
	return "", ""
}

// expire closes the connection when its token expires.
func (c *wsConn) expire() {
	c.s.cfg.Logger.Info("websocket client disconnected: token expired", "client", c.cl.ID())
	c.cl.UnsubscribeAll()
	c.closeWith(CloseTokenExpired, "token expired")
}

func (c *wsConn) publish(req *request) {
	if !c.s.cfg.AllowBrowserPublish {
		c.replyError(req.ID, "forbidden", "publishing over WebSocket is disabled on this server")
		return
	}
	if req.Channel == "" {
		c.replyError(req.ID, "bad_request", "publish needs a channel")
		return
	}
	if !c.grant.canPublish(req.Channel) {
		c.replyError(req.ID, "forbidden", "the token does not grant publishing to "+strconv.Quote(req.Channel))
		return
	}
	payload := []byte(req.Data)
	if req.Base64 {
		var err error
		if payload, err = base64.StdEncoding.DecodeString(req.Data); err != nil {
			c.replyError(req.ID, "bad_request", "data is not valid base64")
			return
		}
	}
	rs, err := c.s.broker.Publish(c.ctx, []broker.Publish{{Channel: req.Channel, Payload: payload}})
	if err != nil {
		c.replyError(req.ID, errorCode(err), err.Error())
		return
	}
	b := c.start(req.ID, "published")
	b = append(b, `,"channel":`...)
	b = appendJSONString(b, req.Channel)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendUint(b, rs[0].Epoch, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, rs[0].Seq, 10)
	c.out.PushReply(append(b, '}'))
}

// start begins a reply object: {"type":typ[,"id":id].
func (c *wsConn) start(id json.RawMessage, typ string) []byte {
	b := append([]byte(`{"type":"`), typ...)
	b = append(b, '"')
	if len(id) > 0 {
		b = append(b, `,"id":`...)
		b = append(b, id...)
	}
	return b
}

// reply queues {"type":typ,"id":id,key:value}.
func (c *wsConn) reply(id json.RawMessage, typ, key, value string) {
	b := c.start(id, typ)
	if key != "" {
		b = append(b, ',', '"')
		b = append(b, key...)
		b = append(b, '"', ':')
		b = appendJSONString(b, value)
	}
	c.out.PushReply(append(b, '}'))
}

func (c *wsConn) replyError(id json.RawMessage, code, msg string) {
	b := c.start(id, "error")
	b = append(b, `,"code":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	c.out.PushReply(append(b, '}'))
}

// kick starts a writer unless one runs. The outbox calls it whenever it
// may have something for the writer. An idle connection has no writer
// goroutine: a parked one would cost its stack, the larger part of an idle
// subscriber's memory.
func (c *wsConn) kick() {
	c.wmu.Lock()
	start := !c.writing && !c.wstopped
	if start {
		c.writing = true
	}
	c.wmu.Unlock()
	if start {
		go c.write()
	}
}

// write sends what the outbox holds, all queued events in one WebSocket
// text message, one JSON object per line, until the outbox is empty.
//
// Writers send under a slot (Config.WriteSlots): with thousands of
// connections woken by one fan-out, the rest wait parked for a slot, in
// the order they were woken, instead of crowding the scheduler's run
// queue, where Raft and the state machine would wait behind them. Waiting
// their turn, they gather more messages per frame. Under a slot a writer
// does not wait for its socket (coder/websocket's Write only fills the
// frameWriter's buffer, and release waits only after waitSocket); the one
// wait left is for coder/websocket's write lock while a pong to the same
// client is being written, which the library bounds (5 s for any control
// frame). Herald's pings take no such lock (frameWriter.sendPing).
//
// A write is bounded by a deadline on the connection rather than by a
// context: coder/websocket arms a timer per write for a context that can
// end, which costs more than the write on a busy fan-out. The deadline is
// set only when the socket cannot take a message at once (see waitSocket).
func (c *wsConn) write() {
	buf := writeBufs.Get().(*writeBuf)
	defer putWriteBuf(buf)
	wait := c.waitSocket
	for {
		c.slot.Take()
		var err error
		buf.frames, err = c.out.TryNext(buf.frames[:0])
		frames := buf.frames
		if len(frames) > 0 {
			out := frames[0]
			if len(frames) > 1 {
				buf.msg = joinLines(buf.msg[:0], frames)
				out = buf.msg
			}
			c.fw.hold()
			werr := c.c.Write(context.Background(), websocket.MessageText, out)
			waited, rerr := c.fw.release(wait)
			if werr == nil {
				werr = rerr
			}
			clear(frames)
			if waited {
				// No deadline outlives the write: pings and pongs
				// write too.
				c.raw.SetWriteDeadline(time.Time{})
			} else {
				c.slot.Sent()
			}
			c.slot.Give()
			if werr != nil {
				c.stop()
				c.c.CloseNow()
				c.out.Close()
				c.writerExit()
				return
			}
		} else {
			c.slot.Give()
		}
		switch {
		case errors.Is(err, broker.ErrSlowConsumer):
			c.s.cfg.Logger.Info("websocket client disconnected: outbox limit", "client", c.cl.ID())
			c.raw.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			c.closeHandshake(CloseSlowConsumer, "slow consumer: messages were not read fast enough")
			c.writerExit()
			return
		case err != nil:
			if req := c.closing.Load(); req != nil {
				c.raw.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
				c.closeHandshake(req.code, req.reason)
			}
			c.writerExit()
			return
		case len(frames) == 0:
			if c.idle() {
				return
			}
		}
	}
}

// closeHandshake sends a close frame and waits for the peer's, which
// coder/websocket reads from br: the reader does not read it meanwhile.
func (c *wsConn) closeHandshake(code websocket.StatusCode, reason string) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.c.Close(code, reason)
}

// waitSocket is called when the socket cannot take a whole message at
// once: the writer gives its slot back and waits for the socket under the
// write deadline.
func (c *wsConn) waitSocket() {
	c.slot.Stall()
	c.raw.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
}

// writeBuf is a writer's scratch space, shared through writeBufs by the
// runs of every connection's writer: an idle connection holds none.
type writeBuf struct {
	frames [][]byte
	msg    []byte
}

var writeBufs = sync.Pool{New: func() any { return new(writeBuf) }}

func putWriteBuf(b *writeBuf) {
	if cap(b.msg) > 64<<10 {
		b.msg = nil // a large batch's buffer is not kept
	}
	clear(b.frames[:cap(b.frames)])
	b.frames = b.frames[:0]
	writeBufs.Put(b)
}

// idle ends the writer's run if the outbox has nothing for it, and reports
// whether it did. A push after this look finds no writer and kicks one.
func (c *wsConn) idle() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.out.Ready() && c.ctx.Err() == nil && !c.wstopped {
		return false
	}
	c.writing = false
	c.wdone.Broadcast()
	return true
}

// writerExit ends the writer's run for good: the outbox has failed or
// closed, or the connection broke.
func (c *wsConn) writerExit() {
	c.wmu.Lock()
	c.writing = false
	c.wdone.Broadcast()
	c.wmu.Unlock()
}

// waitWriterDone waits until the writer has finished with the outbox: sent
// everything and the close frame, or given up.
func (c *wsConn) waitWriterDone() {
	c.wmu.Lock()
	for c.writing || c.out.Err() == nil {
		c.wdone.Wait()
	}
	c.wmu.Unlock()
}

// stopWriter waits for a running writer and lets no other start.
func (c *wsConn) stopWriter() {
	c.wmu.Lock()
	c.wstopped = true
	for c.writing {
		c.wdone.Wait()
	}
	c.wmu.Unlock()
}

func joinLines(dst []byte, frames [][]byte) []byte {
	for i, f := range frames {
		if i > 0 {
			dst = append(dst, '\n')
		}
		dst = append(dst, f...)
	}
	return dst
}

// keepAlive pings the peer every PingInterval, and disconnects it if
// nothing comes from it within PongTimeout of a ping: a pong or any other
// frame. It runs on the pinger, and schedules its next run.
func (c *wsConn) keepAlive() {
	if c.ctx.Err() != nil {
		return
	}
	now, sent := monotime(), c.pingSent.Load()
	interval, timeout := int64(c.s.cfg.PingInterval), int64(c.s.cfg.PongTimeout)
	if sent != 0 && c.live.lastRead.Load() < sent { // not answered yet
		if wait := sent + timeout - now; wait > 0 {
			c.pinger.Reset(time.Duration(wait))
			return
		}
		c.s.cfg.Logger.Info("websocket client disconnected: no answer to ping", "client", c.cl.ID())
		c.stop()
		c.c.CloseNow()
		return
	}
	if wait := sent + interval - now; sent != 0 && wait > 0 {
		c.pinger.Reset(time.Duration(wait))
		return
	}
	c.pingSent.Store(now)
	c.pinger.Reset(time.Duration(min(interval, timeout)))
	c.fw.sendPing()
}

// dropIfSlow stops delivering to a connection whose outbox failed as a slow
// consumer, at once: it no longer counts as a receiver. The writer sends
// the 4001 close frame when its write in progress returns (the client may
// have stopped reading: WriteTimeout bounds that).
func (c *wsConn) dropIfSlow(err error) {
	if errors.Is(err, broker.ErrSlowConsumer) {
		go c.cl.UnsubscribeAll()
	}
}

// closeWith closes the connection with a code and reason, once, after what
// is already queued for it: the client gets the replies to its earlier
// requests before the close frame. The writer sends the close frame when
// the outbox is drained; it does not block.
func (c *wsConn) closeWith(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.closing.Store(&closeRequest{code, reason})
		c.out.CloseWhenDrained()
	})
}
