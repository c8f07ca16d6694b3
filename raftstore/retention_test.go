package raftstore

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
)

// newSingle starts a one-node store with the given retention.
func newSingle(t *testing.T, p Policy, tick time.Duration) *testNode {
	t.Helper()
	c := newTestCluster(t, 1, Config{Retention: &p, TickInterval: tick})
	return c.nodes[0]
}

func TestRetentionByCount(t *testing.T) {
	n := newSingle(t, Policy{Rules: []Rule{{Pattern: "chat:*", MaxCount: 5}, {Pattern: "*", MaxCount: 0}}}, 0)
	ctx := context.Background()
	for i := 1; i <= 12; i++ {
		if _, err := publish(ctx, n, "chat:1", "m"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		if _, err := publish(ctx, n, "other", "m"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	h := mustHistory(t, n.store, "chat:1")
	if h.First != 8 || h.Last != 12 || len(h.Messages) != 5 || string(h.Messages[0].Payload) != "m8" {
		t.Fatalf("chat:1: first %d last %d, %d messages", h.First, h.Last, len(h.Messages))
	}
	// A limit of 0 keeps nothing but still counts.
	h = mustHistory(t, n.store, "other")
	if h.Last != 12 || h.First != 13 || len(h.Messages) != 0 {
		t.Fatalf("other: first %d last %d, %d messages", h.First, h.Last, len(h.Messages))
	}
	info, err := n.store.Info(broker.Global, "chat:1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Retained != 5 || info.RetainedBytes != int64(len("m8")+len("m9")+len("m10")+len("m11")+len("m12")) || info.FirstSeq != 8 {
		t.Fatalf("info: %+v", info)
	}
}

func TestRetentionByBytes(t *testing.T) {
	n := newSingle(t, Policy{Rules: []Rule{{Pattern: "*", MaxCount: 100, MaxBytes: 100}}}, 0)
	ctx := context.Background()
	// Five 30-byte messages: only the last three fit in 100 bytes.
	for i := 0; i < 5; i++ {
		if _, err := publish(ctx, n, "c", string(bytes.Repeat([]byte{'a' + byte(i)}, 30))); err != nil {
			t.Fatal(err)
		}
	}
	h := mustHistory(t, n.store, "c")
	if h.First != 3 || len(h.Messages) != 3 {
		t.Fatalf("first %d, %d messages", h.First, len(h.Messages))
	}
	// A message larger than the limit is not retained, and the history
	// before it goes too: history never has a hole.
	if _, err := publish(ctx, n, "c", string(bytes.Repeat([]byte{'z'}, 101))); err != nil {
		t.Fatal(err)
	}
	h = mustHistory(t, n.store, "c")
	if h.Last != 6 || h.First != 7 || len(h.Messages) != 0 {
		t.Fatalf("after oversize message: first %d last %d, %d messages", h.First, h.Last, len(h.Messages))
	}
}

// TestRetentionByAge uses leader time: messages older than MaxAge go at a
// tick even when nothing else is published.
func TestRetentionByAge(t *testing.T) {
	n := newSingle(t, Policy{Rules: []Rule{{Pattern: "*", MaxCount: 100, MaxAge: 300 * time.Millisecond}}}, 20*time.Millisecond)
	ctx := context.Background()
	if _, err := publish(ctx, n, "old", "1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the message to expire", func() bool {
		return len(mustHistory(t, n.store, "old").Messages) == 0
	})
	h := mustHistory(t, n.store, "old")
	if h.Last != 1 || h.First != 2 {
		t.Fatalf("after expiry: first %d last %d", h.First, h.Last)
	}
}

// TestIdleChannelForgotten: a channel that retains nothing is forgotten
// after IdleTTL, and its next publish starts a new epoch at sequence 1.
func TestIdleChannelForgotten(t *testing.T) {
	n := newSingle(t, Policy{Rules: []Rule{{Pattern: "*", MaxCount: 0}}, IdleTTL: 200 * time.Millisecond}, 20*time.Millisecond)
	ctx := context.Background()
	r1, err := publish(ctx, n, "login:abc", "scanned")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the channel to be forgotten", func() bool {
		info, err := n.store.Info(broker.Global, "login:abc")
		return err == nil && info.Epoch == 0
	})
	r2, err := publish(ctx, n, "login:abc", "again")
	if err != nil {
		t.Fatal(err)
	}
	if r2.Seq != 1 || r2.Epoch == r1.Epoch {
		t.Fatalf("after forgetting: seq %d epoch %d (was epoch %d)", r2.Seq, r2.Epoch, r1.Epoch)
	}
}

// TestDeleteStartsNewEpoch: HERALD.DELETE drops history and sequence.
func TestDeleteStartsNewEpoch(t *testing.T) {
	n := newSingle(t, DefaultPolicy(), 0)
	ctx := context.Background()
	r1, _ := publish(ctx, n, "c", "a")
	publish(ctx, n, "c", "b")
	existed, err := n.store.Delete(ctx, broker.Global, "c")
	if err != nil || !existed {
		t.Fatalf("delete: %v, %v", existed, err)
	}
	if existed, err := n.store.Delete(ctx, broker.Global, "c"); err != nil || existed {
		t.Fatalf("second delete: %v, %v", existed, err)
	}
	r3, err := publish(ctx, n, "c", "c")
	if err != nil {
		t.Fatal(err)
	}
	if r3.Seq != 1 || r3.Epoch == r1.Epoch {
		t.Fatalf("after delete: seq %d epoch %d (was %d)", r3.Seq, r3.Epoch, r1.Epoch)
	}
	if h := mustHistory(t, n.store, "c"); len(h.Messages) != 1 || string(h.Messages[0].Payload) != "c" {
		t.Fatalf("history after delete: %+v", h)
	}
}

// TestPolicyReplicated: the leader proposes its policy; every node applies
// the same one and trims the same way.
func TestPolicyReplicated(t *testing.T) {
	p := Policy{Rules: []Rule{{Pattern: "*", MaxCount: 3}}, IdleTTL: time.Hour}
	c := newTestCluster(t, 3, Config{Retention: &p})
	waitFor(t, 10*time.Second, "every node to apply the policy", func() bool {
		for _, n := range c.nodes {
			if !n.store.fsm.policyCopy.Load().Equal(p) {
				return false
			}
		}
		return true
	})
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := publish(ctx, c.nodes[i%3], "c", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged()
	if h := mustHistory(t, c.nodes[2].store, "c"); len(h.Messages) != 3 || h.First != 8 {
		t.Fatalf("history: first %d, %d messages", h.First, len(h.Messages))
	}
}

// TestSnapshotRoundTrip persists a node's state and restores it into a
// state machine on an empty database: the states are identical. A
// corrupted snapshot is refused.
func TestSnapshotRoundTrip(t *testing.T) {
	src := newSingle(t, Policy{Rules: []Rule{{Pattern: "*", MaxCount: 50, MaxAge: time.Hour}}, IdleTTL: time.Hour}, 0)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if _, err := publish(ctx, src, "ch"+strconv.Itoa(i%9), string(bytes.Repeat([]byte{byte(i)}, i))); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	// Snapshot must run on the FSM's goroutine; a barrier and the store's
	// own snapshot path do that. Take it through Raft.
	if err := src.store.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snaps, err := src.store.snaps.List()
	if err != nil || len(snaps) == 0 {
		t.Fatalf("no snapshot: %v", err)
	}
	_, rc, err := src.store.snaps.Open(snaps[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	buf.ReadFrom(rc)
	rc.Close()

	dst := newBareFSM(t)
	if err := dst.Restore(nopCloser{bytes.NewReader(buf.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if got, want := stateDump(t, &Store{db: dst.db}), stateDump(t, src.store); got != want {
		t.Fatalf("restored state differs:\n%s\nwant:\n%s", got, want)
	}
	if dst.applied != snaps[0].Index {
		t.Fatalf("restored applied index %d, snapshot index %d", dst.applied, snaps[0].Index)
	}

	bad := append([]byte(nil), buf.Bytes()...)
	bad[len(bad)/2] ^= 0xff
	if err := newBareFSM(t).Restore(nopCloser{bytes.NewReader(bad)}); err == nil {
		t.Fatal("a corrupted snapshot was restored")
	}
}

// newBareFSM returns a state machine on an empty database, with no Raft.
func newBareFSM(t testing.TB) *fsm {
	t.Helper()
	db, err := openPebble(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f, err := newFSM(db, broker.New(broker.Config{}), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
