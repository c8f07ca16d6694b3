package wsbridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
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

	closeOnce sync.Once
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	subs, err := parseChannelQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
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
	conn := &wsConn{s: s, c: c, ctx: ctx, stop: stop}
	conn.cl = s.broker.NewClient(jsonFormat{})
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

	for _, sub := range subs {
		if err := conn.subscribe(nil, broker.KindSequenced, sub.channel, sub.from, sub.resume); err != nil {
			conn.closeWith(CloseTooManySubscriptions, err.Error())
			break
		}
	}
	conn.readLoop()
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
		if typ != websocket.MessageText {
			c.closeWith(websocket.StatusUnsupportedData, "binary frames are not part of the protocol")
			return
		}
		var req request
		if err := json.Unmarshal(data, &req); err != nil {
			c.closeWith(CloseBadRequest, "malformed request: not a JSON object")
			return
		}
		if err := c.handle(&req); err != nil {
			return
		}
	}
}

// handle runs one request. It returns an error only when the connection
// must close.
func (c *wsConn) handle(req *request) error {
	switch req.Op {
	case "subscribe":
		switch {
		case req.Channel != "" && req.Pattern == "":
			var from broker.Position
			if req.Since != nil {
				from = broker.Position{Epoch: req.Epoch, Seq: *req.Since}
			}
			if err := c.subscribe(req.ID, broker.KindSequenced, req.Channel, from, req.Since != nil); err != nil {
				c.closeWith(CloseTooManySubscriptions, err.Error())
				return err
			}
		case req.Pattern != "" && req.Channel == "":
			if err := c.subscribe(req.ID, broker.KindPattern, req.Pattern, broker.Position{}, false); err != nil {
				c.closeWith(CloseTooManySubscriptions, err.Error())
				return err
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
	return nil
}

// subscribe adds a sequenced subscription to a channel (KindSequenced) or
// a pattern subscription (KindPattern). With resume, a channel first gets
// the retained messages after from, as HERALD.SUBSCRIBE ... SINCE does. The
// confirmation is queued before the subscription is registered, with the
// outbox held meanwhile, so the client sees the confirmation first and
// misses nothing published after it.
func (c *wsConn) subscribe(id json.RawMessage, k broker.Kind, name string, from broker.Position, resume bool) error {
	key := "channel"
	if k == broker.KindPattern {
		key = "pattern"
	}
	if c.cl.Has(k, name) {
		c.reply(id, "subscribed", key, name)
		return nil
	}
	if c.subs >= c.s.cfg.MaxSubscriptions {
		return errTooManySubscriptions
	}
	c.out.Hold()
	c.reply(id, "subscribed", key, name)
	var cu *broker.CatchUp
	if resume {
		cu = c.cl.SubscribeFrom(name, from)
	} else {
		c.cl.Subscribe(k, name)
	}
	c.subs++
	c.out.Release()
	if cu != nil {
		if err := cu.Run(c.ctx); err != nil && !errors.Is(err, context.Canceled) {
			c.s.cfg.Logger.Warn("history replay failed", "channel", name, "err", err)
		}
	}
	return nil
}

var errTooManySubscriptions = errors.New("too many subscriptions")

func (c *wsConn) publish(req *request) {
	if !c.s.cfg.AllowBrowserPublish {
		c.replyError(req.ID, "forbidden", "publishing over WebSocket is disabled on this server")
		return
	}
	if req.Channel == "" {
		c.replyError(req.ID, "bad_request", "publish needs a channel")
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
			c.closeWith(CloseSlowConsumer, "slow consumer: messages were not read fast enough")
			return
		case err != nil:
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

// closeWith closes the connection with a code and reason, once.
func (c *wsConn) closeWith(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		go func() {
			c.c.Close(code, reason)
			c.stop()
		}()
	})
}
