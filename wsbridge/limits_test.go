package wsbridge_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/wsbridge"
)

// TestLimitHTTPConnections: exactly the limit of WebSocket, SSE and
// long-poll connections is served; one more is refused (503 globally, 429
// per IP), and a closed one makes room.
func TestLimitHTTPConnections(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  wsbridge.Config
		want int
	}{
		{"global", wsbridge.Config{MaxConnections: 3}, http.StatusServiceUnavailable},
		{"per IP", wsbridge.Config{MaxConnectionsPerIP: 3}, http.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, broker.Config{}, raftstore.Config{}, tc.cfg)
			a := dialWS(t, n.wsURL(""), nil)
			a.send(map[string]any{"op": "ping"})
			a.expect("pong")
			b := dialWS(t, n.wsURL(""), nil)
			b.send(map[string]any{"op": "ping"})
			b.expect("pong")
			// The third: an SSE stream, open until the test ends.
			res, err := http.Get(n.url + "/sse?channel=x")
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("SSE within the limit: %v %v", err, res)
			}
			defer res.Body.Close()
			for _, path := range []string{"/ws", "/sse?channel=x", "/poll?channel=x&timeout=0s"} {
				code, body := httpGet(t, n.url+path, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
					"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}})
				if code != tc.want {
					t.Fatalf("%s over the limit: HTTP %d %s, want %d", path, code, body, tc.want)
				}
			}
			a.conn.CloseNow()
			waitFor(t, "a slot to free up", func() bool {
				code, _ := httpGet(t, n.url+"/poll?channel=x&timeout=0s", nil)
				return code == 200
			})
			b.send(map[string]any{"op": "ping"})
			b.expect("pong")
		})
	}
}

// TestLimitWSRequestRate: a burst of exactly the rate is served; the next
// request at once closes the connection with 4004. Others are unaffected.
func TestLimitWSRequestRate(t *testing.T) {
	const rate = 20
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{MaxRequestRate: rate})
	other := dialWS(t, n.wsURL(""), nil)
	other.subscribe("r", nil, 0)
	c := dialWS(t, n.wsURL(""), nil)
	for range rate + 1 {
		c.send(map[string]any{"op": "ping"})
	}
	for i := range rate {
		if e := c.next(); e.Type != "pong" {
			t.Fatalf("request %d within the burst: %s", i+1, e.raw)
		}
	}
	if got := c.closeStatus(); got != wsbridge.CloseRateLimited {
		t.Fatalf("close status %d, want %d", got, wsbridge.CloseRateLimited)
	}
	n.publish(t, "r", []byte("m1"))
	if e := other.expect("message"); e.Data != "m1" {
		t.Fatalf("got %s", e.raw)
	}
}

// TestLimitWSChannelLength: a name of exactly the limit subscribes; one
// byte more gets bad_request and the connection stays; the same on SSE,
// long-poll and POST /publish.
func TestLimitWSChannelLength(t *testing.T) {
	const limit = 50
	n := startNode(t, broker.Config{MaxChannelLen: limit}, raftstore.Config{}, wsbridge.Config{})
	at, over := strings.Repeat("c", limit), strings.Repeat("c", limit+1)
	c := dialWS(t, n.wsURL(""), nil)
	c.subscribe(at, nil, 0)
	for _, key := range []string{"channel", "pattern"} {
		c.send(map[string]any{"op": "subscribe", key: over})
		e := c.expect("error")
		if want := fmt.Sprintf("channel name too long: %d bytes, limit %d", limit+1, limit); e.Code != "bad_request" || e.Message != want {
			t.Fatalf("got %s, want bad_request %q", e.raw, want)
		}
	}
	c.barrier()
	for _, path := range []string{"/sse?channel=" + over, "/poll?timeout=0s&channel=" + over} {
		if code, _ := httpGet(t, n.url+path, nil); code != 400 {
			t.Errorf("%s: HTTP %d, want 400", path[:5], code)
		}
	}
	for _, tc := range []struct {
		channel string
		want    int
	}{{at, 200}, {over, 400}} {
		res, err := http.Post(n.url+"/publish/"+tc.channel, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("POST /publish with a %d-byte channel: HTTP %d, want %d", len(tc.channel), res.StatusCode, tc.want)
		}
	}
}
