package wsbridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/wsbridge"
)

// httpDo sends one request with a real http.Client and returns the status,
// headers and body.
func httpDo(t testing.TB, method, url string, body io.Reader, h http.Header) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	// Redirects are answers too: a POST must not be turned into a GET.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, res.Header, string(b)
}

// publishReply is POST /publish's answer.
type publishReply struct {
	Channel   string `json:"channel"`
	Epoch     uint64 `json:"epoch"`
	Seq       uint64 `json:"seq"`
	Receivers int    `json:"receivers"`
	Error     string `json:"error"`
	Message   string `json:"message"`
}

func decodeReply(t testing.TB, body string) publishReply {
	t.Helper()
	var r publishReply
	d := json.NewDecoder(strings.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	return r
}

// publishURL is the URL of POST /publish for channel: its path segments
// escaped, its slashes kept.
func publishURL(n *node, channel string) string {
	return n.url + "/publish/" + (&url.URL{Path: channel}).EscapedPath()
}

// TestPublishHTTP: the body is published to the channel in the path, and
// the reply gives its position and how many subscriptions here got it.
func TestPublishHTTP(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	c := dialWS(t, n.wsURL(""), nil)
	c.subscribe("news", nil, 0)
	c.send(map[string]any{"op": "subscribe", "pattern": "n*"})
	c.expect("subscribed")

	status, h, body := httpDo(t, http.MethodPost, publishURL(n, "news"), strings.NewReader("hello"), http.Header{"Content-Type": {"text/plain"}})
	if status != http.StatusOK || h.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v %s", status, h, body)
	}
	r := decodeReply(t, body)
	if r.Channel != "news" || r.Seq != 1 || r.Epoch == 0 || r.Receivers != 2 {
		t.Fatalf("reply %s: want news #1 to 2 receivers (channel and pattern)", body)
	}
	for range 2 {
		e := c.expect("message")
		if e.Channel != "news" || e.Seq != 1 || e.Epoch != r.Epoch || e.Data != "hello" {
			t.Fatalf("got %s", e.raw)
		}
	}

	// Binary bodies and empty ones are payloads like any other.
	for i, p := range [][]byte{{0xff, 0, 0xfe}, {}} {
		status, _, body = httpDo(t, http.MethodPost, publishURL(n, "raw"), bytes.NewReader(p), nil)
		if r := decodeReply(t, body); status != http.StatusOK || r.Seq != uint64(i+1) || r.Receivers != 0 {
			t.Fatalf("%d %s", status, body)
		}
		h := n.history(t, "raw")
		if got := h.Messages[i].Payload; !bytes.Equal(got, p) {
			t.Fatalf("retained %q, want %q", got, p)
		}
	}
}

