package wsbridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/wsbridge"
)

// pollResult is one long-poll's answer.
type pollResult struct {
	status int
	header http.Header
	body   string
	events []event
}

// poll runs GET /poll?query with a real http.Client and decodes the
// answer strictly.
func poll(t testing.TB, n *node, query string, h http.Header) pollResult {
	t.Helper()
	r, err := tryPoll(n, query, h)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryPoll is poll for use off the test's goroutine.
func tryPoll(n *node, query string, h http.Header) (pollResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/poll?"+query, nil)
	if err != nil {
		return pollResult{}, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return pollResult{}, fmt.Errorf("GET /poll?%s: %w", query, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return pollResult{}, err
	}
	r := pollResult{status: res.StatusCode, header: res.Header, body: string(body)}
	if res.StatusCode != http.StatusOK {
		return r, nil
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		return r, fmt.Errorf("Content-Type %q", ct)
	}
	var raw struct {
		Events []json.RawMessage `json:"events"`
	}
	d := json.NewDecoder(strings.NewReader(r.body))
	d.DisallowUnknownFields()
	if err := d.Decode(&raw); err != nil || raw.Events == nil {
		return r, fmt.Errorf("body %q: %v", body, err)
	}
	for _, e := range raw.Events {
		ev, err := decodeEvent(e)
		if err != nil {
			return r, err
		}
		r.events = append(r.events, ev)
	}
	return r, nil
}

// checkResume fails unless e is a resume of channel as described.
func checkResume(t testing.TB, e event, channel string, recovered bool, epoch, from, last uint64) {
	t.Helper()
	if e.Type != "resume" || e.Channel != channel || *e.Recovered != recovered || e.Epoch != epoch || e.From != from || e.Last != last {
		t.Fatalf("got %s, want resume of %q recovered %v epoch %d from %d last %d", e.raw, channel, recovered, epoch, from, last)
	}
}

// checkMessages fails unless events are "m<seq>" of channel for seq in
// [from, to].
func checkMessages(t testing.TB, events []event, channel string, epoch, from, to uint64) {
	t.Helper()
	if uint64(len(events)) != to-from+1 {
		t.Fatalf("%d events, want messages %d to %d: %v", len(events), from, to, events)
	}
	for i, e := range events {
		seq := from + uint64(i)
		if e.Type != "message" || e.Channel != channel || e.Epoch != epoch || e.Seq != seq || e.Data != fmt.Sprintf("m%d", seq) {
			t.Fatalf("got %s, want m%d of %q", e.raw, seq, channel)
		}
	}
}

// TestPollHistory: with messages after since, the poll answers at once
// (the server's PollTimeout is far longer than the client's patience) with
// the resume event and those messages.
func TestPollHistory(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{PollTimeout: time.Hour})
	ea := n.publishRange(t, "pa", 1, 5)
	eb := n.publishRange(t, "pb", 1, 3)

	r := poll(t, n, fmt.Sprintf("channel=pa&since=2&epoch=%d", ea), nil)
	if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	checkResume(t, r.events[0], "pa", true, ea, 3, 5)
	checkMessages(t, r.events[1:], "pa", ea, 3, 5)

	// Two channels, since and epoch paired in order.
	r = poll(t, n, fmt.Sprintf("channel=pa&channel=pb&since=4&since=0&epoch=%d&epoch=%d", ea, eb), nil)
	var pa, pb []event
	for _, e := range r.events {
		switch e.Channel {
		case "pa":
			pa = append(pa, e)
		case "pb":
			pb = append(pb, e)
		}
	}
	if len(pa)+len(pb) != len(r.events) || len(pa) == 0 || len(pb) == 0 {
		t.Fatalf("events %s", r.body)
	}
	checkResume(t, pa[0], "pa", true, ea, 5, 5)
	checkMessages(t, pa[1:], "pa", ea, 5, 5)
	checkResume(t, pb[0], "pb", true, eb, 1, 3)
	checkMessages(t, pb[1:], "pb", eb, 1, 3)
}

// TestPollGap: a since that history no longer reaches is answered at once
// with recovered false and what is retained.
func TestPollGap(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{Retention: &raftstore.Policy{Rules: []raftstore.Rule{{Pattern: "*", MaxCount: 10}}}}, wsbridge.Config{PollTimeout: time.Hour})
	h := n.fillTrimmed(t, "pg", 30, 10)
	for _, q := range []string{
		fmt.Sprintf("channel=pg&since=3&epoch=%d", h.Epoch),
		fmt.Sprintf("channel=pg&since=%d&epoch=%d", h.Last-1, h.Epoch+1),
	} {
		r := poll(t, n, q, nil)
		checkResume(t, r.events[0], "pg", false, h.Epoch, h.First, h.Last)
		checkMessages(t, r.events[1:], "pg", h.Epoch, h.First, h.Last)
	}
	// Beyond the end, in the right epoch: the gap is news at once, even
	// with nothing to send after it.
	r := poll(t, n, fmt.Sprintf("channel=pg&since=%d&epoch=%d", h.Last+10, h.Epoch), nil)
	checkResume(t, r.events[0], "pg", false, h.Epoch, h.First, h.Last)
	checkMessages(t, r.events[1:], "pg", h.Epoch, h.First, h.Last)
}

