package broker

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
)

// failCounter records the calls of an outbox's onFail.
type failCounter struct {
	mu   sync.Mutex
	errs []error
}

func (f *failCounter) onFail(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
}

func (f *failCounter) calls() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.errs...)
}

// checkFailedOnce asserts that onFail was called exactly once, with want.
func (f *failCounter) checkFailedOnce(t *testing.T, want error) {
	t.Helper()
	got := f.calls()
	if len(got) != 1 || got[0] != want {
		t.Fatalf("onFail calls = %v, want exactly one with %v", got, want)
	}
}

// takeQueued returns what Next hands out when frames are known to be queued
// and the outbox is not held, so that Next cannot block.
func takeQueued(t *testing.T, o *Outbox) ([][]byte, error) {
	t.Helper()
	if n, _ := o.Len(); n == 0 && o.Err() == nil {
		t.Fatal("takeQueued: nothing queued; Next would block")
	}
	return o.Next(nil, nil)
}

func frameStrings(frames [][]byte) []string {
	s := make([]string, len(frames))
	for i, f := range frames {
		s[i] = string(f)
	}
	return s
}

// generous limits that none of the tests below reaches unless it sets them.
var roomy = OutboxLimits{HardBytes: 1 << 30, SoftBytes: 1 << 30, SoftDuration: time.Hour, MaxFrames: 1 << 30}

func TestOutboxLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits OutboxLimits
		sizes  []int // frame sizes pushed in order
		failAt int   // index of the push that fails; -1 for none
	}{
		{
			name:   "HardBytesExactlyAtLimit",
			limits: OutboxLimits{HardBytes: 10, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 100},
			sizes:  []int{4, 6},
			failAt: -1,
		},
		{
			name:   "HardBytesOneOver",
			limits: OutboxLimits{HardBytes: 10, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 100},
			sizes:  []int{4, 6, 1},
			failAt: 2,
		},
		{
			name:   "HardBytesSingleFrameOver",
			limits: OutboxLimits{HardBytes: 10, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 100},
			sizes:  []int{11},
			failAt: 0,
		},
		{
			name:   "MaxFramesExactlyAtLimit",
			limits: OutboxLimits{HardBytes: 1 << 20, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 3},
			sizes:  []int{1, 1, 1},
			failAt: -1,
		},
		{
			name:   "MaxFramesOneOver",
			limits: OutboxLimits{HardBytes: 1 << 20, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 3},
			sizes:  []int{1, 1, 1, 1},
			failAt: 3,
		},
		{
			name:   "MaxFramesCountsEmptyFrames",
			limits: OutboxLimits{HardBytes: 1 << 20, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 2},
			sizes:  []int{0, 0, 0},
			failAt: 2,
		},
		{
			// Exactly SoftBytes is not over it, however short the duration.
			name:   "SoftBytesExactlyAtLimit",
			limits: OutboxLimits{HardBytes: 1 << 20, SoftBytes: 10, SoftDuration: time.Nanosecond, MaxFrames: 100},
			sizes:  []int{5, 5, 0, 0, 0},
			failAt: -1,
		},
		{
			// Over SoftBytes for less than SoftDuration: stays.
			name:   "OverSoftWithinDuration",
			limits: OutboxLimits{HardBytes: 1 << 20, SoftBytes: 10, SoftDuration: time.Hour, MaxFrames: 100},
			sizes:  []int{11, 1, 1, 100},
			failAt: -1,
		},
		{
			// The hard limit applies at once even while under the soft
			// duration.
			name:   "HardWhileOverSoft",
			limits: OutboxLimits{HardBytes: 20, SoftBytes: 10, SoftDuration: time.Hour, MaxFrames: 100},
			sizes:  []int{11, 9, 1},
			failAt: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fc failCounter
			o := NewOutbox(tt.limits, fc.onFail)
			wantFrames, wantBytes := 0, 0
			for i, size := range tt.sizes {
				ok := o.Push(make([]byte, size))
				if wantOK := tt.failAt < 0 || i < tt.failAt; ok != wantOK {
					t.Fatalf("push %d (%d bytes) = %v, want %v", i, size, ok, wantOK)
				}
				if ok {
					wantFrames++
					wantBytes += size
				}
			}
			if tt.failAt < 0 {
				if err := o.Err(); err != nil {
					t.Fatalf("Err = %v, want nil", err)
				}
				if n, b := o.Len(); n != wantFrames || b != wantBytes {
					t.Fatalf("Len = %d frames %d bytes, want %d, %d", n, b, wantFrames, wantBytes)
				}
				if got := fc.calls(); len(got) != 0 {
					t.Fatalf("onFail called %v, want no call", got)
				}
				frames, err := takeQueued(t, o)
				if err != nil || len(frames) != wantFrames {
					t.Fatalf("Next = %d frames, %v; want %d, nil", len(frames), err, wantFrames)
				}
				return
			}
			if err := o.Err(); err != ErrSlowConsumer {
				t.Fatalf("Err = %v, want ErrSlowConsumer", err)
			}
			if n, b := o.Len(); n != 0 || b != 0 {
				t.Fatalf("Len after failure = %d frames %d bytes, want 0, 0", n, b)
			}
			fc.checkFailedOnce(t, ErrSlowConsumer)
			if o.Push([]byte("x")) {
				t.Fatal("Push after failure succeeded")
			}
			frames, err := o.Next(nil, nil)
			if err != ErrSlowConsumer || len(frames) != 0 {
				t.Fatalf("Next after failure = %q, %v; want no frames, ErrSlowConsumer", frameStrings(frames), err)
			}
		})
	}
}

