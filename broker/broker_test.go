package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/raftstore/raftstoretest"
)

// waitLimit bounds every wait in these tests; reaching it is a failure, never
// a way to let time pass.
const waitLimit = 30 * time.Second

// textFormat is a broker.Format that encodes deliveries as readable text:
//
//	msg|<kind>|<name>|<channel>|<epoch>|<seq>|<payload>
//	resume|<channel>|<recovered>|<epoch>|<from>|<last>
//
// It counts the messages it encodes, so tests can see the frame cache work.
type textFormat struct {
	encodes atomic.Int64
}

var kindNames = [...]string{
	broker.KindChannel:   "channel",
	broker.KindPattern:   "pattern",
	broker.KindShard:     "shard",
	broker.KindSequenced: "sequenced",
}

func (f *textFormat) AppendMessage(dst []byte, k broker.Kind, name string, m *broker.Message) []byte {
	f.encodes.Add(1)
	return fmt.Appendf(dst, "msg|%s|%s|%s|%d|%d|%s", kindNames[k], name, m.Channel, m.Epoch, m.Seq, m.Payload)
}

func (f *textFormat) AppendResume(dst []byte, channel string, r broker.Resume) []byte {
	return fmt.Appendf(dst, "resume|%s|%t|%d|%d|%d", channel, r.Recovered, r.Epoch, r.From, r.Last)
}

// frame is a parsed textFormat frame.
type frame struct {
	resume    bool
	kind      string
	name      string
	channel   string
	epoch     uint64
	seq       uint64
	payload   string
	recovered bool
	from      uint64
	last      uint64
}

func parseFrame(t testing.TB, s string) frame {
	t.Helper()
	num := func(v string) uint64 {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("frame %q: bad number %q", s, v)
		}
		return n
	}
	if rest, ok := strings.CutPrefix(s, "resume|"); ok {
		p := strings.Split(rest, "|")
		if len(p) != 5 {
			t.Fatalf("bad resume frame %q", s)
		}
		return frame{resume: true, channel: p[0], recovered: p[1] == "true", epoch: num(p[2]), from: num(p[3]), last: num(p[4])}
	}
	rest, ok := strings.CutPrefix(s, "msg|")
	p := strings.SplitN(rest, "|", 6)
	if !ok || len(p) != 6 {
		t.Fatalf("bad frame %q", s)
	}
	return frame{kind: p[0], name: p[1], channel: p[2], epoch: num(p[3]), seq: num(p[4]), payload: p[5]}
}

func (f frame) String() string {
	if f.resume {
		return fmt.Sprintf("resume(%s recovered=%t epoch=%d from=%d last=%d)", f.channel, f.recovered, f.epoch, f.from, f.last)
	}
	return fmt.Sprintf("msg(%s %s %d/%d)", f.kind, f.channel, f.epoch, f.seq)
}

func msgText(kind, name, channel string, r broker.Receipt, payload string) string {
	return fmt.Sprintf("msg|%s|%s|%s|%d|%d|%s", kind, name, channel, r.Epoch, r.Seq, payload)
}

func resumeText(channel string, r broker.Resume) string {
	return string((&textFormat{}).AppendResume(nil, channel, r))
}

// newBroker returns a broker on a real single-node Raft-on-Pebble store.
func newBroker(t *testing.T, cfg broker.Config, scfg raftstore.Config) (*broker.Broker, *raftstore.Store) {
	t.Helper()
	b := broker.New(cfg)
	return b, raftstoretest.Open(t, b, scfg)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func publishErr(ctx context.Context, b *broker.Broker, ns broker.Namespace, channel string, payloads ...string) ([]broker.Receipt, error) {
	msgs := make([]broker.Publish, len(payloads))
	for i, p := range payloads {
		msgs[i] = broker.Publish{Namespace: ns, Channel: channel, Payload: []byte(p)}
	}
	return b.Publish(ctx, msgs)
}

// publish commits payloads to channel; when it returns, they have been
// delivered to this node's subscribers.
func publish(t *testing.T, b *broker.Broker, ns broker.Namespace, channel string, payloads ...string) []broker.Receipt {
	t.Helper()
	rs, err := publishErr(testCtx(t), b, ns, channel, payloads...)
	if err != nil {
		t.Fatalf("publish to %q: %v", channel, err)
	}
	return rs
}

func numbered(prefix string, n int) []string {
	p := make([]string, n)
	for i := range p {
		p[i] = prefix + strconv.Itoa(i+1)
	}
	return p
}

// queued takes what is queued in c's outbox without blocking. After a
// publish returns, everything it delivers to c is queued.
func queued(t *testing.T, c *broker.Client) []string {
	t.Helper()
	o := c.Outbox()
	if n, _ := o.Len(); n == 0 {
		if err := o.Err(); err != nil {
			t.Fatalf("client %d outbox failed: %v", c.ID(), err)
		}
		return nil
	}
	frames, err := o.Next(nil, nil)
	if err != nil {
		t.Fatalf("client %d: Next: %v", c.ID(), err)
	}
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = string(f)
	}
	return out
}

