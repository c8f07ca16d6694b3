package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
)

// Resuming from a position inside retained history replays the rest, then
// continues live.
func TestCatchUp(t *testing.T) {
	const n = 20
	b, _ := newBroker(t, broker.Config{ReplayPage: 7}, raftstore.Config{})
	f := &textFormat{}
	for _, tc := range []struct {
		name string
		from func(epoch uint64) broker.Position
		want uint64 // From
	}{
		{"Zero", func(uint64) broker.Position { return broker.Position{} }, 1},
		{"EpochOnly", func(e uint64) broker.Position { return broker.Position{Epoch: e} }, 1},
		{"Middle", func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: 5} }, 6},
		{"PageBoundary", func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: 13} }, 14},
		{"OneBeforeLast", func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: n - 1} }, n},
		{"Last", func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: n} }, n + 1},
		{"NoEpochGiven", func(uint64) broker.Position { return broker.Position{Seq: 10} }, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := "cu-" + tc.name
			rs := publish(t, b, broker.Global, ch, numbered("m", n)...)
			epoch := rs[0].Epoch
			c := b.NewClient(f)
			r := startReader(t, c)
			cu := c.SubscribeFrom(ch, tc.from(epoch))
			if err := waitRun(t, runCatchUp(testCtx(t), cu)); err != nil {
				t.Fatalf("Run: %v", err)
			}
			live := publish(t, b, broker.Global, ch, "live1", "live2", "live3")
			frames := r.waitFor(t, "last live message", untilSeq(t, n+3))
			checkStream(t, frames, ch, broker.Resume{Recovered: true, Epoch: epoch, From: tc.want, Last: n}, epoch, n+3)
			for i, s := range frames[len(frames)-3:] {
				if want := msgText("sequenced", "", ch, live[i], "live"+strconv.Itoa(i+1)); s != want {
					t.Fatalf("live frame %q, want %q", s, want)
				}
			}
			if fr := parseFrame(t, frames[1]); tc.want <= n && fr.payload != "m"+strconv.FormatUint(tc.want, 10) {
				t.Fatalf("first replayed payload %q", fr.payload)
			}
		})
	}
}