// TestPublishChannelNames: the channel is the rest of the path, unescaped:
// slashes, spaces and any other character.
func TestPublishChannelNames(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	for _, tt := range []struct{ path, channel string }{
		{"room/1/chat", "room/1/chat"},
		{"with%20space", "with space"},
		{"a+b", "a+b"},
		{"100%25", "100%"},
		{"q%3Fx%23y", "q?x#y"},
		{"%C3%A9t%C3%A9/%E2%82%AC", "été/€"},
		{"a%2Fb", "a/b"},
		{"trailing/", "trailing/"},
		{"%2A", "*"},
	} {
		t.Run(tt.channel, func(t *testing.T) {
			before := n.history(t, tt.channel).Last
			status, _, body := httpDo(t, http.MethodPost, n.url+"/publish/"+tt.path, strings.NewReader("x"), nil)
			if status != http.StatusOK {
				t.Fatalf("POST /publish/%s: %d %s", tt.path, status, body)
			}
			if r := decodeReply(t, body); r.Channel != tt.channel || r.Seq != before+1 {
				t.Fatalf("POST /publish/%s: %s, want channel %q", tt.path, body, tt.channel)
			}
			if h := n.history(t, tt.channel); h.Last != before+1 {
				t.Fatalf("channel %q: %+v", tt.channel, h)
			}
		})
	}
	t.Run("escaped by url.URL", func(t *testing.T) {
		const ch = "sp ace/pl+us/per%cent/?#"
		status, _, body := httpDo(t, http.MethodPost, publishURL(n, ch), strings.NewReader("x"), nil)
		if r := decodeReply(t, body); status != http.StatusOK || r.Channel != ch {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("no channel", func(t *testing.T) {
		status, _, body := httpDo(t, http.MethodPost, n.url+"/publish/", strings.NewReader("x"), nil)
		if r := decodeReply(t, body); status != http.StatusBadRequest || r.Error != "bad_request" {
			t.Fatalf("%d %s", status, body)
		}
	})
}

// TestPublishPathNotCanonical: a channel whose name has an empty, "." or
// ".." segment, sent unescaped, is published under that name or refused,
// never under another name. Go's ServeMux answers such paths with a 307 to
// the cleaned path, and a client that follows it (Go's http.Client, curl
// -L: a 307 keeps the method and body) would publish to another channel.
func TestPublishPathNotCanonical(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	for _, tt := range []struct{ path, channel, cleaned string }{
		{"a//b", "a//b", "a/b"},
		{"a/./b", "a/./b", "a/b"},
		{"x/../y", "x/../y", "y"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url+"/publish/"+tt.path, strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req) // follows redirects, as clients do
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if got := n.history(t, tt.cleaned).Last; got != 0 {
				t.Fatalf("POST /publish/%s published to channel %q (%d %s)", tt.path, tt.cleaned, res.StatusCode, body)
			}
			if res.StatusCode == http.StatusOK {
				if r := decodeReply(t, string(body)); r.Channel != tt.channel {
					t.Fatalf("POST /publish/%s: %s, want channel %q", tt.path, body, tt.channel)
				}
			} else if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("POST /publish/%s: %d %s, want 200 or 400", tt.path, res.StatusCode, body)
			}
		})
	}
}

// TestPublishPayloadLimit: a body of exactly MaxPayload is published; one
// byte more is refused with 413 and nothing is published.
func TestPublishPayloadLimit(t *testing.T) {
	const max = 1024
	n := startNode(t, broker.Config{MaxPayload: max}, raftstore.Config{}, wsbridge.Config{})
	status, _, body := httpDo(t, http.MethodPost, publishURL(n, "big"), bytes.NewReader(bytes.Repeat([]byte("a"), max)), nil)
	if status != http.StatusOK || decodeReply(t, body).Seq != 1 {
		t.Fatalf("%d %s", status, body)
	}
	for _, tt := range []struct {
		name string
		body io.Reader
	}{
		{"one byte more", bytes.NewReader(bytes.Repeat([]byte("a"), max+1))},
		{"much more", bytes.NewReader(bytes.Repeat([]byte("a"), 10*max))},
		// No Content-Length: the server must count as it reads.
		{"chunked", io.MultiReader(strings.NewReader(strings.Repeat("a", max)), strings.NewReader("b"))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := httpDo(t, http.MethodPost, publishURL(n, "big"), tt.body, nil)
			if r := decodeReply(t, body); status != http.StatusRequestEntityTooLarge || r.Error != "too_large" {
				t.Fatalf("%d %s", status, body)
			}
			if h := n.history(t, "big"); h.Last != 1 {
				t.Fatalf("published anyway: %+v", h)
			}
		})
	}
}