func expectQueued(t *testing.T, who string, c *broker.Client, want ...string) {
	t.Helper()
	if got := queued(t, c); !slices.Equal(got, want) {
		t.Fatalf("%s received\n  %q\nwant\n  %q", who, got, want)
	}
}

// reader drains a client's outbox from its own goroutine, as a transport's
// writer does, and keeps every frame.
type reader struct {
	c      *broker.Client
	mu     sync.Mutex
	frames []string
	err    error
	notify chan struct{}
	done   chan struct{}
	exited chan struct{}
}

func startReader(t *testing.T, c *broker.Client) *reader {
	r := &reader{c: c, notify: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(r.exited)
		var buf [][]byte
		for {
			var err error
			buf, err = c.Outbox().Next(r.done, buf[:0])
			r.mu.Lock()
			for _, f := range buf {
				r.frames = append(r.frames, string(f))
			}
			r.err = err
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(r.stop)
	return r
}

// stop ends the reader goroutine. Frames still queued stay in the outbox.
func (r *reader) stop() {
	select {
	case <-r.done:
	default:
		close(r.done)
	}
	<-r.exited
}

func (r *reader) snapshot() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.frames), r.err
}

// waitFor waits until cond holds for the frames read so far, the reader
// stops, or waitLimit passes, and returns the frames.
func (r *reader) waitFor(t *testing.T, what string, cond func([]string) bool) []string {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for {
		frames, err := r.snapshot()
		if cond(frames) {
			return frames
		}
		if err != nil {
			t.Fatalf("client %d: waiting for %s: outbox ended with %v after %d frames: %q", r.c.ID(), what, err, len(frames), tail(frames))
		}
		select {
		case <-r.notify:
		case <-timer.C:
			t.Fatalf("client %d: no %s within %s; have %d frames: %q", r.c.ID(), what, waitLimit, len(frames), tail(frames))
		}
	}
}

func tail(frames []string) []string {
	return frames[max(0, len(frames)-10):]
}

// untilSeq returns a condition that holds once a message frame with seq has
// been read, or far more frames than could lead to it.
func untilSeq(t *testing.T, seq uint64) func([]string) bool {
	return func(frames []string) bool {
		if uint64(len(frames)) > 2*seq+10 {
			return true
		}
		for i := len(frames) - 1; i >= 0; i-- {
			if f := parseFrame(t, frames[i]); !f.resume {
				return f.seq >= seq
			}
		}
		return false
	}
}

// runCatchUp runs cu on its own goroutine and returns its result channel.
func runCatchUp(ctx context.Context, cu *broker.CatchUp) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- cu.Run(ctx) }()
	return ch
}

func waitRun(t *testing.T, ch <-chan error) error {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case err := <-ch:
		return err
	case <-timer.C:
		t.Fatalf("CatchUp.Run did not return within %s", waitLimit)
		return nil
	}
}

// checkStream checks a sequenced subscriber's frames: first a Resume equal
// to want, then every message of epoch from want.From to last, in order,
// each once, and nothing else.
func checkStream(t *testing.T, frames []string, channel string, want broker.Resume, epoch, last uint64) {
	t.Helper()
	if len(frames) == 0 {
		t.Fatalf("no frames; want %s", resumeText(channel, want))
	}
	if frames[0] != resumeText(channel, want) {
		t.Fatalf("first frame %q, want %q", frames[0], resumeText(channel, want))
	}
	next := want.From
	for i, s := range frames[1:] {
		f := parseFrame(t, s)
		if f.resume || f.kind != "sequenced" || f.channel != channel || f.epoch != epoch || f.seq != next {
			t.Fatalf("frame %d is %v, want msg(sequenced %s %d/%d): gap, duplicate or stray frame; frames around it: %q",
				i+1, f, channel, epoch, next, frames[max(0, i-3):min(len(frames), i+5)])
		}
		next++
	}
	if next != last+1 {
		t.Fatalf("stream ends at %d, want %d", next-1, last)
	}
}