// While publishers keep publishing, clients resume from various positions:
// each sees every message from its position on exactly once, in order,
// across the switch from history to live.
func TestCatchUpConcurrentPublish(t *testing.T) {
	const (
		ch           = "busy"
		initial      = 40
		publishers   = 4
		perPublisher = 250
		total        = initial + publishers*perPublisher
	)
	b, _ := newBroker(t, broker.Config{ReplayPage: 7}, raftstore.Config{Retention: retainPolicy(100000)})
	waitRetention(t, b, 100000)
	epoch := publish(t, b, broker.Global, ch, numbered("init", initial)...)[0].Epoch
	ctx := testCtx(t)
	f := &textFormat{}

	type sub struct {
		after int // publisher messages committed before it subscribes
		from  func(last uint64) uint64
		c     *broker.Client
		r     *reader
		pos   broker.Position
		run   <-chan error
	}
	subs := []*sub{
		{after: 0, from: func(uint64) uint64 { return 0 }},
		{after: 0, from: func(last uint64) uint64 { return last - 3 }},
		{after: 20, from: func(uint64) uint64 { return 0 }},
		{after: 50, from: func(last uint64) uint64 { return last }},
		{after: 90, from: func(last uint64) uint64 { return last / 2 }},
		{after: 150, from: func(last uint64) uint64 { return last - 10 }},
		{after: 200, from: func(uint64) uint64 { return 7 }},
		{after: 300, from: func(last uint64) uint64 { return last - 1 }},
		{after: 500, from: func(last uint64) uint64 { return last - 100 }},
		{after: 700, from: func(uint64) uint64 { return 1 }},
		{after: 900, from: func(last uint64) uint64 { return last }},
	}

	progress := make(chan int, publishers*perPublisher)
	var wg sync.WaitGroup
	var pubErr atomic.Pointer[error]
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perPublisher; {
				batch := 1 + (i+p)%3 // batches of 1 to 3 messages
				batch = min(batch, perPublisher-i)
				if _, err := publishErr(ctx, b, broker.Global, ch, numbered(fmt.Sprintf("p%d-%d-", p, i), batch)...); err != nil {
					pubErr.Store(&err)
					return
				}
				i += batch
				progress <- batch
			}
		}()
	}
	go func() { wg.Wait(); close(progress) }()

	published := 0
	start := func(s *sub) {
		info, err := b.Log().Info(broker.Global, ch)
		if err != nil {
			t.Fatal(err)
		}
		s.pos = broker.Position{Epoch: epoch, Seq: s.from(info.LastSeq)}
		s.c = b.NewClient(f)
		s.r = startReader(t, s.c)
		s.run = runCatchUp(ctx, s.c.SubscribeFrom(ch, s.pos))
	}
	next := 0
	for next < len(subs) && subs[next].after <= published {
		start(subs[next])
		next++
	}
	for n := range progress {
		published += n
		for next < len(subs) && subs[next].after <= published {
			start(subs[next])
			next++
		}
	}
	if err := pubErr.Load(); err != nil {
		t.Fatalf("publish: %v", *err)
	}
	if next != len(subs) {
		t.Fatalf("only %d of %d subscribers started", next, len(subs))
	}
	for i, s := range subs {
		if err := waitRun(t, s.run); err != nil {
			t.Fatalf("subscriber %d: Run: %v", i, err)
		}
		s.r.waitFor(t, "last message", untilSeq(t, total))
		s.r.stop()
		frames, _ := s.r.snapshot()
		frames = append(frames, queued(t, s.c)...) // anything the reader had not taken
		first := parseFrame(t, frames[0])
		if !first.resume || first.last < s.pos.Seq {
			t.Fatalf("subscriber %d (from %d): first frame %v", i, s.pos.Seq, first)
		}
		want := broker.Resume{Recovered: true, Epoch: epoch, From: s.pos.Seq + 1, Last: first.last}
		checkStream(t, frames, ch, want, epoch, total)
	}
}

// Resuming where history cannot continue the stream says so, and starts from
// the oldest retained message.
func TestCatchUpGaps(t *testing.T) {
	const (
		retain    = 10
		published = 25
		first     = published - retain + 1
	)
	b, _ := newBroker(t, broker.Config{ReplayPage: 4}, raftstore.Config{Retention: retainPolicy(retain)})
	waitRetention(t, b, retain)
	f := &textFormat{}
	for _, tc := range []struct {
		name      string
		empty     bool // the channel has no state
		from      func(epoch uint64) broker.Position
		recovered bool
		from1     uint64 // Resume.From
	}{
		{"OlderThanRetention", false, func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: 3} }, false, first},
		{"JustBeforeRetention", false, func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: first - 2} }, false, first},
		{"OldestRetainedNext", false, func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: first - 1} }, true, first},
		{"ZeroOnTrimmedChannel", false, func(uint64) broker.Position { return broker.Position{} }, false, first},
		{"WrongEpoch", false, func(e uint64) broker.Position { return broker.Position{Epoch: e + 1000, Seq: 20} }, false, first},
		{"WrongEpochSeqZero", false, func(e uint64) broker.Position { return broker.Position{Epoch: e + 1000} }, false, first},
		{"BeyondLast", false, func(e uint64) broker.Position { return broker.Position{Epoch: e, Seq: published + 1} }, false, first},
		{"NoStateZero", true, func(uint64) broker.Position { return broker.Position{} }, true, 1},
		{"NoStateNonZero", true, func(uint64) broker.Position { return broker.Position{Epoch: 42, Seq: 3} }, false, 1},
		{"NoStateSeqOnly", true, func(uint64) broker.Position { return broker.Position{Seq: 3} }, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := "gap-" + tc.name
			var epoch, last uint64
			if !tc.empty {
				epoch = publish(t, b, broker.Global, ch, numbered("m", published)...)[0].Epoch
				last = published
			}
			c := b.NewClient(f)
			r := startReader(t, c)
			if err := waitRun(t, runCatchUp(testCtx(t), c.SubscribeFrom(ch, tc.from(epoch)))); err != nil {
				t.Fatalf("Run: %v", err)
			}
			rs := publish(t, b, broker.Global, ch, "live")
			frames := r.waitFor(t, "live message", untilSeq(t, last+1))
			want := broker.Resume{Recovered: tc.recovered, Epoch: epoch, From: tc.from1, Last: last}
			checkStream(t, frames, ch, want, rs[0].Epoch, last+1)
		})
	}
}

