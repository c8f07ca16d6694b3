package wsbridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
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

// wsConn is one WebSocket connection: a broker client, a reader (this
// handler's goroutine) and a writer goroutine.
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
	g, ok := s.authorize(w, r)
	if !ok || !s.checkSubs(w, g, subs) {
		return
	}
	release, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer release()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns:     s.cfg.AllowedOrigins,
		InsecureSkipVerify: s.cfg.AllowAnyOrigin,
	})
	if err != nil {
		// Accept has written the response (403 for a foreign origin).
		s.cfg.Logger.Debug("websocket handshake refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	c.SetReadLimit(s.readLimit())
	ctx, stop := context.WithCancel(s.baseCtx)
	conn := &wsConn{s: s, c: c, ctx: ctx, stop: stop, grant: g, limiter: broker.NewRateLimiter(s.cfg.MaxRequestRate, 0)}
	conn.cl = s.broker.NewClient(jsonFormat{})
	conn.cl.OnFail(conn.dropIfSlow)
	conn.out = conn.cl.Outbox()
	s.track(conn, true)
	defer s.track(conn, false)
	defer conn.cl.Close()
	defer stop()

	writerDone := make(chan struct{})
	go func() {
		conn.writeLoop()
		close(writerDone)
	}()
	pinger := time.AfterFunc(s.cfg.PingInterval, conn.ping)
	defer pinger.Stop()
	if g != nil && !g.expires.IsZero() {
		expiry := time.AfterFunc(time.Until(g.expires), conn.expire)
		defer expiry.Stop()
	}

	for _, sub := range subs {
		req := &request{Op: "subscribe", Channel: sub.channel, Epoch: sub.from.Epoch}
		if sub.resume {
			req.Since = &sub.from.Seq
		}
		if conn.dispatch(req) != nil {
			break
		}
	}
	conn.readLoop()
	if conn.closing.Load() != nil {
		// The server is closing the connection: the writer sends what
		// is queued, then the close frame, and waits for the client's
		// (bounded by WriteTimeout and the library's close timeouts).
		<-writerDone
	}
	stop()
	<-writerDone
}

// readLoop handles requests until the connection ends.
func (c *wsConn) readLoop() {
	for {
		typ, data, err := c.c.Read(c.ctx)
		if err != nil {
			return
		}
		if !c.limiter.Allow(time.Now()) {
			c.s.cfg.Logger.Info("websocket client disconnected: request rate", "client", c.cl.ID())
			c.closeWith(CloseRateLimited, "request rate exceeded")
			return
		}
		if typ != websocket.MessageText {
			c.closeWith(websocket.StatusUnsupportedData, "binary frames are not part of the protocol")
			return
		}
		var req request
		if err := json.Unmarshal(data, &req); err != nil {
			c.closeWith(CloseBadRequest, "malformed request: not a JSON object")
			return
		}
		if len(req.ID) > 0 {
			// The id is echoed in the reply, and replies are one per
			// line: drop the whitespace (line breaks too) JSON allows in it.
			var id bytes.Buffer
			json.Compact(&id, req.ID)
			req.ID = id.Bytes()
		}
		if err := c.dispatch(&req); err != nil {
			return
		}
	}
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

// writeLoop sends what the outbox holds: all queued events in one
// WebSocket text message, one JSON object per line.
func (c *wsConn) writeLoop() {
	var frames [][]byte
	var msg []byte
	for {
		var err error
		frames, err = c.out.Next(c.ctx.Done(), frames[:0])
		if len(frames) > 0 {
			msg = joinLines(msg[:0], frames)
			clear(frames)
			wctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.WriteTimeout)
			werr := c.c.Write(wctx, websocket.MessageText, msg)
			cancel()
			if werr != nil {
				c.stop()
				c.c.CloseNow()
				return
			}
			if len(msg) > 64<<10 {
				msg = nil // don't keep a large buffer for an idle connection
			}
		}
		switch {
		case errors.Is(err, broker.ErrSlowConsumer):
			c.s.cfg.Logger.Info("websocket client disconnected: outbox limit", "client", c.cl.ID())
			c.c.Close(CloseSlowConsumer, "slow consumer: messages were not read fast enough")
			return
		case err != nil:
			if req := c.closing.Load(); req != nil {
				c.c.Close(req.code, req.reason)
			}
			return
		}
	}
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

// ping checks the peer is alive, and schedules the next check. A peer that
// does not answer within PongTimeout is disconnected.
func (c *wsConn) ping() {
	if c.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.PongTimeout)
	err := c.c.Ping(ctx)
	cancel()
	if err != nil {
		c.stop()
		c.c.CloseNow()
		return
	}
	time.AfterFunc(c.s.cfg.PingInterval, c.ping)
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