// waitRetention waits until the store's retention policy keeps maxCount
// messages per channel. A leader proposes its configured policy after it is
// elected; until that commits the default policy applies. It publishes to a
// channel of its own until a publish is retained the new way: with
// maxCount below the default count, trimmed to maxCount; above it, kept
// beyond the default count.
func waitRetention(t *testing.T, b *broker.Broker, maxCount int) {
	t.Helper()
	const probe = "retention-probe"
	if maxCount == raftstore.DefaultRetainCount {
		t.Fatal("waitRetention cannot tell the default count from itself")
	}
	n := min(maxCount, raftstore.DefaultRetainCount) + 1
	publish(t, b, broker.Global, probe, numbered("p", n)...)
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for {
		info, err := b.Log().Info(broker.Global, probe)
		if err != nil {
			t.Fatal(err)
		}
		if maxCount < raftstore.DefaultRetainCount && info.Retained == maxCount ||
			maxCount > raftstore.DefaultRetainCount && info.Retained > raftstore.DefaultRetainCount {
			return
		}
		select {
		case <-timer.C:
			t.Fatalf("retention of %d not in force within %s: %d retained", maxCount, waitLimit, info.Retained)
		default:
		}
		publish(t, b, broker.Global, probe, "p")
	}
}

func retainPolicy(maxCount int) *raftstore.Policy {
	return &raftstore.Policy{Rules: []raftstore.Rule{{Pattern: "*", MaxCount: maxCount}}}
}

func TestRouting(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	f := &textFormat{}
	ch := b.NewClient(f)
	ch.Subscribe(broker.KindChannel, "news")
	pat := b.NewClient(f)
	pat.Subscribe(broker.KindPattern, "n*")
	both := b.NewClient(f)
	both.Subscribe(broker.KindChannel, "news")
	both.Subscribe(broker.KindPattern, "n*")
	all := b.NewClient(f)
	all.Subscribe(broker.KindPattern, "*")
	shard := b.NewClient(f)
	shard.Subscribe(broker.KindShard, "news")
	other := b.NewClient(f)
	other.Subscribe(broker.KindChannel, "other")
	clients := map[string]*broker.Client{"channel": ch, "pattern": pat, "both": both, "all": all, "shard": shard, "other": other}

	steps := []struct {
		ns        broker.Namespace
		channel   string
		receivers int
		want      map[string][]string // by client: kind|name|channel of each frame
	}{
		{
			// A client on the channel and on a matching pattern counts
			// twice, as in Redis.
			ns: broker.Global, channel: "news", receivers: 5,
			want: map[string][]string{
				"channel": {"channel||news"},
				"pattern": {"pattern|n*|news"},
				"both":    {"channel||news", "pattern|n*|news"},
				"all":     {"pattern|*|news"},
			},
		},
		{
			// Shard channels are a namespace of their own, and patterns
			// never match them.
			ns: broker.Shard, channel: "news", receivers: 1,
			want: map[string][]string{"shard": {"shard||news"}},
		},
		{
			ns: broker.Global, channel: "other", receivers: 2,
			want: map[string][]string{"other": {"channel||other"}, "all": {"pattern|*|other"}},
		},
		{
			ns: broker.Shard, channel: "other", receivers: 0,
		},
		{
			ns: broker.Global, channel: "nobody", receivers: 3,
			want: map[string][]string{
				"pattern": {"pattern|n*|nobody"},
				"both":    {"pattern|n*|nobody"},
				"all":     {"pattern|*|nobody"},
			},
		},
	}
	for i, st := range steps {
		payload := "p" + strconv.Itoa(i)
		rs := publish(t, b, st.ns, st.channel, payload)
		if rs[0].Receivers != st.receivers {
			t.Errorf("step %d: publish to %q reached %d, want %d", i, st.channel, rs[0].Receivers, st.receivers)
		}
		for name, c := range clients {
			var want []string
			for _, w := range st.want[name] {
				kind, rest, _ := strings.Cut(w, "|")
				pname, channel, _ := strings.Cut(rest, "|")
				want = append(want, msgText(kind, pname, channel, rs[0], payload))
			}
			expectQueued(t, fmt.Sprintf("step %d: client %q", i, name), c, want...)
		}
	}
}

