package wsbridge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/wsbridge"
)

// sseBlock is one block of an SSE stream (the lines up to a blank line):
// an event, or a comment, or fields without data.
type sseBlock struct {
	id       string
	hasID    bool
	event    string
	data     string
	hasData  bool
	comments []string
	retry    string
}

// sseStream reads a real HTTP response as a browser's EventSource does,
// and keeps the last event id as the browser would send it back.
type sseStream struct {
	t      testing.TB
	res    *http.Response
	br     *bufio.Reader
	cancel context.CancelFunc
	lastID string
}

// openSSE starts a stream and fails unless the server answers 200 with
// text/event-stream.
func openSSE(t testing.TB, url string, h http.Header) *sseStream {
	t.Helper()
	s, res := tryOpenSSE(t, url, h)
	if s == nil {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %s %q", url, res.Status, body)
	}
	return s
}

// tryOpenSSE starts a stream; on a status other than 200 it returns nil
// and the response, body unread.
func tryOpenSSE(t testing.TB, url string, h http.Header) (*sseStream, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
	})
	if res.StatusCode != http.StatusOK {
		return nil, res
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return &sseStream{t: t, res: res, br: bufio.NewReader(res.Body), cancel: cancel}, res
}

// next reads the next block.
func (s *sseStream) next() sseBlock {
	s.t.Helper()
	var b sseBlock
	for lines := 0; ; lines++ {
		line, err := s.br.ReadString('\n')
		if err != nil {
			s.t.Fatalf("read SSE stream: %v (partial line %q)", err, line)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if lines == 0 {
				continue
			}
			if b.hasID {
				s.lastID = b.id
			}
			return b
		}
		if c, ok := strings.CutPrefix(line, ":"); ok {
			b.comments = append(b.comments, strings.TrimPrefix(c, " "))
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			b.id, b.hasID = value, true
		case "event":
			b.event = value
		case "data":
			if b.hasData {
				b.data += "\n"
			}
			b.data, b.hasData = b.data+value, true
		case "retry":
			b.retry = value
		default:
			s.t.Fatalf("unknown SSE field in %q", line)
		}
	}
}

// nextEvent reads blocks until one with data, skipping keep-alives, and
// decodes its data.
func (s *sseStream) nextEvent() (sseBlock, event) {
	s.t.Helper()
	for {
		b := s.next()
		if !b.hasData {
			if b.event != "" {
				s.t.Fatalf("event %q without data", b.event)
			}
			continue
		}
		e, err := decodeEvent([]byte(b.data))
		if err != nil {
			s.t.Fatal(err)
		}
		if e.Type != b.event {
			s.t.Fatalf("event: %s with data %s", b.event, b.data)
		}
		return b, e
	}
}

// expectResume checks the next event is a resume of channel, and returns
// its id.
func (s *sseStream) expectResume(channel string, recovered bool, epoch, from, last uint64) string {
	s.t.Helper()
	b, e := s.nextEvent()
	if e.Type != "resume" || e.Channel != channel || *e.Recovered != recovered || e.Epoch != epoch || e.From != from || e.Last != last {
		s.t.Fatalf("got %s, want resume of %q recovered %v epoch %d from %d last %d", b.data, channel, recovered, epoch, from, last)
	}
	return b.id
}

// expectMessages checks the next events are "m<seq>" of channel for seq in
// [from, to], each with an id that gives channel's position as that
// message's own. Resumes that only announce where a stream starts
// (recovered, nothing to replay; for channel, at the expected message) are
// let through.
func (s *sseStream) expectMessages(channel string, epoch, from, to uint64) {
	s.t.Helper()
	for seq := from; seq <= to; seq++ {
		b, e := s.nextEvent()
		for skip := 0; skip < 10 && e.Type == "resume" && *e.Recovered && e.From == e.Last+1 && (e.Channel != channel || e.From == seq); skip++ {
			b, e = s.nextEvent()
		}
		if e.Type != "message" || e.Channel != channel || e.Epoch != epoch || e.Seq != seq || e.Data != fmt.Sprintf("m%d", seq) {
			s.t.Fatalf("got %s, want m%d of %q", b.data, seq, channel)
		}
		if got, want := parseID(s.t, b.id)[url.QueryEscape(channel)], fmt.Sprintf("%d:%d", epoch, seq); got != want {
			s.t.Fatalf("message %d has id %q: position %q for %q, want %q", seq, b.id, got, channel, want)
		}
	}
}

// parseID splits an event id into escaped channel name -> "epoch:seq".
func parseID(t testing.TB, id string) map[string]string {
	t.Helper()
	m := map[string]string{}
	if id == "" {
		return m
	}
	for part := range strings.SplitSeq(id, ",") {
		name, pos, ok := strings.Cut(part, "=")
		if !ok {
			t.Fatalf("id %q: part %q", id, part)
		}
		m[name] = pos
	}
	return m
}