// A channel deleted while a sequenced subscriber is live restarts in a new
// epoch; the subscriber is told before the first message of the new epoch.
func TestEpochChangeWhileLive(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	f := &textFormat{}
	const ch = "ep"
	old := publish(t, b, broker.Global, ch, "a", "b", "c")
	resumed := b.NewClient(f)
	r := startReader(t, resumed)
	if err := waitRun(t, runCatchUp(testCtx(t), resumed.SubscribeFrom(ch, broker.Position{}))); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "history", untilSeq(t, 3))
	r.stop()
	queued(t, resumed)
	liveOnly := b.NewClient(f)
	liveOnly.Subscribe(broker.KindSequenced, ch)
	publish(t, b, broker.Global, ch, "d")
	queued(t, liveOnly)
	queued(t, resumed)

	existed, err := b.Log().Delete(testCtx(t), broker.Global, ch)
	if err != nil || !existed {
		t.Fatalf("Delete = %v, %v", existed, err)
	}
	rs := publish(t, b, broker.Global, ch, "new")
	if rs[0].Epoch == old[0].Epoch || rs[0].Seq != 1 {
		t.Fatalf("receipt after delete %+v, want a new epoch from 1", rs[0])
	}
	for name, c := range map[string]*broker.Client{"resumed": resumed, "live-only": liveOnly} {
		expectQueued(t, name, c,
			resumeText(ch, broker.Resume{Recovered: false, Epoch: rs[0].Epoch, From: 1, Last: 0}),
			msgText("sequenced", "", ch, rs[0], "new"))
	}
	rs = publish(t, b, broker.Global, ch, "next")
	expectQueued(t, "resumed", resumed, msgText("sequenced", "", ch, rs[0], "next"))
}

// catchUpBlocked subscribes c from the start of ch and runs the catch-up
// until it has queued its first page and waits for the client to take it,
// which nobody does.
func catchUpBlocked(t *testing.T, ctx context.Context, c *broker.Client, ch string) (<-chan error, *broker.WaitingCtx) {
	t.Helper()
	wctx := broker.NewWaitingCtx(ctx)
	run := runCatchUp(wctx, c.SubscribeFrom(ch, broker.Position{}))
	select {
	case <-wctx.Waiting:
	case err := <-run:
		t.Fatalf("Run returned %v before waiting for the client", err)
	}
	return run, wctx
}

// A subscriber whose live messages pile up while it replays history is a
// slow consumer once they pass its outbox limits.
func TestCatchUpSlowConsumer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits broker.OutboxLimits
		live   []string
	}{
		{"MaxFrames", broker.OutboxLimits{MaxFrames: 10}, numbered("l", 11)},
		{"HardBytes", broker.OutboxLimits{HardBytes: 400}, []string{strings.Repeat("x", 150), strings.Repeat("y", 150), strings.Repeat("z", 150)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newBroker(t, broker.Config{ReplayPage: 4, Outbox: tc.limits}, raftstore.Config{})
			const ch = "slow"
			publish(t, b, broker.Global, ch, numbered("h", 8)...)
			c := b.NewClient(&textFormat{})
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			run, _ := catchUpBlocked(t, ctx, c, ch)
			if n, _ := c.Outbox().Len(); n != 5 {
				t.Fatalf("queued %d frames, want the resume and a page of 4", n)
			}
			publish(t, b, broker.Global, ch, tc.live...)
			if err := c.Outbox().Err(); err != broker.ErrSlowConsumer {
				t.Fatalf("outbox Err = %v, want ErrSlowConsumer", err)
			}
			if n := b.Stats().SlowDisconnect; n != 1 {
				t.Fatalf("SlowDisconnect = %d, want 1", n)
			}
			if frames, err := c.Outbox().Next(nil, nil); err != broker.ErrSlowConsumer || len(frames) != 0 {
				t.Fatalf("Next = %d frames, %v; want ErrSlowConsumer", len(frames), err)
			}
			publish(t, b, broker.Global, ch, "more")
			if n := b.Stats().SlowDisconnect; n != 1 {
				t.Fatalf("SlowDisconnect = %d after another publish, want 1", n)
			}
			cancel()
			if err := waitRun(t, run); err == nil {
				t.Fatal("Run of a failed client returned nil")
			}
		})
	}
}