// waitClock waits until d has passed since t: the soft limit is about time
// passing, so the test lets the clock move, and no further.
func waitClock(t0 time.Time, d time.Duration) {
	if rest := d - time.Since(t0); rest > 0 {
		timer := time.NewTimer(rest)
		<-timer.C
	}
}

func TestOutboxSoftDurationExpires(t *testing.T) {
	const soft = 2 * time.Millisecond
	var fc failCounter
	o := NewOutbox(OutboxLimits{HardBytes: 1 << 20, SoftBytes: 10, SoftDuration: soft, MaxFrames: 1 << 20}, fc.onFail)
	if !o.Push(make([]byte, 11)) {
		t.Fatal("first push over the soft limit failed; the soft limit needs time to pass")
	}
	over := time.Now() // the outbox went over SoftBytes at or before this
	// Poll: once SoftDuration has passed, the next push fails. Empty frames
	// keep the byte count where it is.
	deadline := time.Now().Add(10 * time.Second)
	for o.Push(nil) {
		if time.Now().After(deadline) {
			t.Fatalf("still accepting pushes %s after going over the soft limit (SoftDuration %s)", time.Since(over), soft)
		}
		waitClock(time.Now(), soft/2)
	}
	if err := o.Err(); err != ErrSlowConsumer {
		t.Fatalf("Err = %v, want ErrSlowConsumer", err)
	}
	fc.checkFailedOnce(t, ErrSlowConsumer)
	if n, b := o.Len(); n != 0 || b != 0 {
		t.Fatalf("Len after failure = %d, %d; want 0, 0", n, b)
	}
}

// A writer that takes the queue ends the period over the soft limit: going
// over again later starts a new period.
func TestOutboxNextResetsSoftClock(t *testing.T) {
	const soft = 2 * time.Millisecond
	var fc failCounter
	o := NewOutbox(OutboxLimits{HardBytes: 1 << 20, SoftBytes: 10, SoftDuration: soft, MaxFrames: 1 << 20}, fc.onFail)
	if !o.Push(make([]byte, 11)) {
		t.Fatal("push over soft failed")
	}
	if _, err := takeQueued(t, o); err != nil {
		t.Fatal(err)
	}
	waitClock(time.Now(), 2*soft)
	if !o.Push(make([]byte, 11)) {
		t.Fatalf("push over soft after a drain failed: %v (the soft clock was not reset by Next)", o.Err())
	}
	if got := fc.calls(); len(got) != 0 {
		t.Fatalf("onFail called: %v", got)
	}
}

