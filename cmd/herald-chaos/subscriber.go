package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// position is a place in a channel's stream.
type position struct {
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// delivery is one message a subscriber received.
type delivery struct {
	Node    int    `json:"node"`
	Epoch   uint64 `json:"epoch"`
	Seq     uint64 `json:"seq"`
	Payload string `json:"payload"`
}

// resumeNote records a resume that said the gap could not be filled.
type resumeNote struct {
	Node      int      `json:"node"`
	Channel   string   `json:"channel"`
	Asked     position `json:"asked"`
	Epoch     uint64   `json:"epoch"`
	From      uint64   `json:"from"`
	Last      uint64   `json:"last"`
	AtSeconds float64  `json:"at_s"`
}

// subscriber follows every channel over one transport ("resp":
// HERALD.SUBSCRIBE, or "ws": the WebSocket protocol). It connects to its
// home node, falling back to the next node when that fails; when cut off it
// reconnects and resumes each channel after the last message it received.
// A resume that reports a gap it cannot fill (recovered 0, which with the
// harness's unlimited retention happens only on a node that cannot reach
// the leader to catch up) is noted, and the subscriber tries the next node
// instead of taking that stream.
type subscriber struct {
	name      string
	transport string
	home      int
	c         *cluster
	channels  []string
	start     time.Time

	mu          sync.Mutex
	pos         map[string]position
	got         map[string][]delivery
	connects    int
	unrecovered []resumeNote
	closeConn   func() // closes the current connection, for kick
}

func newSubscriber(name, transport string, home int, c *cluster, channels []string, start time.Time) *subscriber {
	return &subscriber{name: name, transport: transport, home: home, c: c, channels: channels, start: start,
		pos: make(map[string]position), got: make(map[string][]delivery)}
}

// run keeps the subscriber connected until ctx ends.
func (s *subscriber) run(ctx context.Context) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		node := (s.home + attempt) % len(s.c.nodes)
		if s.c.available(node) {
			var err error
			if s.transport == "ws" {
				err = s.runWS(ctx, node)
			} else {
				err = s.runRESP(ctx, node)
			}
			if err == nil {
				attempt = -1 // cut off after a good session: home first again
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// kick closes the current connection, as a flaky client network would.
func (s *subscriber) kick() {
	s.mu.Lock()
	closeConn := s.closeConn
	s.mu.Unlock()
	if closeConn != nil {
		closeConn()
	}
}

func (s *subscriber) setCloser(f func()) {
	s.mu.Lock()
	s.closeConn = f
	s.mu.Unlock()
}

func (s *subscriber) positions() map[string]position {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]position, len(s.pos))
	for k, v := range s.pos {
		out[k] = v
	}
	return out
}

func (s *subscriber) onMessage(node int, ch string, epoch, seq uint64, payload string) {
	s.mu.Lock()
	s.got[ch] = append(s.got[ch], delivery{Node: node, Epoch: epoch, Seq: seq, Payload: payload})
	s.pos[ch] = position{Epoch: epoch, Seq: seq}
	s.mu.Unlock()
}

// onResume reports whether the stream may be taken.
func (s *subscriber) onResume(node int, ch string, recovered bool, epoch, from, last uint64) bool {
	if recovered {
		return true
	}
	s.mu.Lock()
	s.unrecovered = append(s.unrecovered, resumeNote{Node: node, Channel: ch, Asked: s.pos[ch], Epoch: epoch,
		From: from, Last: last, AtSeconds: time.Since(s.start).Seconds()})
	s.mu.Unlock()
	return false
}

// errNotRecovered ends a session whose resume could not fill the gap.
var errNotRecovered = errors.New("resume not recovered")

// runRESP is one HERALD.SUBSCRIBE session on node. It returns nil when the
// session was established and later cut off.
func (s *subscriber) runRESP(ctx context.Context, node int) error {
	rc, err := dialRESP(s.c.nodes[node].respAddr, time.Second)
	if err != nil {
		return err
	}
	defer rc.Close()
	stop := context.AfterFunc(ctx, func() { rc.Close() })
	defer stop()
	s.setCloser(func() { rc.Close() })
	defer s.setCloser(nil)
	s.mu.Lock()
	s.connects++
	s.mu.Unlock()
	pos := s.positions()
	for _, ch := range s.channels {
		args := []string{"HERALD.SUBSCRIBE", ch, "SINCE", strconv.FormatUint(pos[ch].Seq, 10)}
		if pos[ch].Epoch != 0 {
			args = append(args, "EPOCH", strconv.FormatUint(pos[ch].Epoch, 10))
		}
		if err := rc.send(args...); err != nil {
			return err
		}
	}
	for {
		v, err := rc.read()
		if err != nil {
			return nil
		}
		if v.kind != '*' || len(v.elems) == 0 {
			return fmt.Errorf("unexpected frame %+v", v)
		}
		e := v.elems
		switch e[0].str {
		case "hmessage":
			if len(e) == 6 {
				s.onMessage(node, e[1].str, uint64(e[2].num), uint64(e[3].num), e[5].str)
			}
		case "hresume":
			if len(e) == 6 && !s.onResume(node, e[1].str, e[2].num == 1, uint64(e[3].num), uint64(e[4].num), uint64(e[5].num)) {
				return errNotRecovered
			}
		}
	}
}

// wsEvent is a WebSocket event.
type wsEvent struct {
	Type      string `json:"type"`
	Channel   string `json:"channel"`
	Recovered bool   `json:"recovered"`
	Epoch     uint64 `json:"epoch"`
	Seq       uint64 `json:"seq"`
	From      uint64 `json:"from"`
	Last      uint64 `json:"last"`
	Data      string `json:"data"`
	Base64    bool   `json:"base64"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// runWS is one WebSocket session on node.
func (s *subscriber) runWS(ctx context.Context, node int) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, _, err := websocket.Dial(dctx, "ws://"+s.c.nodes[node].httpAddr+"/ws", nil)
	cancel()
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 20)
	s.setCloser(func() { conn.CloseNow() })
	defer s.setCloser(nil)
	s.mu.Lock()
	s.connects++
	s.mu.Unlock()
	pos := s.positions()
	for _, ch := range s.channels {
		req := map[string]any{"op": "subscribe", "channel": ch, "since": pos[ch].Seq}
		if pos[ch].Epoch != 0 {
			req["epoch"] = pos[ch].Epoch
		}
		b, _ := json.Marshal(req)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := conn.Write(wctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			return err
		}
	}
	for {
		_, frame, err := conn.Read(ctx)
		if err != nil {
			return nil
		}
		for _, line := range bytes.Split(frame, []byte{'\n'}) {
			if len(line) == 0 {
				continue
			}
			var ev wsEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				return fmt.Errorf("malformed event %q: %w", line, err)
			}
			switch ev.Type {
			case "message":
				if ev.Base64 {
					return fmt.Errorf("unexpected base64 payload in %q", line)
				}
				s.onMessage(node, ev.Channel, ev.Epoch, ev.Seq, ev.Data)
			case "resume":
				if !s.onResume(node, ev.Channel, ev.Recovered, ev.Epoch, ev.From, ev.Last) {
					return errNotRecovered
				}
			case "error":
				return fmt.Errorf("error event: %s %s", ev.Code, ev.Message)
			}
		}
	}
}
