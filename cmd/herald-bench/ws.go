package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// wsEvent is the part of a Herald WebSocket event this tool reads:
//
//	{"type":"message","channel":"c","epoch":5,"seq":42,"time":...,"data":"..."}
//	{"type":"resume","channel":"c","recovered":true,"epoch":5,"from":42,"last":45}
//	{"type":"subscribed","channel":"c"}
//
// Strings point into the frame unless they had escapes.
type wsEvent struct {
	typ, channel, data, message []byte
	epoch, seq, from            uint64
	base64                      bool
}

var errBadEvent = errors.New("malformed event")

// parseEvent reads one JSON object, without reflection or allocation for
// the events Herald sends (a string with escapes allocates). Fields it does
// not know are skipped, nested values included.
func parseEvent(b []byte, ev *wsEvent) error {
	*ev = wsEvent{}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errBadEvent
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		key, j, err := scanString(b, i)
		if err != nil {
			return err
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return errBadEvent
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return errBadEvent
		}
		switch c := b[i]; {
		case c == '"':
			s, j, err := scanString(b, i)
			if err != nil {
				return err
			}
			i = j
			switch string(key) {
			case "type":
				ev.typ = s
			case "channel":
				ev.channel = s
			case "data":
				ev.data = s
			case "message":
				ev.message = s
			}
		case c == '-' || c >= '0' && c <= '9':
			j := i
			for j < len(b) && (b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] >= '0' && b[j] <= '9') {
				j++
			}
			n, _ := parseInt(b[i:j])
			i = j
			switch string(key) {
			case "epoch":
				ev.epoch = uint64(n)
			case "seq":
				ev.seq = uint64(n)
			case "from":
				ev.from = uint64(n)
			}
		case c == 't' && bytes.HasPrefix(b[i:], []byte("true")):
			i += 4
			if string(key) == "base64" {
				ev.base64 = true
			}
		case c == 'f' && bytes.HasPrefix(b[i:], []byte("false")):
			i += 5
		case c == 'n' && bytes.HasPrefix(b[i:], []byte("null")):
			i += 4
		case c == '{' || c == '[':
			j, err := skipNested(b, i)
			if err != nil {
				return err
			}
			i = j
		default:
			return errBadEvent
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return errBadEvent
		}
		if b[i] == '}' {
			return nil
		}
		if b[i] != ',' {
			return errBadEvent
		}
		i = skipSpace(b, i+1)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// scanString reads the JSON string starting at b[i] (a quote) and returns
// its value and the index after it.
func scanString(b []byte, i int) ([]byte, int, error) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, errBadEvent
	}
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			if !escaped {
				return b[i+1 : j], j + 1, nil
			}
			var s string
			if err := json.Unmarshal(b[i:j+1], &s); err != nil {
				return nil, 0, errBadEvent
			}
			return []byte(s), j + 1, nil
		}
	}
	return nil, 0, errBadEvent
}

// skipNested skips the object or array starting at b[i].
func skipNested(b []byte, i int) (int, error) {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			_, k, err := scanString(b, j)
			if err != nil {
				return 0, err
			}
			j = k - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, errBadEvent
}

// newHTTPClient returns a client for WebSocket handshakes on loopback: no
// proxy, no timeout of its own (the dial's context bounds it).
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: -1,
		DisableKeepAlives:   true,
	}}
}

// wsSubscriber is a WebSocket connection subscribed to one channel.
type wsSubscriber struct {
	*subscriber
	c   *websocket.Conn
	buf []byte
	ev  wsEvent
	// firstErr is the first error event the server sent.
	firstErr string
	frames   uint64
}

// dialWSSubscriber connects, subscribes and waits for the "subscribed"
// reply (a "resume" may come with it, or after it; both are handled). An
// empty channel subscribes to nothing.
func dialWSSubscriber(ctx context.Context, s *subscriber, url, channel string, client *http.Client) (*wsSubscriber, error) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(-1)
	ws := &wsSubscriber{subscriber: s, c: c, buf: make([]byte, 0, 4096)}
	s.close = func() { c.CloseNow() }
	s.reads = func() uint64 { return ws.frames }
	if channel == "" {
		return ws, nil
	}
	req, _ := json.Marshal(map[string]string{"op": "subscribe", "channel": channel})
	if err := c.Write(ctx, websocket.MessageText, req); err != nil {
		c.CloseNow()
		return nil, err
	}
	for {
		frame, err := ws.readFrame(ctx)
		if err != nil {
			c.CloseNow()
			return nil, fmt.Errorf("subscribe %s on %s: %w", channel, url, err)
		}
		if ws.handle(frame, time.Now().UnixNano()) {
			return ws, nil
		}
		if ws.firstErr != "" {
			c.CloseNow()
			return nil, fmt.Errorf("subscribe %s on %s: %s", channel, url, ws.firstErr)
		}
	}
}

// readFrame reads one WebSocket message into the subscriber's buffer.
func (ws *wsSubscriber) readFrame(ctx context.Context) ([]byte, error) {
	_, r, err := ws.c.Reader(ctx)
	if err != nil {
		return nil, err
	}
	b := ws.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if cap(b) <= 1<<20 {
		ws.buf = b
	}
	ws.frames++
	return b, nil
}

// handle processes every event of one frame (one per line) and reports
// whether one was the subscription's confirmation.
func (ws *wsSubscriber) handle(frame []byte, at int64) (subscribed bool) {
	for len(frame) > 0 {
		line := frame
		if nl := bytes.IndexByte(frame, '\n'); nl >= 0 {
			line, frame = frame[:nl], frame[nl+1:]
		} else {
			frame = nil
		}
		if len(line) == 0 {
			continue
		}
		ev := &ws.ev
		if err := parseEvent(line, ev); err != nil {
			ws.loss.Foreign++
			continue
		}
		switch string(ev.typ) {
		case "message":
			ws.seq.message(ev.epoch, ev.seq)
			data := ev.data
			if ev.base64 {
				d, err := base64.StdEncoding.AppendDecode(nil, data)
				if err != nil {
					ws.loss.Foreign++
					continue
				}
				data = d
			}
			ws.deliver(data, at)
		case "resume":
			ws.seq.resume(ev.epoch, ev.from)
		case "subscribed":
			subscribed = true
		case "error":
			if ws.firstErr == "" {
				ws.firstErr = string(ev.message)
			}
			ws.loss.Foreign++
		}
	}
	return subscribed
}

func (ws *wsSubscriber) readLoop() {
	ctx := context.Background()
	for {
		frame, err := ws.readFrame(ctx)
		if err != nil {
			ws.ended(err)
			return
		}
		ws.handle(frame, time.Now().UnixNano())
	}
}
