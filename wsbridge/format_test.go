package wsbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/raftstore/raftstoretest"
)

// stdJSONString is encoding/json's encoding of s, without HTML escaping.
func stdJSONString(t testing.TB, s string) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func jsonStringCases() []string {
	cases := []string{
		"", "plain", `"quoted"`, `back\slash`, `\"`, "/slash/",
		"<script>&amp;</script>", // no HTML escaping
		"line\nbreak", "cr\rlf\n", "tab\there",
		"\b\f", // encoding/json writes \b and \f
		"\x00", "nul\x00in", "\x1f\x7f",
		"é", "日本語", "😀", "\uFFFD", "\uFEFF",
		"\u2028", "\u2029", "a\u2028b\u2029c", "\u2027\u202a",
		"\xff", "a\xffb", "\xc3", "\xc3\x28", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\x80\x80\x80",
	}
	var ctl strings.Builder
	for c := range 0x20 {
		ctl.WriteByte(byte(c))
	}
	return append(cases, ctl.String(), strings.Repeat("ab\"\n\xff\u2028", 100))
}

// TestAppendJSONString: appendJSONString writes what encoding/json writes
// (without HTML escaping), byte for byte, and appends to what is there.
func TestAppendJSONString(t *testing.T) {
	for _, s := range jsonStringCases() {
		t.Run(fmt.Sprintf("%.40q", s), func(t *testing.T) {
			got := string(appendJSONString([]byte("prefix:"), s))
			if want := "prefix:" + stdJSONString(t, s); got != want {
				t.Fatalf("appendJSONString(%q)\n got %s\nwant %s", s, got, want)
			}
		})
	}
}

// checkJSONString checks appendJSONString's output for s: valid JSON, one
// line, safe inside JavaScript, decoding to s (or, for invalid UTF-8, to
// what encoding/json makes of it).
func checkJSONString(t *testing.T, s string) {
	out := appendJSONString(nil, s)
	var back string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("appendJSONString(%q) = %s: %v", s, out, err)
	}
	if bytes.ContainsAny(out, "\n\r\u2028\u2029") {
		t.Fatalf("appendJSONString(%q) = %q: a raw line break", s, out)
	}
	if utf8.ValidString(s) {
		if back != s {
			t.Fatalf("appendJSONString(%q) decodes to %q", s, back)
		}
		return
	}
	var want string
	json.Unmarshal([]byte(stdJSONString(t, s)), &want)
	if back != want {
		t.Fatalf("appendJSONString(%q) decodes to %q; encoding/json's to %q", s, back, want)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStringCases() {
		f.Add(s)
	}
	f.Fuzz(checkJSONString)
}