func TestOutboxPushReplyIgnoresLimits(t *testing.T) {
	var fc failCounter
	o := NewOutbox(OutboxLimits{HardBytes: 4, SoftBytes: 1, SoftDuration: time.Nanosecond, MaxFrames: 2}, fc.onFail)
	var want []string
	for i := range 10 {
		f := fmt.Sprintf("reply-%d", i)
		if !o.PushReply([]byte(f)) {
			t.Fatalf("PushReply %d refused: %v", i, o.Err())
		}
		want = append(want, f)
	}
	if err := o.Err(); err != nil {
		t.Fatalf("Err = %v after replies over every limit", err)
	}
	if n, _ := o.Len(); n != 10 {
		t.Fatalf("Len = %d frames, want 10", n)
	}
	frames, err := takeQueued(t, o)
	if err != nil || strings.Join(frameStrings(frames), ",") != strings.Join(want, ",") {
		t.Fatalf("Next = %q, %v; want %q", frameStrings(frames), err, want)
	}
	if got := fc.calls(); len(got) != 0 {
		t.Fatalf("onFail called: %v", got)
	}

	// Replies count towards what a later Push is measured against.
	if !o.PushReply([]byte("1234")) {
		t.Fatal("PushReply refused")
	}
	if o.Push([]byte("x")) {
		t.Fatal("Push over HardBytes (counting queued replies) succeeded")
	}
	if o.PushReply([]byte("late")) {
		t.Fatal("PushReply after failure succeeded")
	}
	fc.checkFailedOnce(t, ErrSlowConsumer)
}

func TestOutboxFailureDropsQueuedAndNotifiesOnce(t *testing.T) {
	var fc failCounter
	o := NewOutbox(OutboxLimits{HardBytes: 10, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 100}, fc.onFail)
	for _, f := range []string{"aaa", "bbb", "ccc"} {
		if !o.Push([]byte(f)) {
			t.Fatalf("push %q failed", f)
		}
	}
	if o.Push([]byte("dd")) {
		t.Fatal("push over HardBytes succeeded")
	}
	if n, b := o.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after failure; want the queue dropped", n, b)
	}
	// Nothing fails it a second time: not more pushes, not Close, not
	// CloseWhenDrained.
	o.Push([]byte("e"))
	o.PushReply([]byte("f"))
	o.Close()
	o.Close()
	o.CloseWhenDrained()
	fc.checkFailedOnce(t, ErrSlowConsumer)
	if err := o.Err(); err != ErrSlowConsumer {
		t.Fatalf("Err = %v, want the first failure, ErrSlowConsumer", err)
	}
	frames, err := o.Next(nil, nil)
	if len(frames) != 0 || err != ErrSlowConsumer {
		t.Fatalf("Next = %q, %v; want nothing, ErrSlowConsumer", frameStrings(frames), err)
	}
}

func TestOutboxCloseDropsQueuedAndNotifiesOnce(t *testing.T) {
	var fc failCounter
	o := NewOutbox(roomy, fc.onFail)
	o.Push([]byte("a"))
	o.Close()
	o.Close()
	fc.checkFailedOnce(t, ErrClosed)
	if n, _ := o.Len(); n != 0 {
		t.Fatalf("Len = %d after Close, want 0", n)
	}
	if o.Push([]byte("b")) || o.PushReply([]byte("c")) {
		t.Fatal("push after Close succeeded")
	}
	frames, err := o.Next(nil, nil)
	if len(frames) != 0 || err != ErrClosed {
		t.Fatalf("Next = %q, %v; want nothing, ErrClosed", frameStrings(frames), err)
	}
}

func TestOutboxNextOrderThenError(t *testing.T) {
	o := NewOutbox(roomy, nil)
	for _, f := range []string{"a", "b", "c"} {
		o.Push([]byte(f))
	}
	o.PushReply([]byte("r"))
	o.Push([]byte("d"))
	// Next appends to buf.
	buf := [][]byte{[]byte("old")}
	frames, err := o.Next(nil, buf)
	if got := strings.Join(frameStrings(frames), ","); err != nil || got != "old,a,b,c,r,d" {
		t.Fatalf("Next = %q, %v; want old,a,b,c,r,d", got, err)
	}
	if n, b := o.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after Next, want empty", n, b)
	}
	o.Push([]byte("e"))
	frames, err = o.Next(nil, frames[:0])
	if got := strings.Join(frameStrings(frames), ","); err != nil || got != "e" {
		t.Fatalf("second Next = %q, %v; want e", got, err)
	}
	o.Close()
	frames, err = o.Next(nil, nil)
	if err != ErrClosed || len(frames) != 0 {
		t.Fatalf("Next after Close = %q, %v; want ErrClosed", frameStrings(frames), err)
	}
}