// end reads until the server ends the stream: nil if it ends cleanly.
func (s *sseStream) end() error {
	_, err := io.Copy(io.Discard, s.br)
	return err
}

// close disconnects, as a browser closing the page.
func (s *sseStream) close() {
	s.cancel()
	s.res.Body.Close()
}

// TestSSEStream: events carry "message" or "resume" and the JSON event, and
// each id holds the position of every channel of the stream, names
// escaped.
func TestSSEStream(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	const odd = "odd, name=x:y é+%"
	const oddID = "odd%2C+name%3Dx%3Ay+%C3%A9%2B%25"
	// since=0 on channels never published to: both have a position, 0:0,
	// from the start.
	query := "/sse?channel=a&channel=" + url.QueryEscape(odd) + "&since=0&since=0"
	s := openSSE(t, n.url+query, nil)
	if got := s.res.Header.Get("Cache-Control"); got != "no-cache" {
		t.Fatalf("Cache-Control %q", got)
	}
	first := s.next()
	if first.retry != "2000" || first.id != "a=0:0,"+oddID+"=0:0" || first.hasData {
		t.Fatalf("first block %+v: want retry and the starting positions", first)
	}
	for _, ch := range []string{"a", odd} {
		b, e := s.nextEvent()
		if b.event != "resume" || e.Channel != ch || !*e.Recovered || e.Epoch != 0 || e.From != 1 || e.Last != 0 || b.id != first.id {
			t.Fatalf("got id %q %s, want the resume of %q", b.id, b.data, ch)
		}
	}

	ra := n.publish(t, "a", []byte("m1"))
	ro := n.publish(t, odd, []byte("m1"))
	n.publish(t, "a", []byte("m2"))
	for _, w := range []struct {
		channel string
		seq     uint64
		id      string
	}{
		{"a", 1, fmt.Sprintf("a=%d:1,%s=0:0", ra.Epoch, oddID)},
		{odd, 1, fmt.Sprintf("a=%d:1,%s=%d:1", ra.Epoch, oddID, ro.Epoch)},
		{"a", 2, fmt.Sprintf("a=%d:2,%s=%d:1", ra.Epoch, oddID, ro.Epoch)},
	} {
		b, e := s.nextEvent()
		if b.event != "message" || e.Channel != w.channel || e.Seq != w.seq || e.Data != fmt.Sprintf("m%d", w.seq) || b.id != w.id {
			t.Fatalf("got id %q event %s data %s, want %s #%d with id %q", b.id, b.event, b.data, w.channel, w.seq, w.id)
		}
	}

	// The id is what the browser sends back; it resumes both channels.
	lastID := s.lastID
	s.close()
	n.publish(t, odd, []byte("m2"))
	n.publish(t, "a", []byte("m3"))
	s = openSSE(t, n.url+"/sse?channel=a&channel="+url.QueryEscape(odd), http.Header{"Last-Event-Id": {lastID}})
	if b := s.next(); b.id != lastID {
		t.Fatalf("first id %q, want %q", b.id, lastID)
	}
	if id := s.expectResume("a", true, ra.Epoch, 3, 3); id != fmt.Sprintf("a=%d:2,%s=%d:1", ra.Epoch, oddID, ro.Epoch) {
		t.Fatalf("resume id %q", id)
	}
	s.expectMessages("a", ra.Epoch, 3, 3)
	s.expectResume(odd, true, ro.Epoch, 2, 2)
	s.expectMessages(odd, ro.Epoch, 2, 2)
	if s.lastID != fmt.Sprintf("a=%d:3,%s=%d:2", ra.Epoch, oddID, ro.Epoch) {
		t.Fatalf("last id %q", s.lastID)
	}
}

// TestSSEIDHoldsLiveChannels: a channel subscribed without a position
// (live) is in the stream's id from the start, at the position its stream
// starts from; otherwise the id the browser sends back on reconnect
// cannot resume it.
func TestSSEIDHoldsLiveChannels(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	eb := n.publishRange(t, "lb", 1, 2)
	s := openSSE(t, n.url+"/sse?channel=la&channel=lb", nil)
	s.next()
	waitFor(t, "the stream's subscriptions", func() bool {
		return n.b.NumSub(broker.Global, "la") == 1 && n.b.NumSub(broker.Global, "lb") == 1
	})
	ea := n.publishRange(t, "la", 1, 1)
	for {
		b, e := s.nextEvent()
		if e.Type != "message" {
			continue
		}
		want := map[string]string{"la": fmt.Sprintf("%d:1", ea), "lb": fmt.Sprintf("%d:2", eb)}
		if got := parseID(t, b.id); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("la #1 has id %q, want la=%d:1,lb=%d:2: lb's place in the stream is missing", b.id, ea, eb)
		}
		return
	}
}