// TestParseChannelQuery: channels with since and epoch paired in order.
func TestParseChannelQuery(t *testing.T) {
	pos := func(epoch, seq uint64) broker.Position { return broker.Position{Epoch: epoch, Seq: seq} }
	tests := []struct {
		query string
		want  []subRequest
		err   string
	}{
		{"", []subRequest{}, ""},
		{"channel=a", []subRequest{{channel: "a"}}, ""},
		{"channel=a&channel=b", []subRequest{{channel: "a"}, {channel: "b"}}, ""},
		{"channel=a&since=0", []subRequest{{channel: "a", resume: true}}, ""},
		{"channel=a&since=5&epoch=7", []subRequest{{channel: "a", from: pos(7, 5), resume: true}}, ""},
		{"channel=a&channel=b&since=5", []subRequest{{channel: "a", from: pos(0, 5), resume: true}, {channel: "b"}}, ""},
		{"channel=a&channel=b&since=&since=5&epoch=&epoch=3", []subRequest{{channel: "a"}, {channel: "b", from: pos(3, 5), resume: true}}, ""},
		{"since=5&channel=a&epoch=2&channel=b", []subRequest{{channel: "a", from: pos(2, 5), resume: true}, {channel: "b"}}, ""},
		// An epoch without since does not resume (as EPOCH without SINCE
		// in HERALD.SUBSCRIBE).
		{"channel=a&epoch=4", []subRequest{{channel: "a", from: pos(4, 0)}}, ""},
		{"channel=a%2Cb%3Dc&since=18446744073709551615", []subRequest{{channel: "a,b=c", from: pos(0, 1<<64-1), resume: true}}, ""},
		{"channel=sp+ace", []subRequest{{channel: "sp ace"}}, ""},
		{"channel=a&since=1&since=2", nil, "more since"},
		{"channel=a&epoch=1&epoch=2", nil, "more since or epoch"},
		{"since=1", nil, "more since"},
		{"channel=", nil, "empty channel"},
		{"channel=a&channel=", nil, "empty channel"},
		{"channel=a&since=x", nil, "since must be"},
		{"channel=a&since=-1", nil, "since must be"},
		{"channel=a&since=18446744073709551616", nil, "since must be"},
		{"channel=a&since=+1", nil, "since must be"},
		{"channel=a&since=1&epoch=x", nil, "epoch must be"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseChannelQuery(q)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// idChannels are channel names that an event id must escape or carry.
var idChannels = []string{
	"plain", "a,b", "k=v", "e:1:2", "with space", "plus+sign", "per%cent", "é日本😀",
	"line\nbreak", "cr\r", "=,:", "%2C", "", "a=1:2,b=3:4", "\x00\xff",
}

// TestEventIDRoundTrip: the id an SSE stream gives its events, sent back as
// Last-Event-ID, resumes every channel from the same position, whatever
// the channel names.
func TestEventIDRoundTrip(t *testing.T) {
	var subs []subRequest
	for i, ch := range idChannels {
		subs = append(subs, subRequest{channel: ch, from: broker.Position{Epoch: uint64(i*7 + 1), Seq: uint64(i * 1000)}, resume: true})
	}
	subs = append(subs, subRequest{channel: "live-only"})
	p := newPositions(subs)
	id := p.id()
	if strings.ContainsAny(id, "\n\r\x00 ") {
		t.Fatalf("id %q: a character an SSE id line cannot carry", id)
	}

	back := make([]subRequest, len(subs))
	for i, s := range subs {
		back[i] = subRequest{channel: s.channel}
	}
	applyLastEventID(back, id)
	if !reflect.DeepEqual(back, subs) {
		t.Fatalf("id %q\nresumes %+v\nwant    %+v", id, back, subs)
	}

	// Garbage is ignored, part by part.
	for _, garbage := range []string{"", ",", "===", "plain", "plain=", "plain=1", "plain=1:", "plain=:1", "plain=x:1", "plain=1:x", "%zz=1:1", "plain=1:2:3", "plain=-1:2", "plain=1:18446744073709551616"} {
		s := []subRequest{{channel: "plain"}}
		applyLastEventID(s, garbage+",other=1:1")
		if s[0].resume {
			t.Fatalf("Last-Event-ID %q resumed %+v", garbage, s[0])
		}
	}
	s := []subRequest{{channel: "plain", from: broker.Position{Epoch: 1, Seq: 1}, resume: true}}
	applyLastEventID(s, "plain=2:9,plain=3:4")
	if s[0].from != (broker.Position{Epoch: 3, Seq: 4}) {
		t.Fatalf("repeated channel: %+v, want the last position", s[0])
	}
}

// TestPositionsAppendEvent: the stream's id follows the frames of the SSE
// format, message by message and resume by resume.
func TestPositionsAppendEvent(t *testing.T) {
	subs := []subRequest{{channel: "a b"}, {channel: "c", from: broker.Position{Epoch: 2, Seq: 5}, resume: true}}
	p := newPositions(subs)
	if got := p.id(); got != "c=2:5" {
		t.Fatalf("initial id %q", got)
	}
	f := sseFormat{}
	msg := func(ch string, epoch, seq uint64) []byte {
		return f.AppendMessage(nil, broker.KindSequenced, "", &broker.Message{Channel: ch, Epoch: epoch, Seq: seq, Time: 1, Payload: []byte("x")})
	}
	steps := []struct {
		frame []byte
		id    string
		event string
	}{
		{msg("a b", 9, 1), "a+b=9:1,c=2:5", "message"},
		{f.AppendResume(nil, "c", broker.Resume{Recovered: false, Epoch: 3, From: 10, Last: 12}), "a+b=9:1,c=3:9", "resume"},
		{msg("c", 3, 10), "a+b=9:1,c=3:10", "message"},
		{f.AppendResume(nil, "a b", broker.Resume{Recovered: true, Epoch: 0, From: 0, Last: 0}), "a+b=0:0,c=3:10", "resume"},
	}
	for i, s := range steps {
		out := string(p.appendEvent(nil, s.frame))
		head := "id: " + s.id + "\nevent: " + s.event + "\ndata: "
		if !strings.HasPrefix(out, head) || !strings.HasSuffix(out, "}\n\n") || strings.Count(out, "\n") != 4 {
			t.Fatalf("step %d: %q, want %q...", i, out, head)
		}
		if data := strings.TrimSuffix(strings.TrimPrefix(out, head), "\n\n"); !json.Valid([]byte(data)) {
			t.Fatalf("step %d: data %q", i, data)
		}
	}
	if out := p.appendEvent(nil, keepAliveFrame); string(out) != ": keep-alive\n\n" {
		t.Fatalf("keep-alive: %q", out)
	}
}

// FuzzEventID: any channel names and positions survive the round trip
// through an event id, and no Last-Event-ID makes the parser fail.
func FuzzEventID(f *testing.F) {
	f.Add("a", "b,c=d:e", uint64(1), uint64(2), "x=1:2")
	f.Add("é", "", uint64(0), uint64(1<<63), "")
	f.Fuzz(func(t *testing.T, ch1, ch2 string, epoch, seq uint64, lastID string) {
		if ch1 == ch2 {
			ch2 += "'"
		}
		subs := []subRequest{
			{channel: ch1, from: broker.Position{Epoch: epoch, Seq: seq}, resume: true},
			{channel: ch2, from: broker.Position{Epoch: seq, Seq: epoch}, resume: true},
		}
		id := newPositions(subs).id()
		if strings.ContainsAny(id, "\n\r") {
			t.Fatalf("id %q has a line break", id)
		}
		back := []subRequest{{channel: ch1}, {channel: ch2}}
		applyLastEventID(back, id)
		if !reflect.DeepEqual(back, subs) {
			t.Fatalf("id %q resumes %+v, want %+v", id, back, subs)
		}
		applyLastEventID(back, lastID)
	})
}

// fuzzServer starts one real node for a fuzz target (each fuzz worker runs
// this once) and returns its WebSocket URL, and the first panic any handler
// had.
func fuzzServer(f *testing.F) (wsURL string, panicked func() any) {
	b := broker.New(broker.Config{MaxPayload: 4096})
	raftstoretest.Open(f, b, raftstore.Config{})
	srv := New(b, Config{AllowBrowserPublish: true, MaxSubscriptions: 4})
	var panics atomic.Value
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				panics.CompareAndSwap(nil, fmt.Sprint(p))
				panic(p)
			}
		}()
		srv.Handler().ServeHTTP(w, r)
	}))
	f.Cleanup(hs.Close)
	f.Cleanup(func() { srv.Shutdown(context.Background()) })
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", panics.Load
}

