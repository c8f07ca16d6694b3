package raftstore

import (
	"context"
	"sync"
)

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