// Run is documented to wait for the client to take each page "before
// reading the next"; when the client fails instead (slow consumer, or closed
// by its transport), Run must return, not wait for its context to end.
func TestCatchUpEndsWhenClientFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(t *testing.T, b *broker.Broker, c *broker.Client)
		want error
	}{
		{"SlowConsumer", func(t *testing.T, b *broker.Broker, c *broker.Client) {
			publish(t, b, broker.Global, "fails", numbered("l", 11)...)
		}, broker.ErrSlowConsumer},
		{"Closed", func(t *testing.T, b *broker.Broker, c *broker.Client) { c.Close() }, broker.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newBroker(t, broker.Config{ReplayPage: 4, Outbox: broker.OutboxLimits{MaxFrames: 10}}, raftstore.Config{})
			publish(t, b, broker.Global, "fails", numbered("h", 8)...)
			c := b.NewClient(&textFormat{})
			// The deadline only ends the test if Run misses the failure.
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			run, _ := catchUpBlocked(t, ctx, c, "fails")
			tc.fail(t, b, c)
			if err := waitRun(t, run); !errors.Is(err, tc.want) {
				t.Fatalf("Run = %v, want %v: the replay kept waiting for a client that had failed", err, tc.want)
			}
		})
	}
}

// History trimmed by retention while a catch-up waits between pages must
// not open a silent gap: the replay announced Recovered, so every message
// must follow, or a Resume must say where the stream jumps.
func TestCatchUpHistoryTrimmedDuringReplay(t *testing.T) {
	const retain = 10
	b, _ := newBroker(t, broker.Config{ReplayPage: 4}, raftstore.Config{Retention: retainPolicy(retain)})
	waitRetention(t, b, retain)
	const ch = "trim"
	epoch := publish(t, b, broker.Global, ch, numbered("a", retain)...)[0].Epoch // 1..10, all retained
	c := b.NewClient(&textFormat{})
	run, _ := catchUpBlocked(t, testCtx(t), c, ch)             // queued: resume, 1..4
	publish(t, b, broker.Global, ch, numbered("b", retain)...) // 11..20; 5..10 trimmed
	r := startReader(t, c)
	if err := waitRun(t, run); err != nil {
		t.Fatalf("Run: %v", err)
	}
	frames := r.waitFor(t, "last message", untilSeq(t, 2*retain))
	if want := resumeText(ch, broker.Resume{Recovered: true, Epoch: epoch, From: 1, Last: retain}); frames[0] != want {
		t.Fatalf("first frame %q, want %q", frames[0], want)
	}
	var pos uint64
	announced := uint64(0) // From of the last Resume after the first
	for _, s := range frames[1:] {
		f := parseFrame(t, s)
		if f.resume {
			if f.recovered {
				t.Fatalf("a later Resume claims recovery: %v", f)
			}
			announced = f.from
			continue
		}
		if f.seq != pos+1 && f.seq != announced {
			t.Fatalf("stream jumps from %d to %d without a Resume announcing it; frames: %q", pos, f.seq, frames)
		}
		if f.seq <= pos {
			t.Fatalf("duplicate %d after %d", f.seq, pos)
		}
		pos = f.seq
	}
	if pos != 2*retain {
		t.Fatalf("stream ends at %d, want %d", pos, 2*retain)
	}
}