func TestIntrospection(t *testing.T) {
	b := broker.New(broker.Config{})
	f := &textFormat{}
	a := b.NewClient(f)
	for _, name := range []string{"zeta", "alpha", "news.1", "news.2"} {
		a.Subscribe(broker.KindChannel, name)
	}
	a.Subscribe(broker.KindPattern, "news.*")
	a.Subscribe(broker.KindPattern, "a*")
	a.Subscribe(broker.KindShard, "s1")
	a.Subscribe(broker.KindSequenced, "seq")
	c := b.NewClient(f)
	c.Subscribe(broker.KindChannel, "news.1")
	c.Subscribe(broker.KindPattern, "news.*") // same pattern: NUMPAT counts it once
	c.Subscribe(broker.KindShard, "s1")
	c.Subscribe(broker.KindShard, "alpha") // shard namespace: not a global channel

	if got, want := b.Channels(broker.Global, ""), []string{"alpha", "news.1", "news.2", "seq", "zeta"}; !slices.Equal(got, want) {
		t.Errorf("Channels(Global, \"\") = %q, want %q", got, want)
	}
	if got, want := b.Channels(broker.Global, "news.*"), []string{"news.1", "news.2"}; !slices.Equal(got, want) {
		t.Errorf("Channels(Global, news.*) = %q, want %q", got, want)
	}
	if got := b.Channels(broker.Global, "nomatch*"); len(got) != 0 {
		t.Errorf("Channels(Global, nomatch*) = %q, want none", got)
	}
	if got, want := b.Channels(broker.Shard, ""), []string{"alpha", "s1"}; !slices.Equal(got, want) {
		t.Errorf("Channels(Shard, \"\") = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		ns      broker.Namespace
		channel string
		want    int
	}{
		{broker.Global, "news.1", 2},
		{broker.Global, "news.2", 1},
		{broker.Global, "alpha", 1},
		{broker.Shard, "alpha", 1},
		{broker.Global, "s1", 0},
		{broker.Shard, "s1", 2},
		{broker.Global, "seq", 1},
		{broker.Global, "nobody", 0},
	} {
		if got := b.NumSub(tc.ns, tc.channel); got != tc.want {
			t.Errorf("NumSub(%d, %q) = %d, want %d", tc.ns, tc.channel, got, tc.want)
		}
	}
	if got := b.NumPat(); got != 2 {
		t.Errorf("NumPat = %d, want 2", got)
	}
	if got, want := a.Subscriptions(broker.KindChannel), []string{"alpha", "news.1", "news.2", "zeta"}; !slices.Equal(got, want) {
		t.Errorf("Subscriptions(KindChannel) = %q, want %q", got, want)
	}
	if got, want := a.Subscriptions(broker.KindPattern), []string{"a*", "news.*"}; !slices.Equal(got, want) {
		t.Errorf("Subscriptions(KindPattern) = %q, want %q", got, want)
	}
	if got := a.Count(broker.KindChannel, broker.KindPattern, broker.KindShard, broker.KindSequenced); got != 8 {
		t.Errorf("Count(all kinds) = %d, want 8", got)
	}
	if got := a.Count(broker.KindShard); got != 1 {
		t.Errorf("Count(KindShard) = %d, want 1", got)
	}
	st := b.Stats()
	if st.Clients != 2 || st.Channels != 5 || st.ShardChannels != 2 || st.Patterns != 2 {
		t.Errorf("Stats = %+v, want 2 clients, 5 channels, 2 shard channels, 2 patterns", st)
	}

	c.Unsubscribe(broker.KindPattern, "news.*")
	if got := b.NumPat(); got != 2 {
		t.Errorf("NumPat after one of two clients left news.* = %d, want 2", got)
	}
	a.Unsubscribe(broker.KindPattern, "news.*")
	if got := b.NumPat(); got != 1 {
		t.Errorf("NumPat after both left news.* = %d, want 1", got)
	}
	c.Unsubscribe(broker.KindChannel, "news.1")
	if got := b.NumSub(broker.Global, "news.1"); got != 1 {
		t.Errorf("NumSub(news.1) = %d, want 1", got)
	}
}

func TestSubscribeTwice(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	c := b.NewClient(&textFormat{})
	for _, k := range []broker.Kind{broker.KindChannel, broker.KindPattern, broker.KindShard, broker.KindSequenced} {
		if !c.Subscribe(k, "twice") {
			t.Fatalf("first Subscribe(%s) = false", kindNames[k])
		}
		if c.Subscribe(k, "twice") {
			t.Fatalf("second Subscribe(%s) = true", kindNames[k])
		}
		if !c.Has(k, "twice") || c.Count(k) != 1 || !slices.Equal(c.Subscriptions(k), []string{"twice"}) {
			t.Fatalf("kind %s: Has=%v Count=%d Subscriptions=%q, want one subscription", kindNames[k], c.Has(k, "twice"), c.Count(k), c.Subscriptions(k))
		}
	}
	if cu := c.SubscribeFrom("twice", broker.Position{}); cu != nil {
		t.Fatal("SubscribeFrom on a channel with a sequenced subscription returned a CatchUp")
	}
	if got := b.NumSub(broker.Global, "twice"); got != 2 { // channel + sequenced
		t.Fatalf("NumSub = %d, want 2", got)
	}
	rs := publish(t, b, broker.Global, "twice", "x")
	if rs[0].Receivers != 3 {
		t.Fatalf("receivers = %d, want 3 (channel, pattern, sequenced)", rs[0].Receivers)
	}
	expectQueued(t, "client", c,
		msgText("channel", "", "twice", rs[0], "x"),
		msgText("sequenced", "", "twice", rs[0], "x"),
		msgText("pattern", "twice", "twice", rs[0], "x"))

	if !c.Unsubscribe(broker.KindChannel, "twice") || c.Unsubscribe(broker.KindChannel, "twice") {
		t.Fatal("Unsubscribe should report true once, then false")
	}
	if c.Has(broker.KindChannel, "twice") || c.Count(broker.KindChannel) != 0 {
		t.Fatal("channel subscription still reported after Unsubscribe")
	}
	if !c.Has(broker.KindPattern, "twice") {
		t.Fatal("Unsubscribe of the channel removed the pattern of the same name")
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	stay := b.NewClient(&textFormat{})
	stay.Subscribe(broker.KindChannel, "u")
	for _, s := range []struct {
		k    broker.Kind
		name string
		ns   broker.Namespace
	}{
		{broker.KindChannel, "u", broker.Global},
		{broker.KindPattern, "u*", broker.Global},
		{broker.KindShard, "u", broker.Shard},
		{broker.KindSequenced, "u", broker.Global},
	} {
		t.Run(kindNames[s.k], func(t *testing.T) {
			c := b.NewClient(&textFormat{})
			c.Subscribe(s.k, s.name)
			publish(t, b, s.ns, "u", "before")
			if got := queued(t, c); len(got) != 1 {
				t.Fatalf("before unsubscribing: %q, want 1 frame", got)
			}
			queued(t, stay)
			if !c.Unsubscribe(s.k, s.name) {
				t.Fatal("Unsubscribe = false")
			}
			rs := publish(t, b, s.ns, "u", "after")
			expectQueued(t, "unsubscribed client", c)
			want := 0
			if s.ns == broker.Global {
				want = 1
				expectQueued(t, "other client", stay, msgText("channel", "", "u", rs[0], "after"))
			}
			if rs[0].Receivers != want {
				t.Fatalf("receivers = %d, want %d", rs[0].Receivers, want)
			}
		})
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	f := &textFormat{}
	stay := b.NewClient(f)
	stay.Subscribe(broker.KindChannel, "c1")
	c := b.NewClient(f)
	c.Subscribe(broker.KindChannel, "c1")
	c.Subscribe(broker.KindChannel, "c2")
	c.Subscribe(broker.KindPattern, "c*")
	c.Subscribe(broker.KindShard, "c1")
	c.Subscribe(broker.KindSequenced, "c3")
	if cu := c.SubscribeFrom("c4", broker.Position{}); cu == nil {
		t.Fatal("SubscribeFrom returned nil")
	}
	if st := b.Stats(); st.Clients != 2 || st.Channels != 4 || st.ShardChannels != 1 || st.Patterns != 1 {
		t.Fatalf("Stats before Close = %+v", st)
	}
	c.Close()
	c.Close() // idempotent
	if st := b.Stats(); st.Clients != 1 || st.Channels != 1 || st.ShardChannels != 0 || st.Patterns != 0 {
		t.Fatalf("Stats after Close = %+v, want 1 client on 1 channel", st)
	}
	if got := b.Channels(broker.Global, ""); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("Channels = %q, want [c1]", got)
	}
	if n := b.NumSub(broker.Global, "c1"); n != 1 {
		t.Fatalf("NumSub(c1) = %d, want 1", n)
	}
	for k := broker.KindChannel; k <= broker.KindSequenced; k++ {
		if n := c.Count(k); n != 0 || len(c.Subscriptions(k)) != 0 {
			t.Fatalf("closed client still has %d subscriptions of kind %s", n, kindNames[k])
		}
	}
	if err := c.Outbox().Err(); err != broker.ErrClosed {
		t.Fatalf("outbox Err = %v, want ErrClosed", err)
	}
	if c.Subscribe(broker.KindChannel, "c9") || c.Has(broker.KindChannel, "c9") || b.NumSub(broker.Global, "c9") != 0 {
		t.Fatal("Subscribe on a closed client took effect")
	}
	if cu := c.SubscribeFrom("c9", broker.Position{}); cu != nil {
		t.Fatal("SubscribeFrom on a closed client returned a CatchUp")
	}
	for _, ch := range []string{"c1", "c2", "c3", "c4"} {
		rs := publish(t, b, broker.Global, ch, "x")
		want := 0
		if ch == "c1" {
			want = 1
		}
		if rs[0].Receivers != want {
			t.Fatalf("publish to %s reached %d, want %d", ch, rs[0].Receivers, want)
		}
	}
}

func TestStats(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	f := &textFormat{}
	c1 := b.NewClient(f)
	c1.Subscribe(broker.KindChannel, "s")
	c1.Subscribe(broker.KindPattern, "*")
	c2 := b.NewClient(f)
	c2.Subscribe(broker.KindShard, "s")
	publish(t, b, broker.Global, "s", "a", "b") // 2 messages x 2 receivers
	publish(t, b, broker.Shard, "s", "c")       // 1 receiver
	publish(t, b, broker.Global, "nobody", "d") // the pattern
	publish(t, b, broker.Shard, "nobody", "e")  // none
	_, bytes1 := c1.Outbox().Len()
	_, bytes2 := c2.Outbox().Len()
	want := broker.Stats{Clients: 2, Channels: 1, ShardChannels: 1, Patterns: 1, Subscriptions: 3,
		Accepted: 5, Published: 5, Delivered: 6, OutboxFrames: 6, OutboxBytes: int64(bytes1 + bytes2)}
	if st := b.Stats(); st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	// A closed client's outbox no longer counts.
	c2.Close()
	want.Clients, want.ShardChannels, want.Subscriptions = 1, 0, 2
	want.OutboxFrames, want.OutboxBytes = 5, int64(bytes1)
	if st := b.Stats(); st != want {
		t.Fatalf("Stats after a close = %+v, want %+v", st, want)
	}
}

// TestStatsDropped: a slow consumer's queued frames, and those pushed to it
// after it failed, count as dropped.
func TestStatsDropped(t *testing.T) {
	b, _ := newBroker(t, broker.Config{Outbox: broker.OutboxLimits{MaxFrames: 3}}, raftstore.Config{})
	c := b.NewClient(&textFormat{})
	c.Subscribe(broker.KindChannel, "s")
	publish(t, b, broker.Global, "s", "1", "2", "3") // queued, not read
	publish(t, b, broker.Global, "s", "4")           // the fourth fails the outbox: 4 dropped
	publish(t, b, broker.Global, "s", "5")           // pushed to a failed outbox: dropped
	st := b.Stats()
	if st.SlowDisconnect != 1 || st.Dropped != 5 || st.OutboxFrames != 0 {
		t.Fatalf("Stats = %+v, want 1 slow disconnect, 5 dropped, nothing queued", st)
	}
}

// A message is encoded once per format and subscription name; every
// receiver gets the same bytes.
func TestEncodeOnce(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	f1, f2 := &textFormat{}, &textFormat{}
	group := func(n int, f broker.Format, k broker.Kind, name string) []*broker.Client {
		cs := make([]*broker.Client, n)
		for i := range cs {
			cs[i] = b.NewClient(f)
			cs[i].Subscribe(k, name)
		}
		return cs
	}
	groups := []struct {
		name    string
		clients []*broker.Client
	}{
		{"channel/f1", group(100, f1, broker.KindChannel, "fan")},
		{"channel/f2", group(3, f2, broker.KindChannel, "fan")},
		{"pattern f*/f1", group(10, f1, broker.KindPattern, "f*")},
		{"pattern fa*/f1", group(10, f1, broker.KindPattern, "fa*")},
		{"sequenced/f1", group(5, f1, broker.KindSequenced, "fan")},
	}
	rs := publish(t, b, broker.Global, "fan", "payload")
	if want := 100 + 3 + 10 + 10 + 5; rs[0].Receivers != want {
		t.Fatalf("receivers = %d, want %d", rs[0].Receivers, want)
	}
	seen := make(map[*byte]string) // first byte of each distinct frame -> group
	for _, g := range groups {
		var first *byte
		for i, c := range g.clients {
			frames, err := c.Outbox().Next(nil, nil)
			if err != nil || len(frames) != 1 {
				t.Fatalf("%s client %d: %d frames, %v", g.name, i, len(frames), err)
			}
			p := &frames[0][0]
			if i == 0 {
				first = p
				if other, dup := seen[p]; dup {
					t.Fatalf("%s shares its frame with %s", g.name, other)
				}
				seen[p] = g.name
			} else if p != first {
				t.Fatalf("%s client %d got its own copy of the frame, not the shared bytes", g.name, i)
			}
		}
	}
	// f1: the channel, two patterns, the sequenced kind; f2: the channel.
	if n := f1.encodes.Load(); n != 4 {
		t.Errorf("format 1 encoded %d times, want 4", n)
	}
	if n := f2.encodes.Load(); n != 1 {
		t.Errorf("format 2 encoded %d times, want 1", n)
	}

	// A client that switches format gets the other format's shared bytes.
	sw := groups[0].clients[0]
	sw.SetFormat(f2)
	publish(t, b, broker.Global, "fan", "again")
	a, _ := groups[1].clients[0].Outbox().Next(nil, nil)
	c, _ := sw.Outbox().Next(nil, nil)
	if &a[0][0] != &c[0][0] {
		t.Error("after SetFormat the client does not share the new format's frame")
	}
	if n := f2.encodes.Load(); n != 2 {
		t.Errorf("format 2 encoded %d times, want 2", n)
	}
}

func TestPublishMaxPayload(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   broker.Config
		limit int
	}{
		{"Configured", broker.Config{MaxPayload: 16}, 16},
		{"Default", broker.Config{}, broker.DefaultMaxPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newBroker(t, tc.cfg, raftstore.Config{})
			if got := b.Config().MaxPayload; got != tc.limit {
				t.Fatalf("Config().MaxPayload = %d, want %d", got, tc.limit)
			}
			at := strings.Repeat("x", tc.limit)
			rs := publish(t, b, broker.Global, "big", at)
			if rs[0].Seq != 1 {
				t.Fatalf("receipt %+v", rs[0])
			}
			ctx := testCtx(t)
			if _, err := publishErr(ctx, b, broker.Global, "big", at+"x"); !errors.Is(err, broker.ErrPayloadTooLarge) {
				t.Fatalf("publish of %d bytes: %v, want ErrPayloadTooLarge", tc.limit+1, err)
			}
			// One payload over the limit rejects the whole batch.
			if _, err := publishErr(ctx, b, broker.Global, "big", "ok", at+"x"); !errors.Is(err, broker.ErrPayloadTooLarge) {
				t.Fatalf("batch with an oversized payload: %v, want ErrPayloadTooLarge", err)
			}
			info, err := b.Log().Info(broker.Global, "big")
			if err != nil || info.LastSeq != 1 {
				t.Fatalf("Info = %+v, %v; want only the first publish committed", info, err)
			}
		})
	}
}