// pollAsync starts a poll on another goroutine and returns once the server
// has subscribed it to channel (which must have no other subscriber).
func pollAsync(t *testing.T, n *node, channel, query string) <-chan pollResult {
	t.Helper()
	// A previous poll's subscription goes when its handler returns, which
	// may be just after its client has the answer.
	waitFor(t, "no subscriber on "+channel, func() bool { return n.b.NumSub(broker.Global, channel) == 0 })
	before := 0
	done := make(chan pollResult, 1)
	errc := make(chan error, 1)
	go func() {
		r, err := tryPoll(n, query, nil)
		if err != nil {
			errc <- err
			return
		}
		done <- r
	}()
	waitFor(t, "the poll to be in flight", func() bool {
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
		return n.b.NumSub(broker.Global, channel) > before
	})
	out := make(chan pollResult, 1)
	go func() {
		select {
		case r := <-done:
			out <- r
		case err := <-errc:
			out <- pollResult{status: -1, body: err.Error()}
		}
	}()
	return out
}

// TestPollWaitsForLive: a client that is up to date waits, and gets the
// next message as soon as it is published.
func TestPollWaitsForLive(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{PollTimeout: time.Hour})
	epoch := n.publishRange(t, "pw", 1, 3)

	t.Run("up to date", func(t *testing.T) {
		res := pollAsync(t, n, "pw", fmt.Sprintf("channel=pw&since=3&epoch=%d", epoch))
		n.publishRange(t, "pw", 4, 4)
		r := <-res
		if r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		checkResume(t, r.events[0], "pw", true, epoch, 4, 3)
		checkMessages(t, r.events[1:], "pw", epoch, 4, 4)
	})
	t.Run("no since", func(t *testing.T) {
		// The channel's position comes first, for the next poll.
		res := pollAsync(t, n, "pw", "channel=pw")
		n.publishRange(t, "pw", 5, 5)
		r := <-res
		if r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		checkResume(t, r.events[0], "pw", true, epoch, 5, 4)
		checkMessages(t, r.events[1:], "pw", epoch, 5, 5)
	})
	t.Run("new channel", func(t *testing.T) {
		res := pollAsync(t, n, "pw-new", "channel=pw-new&since=0")
		e := n.publishRange(t, "pw-new", 1, 1)
		r := <-res
		if r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		checkResume(t, r.events[0], "pw-new", true, 0, 1, 0)
		checkMessages(t, r.events[1:], "pw-new", e, 1, 1)
	})
}

// TestPollTimeout: when nothing comes, the poll ends after its timeout
// with no events, or with only the resume event of an up-to-date client.
func TestPollTimeout(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	epoch := n.publishRange(t, "pt", 1, 2)

	// Without since: only the position to poll from next.
	r := poll(t, n, "channel=pt&timeout=200ms", nil)
	if r.status != http.StatusOK || len(r.events) != 1 {
		t.Fatalf("%d %q, want only the resume event", r.status, r.body)
	}
	checkResume(t, r.events[0], "pt", true, epoch, 3, 2)
	r = poll(t, n, fmt.Sprintf("channel=pt&since=2&epoch=%d&timeout=200ms", epoch), nil)
	if len(r.events) != 1 {
		t.Fatalf("%s, want only the resume event", r.body)
	}
	checkResume(t, r.events[0], "pt", true, epoch, 3, 2)
	// timeout=0 does not wait, and still tells where to poll from.
	r = poll(t, n, "channel=pt&timeout=0s", nil)
	if len(r.events) != 1 {
		t.Fatalf("%q, want only the resume event", r.body)
	}
	checkResume(t, r.events[0], "pt", true, epoch, 3, 2)
}

// TestPollNoWaitReturnsHistory: timeout=0 means "do not wait for new
// messages", not "drop what is there": messages after since come back,
// every time.
func TestPollNoWaitReturnsHistory(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	epoch := n.publishRange(t, "p0", 1, 5)
	for i := range 50 {
		r := poll(t, n, fmt.Sprintf("channel=p0&since=2&epoch=%d&timeout=0s", epoch), nil)
		if len(r.events) == 0 {
			t.Fatalf("poll %d: %s, want the resume event and messages 3 to 5", i, r.body)
		}
		checkResume(t, r.events[0], "p0", true, epoch, 3, 5)
		checkMessages(t, r.events[1:], "p0", epoch, 3, 5)
	}
}