// TestSSEResume: disconnect, 50 messages published, reconnect with the
// last id as Last-Event-ID: exactly those 50 in order, then live ones.
func TestSSEResume(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	const ch = "r"
	s := openSSE(t, n.url+"/sse?channel="+ch, nil)
	s.next()
	waitFor(t, "the stream's subscription", func() bool { return n.b.NumSub(broker.Global, ch) == 1 })
	epoch := n.publishRange(t, ch, 1, 5)
	s.expectMessages(ch, epoch, 1, 5)
	s.close()

	n.publishRange(t, ch, 6, 55)

	s = openSSE(t, n.url+"/sse?channel="+ch, http.Header{"Last-Event-Id": {s.lastID}})
	if b := s.next(); b.id != fmt.Sprintf("%s=%d:5", ch, epoch) {
		t.Fatalf("first block %+v", b)
	}
	if id := s.expectResume(ch, true, epoch, 6, 55); id != fmt.Sprintf("%s=%d:5", ch, epoch) {
		t.Fatalf("resume id %q", id)
	}
	s.expectMessages(ch, epoch, 6, 55)
	n.publishRange(t, ch, 56, 58)
	s.expectMessages(ch, epoch, 56, 58)

	// since and epoch in the query do the same; Last-Event-ID wins over
	// them.
	s = openSSE(t, fmt.Sprintf("%s/sse?channel=%s&since=50&epoch=%d", n.url, ch, epoch), nil)
	s.next()
	s.expectResume(ch, true, epoch, 51, 58)
	s.expectMessages(ch, epoch, 51, 58)
	s = openSSE(t, fmt.Sprintf("%s/sse?channel=%s&since=1&epoch=%d", n.url, ch, epoch), http.Header{"Last-Event-Id": {fmt.Sprintf("%s=%d:57", ch, epoch)}})
	s.next()
	s.expectResume(ch, true, epoch, 58, 58)
	s.expectMessages(ch, epoch, 58, 58)
}

// TestSSEResumeChannelWithoutMessages: a stream of two channels, one of
// which has had no message yet when the browser loses the connection. The
// browser reconnects with the last id it got; what was published to the
// quiet channel in between must not be lost.
func TestSSEResumeChannelWithoutMessages(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	s := openSSE(t, n.url+"/sse?channel=busy&channel=quiet", nil)
	s.next()
	waitFor(t, "the stream's subscriptions", func() bool { return n.b.NumSub(broker.Global, "quiet") == 1 })
	eb := n.publishRange(t, "busy", 1, 1)
	s.expectMessages("busy", eb, 1, 1)
	s.close()

	eq := n.publishRange(t, "quiet", 1, 1)

	s = openSSE(t, n.url+"/sse?channel=busy&channel=quiet", http.Header{"Last-Event-Id": {s.lastID}})
	s.next()
	s.expectResume("busy", true, eb, 2, 1)
	// quiet #2 marks the point by which quiet #1 must have arrived: the
	// stream delivers a channel in order.
	n.publishRange(t, "quiet", 2, 2)
	for {
		b, e := s.nextEvent()
		switch {
		case e.Channel != "quiet":
			t.Fatalf("got %s", b.data)
		case e.Type == "resume":
		case e.Type == "message" && e.Seq == 1 && e.Epoch == eq:
			return
		default:
			t.Fatalf("got %s before quiet #1, which was published while the browser was away", b.data)
		}
	}
}

// TestSSEKeepAlive: an idle stream gets a comment every KeepAlive.
func TestSSEKeepAlive(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{KeepAlive: 10 * time.Millisecond})
	s := openSSE(t, n.url+"/sse?channel=k", nil)
	s.next()
	waitFor(t, "the stream's subscription", func() bool { return n.b.NumSub(broker.Global, "k") == 1 })
	for comments := 0; comments < 3; {
		b := s.next()
		if b.event == "resume" && comments == 0 {
			continue // where the live channel starts
		}
		if len(b.comments) != 1 || b.comments[0] != "keep-alive" || b.hasID || b.hasData {
			t.Fatalf("got %+v, want a keep-alive comment", b)
		}
		comments++
	}
	// Messages still flow between keep-alives, with their ids.
	epoch := n.publishRange(t, "k", 1, 2)
	s.expectMessages("k", epoch, 1, 2)
}