// nextResult is what one Next call returned.
type nextResult struct {
	frames [][]byte
	err    error
}

func goNext(o *Outbox, done <-chan struct{}) <-chan nextResult {
	ch := make(chan nextResult, 1)
	go func() {
		frames, err := o.Next(done, nil)
		ch <- nextResult{frames, err}
	}()
	return ch
}

func TestOutboxNextWakesOnPush(t *testing.T) {
	o := NewOutbox(roomy, nil)
	res := goNext(o, nil)
	o.Push([]byte("a"))
	r := <-res
	if r.err != nil || len(r.frames) == 0 || string(r.frames[0]) != "a" {
		t.Fatalf("Next = %q, %v; want a", frameStrings(r.frames), r.err)
	}
}

func TestOutboxNextDone(t *testing.T) {
	o := NewOutbox(roomy, nil)
	done := make(chan struct{})
	res := goNext(o, done)
	close(done)
	r := <-res
	if r.err != ErrClosed || len(r.frames) != 0 {
		t.Fatalf("Next = %q, %v; want nothing, ErrClosed", frameStrings(r.frames), r.err)
	}
	if err := o.Err(); err != nil {
		t.Fatalf("a closed done channel failed the outbox: %v", err)
	}
}

func TestOutboxHoldRelease(t *testing.T) {
	var fc failCounter
	o := NewOutbox(roomy, fc.onFail)
	o.Hold()
	// A Next already waiting, and pushes that wake it: it still returns
	// nothing while held.
	done := make(chan struct{})
	res := goNext(o, done)
	o.Push([]byte("a"))
	o.PushReply([]byte("b"))
	o.Push([]byte("c"))
	close(done)
	if r := <-res; r.err != ErrClosed || len(r.frames) != 0 {
		t.Fatalf("Next while held = %q, %v; want nothing, ErrClosed from done", frameStrings(r.frames), r.err)
	}
	if n, _ := o.Len(); n != 3 {
		t.Fatalf("Len while held = %d, want 3", n)
	}
	// A Next started while held, released afterwards.
	res = goNext(o, nil)
	o.Release()
	r := <-res
	if got := strings.Join(frameStrings(r.frames), ","); r.err != nil || got != "a,b,c" {
		t.Fatalf("Next after Release = %q, %v; want a,b,c", got, r.err)
	}
	if got := fc.calls(); len(got) != 0 {
		t.Fatalf("onFail called: %v", got)
	}
}

func TestOutboxFailureEndsHold(t *testing.T) {
	o := NewOutbox(roomy, nil)
	o.Hold()
	o.Push([]byte("a"))
	res := goNext(o, nil)
	o.Close()
	if r := <-res; r.err != ErrClosed || len(r.frames) != 0 {
		t.Fatalf("Next = %q, %v; want nothing, ErrClosed", frameStrings(r.frames), r.err)
	}
}

func TestOutboxCloseWhenDrained(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run("Held="+strconv.FormatBool(held), func(t *testing.T) {
			var fc failCounter
			o := NewOutbox(roomy, fc.onFail)
			if held {
				o.Hold() // CloseWhenDrained writes what is queued even under Hold
			}
			o.Push([]byte("a"))
			o.PushReply([]byte("b"))
			o.CloseWhenDrained()
			if o.Push([]byte("c")) {
				t.Fatal("Push after CloseWhenDrained succeeded")
			}
			if o.PushReply([]byte("d")) {
				t.Fatal("PushReply after CloseWhenDrained succeeded")
			}
			r := <-goNext(o, nil)
			if got := strings.Join(frameStrings(r.frames), ","); r.err != nil || got != "a,b" {
				t.Fatalf("Next = %q, %v; want a,b then a separate ErrClosed", got, r.err)
			}
			if got := fc.calls(); len(got) != 0 {
				t.Fatalf("onFail called before the queue was drained: %v", got)
			}
			r = <-goNext(o, nil)
			if r.err != ErrClosed || len(r.frames) != 0 {
				t.Fatalf("Next after drain = %q, %v; want ErrClosed", frameStrings(r.frames), r.err)
			}
			fc.checkFailedOnce(t, ErrClosed)
			if err := o.Err(); err != ErrClosed {
				t.Fatalf("Err = %v, want ErrClosed", err)
			}
			o.Close()
			fc.checkFailedOnce(t, ErrClosed)
		})
	}
}

