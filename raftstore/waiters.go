package raftstore

import (
	"context"
	"sync"

	"github.com/herald-broker/herald/broker"
)

// result is what applying one of this process's batches produced.
type result struct {
	receipts []broker.Receipt
	existed  bool
	index    uint64
	err      error
}

// waiters routes the results of applied entries back to the callers that
// proposed them. Every entry this process proposes carries its origin tag and
// a batch number; the FSM, applying an entry with this origin, resolves the
// waiter of its batch. Results go through the local FSM on leader and
// followers alike, so a publish is acknowledged only once it is committed
// and delivered on the node the publisher is connected to.
type waiters struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]chan result
}

func newWaiters() *waiters { return &waiters{m: make(map[uint64]chan result)} }

// add registers a new batch and returns its number and the channel its
// result arrives on.
func (w *waiters) add() (uint64, chan result) {
	ch := make(chan result, 1)
	w.mu.Lock()
	w.next++
	id := w.next
	w.m[id] = ch
	w.mu.Unlock()
	return id, ch
}

// resolve delivers r to batch id's waiter, if it still waits.
func (w *waiters) resolve(id uint64, r result) {
	w.mu.Lock()
	ch, ok := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	if ok {
		ch <- r
	}
}

// cancel stops waiting for batch id.
func (w *waiters) cancel(id uint64) {
	w.mu.Lock()
	delete(w.m, id)
	w.mu.Unlock()
}

// notifier wakes goroutines waiting for the applied index to advance.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next notify.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// waitApplied waits until the FSM has applied index.
func (f *fsm) waitApplied(ctx context.Context, index uint64) error {
	for {
		ch := f.appliedWait.wait()
		if f.appliedIndex.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