// TestSSEGap: a Last-Event-ID that history no longer reaches, or of
// another epoch, gets "event: resume" with recovered false, the id moved to
// just before the first retained message, then what is retained.
func TestSSEGap(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{Retention: &raftstore.Policy{Rules: []raftstore.Rule{{Pattern: "*", MaxCount: 10}}}}, wsbridge.Config{})
	for _, tt := range []struct {
		name   string
		lastID func(h broker.History) string
	}{
		{"too old", func(h broker.History) string { return fmt.Sprintf("g=%d:3", h.Epoch) }},
		{"other epoch", func(h broker.History) string { return fmt.Sprintf("g=%d:%d", h.Epoch+7, h.Last-1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch := "g"
			h := n.history(t, ch)
			if h.Epoch == 0 {
				h = n.fillTrimmed(t, ch, 30, 10)
			}
			s := openSSE(t, n.url+"/sse?channel="+ch, http.Header{"Last-Event-Id": {tt.lastID(h)}})
			s.next()
			if id := s.expectResume(ch, false, h.Epoch, h.First, h.Last); id != fmt.Sprintf("%s=%d:%d", ch, h.Epoch, h.First-1) {
				t.Fatalf("resume id %q", id)
			}
			s.expectMessages(ch, h.Epoch, h.First, h.Last)
		})
	}
}

// TestSSEResumeAcrossCluster: a stream on node A, messages published on
// node B, the browser reconnects to node C with its Last-Event-ID: every
// message it missed, in order.
func TestSSEResumeAcrossCluster(t *testing.T) {
	nodes := startCluster(t, 3, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	a, b, c := nodes[0], nodes[1], nodes[2]
	const ch = "sse-cluster"
	s := openSSE(t, a.url+"/sse?channel="+ch, nil)
	s.next()
	waitFor(t, "the stream's subscription", func() bool { return a.b.NumSub(broker.Global, ch) == 1 })
	epoch := b.publishRange(t, ch, 1, 5)
	s.expectMessages(ch, epoch, 1, 5)
	s.close()

	b.publishRange(t, ch, 6, 55)

	s = openSSE(t, c.url+"/sse?channel="+ch, http.Header{"Last-Event-Id": {s.lastID}})
	s.next()
	_, r := s.nextEvent()
	if r.Type != "resume" || !*r.Recovered || r.Epoch != epoch || r.From != 6 {
		t.Fatalf("resume on node C: %s", r.raw)
	}
	s.expectMessages(ch, epoch, 6, 55)
	a.publishRange(t, ch, 56, 56)
	s.expectMessages(ch, epoch, 56, 56)
}

// TestSSERefused: requests the server turns down before streaming.
func TestSSERefused(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{MaxSubscriptions: 2, AllowedOrigins: []string{"app.example"}})
	for _, tt := range []struct {
		name   string
		query  string
		origin string
		status int
	}{
		{"no channel", "", "", http.StatusBadRequest},
		{"empty channel", "channel=", "", http.StatusBadRequest},
		{"too many channels", "channel=a&channel=b&channel=c", "", http.StatusBadRequest},
		{"bad since", "channel=a&since=x", "", http.StatusBadRequest},
		{"foreign origin", "channel=a", "https://evil.example", http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			s, res := tryOpenSSE(t, n.url+"/sse?"+tt.query, h)
			if s != nil || res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
		})
	}
	t.Run("allowed origin", func(t *testing.T) {
		s := openSSE(t, n.url+"/sse?channel=a&channel=b", http.Header{"Origin": {"https://app.example"}})
		if got := s.res.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
			t.Fatalf("Access-Control-Allow-Origin %q", got)
		}
		s.next()
	})
	t.Run("garbage Last-Event-ID is ignored", func(t *testing.T) {
		s := openSSE(t, n.url+"/sse?channel=lg", http.Header{"Last-Event-Id": {"lg=x:1,=,lg,lg=1:y,%zz=1:1"}})
		if b := s.next(); b.id != "" {
			t.Fatalf("first id %q", b.id)
		}
		waitFor(t, "the stream's subscription", func() bool { return n.b.NumSub(broker.Global, "lg") == 1 })
		epoch := n.publishRange(t, "lg", 1, 1)
		s.expectMessages("lg", epoch, 1, 1)
	})
	t.Run("stream ends when the client goes", func(t *testing.T) {
		s := openSSE(t, n.url+"/sse?channel=bye", nil)
		s.next()
		waitFor(t, "the stream's subscription", func() bool { return n.b.NumSub(broker.Global, "bye") == 1 })
		s.close()
		waitFor(t, "the subscription to go", func() bool { return n.b.NumSub(broker.Global, "bye") == 0 })
	})
}

// TestSSEShutdown: Shutdown ends SSE streams cleanly (the browser
// reconnects elsewhere with its Last-Event-ID) and returns.
func TestSSEShutdown(t *testing.T) {
	n, served := startServed(t, wsbridge.Config{})
	s1 := openSSE(t, n.url+"/sse?channel=x", nil)
	s2 := openSSE(t, n.url+"/sse?channel=y&since=0", nil)
	s1.next()
	s2.next()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for i, s := range []*sseStream{s1, s2} {
		if err := s.end(); err != nil {
			t.Fatalf("stream %d: %v, want its end", i, err)
		}
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
