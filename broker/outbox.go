package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// OutboxLimits bound what may wait in one connection's outbox, like Redis's
// client-output-buffer-limit for pubsub clients. The zero value of each field
// means its default.
type OutboxLimits struct {
	// HardBytes disconnects the client as soon as more than this many bytes
	// are queued. Default 32 MiB.
	HardBytes int
	// SoftBytes disconnects the client once more than this many bytes have
	// stayed queued for SoftDuration. Default 8 MiB.
	SoftBytes int
	// SoftDuration is how long the queue may stay above SoftBytes.
	// Default 60s.
	SoftDuration time.Duration
	// MaxFrames disconnects the client once more than this many frames are
	// queued. Default 1,000,000.
	MaxFrames int
}

// Default outbox limits, matching Redis's "client-output-buffer-limit pubsub
// 32mb 8mb 60" and adding a frame count so that a flood of tiny messages is
// bounded too.
const (
	DefaultOutboxHardBytes    = 32 << 20
	DefaultOutboxSoftBytes    = 8 << 20
	DefaultOutboxSoftDuration = 60 * time.Second
	DefaultOutboxMaxFrames    = 1_000_000
)

func (l OutboxLimits) withDefaults() OutboxLimits {
	if l.HardBytes <= 0 {
		l.HardBytes = DefaultOutboxHardBytes
	}
	if l.SoftBytes <= 0 {
		l.SoftBytes = DefaultOutboxSoftBytes
	}
	if l.SoftDuration <= 0 {
		l.SoftDuration = DefaultOutboxSoftDuration
	}
	if l.MaxFrames <= 0 {
		l.MaxFrames = DefaultOutboxMaxFrames
	}
	return l
}

// Outbox is the bounded queue of frames waiting to be written to one
// connection. Producers (the fan-out, the connection's own command replies)
// call Push, which never blocks on the network; the connection's single
// writer goroutine calls Next to take everything queued so far and writes it
// in one batch.
//
// Frames are shared: a message fanned out to many clients is queued as the
// same byte slice in each outbox, so a frame must never be modified after it
// is pushed.
//
// When a push would take the queue over its limits, the outbox fails with
// ErrSlowConsumer: the queued frames are dropped, further pushes are ignored,
// and Next returns the error so the writer closes the connection.
type Outbox struct {
	limits  OutboxLimits
	onFail  func(error)    // called once, without the lock, when the outbox fails
	dropped *atomic.Uint64 // if set, counts frames lost to a slow-consumer failure

	mu        sync.Mutex
	frames    [][]byte
	bytes     int
	softSince time.Time // when the queue went above SoftBytes; zero if below
	err       error     // set once: ErrSlowConsumer or ErrClosed
	held      bool      // Hold is in effect: Next waits even if frames are queued
	draining  bool      // CloseWhenDrained: no new frames; fail once empty
	wake      chan struct{}
	drained   chan struct{} // signalled when Next takes the queue
	failed    chan struct{} // closed when err is set
	onReady   atomic.Pointer[func()]
}

// NewOutbox returns an empty outbox with the given limits. onFail, if not
// nil, is called once when the outbox fails (over a limit, or closed), from
// the goroutine that caused it; it must not block.
func NewOutbox(limits OutboxLimits, onFail func(error)) *Outbox {
	return &Outbox{
		limits:  limits.withDefaults(),
		onFail:  onFail,
		wake:    make(chan struct{}, 1),
		drained: make(chan struct{}, 1),
		failed:  make(chan struct{}),
	}
}

// Push queues frame. It reports false if the outbox has failed, either before
// this call or because this frame took it over a limit.
func (o *Outbox) Push(frame []byte) bool {
	ok, wake := o.push(frame, true)
	if wake {
		o.signal()
	}
	return ok
}

// PushReply queues a frame that answers the connection's own command. Unlike
// Push it is not subject to the limits: Redis, too, never drops a reply, and
// a client that pipelines commands without reading replies is stopped by TCP
// flow control, because the connection reads its next command only after
// queueing this reply. It reports false if the outbox has failed.
func (o *Outbox) PushReply(frame []byte) bool {
	ok, wake := o.push(frame, false)
	if wake {
		o.signal()
	}
	return ok
}

// push queues frame, checking the limits if limited. wake reports that
// the outbox was empty: the caller must signal its writer, now or (a
// batch's fan-out) once the batch is queued.
func (o *Outbox) push(frame []byte, limited bool) (ok, wake bool) {
	o.mu.Lock()
	if o.err != nil || o.draining {
		if limited && o.err == ErrSlowConsumer && o.dropped != nil {
			o.dropped.Add(1)
		}
		o.mu.Unlock()
		return false, false
	}
	o.frames = append(o.frames, frame)
	o.bytes += len(frame)
	if limited {
		if err := o.checkLimitsLocked(); err != nil {
			o.failLocked(err)
			o.mu.Unlock()
			o.notifyFail(err)
			return false, false
		}
	}
	wake = len(o.frames) == 1
	o.mu.Unlock()
	return true, wake
}

func (o *Outbox) checkLimitsLocked() error {
	l := &o.limits
	if o.bytes > l.HardBytes || len(o.frames) > l.MaxFrames {
		return ErrSlowConsumer
	}
	if o.bytes > l.SoftBytes {
		now := time.Now()
		if o.softSince.IsZero() {
			o.softSince = now
		} else if now.Sub(o.softSince) >= l.SoftDuration {
			return ErrSlowConsumer
		}
	}
	return nil
}