// fuzzExchange sends frames on a fresh connection, then a ping, and reads
// until the pong or the server's close. Every line the server sends must be
// a JSON object. It then checks the server answers a fresh connection.
func fuzzExchange(t *testing.T, wsURL string, panicked func() any, frames ...[]byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	frames = append(frames, []byte(`{"op":"ping","id":"fuzz-end"}`))
	for _, fr := range frames {
		if c.Write(ctx, websocket.MessageText, fr) != nil {
			break // closed by the server: the rest is not read
		}
	}
	for done := false; !done; {
		_, frame, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("frames %q: no pong and no close: %v", frames, err)
			}
			break // closed: a request was refused
		}
		for line := range bytes.SplitSeq(frame, []byte{'\n'}) {
			var obj map[string]any
			if err := json.Unmarshal(line, &obj); err != nil {
				t.Fatalf("frames %q: the server sent %q, which is not a JSON object line (frame %q)", frames, line, frame)
			}
			if obj["type"] == "pong" && obj["id"] == "fuzz-end" {
				done = true
			}
		}
	}
	if p := panicked(); p != nil {
		t.Fatalf("frames %q: a handler panicked: %v", frames, p)
	}

	fresh, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("after frames %q: %v", frames, err)
	}
	defer fresh.CloseNow()
	if err := fresh.Write(ctx, websocket.MessageText, []byte(`{"op":"ping","id":7}`)); err != nil {
		t.Fatal(err)
	}
	if _, pong, err := fresh.Read(ctx); err != nil || string(pong) != `{"type":"pong","id":7}` {
		t.Fatalf("after frames %q: a fresh connection got %q, %v", frames, pong, err)
	}
}