// Once Unsubscribe returns, nothing more is delivered for the subscription,
// even if it was still replaying history.
func TestUnsubscribeDuringCatchUp(t *testing.T) {
	b, _ := newBroker(t, broker.Config{ReplayPage: 4}, raftstore.Config{})
	const ch = "unsub"
	publish(t, b, broker.Global, ch, numbered("h", 12)...)
	c := b.NewClient(&textFormat{})
	run, _ := catchUpBlocked(t, testCtx(t), c, ch) // queued: resume, 1..4
	publish(t, b, broker.Global, ch, "pending")    // held for the catch-up
	if !c.Unsubscribe(broker.KindSequenced, ch) {
		t.Fatal("Unsubscribe = false")
	}
	before := queued(t, c) // the writer takes what was queued before
	if len(before) != 5 {
		t.Fatalf("queued before Unsubscribe: %q, want 5 frames", before)
	}
	r := startReader(t, c) // and goes on taking whatever comes
	err := waitRun(t, run)
	r.stop()
	after, _ := r.snapshot()
	if after = append(after, queued(t, c)...); len(after) != 0 {
		t.Fatalf("after Unsubscribe returned, %d frames were pushed for the subscription (Run returned %v): %q", len(after), err, after)
	}
}

// A live sequenced subscription (SubscribeLatest) is told where its stream
// starts before its first message: right after the channel's last message.
func TestSubscribeLatest(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	f := &textFormat{}
	ctx := testCtx(t)
	rs := publish(t, b, broker.Global, "news", numbered("old", 20)...)
	epoch := rs[0].Epoch

	c := b.NewClient(f)
	r := startReader(t, c)
	if err := waitRun(t, runCatchUp(ctx, c.SubscribeLatest("news"))); err != nil {
		t.Fatal(err)
	}
	publish(t, b, broker.Global, "news", "new1", "new2")
	frames := r.waitFor(t, "two live messages", untilSeq(t, 22))
	checkStream(t, frames, "news", broker.Resume{Recovered: true, Epoch: epoch, From: 21, Last: 20}, epoch, 22)

	// A channel without state starts at sequence 1; its first message
	// then opens an epoch without another resume.
	c2 := b.NewClient(f)
	r2 := startReader(t, c2)
	if err := waitRun(t, runCatchUp(ctx, c2.SubscribeLatest("fresh"))); err != nil {
		t.Fatal(err)
	}
	got := publish(t, b, broker.Global, "fresh", "first")
	frames = r2.waitFor(t, "the first message", untilSeq(t, 1))
	if len(frames) != 2 || frames[0] != resumeText("fresh", broker.Resume{Recovered: true, Epoch: 0, From: 1, Last: 0}) ||
		frames[1] != msgText("sequenced", "", "fresh", got[0], "first") {
		t.Fatalf("frames %q", frames)
	}
	if c2.SubscribeLatest("fresh") != nil {
		t.Fatal("a second SubscribeLatest to the same channel was accepted")
	}
}

// While publishes stream in, the position a live subscription announces
// is exactly where its messages continue: no gap, no duplicate.
func TestSubscribeLatestConcurrentPublish(t *testing.T) {
	b, _ := newBroker(t, broker.Config{}, raftstore.Config{})
	f := &textFormat{}
	ctx := testCtx(t)
	first := publish(t, b, broker.Global, "live", "m0")
	epoch := first[0].Epoch
	const total = 400
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < total; i++ {
			if _, err := publishErr(ctx, b, broker.Global, "live", "m"+strconv.Itoa(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var readers []*reader
	for i := 0; i < 8; i++ {
		c := b.NewClient(f)
		readers = append(readers, startReader(t, c))
		if err := waitRun(t, runCatchUp(ctx, c.SubscribeLatest("live"))); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	for i, r := range readers {
		frames := r.waitFor(t, "the last message", untilSeq(t, total))
		start := parseFrame(t, frames[0])
		if !start.resume {
			t.Fatalf("client %d: first frame %q is not a resume", i, frames[0])
		}
		checkStream(t, frames, "live", broker.Resume{Recovered: true, Epoch: epoch, From: start.from, Last: start.from - 1}, epoch, total)
	}
}