func TestOutboxCloseWhenDrainedWakesWaitingNext(t *testing.T) {
	o := NewOutbox(roomy, nil)
	res := goNext(o, nil)
	o.CloseWhenDrained()
	if r := <-res; r.err != ErrClosed || len(r.frames) != 0 {
		t.Fatalf("Next = %q, %v; want ErrClosed", frameStrings(r.frames), r.err)
	}
}

func TestOutboxWaitEmpty(t *testing.T) {
	t.Run("AlreadyEmpty", func(t *testing.T) {
		o := NewOutbox(roomy, nil)
		if err := o.WaitEmpty(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ReturnsWhenNextTakesAll", func(t *testing.T) {
		o := NewOutbox(roomy, nil)
		o.Push([]byte("a"))
		o.Push([]byte("b"))
		waited := make(chan error, 1)
		go func() { waited <- o.WaitEmpty(context.Background()) }()
		if frames, err := takeQueued(t, o); err != nil || len(frames) != 2 {
			t.Fatalf("Next = %d frames, %v", len(frames), err)
		}
		if err := <-waited; err != nil {
			t.Fatalf("WaitEmpty = %v, want nil", err)
		}
	})
	t.Run("ContextEnds", func(t *testing.T) {
		o := NewOutbox(roomy, nil)
		o.Push([]byte("a"))
		ctx, cancel := context.WithCancel(context.Background())
		waited := make(chan error, 1)
		go func() { waited <- o.WaitEmpty(ctx) }()
		cancel()
		if err := <-waited; !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitEmpty = %v, want context.Canceled", err)
		}
		if n, _ := o.Len(); n != 1 {
			t.Fatalf("Len = %d, want the frame still queued", n)
		}
	})
	t.Run("AlreadyFailed", func(t *testing.T) {
		o := NewOutbox(roomy, nil)
		o.Push([]byte("a"))
		o.Close()
		if err := o.WaitEmpty(context.Background()); err != ErrClosed {
			t.Fatalf("WaitEmpty = %v, want ErrClosed", err)
		}
	})
}

// WaitingCtx is a context that reports when Done is first called: a
// select in the code under test has then checked its other conditions and
// is about to block. (Exported for the package's external tests.)
type WaitingCtx struct {
	context.Context
	once    sync.Once
	Waiting chan struct{} // closed when Done is first called
}

// NewWaitingCtx returns a WaitingCtx under parent.
func NewWaitingCtx(parent context.Context) *WaitingCtx {
	return &WaitingCtx{Context: parent, Waiting: make(chan struct{})}
}

func (c *WaitingCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.Waiting) })
	return c.Context.Done()
}

// WaitEmpty is documented to return when the outbox fails. A WaitEmpty that
// is already waiting when the outbox fails must return the failure, not sit
// until its context ends.
func TestOutboxWaitEmptyReturnsWhenOutboxFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(o *Outbox)
		want error
	}{
		{"Close", (*Outbox).Close, ErrClosed},
		{"SlowConsumer", func(o *Outbox) { o.Push(make([]byte, 100)) }, ErrSlowConsumer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOutbox(OutboxLimits{HardBytes: 50, SoftBytes: 1 << 20, SoftDuration: time.Hour, MaxFrames: 100}, nil)
			o.Push([]byte("a"))
			// The timeout only bounds the test when WaitEmpty misses the
			// failure.
			parent, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			ctx := NewWaitingCtx(parent)
			waited := make(chan error, 1)
			go func() { waited <- o.WaitEmpty(ctx) }()
			<-ctx.Waiting // WaitEmpty saw a non-empty, healthy outbox and is waiting
			tc.fail(o)
			if err := <-waited; err != tc.want {
				t.Fatalf("WaitEmpty = %v, want %v: a waiting WaitEmpty is not woken when the outbox fails", err, tc.want)
			}
		})
	}
}