// FuzzRequest sends arbitrary bytes as a text frame to a real server, once
// whole and then split in two frames (as nats-server's parser fuzz test
// splits its input), then a ping. Properties: every line the server sends
// back is a JSON object (the protocol's framing holds whatever the
// request), the connection answers the ping or is closed, no handler
// panics, and a fresh connection then gets its pong.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"op":"ping"}`,
		`{"id":1,"op":"ping"}`,
		`{"id":"x","op":"subscribe","channel":"c"}`,
		`{"id":2,"op":"subscribe","channel":"c","since":0}`,
		`{"id":2,"op":"subscribe","channel":"c","since":3,"epoch":9}`,
		`{"op":"subscribe","pattern":"c*"}`,
		`{"op":"unsubscribe","channel":"c"}`,
		`{"op":"unsubscribe","pattern":"c*"}`,
		`{"op":"publish","channel":"c","data":"x"}`,
		`{"op":"publish","channel":"c","data":"/w==","base64":true}`,
		`{"op":"publish","channel":"c","data":"!","base64":true}`,
		`{"id":[1,{"a":null}],"op":"nope"}`,
		`{"id":{"a": [1, 2]},	"op":"ping"}`,
		`{"op":"subscribe","channel":"c","pattern":"p"}`,
		`{"op":`, `[]`, `null`, `""`, ``, "\xff",
		`{"op":"subscribe","channel":"c","since":-1}`,
		`{"op":"subscribe","channel":"c","since":1e3}`,
		`{"op":"ping","id":"\u2028"}`,
	} {
		f.Add([]byte(seed))
	}
	wsURL, panicked := fuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzExchange(t, wsURL, panicked, data)
		fuzzExchange(t, wsURL, panicked, data[:len(data)/2], data[len(data)/2:])
	})
}

// FuzzRequestID fuzzes the one part of a request the server echoes
// verbatim: the id, any JSON value. Whatever its value, the reply stays one
// JSON object on one line, with the id.
func FuzzRequestID(f *testing.F) {
	for _, seed := range []string{`1`, `-0.5e-3`, `"x"`, `"\u2028\n"`, `{"a": [1, 2]}`, `[ true, null ]`, `{}`, "\t0\r"} {
		f.Add([]byte(seed))
	}
	wsURL, panicked := fuzzServer(f)
	f.Fuzz(func(t *testing.T, id []byte) {
		fuzzExchange(t, wsURL, panicked, append(append([]byte(`{"op":"ping","id":`), id...), '}'))
	})
}