// TestPublishFromBrowser: a request with an Origin header comes from a
// browser; it may publish only with AllowBrowserPublish, from an allowed
// origin, and its preflight is answered accordingly.
func TestPublishFromBrowser(t *testing.T) {
	closed := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{AllowedOrigins: []string{"app.example"}})
	open := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{AllowedOrigins: []string{"app.example"}, AllowBrowserPublish: true})
	for _, tt := range []struct {
		name   string
		n      *node
		origin string
		status int
	}{
		{"backend", closed, "", http.StatusOK},
		{"browser, publish disabled", closed, "https://app.example", http.StatusForbidden},
		{"own origin, publish disabled", closed, "self", http.StatusForbidden},
		{"allowed origin", open, "https://app.example", http.StatusOK},
		{"own origin", open, "self", http.StatusOK},
		{"foreign origin", open, "https://evil.example", http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch := "browser:" + tt.name
			origin := tt.origin
			if origin == "self" {
				origin = tt.n.url
			}
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			status, hdr, body := httpDo(t, http.MethodPost, publishURL(tt.n, ch), strings.NewReader("x"), h)
			if status != tt.status {
				t.Fatalf("%d %s, want %d", status, body, tt.status)
			}
			last := tt.n.history(t, ch).Last
			if status != http.StatusOK {
				if r := decodeReply(t, body); r.Error != "forbidden" || last != 0 {
					t.Fatalf("%s; channel at %d", body, last)
				}
				return
			}
			if last != 1 {
				t.Fatalf("channel at %d", last)
			}
			if acao := hdr.Get("Access-Control-Allow-Origin"); origin != "" && acao != origin {
				t.Fatalf("Access-Control-Allow-Origin %q", acao)
			}
		})
	}

	for _, tt := range []struct {
		name   string
		n      *node
		origin string
		status int
	}{
		{"publish disabled", closed, "https://app.example", http.StatusForbidden},
		{"allowed origin", open, "https://app.example", http.StatusNoContent},
		{"foreign origin", open, "https://evil.example", http.StatusForbidden},
	} {
		t.Run("preflight "+tt.name, func(t *testing.T) {
			h := http.Header{"Origin": {tt.origin}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"content-type"}}
			status, hdr, _ := httpDo(t, http.MethodOptions, publishURL(tt.n, "a/b c"), nil, h)
			if status != tt.status {
				t.Fatalf("%d, want %d", status, tt.status)
			}
			if status != http.StatusNoContent {
				return
			}
			if hdr.Get("Access-Control-Allow-Origin") != tt.origin || hdr.Get("Access-Control-Allow-Methods") != "POST" ||
				!strings.EqualFold(hdr.Get("Access-Control-Allow-Headers"), "content-type") {
				t.Fatalf("preflight headers %v", hdr)
			}
		})
	}
}

// TestHealth: /healthz answers while the process serves; /readyz answers
// 200 on a ready node and 503 with the reason otherwise.
func TestHealth(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	// An idle node, once its leader's first entries (configuration, no-op,
	// policy barrier) are applied: nothing changes its readiness after.
	waitFor(t, "the first entries to be applied", func() bool { return n.store.Status().AppliedIndex >= 3 })
	for _, tt := range []struct{ path, body string }{{"/healthz", "ok\n"}, {"/readyz", "ready\n"}} {
		status, _, body := httpDo(t, http.MethodGet, n.url+tt.path, nil, nil)
		if status != http.StatusOK || body != tt.body {
			t.Fatalf("GET %s: %d %q", tt.path, status, body)
		}
	}
	notReady := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{Ready: func() error { return errors.New("no leader") }})
	status, _, body := httpDo(t, http.MethodGet, notReady.url+"/readyz", nil, nil)
	if status != http.StatusServiceUnavailable || body != "no leader\n" {
		t.Fatalf("GET /readyz: %d %q", status, body)
	}
	if status, _, _ := httpDo(t, http.MethodGet, notReady.url+"/healthz", nil, nil); status != http.StatusOK {
		t.Fatalf("GET /healthz on a node that is not ready: %d", status)
	}
}

// TestReadyzUnderLoad: a healthy node stays ready while messages are
// published: /readyz is for load balancers, and a node that answers 503
// whenever an entry is committed but not yet applied would be taken out of
// rotation at random under load.
func TestReadyzUnderLoad(t *testing.T) {
	nodes := startCluster(t, 3, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	for i, n := range nodes {
		waitFor(t, fmt.Sprintf("node %d to be ready", i), func() bool { return n.store.Ready() == nil })
	}
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
		defer cancel()
		for i := 0; ; i++ {
			select {
			case <-stop:
				pubDone <- nil
				return
			default:
			}
			if _, err := nodes[i%3].b.Publish(ctx, []broker.Publish{{Channel: "load", Payload: []byte("x")}}); err != nil {
				pubDone <- err
				return
			}
		}
	}()
	notReady := map[string]int{}
	for i := range 300 {
		n := nodes[i%3]
		if status, _, body := httpDo(t, http.MethodGet, n.url+"/readyz", nil, nil); status != http.StatusOK {
			notReady[fmt.Sprintf("node %d: %d %q", i%3, status, strings.TrimSpace(body))]++
		}
	}
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	if len(notReady) > 0 {
		t.Fatalf("healthy nodes answered /readyz with 503 under load: %v", notReady)
	}
}