func TestPublishWithoutLog(t *testing.T) {
	b := broker.New(broker.Config{})
	if _, err := publishErr(t.Context(), b, broker.Global, "x", "y"); !errors.Is(err, broker.ErrNoLog) {
		t.Fatalf("Publish = %v, want ErrNoLog", err)
	}
	cu := b.NewClient(&textFormat{}).SubscribeFrom("x", broker.Position{})
	if err := cu.Run(t.Context()); !errors.Is(err, broker.ErrNoLog) {
		t.Fatalf("Run = %v, want ErrNoLog", err)
	}
}

// Client methods are documented as safe to call concurrently. A Subscribe
// racing a Close (or an Unsubscribe of the same name) must leave the
// registry consistent: the closed client subscribed to nothing, and other
// clients' subscriptions untouched. The window is narrow, so this loops; the
// race detector's scheduling widens it enough to catch a broken ordering
// within a few thousand rounds. It delivers directly because it checks
// the registry alone, many thousand times.
func TestClientConcurrentSubscribeAndClose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		other func(c *broker.Client)
	}{
		{"Close", (*broker.Client).Close},
		{"Unsubscribe", func(c *broker.Client) { c.Unsubscribe(broker.KindChannel, "x") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := broker.New(broker.Config{})
			f := &textFormat{}
			stay := b.NewClient(f)
			stay.Subscribe(broker.KindChannel, "x")
			const rounds = 20000
			for i := range rounds {
				c := b.NewClient(f)
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); c.Subscribe(broker.KindChannel, "x") }()
				go func() { defer wg.Done(); tc.other(c) }()
				wg.Wait()
				want := 1
				if c.Has(broker.KindChannel, "x") {
					want = 2
				}
				if n := b.NumSub(broker.Global, "x"); n != want {
					t.Fatalf("round %d: NumSub = %d, want %d (client has subscription: %v)", i, n, want, want == 2)
				}
				deliver(b, &broker.Message{Channel: "x", Payload: []byte("p"), Epoch: 1, Seq: uint64(i + 1)})
				if n, _ := stay.Outbox().Len(); n != 1 {
					t.Fatalf("round %d: another client's subscription was removed by the race", i)
				}
				stay.Outbox().Next(nil, nil)
				c.Close()
			}
		})
	}
}