// Many producers push concurrently while one writer drains: every frame
// comes out exactly once, and each producer's frames in the order pushed.
func TestOutboxConcurrentPush(t *testing.T) {
	const producers, perProducer = 16, 2000
	o := NewOutbox(roomy, nil)
	var wg sync.WaitGroup
	var refused atomic.Int64
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				f := []byte(strconv.Itoa(p) + ":" + strconv.Itoa(i))
				var ok bool
				if i%7 == 0 {
					ok = o.PushReply(f)
				} else {
					ok = o.Push(f)
				}
				if !ok {
					refused.Add(1)
				}
			}
		}()
	}
	next := make([]int, producers) // next index expected from each producer
	total := 0
	var buf [][]byte
	for total < producers*perProducer {
		var err error
		buf, err = o.Next(nil, buf[:0])
		if err != nil {
			t.Fatalf("Next: %v after %d frames", err, total)
		}
		for _, f := range buf {
			ps, is, ok := strings.Cut(string(f), ":")
			p, err1 := strconv.Atoi(ps)
			i, err2 := strconv.Atoi(is)
			if !ok || err1 != nil || err2 != nil || p < 0 || p >= producers {
				t.Fatalf("unexpected frame %q", f)
			}
			if i != next[p] {
				t.Fatalf("producer %d: got frame %d, want %d (lost, duplicated or reordered)", p, i, next[p])
			}
			next[p]++
			total++
		}
	}
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d pushes refused", n)
	}
	if n, b := o.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after every frame was taken: extra frames", n, b)
	}
}

// TestOutboxOnReadyTryNext drives an outbox the way a connection that runs
// its writer only on demand does: OnReady says when to look, Ready and
// TryNext what is there, without ever waiting.
func TestOutboxOnReadyTryNext(t *testing.T) {
	o := NewOutbox(OutboxLimits{}, nil)
	var calls int
	o.OnReady(func() { calls++ })
	if o.Ready() {
		t.Fatal("empty outbox ready")
	}
	if got, err := o.TryNext(nil); len(got) != 0 || err != nil {
		t.Fatalf("TryNext on empty: %q %v", got, err)
	}
	o.Push([]byte("a"))
	o.Push([]byte("b")) // not empty: no second call
	if calls != 1 || !o.Ready() {
		t.Fatalf("after two pushes: %d calls, ready %v; want 1, true", calls, o.Ready())
	}
	o.Hold()
	if o.Ready() {
		t.Fatal("held outbox ready")
	}
	if got, err := o.TryNext(nil); len(got) != 0 || err != nil {
		t.Fatalf("TryNext while held: %q %v", got, err)
	}
	o.Release()
	if calls != 2 {
		t.Fatalf("Release: %d calls, want 2", calls)
	}
	got, err := o.TryNext(nil)
	if err != nil || len(got) != 2 || string(got[0]) != "a" || string(got[1]) != "b" {
		t.Fatalf("TryNext: %q %v", got, err)
	}
	if o.Ready() {
		t.Fatal("ready after everything was taken")
	}
	o.Push([]byte("c"))
	o.CloseWhenDrained()
	if calls != 4 || !o.Ready() {
		t.Fatalf("push and close: %d calls, ready %v; want 4, true", calls, o.Ready())
	}
	if got, err := o.TryNext(nil); err != nil || len(got) != 1 {
		t.Fatalf("TryNext while draining: %q %v", got, err)
	}
	// Drained: the next look closes it.
	if !o.Ready() {
		t.Fatal("drained outbox not ready to report its close")
	}
	if got, err := o.TryNext(nil); len(got) != 0 || !errors.Is(err, ErrClosed) {
		t.Fatalf("TryNext once drained: %q %v; want ErrClosed", got, err)
	}
}