func (o *Outbox) failLocked(err error) {
	if err == ErrSlowConsumer && o.dropped != nil {
		o.dropped.Add(uint64(len(o.frames)))
	}
	o.err = err
	close(o.failed)
	o.frames = nil
	o.bytes = 0
	o.held = false
}

func (o *Outbox) notifyFail(err error) {
	o.signal()
	if o.onFail != nil {
		o.onFail(err)
	}
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
	if f := o.onReady.Load(); f != nil {
		(*f)()
	}
}

// OnReady sets a function the outbox calls, without its lock, whenever it
// may have become ready for its writer: frames queued into an empty
// outbox, a Release, a close or a failure. It lets a connection run a
// writer only while there is something to write (see TryNext and Ready)
// instead of parking a goroutine in Next. f must not block.
func (o *Outbox) OnReady(f func()) { o.onReady.Store(&f) }

// Ready reports whether TryNext would return frames or an error.
func (o *Outbox) Ready() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err != nil || (len(o.frames) > 0 && !o.held) || o.draining
}

// TryNext is Next without the wait: it appends to buf every queued frame
// (none while held) and returns buf, or the error the outbox failed with.
// Only one goroutine at a time may call TryNext or Next.
func (o *Outbox) TryNext(buf [][]byte) ([][]byte, error) {
	buf, _, err := o.take(buf)
	return buf, err
}

// take appends the queued frames to buf, or finds the outbox failed (or,
// drained after CloseWhenDrained, closes it); ok is false when it did
// neither and the caller has to wait.
func (o *Outbox) take(buf [][]byte) (_ [][]byte, ok bool, err error) {
	o.mu.Lock()
	if o.err != nil {
		err := o.err
		o.mu.Unlock()
		return buf, true, err
	}
	if len(o.frames) > 0 && !o.held {
		buf = append(buf, o.frames...)
		clear(o.frames)
		o.frames = o.frames[:0]
		o.bytes = 0
		o.softSince = time.Time{}
		o.mu.Unlock()
		select {
		case o.drained <- struct{}{}:
		default:
		}
		return buf, true, nil
	}
	if o.draining && len(o.frames) == 0 {
		o.err = ErrClosed
		close(o.failed)
		o.mu.Unlock()
		if o.onFail != nil {
			o.onFail(ErrClosed)
		}
		return buf, true, ErrClosed
	}
	o.mu.Unlock()
	return buf, false, nil
}

// Next waits until frames are queued, the outbox fails, or done is closed.
// It appends every queued frame to buf, empties the queue and returns buf.
// After a failure it returns the error (ErrSlowConsumer or ErrClosed); when
// done is closed it returns ErrClosed. Only one goroutine may call Next.
func (o *Outbox) Next(done <-chan struct{}, buf [][]byte) ([][]byte, error) {
	for {
		var err error
		var ok bool
		if buf, ok, err = o.take(buf); ok {
			return buf, err
		}
		select {
		case <-o.wake:
		case <-done:
			return buf, ErrClosed
		}
	}
}

// WaitEmpty waits until the writer has taken every queued frame, the outbox
// fails, or ctx ends. It lets a producer of a long stream (a history replay)
// keep only a little of it queued at a time.
func (o *Outbox) WaitEmpty(ctx context.Context) error {
	for {
		o.mu.Lock()
		empty, err := len(o.frames) == 0, o.err
		o.mu.Unlock()
		if err != nil {
			return err
		}
		if empty {
			return nil
		}
		select {
		case <-o.drained:
		case <-o.failed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Hold stops Next from returning frames until Release. Pushes still queue.
// A connection holds its outbox while it changes subscriptions, so that a
// confirmation queued before the change is not written until the change is
// visible to publishers.
func (o *Outbox) Hold() {
	o.mu.Lock()
	o.held = true
	o.mu.Unlock()
}

// Release ends a Hold.
func (o *Outbox) Release() {
	o.mu.Lock()
	o.held = false
	o.mu.Unlock()
	o.signal()
}

// CloseWhenDrained closes the outbox cleanly: it accepts no more frames,
// Next returns those already queued (even under Hold), and then ErrClosed.
// A connection closes this way after QUIT, after a protocol error reply, and
// on server shutdown, so that nothing is cut off mid-frame.
func (o *Outbox) CloseWhenDrained() {
	o.mu.Lock()
	o.draining = true
	o.held = false
	o.mu.Unlock()
	o.signal()
}

// Close fails the outbox with ErrClosed unless it has already failed, and
// drops what is queued. Next returns ErrClosed from then on.
func (o *Outbox) Close() { o.fail(ErrClosed) }

// fail fails the outbox with err unless it has already failed.
func (o *Outbox) fail(err error) {
	o.mu.Lock()
	if o.err != nil {
		o.mu.Unlock()
		return
	}
	o.failLocked(err)
	o.mu.Unlock()
	o.notifyFail(err)
}

// Err returns the error the outbox failed with, or nil.
func (o *Outbox) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Len returns the number of frames and bytes queued.
func (o *Outbox) Len() (frames, bytes int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.frames), o.bytes
}