// TestDeliverBatch: a batch reaches each subscriber in order, with the
// receiver counts of each message, and each subscriber's writer is woken
// once, with the whole batch already queued.
func TestDeliverBatch(t *testing.T) {
	b := broker.New(broker.Config{})
	f := &textFormat{}
	both := b.NewClient(f)
	both.Subscribe(broker.KindChannel, "a")
	both.Subscribe(broker.KindPattern, "*")
	only := b.NewClient(f)
	only.Subscribe(broker.KindChannel, "b")
	// What each writer would find queued when woken (DeliverBatch runs
	// on this goroutine, and so do the wake-ups).
	var wakes []int
	both.Outbox().OnReady(func() { n, _ := both.Outbox().Len(); wakes = append(wakes, n) })

	msgs := []*broker.Message{
		{Channel: "a", Payload: []byte("1"), Epoch: 1, Seq: 1},
		{Channel: "b", Payload: []byte("2"), Epoch: 1, Seq: 1},
		{Channel: "c", Payload: []byte("3"), Epoch: 1, Seq: 1},
	}
	n := make([]int, len(msgs))
	b.DeliverBatch(msgs, n)
	if want := []int{2, 2, 1}; !slices.Equal(n, want) {
		t.Fatalf("receivers %v, want %v", n, want)
	}
	want := []string{"msg|channel||a|1|1|1", "msg|pattern|*|a|1|1|1", "msg|pattern|*|b|1|1|2", "msg|pattern|*|c|1|1|3"}
	if !slices.Equal(wakes, []int{len(want)}) {
		t.Fatalf("wake-ups found %v frames queued, want one wake-up finding the batch's %d", wakes, len(want))
	}
	frames, _ := both.Outbox().TryNext(nil)
	if len(frames) != len(want) {
		t.Fatalf("queued %d frames %q, want %d", len(frames), frames, len(want))
	}
	for i := range want {
		if string(frames[i]) != want[i] {
			t.Fatalf("frame %d = %q, want %q", i, frames[i], want[i])
		}
	}
	if frames, _ := only.Outbox().TryNext(nil); len(frames) != 1 || string(frames[0]) != "msg|channel||b|1|1|2" {
		t.Fatalf("other subscriber got %q", frames)
	}
}