// TestPollLoop: a client that polls again and again with the last
// sequence number it saw gets a sequence of 50 messages, published
// meanwhile, exactly once and in order.
func TestPollLoop(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	const ch, total = "pl", 50
	pubErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
		defer cancel()
		for i := 1; i <= total; i++ {
			if _, err := n.b.Publish(ctx, []broker.Publish{{Channel: ch, Payload: fmt.Appendf(nil, "m%d", i)}}); err != nil {
				pubErr <- err
				return
			}
		}
		pubErr <- nil
	}()

	var last, epoch uint64
	for polls := 0; last < total; polls++ {
		if polls > 4*total {
			t.Fatalf("%d polls, and only at %d", polls, last)
		}
		q := fmt.Sprintf("channel=%s&since=%d&timeout=10s", ch, last)
		if epoch != 0 {
			q += fmt.Sprintf("&epoch=%d", epoch)
		}
		r := poll(t, n, q, nil)
		for _, e := range r.events {
			switch {
			case e.Type == "resume" && *e.Recovered && e.From == last+1:
			case e.Type == "message" && e.Seq == last+1 && (epoch == 0 || e.Epoch == epoch) && e.Data == fmt.Sprintf("m%d", e.Seq):
				last, epoch = e.Seq, e.Epoch
			default:
				t.Fatalf("after seq %d: %s", last, e.raw)
			}
		}
	}
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	r := poll(t, n, fmt.Sprintf("channel=%s&since=%d&epoch=%d&timeout=200ms", ch, last, epoch), nil)
	if len(r.events) != 1 || r.events[0].Type != "resume" {
		t.Fatalf("after the last message: %s", r.body)
	}
}

// TestPollMaxEvents: MaxPollEvents caps one answer; the next poll, from the
// last sequence number seen, continues where it stopped.
func TestPollMaxEvents(t *testing.T) {
	const max = 10
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{MaxPollEvents: max})
	epoch := n.publishRange(t, "pm", 1, 50)
	var last uint64
	for polls := 1; last < 50; polls++ {
		if polls > 50 {
			t.Fatalf("%d polls, and only at %d", polls, last)
		}
		r := poll(t, n, fmt.Sprintf("channel=pm&since=%d&epoch=%d", last, epoch), nil)
		if len(r.events) > max {
			t.Fatalf("poll %d (since %d): %d events, more than MaxPollEvents %d", polls, last, len(r.events), max)
		}
		checkResume(t, r.events[0], "pm", true, epoch, last+1, 50)
		if len(r.events) < 2 {
			t.Fatalf("poll %d: no message: %s", polls, r.body)
		}
		checkMessages(t, r.events[1:], "pm", epoch, last+1, last+uint64(len(r.events)-1))
		last = r.events[len(r.events)-1].Seq
	}
}

// TestPollCORS: a browser on an allowed origin may poll, and is told so;
// one on a foreign origin is refused.
func TestPollCORS(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{AllowedOrigins: []string{"app.example", "https://*.trusted.example"}})
	for _, tt := range []struct {
		origin string
		status int
		acao   string
	}{
		{"", http.StatusOK, ""},
		{"https://app.example", http.StatusOK, "https://app.example"},
		{"http://APP.example", http.StatusOK, "http://APP.example"},
		{"https://a.trusted.example", http.StatusOK, "https://a.trusted.example"},
		{"http://a.trusted.example", http.StatusForbidden, ""},
		{"https://evil.example", http.StatusForbidden, ""},
		{"null", http.StatusForbidden, ""},
		{"self", http.StatusOK, "self"},
	} {
		t.Run(tt.origin, func(t *testing.T) {
			h := http.Header{}
			origin, acao := tt.origin, tt.acao
			if origin == "self" {
				origin, acao = n.url, n.url
			}
			if origin != "" {
				h.Set("Origin", origin)
			}
			r := poll(t, n, "channel=cors&timeout=0s", h)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if got := r.header.Get("Access-Control-Allow-Origin"); got != acao {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, acao)
			}
			if acao != "" && r.header.Get("Vary") != "Origin" {
				t.Fatalf("Vary %q", r.header.Get("Vary"))
			}
		})
	}
}

// TestPollRefused: bad requests get 400 with a reason.
func TestPollRefused(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{MaxSubscriptions: 2})
	for _, q := range []string{
		"",
		"channel=",
		"channel=a&channel=b&channel=c",
		"channel=a&since=1&since=2",
		"channel=a&since=x",
		"channel=a&epoch=-1",
		"channel=a&timeout=soon",
		"channel=a&timeout=-1s",
	} {
		t.Run(q, func(t *testing.T) {
			r := poll(t, n, q, nil)
			if r.status != http.StatusBadRequest || strings.TrimSpace(r.body) == "" {
				t.Fatalf("%d %q, want 400 with a reason", r.status, r.body)
			}
		})
	}
}
