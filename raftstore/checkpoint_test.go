package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/herald-broker/herald/broker"
)

// TestCheckpointsKeepState applies one random log to two state machines:
// one writes a checkpoint after every batch, so its reads come from Pebble;
// the other only when the test says so, and now and then crashes (its
// memory is dropped and it starts again from its last checkpoint, applying
// the log again from there, as a restarted node does). After every batch
// both must answer every history and channel query alike, and in the end
// their Pebble states must be identical. The log publishes to channels
// whose retention trims across the line between Pebble and memory (by
// count, by bytes, by age, not at all), deletes channels, lets idle ones be
// forgotten, and tightens the policy halfway.
func TestCheckpointsKeepState(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			testCheckpointsKeepState(t, seed)
		})
	}
}

func testCheckpointsKeepState(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	policy := func(count int) Policy {
		return Policy{Rules: []Rule{
			{Pattern: "bytes:*", MaxCount: 50, MaxBytes: 60},
			{Pattern: "age:*", MaxCount: 50, MaxAge: 40 * time.Millisecond},
			{Pattern: "none:*", MaxCount: 0},
			{Pattern: "*", MaxCount: count},
		}, IdleTTL: 100 * time.Millisecond}
	}
	channels := []string{"count:a", "count:b", "bytes:a", "age:a", "none:a", "count:c"}

	var logs []*raft.Log
	now := int64(1_000_000)
	entry := func(data []byte) *raft.Log {
		now += int64(rng.IntN(8))
		stamp(data, now)
		return &raft.Log{Index: uint64(len(logs) + 1), Term: 1, Type: raft.LogCommand, Data: data}
	}
	logs = append(logs, entry(encodePolicy(policy(6))))
	for i := range 600 {
		var l *raft.Log
		switch r := rng.IntN(100); {
		case i == 300:
			l = entry(encodePolicy(policy(3)))
		case r < 3:
			l = entry(encodeDelete(0, channels[rng.IntN(len(channels))]))
		case r < 6:
			now += 150 // long enough for idle channels to be forgotten
			l = entry(encodeTick())
		default:
			msgs := make([]broker.Publish, 1+rng.IntN(6))
			for j := range msgs {
				msgs[j] = broker.Publish{Channel: channels[rng.IntN(len(channels))], Payload: []byte(strings.Repeat(string(rune('a'+i%26)), rng.IntN(30)))}
			}
			l = entry(encodePublish(msgs))
		}
		logs = append(logs, l)
	}

	ref := newBareFSM(t) // checkpointEvery 0: after every batch
	sub := newBareFSM(t)
	sub.checkpointEvery = time.Hour
	checkpoints, crashes := 0, 0
	for next := 0; next < len(logs); {
		n := min(1+rng.IntN(4), len(logs)-next)
		batch := logs[next : next+n]
		next += n
		ref.ApplyBatch(batch)
		sub.ApplyBatch(batch)
		switch r := rng.IntN(100); {
		case r < 10:
			sub.checkpointNow()
			checkpoints++
		case r < 15:
			crashes++
			restarted, err := newFSM(sub.db, broker.New(broker.Config{}), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			restarted.checkpointEvery = time.Hour
			if restarted.applied > uint64(next) {
				t.Fatalf("restart at %d: checkpoint claims index %d", next, restarted.applied)
			}
			// Raft applies the log again from its last snapshot; entries
			// the checkpoint holds are skipped.
			restarted.ApplyBatch(logs[:next])
			sub = restarted
		}
		for _, ch := range channels {
			queries := []broker.HistoryQuery{{}, {Last: 2}, {After: uint64(rng.IntN(40)), Limit: rng.IntN(4)}}
			for _, q := range queries {
				if got, want := dumpHistory(t, sub, ch, q), dumpHistory(t, ref, ch, q); got != want {
					t.Fatalf("after entry %d, history of %s %+v:\n%s\nwant:\n%s", next, ch, q, got, want)
				}
			}
			s := &Store{fsm: sub}
			r := &Store{fsm: ref}
			gotInfo, _ := s.Info(0, ch)
			wantInfo, _ := r.Info(0, ch)
			if gotInfo != wantInfo {
				t.Fatalf("after entry %d, info of %s: %+v, want %+v", next, ch, gotInfo, wantInfo)
			}
		}
	}
	if checkpoints == 0 || crashes == 0 {
		t.Fatalf("the log exercised %d checkpoints and %d crashes: choose another seed", checkpoints, crashes)
	}
	if got, want := stateDump(t, &Store{fsm: sub, db: sub.db}), stateDump(t, &Store{fsm: ref, db: ref.db}); got != want {
		t.Fatalf("Pebble states differ after a final checkpoint:\n%s\nwant:\n%s", got, want)
	}
}

func dumpHistory(t *testing.T, f *fsm, ch string, q broker.HistoryQuery) string {
	t.Helper()
	h, err := f.history(chanKey{0, ch}, q)
	if err != nil {
		t.Fatal(err)
	}
	return historyText(h)
}

// TestCheckpointEarly checks the bounds that write a checkpoint before its
// interval: the payload bytes held in the tails, and the channels changed.
func TestCheckpointEarly(t *testing.T) {
	f := newBareFSM(t)
	f.checkpointEvery = time.Hour
	f.maxUnwritten, f.maxDirty = 100, 3
	index := uint64(0)
	apply := func(channel string, size int) {
		t.Helper()
		index++
		data := encodePublish([]broker.Publish{{Channel: channel, Payload: make([]byte, size)}})
		stamp(data, 1000)
		f.ApplyBatch([]*raft.Log{{Index: index, Term: 1, Type: raft.LogCommand, Data: data}})
	}
	apply("a", 99)
	if f.persisted != 0 {
		t.Fatalf("checkpoint at 99 bytes in the tails (limit 100): persisted index %d", f.persisted)
	}
	apply("a", 1)
	if f.persisted != index {
		t.Fatalf("no checkpoint at 100 bytes in the tails: persisted index %d, applied %d", f.persisted, index)
	}
	apply("a", 0)
	apply("b", 0)
	if f.persisted != index-2 {
		t.Fatalf("checkpoint with 2 channels changed (limit 3): persisted index %d, applied %d", f.persisted, index)
	}
	apply("c", 0)
	if f.persisted != index {
		t.Fatalf("no checkpoint with 3 channels changed: persisted index %d, applied %d", f.persisted, index)
	}
}

// TestCrashAppliesLogAfterCheckpoint crashes a node whose last checkpoint
// is older than its last acknowledged publishes: on restart it loads the
// checkpoint and applies the rest of the log again, and history, sequence
// and epoch carry on as if nothing happened. A clean stop writes a
// checkpoint: after one, a restart has nothing to apply again.
func TestCrashAppliesLogAfterCheckpoint(t *testing.T) {
	c := newTestCluster(t, 1, Config{CheckpointInterval: time.Hour})
	ctx := context.Background()
	n := c.nodes[0]
	var acked []broker.Receipt
	for i := range 50 {
		r, err := publish(ctx, n, "news", "m"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, r)
	}
	before := mustHistory(t, n.store, "news")
	if st := n.store.Status(); st.CheckpointIndex >= st.AppliedIndex {
		t.Fatalf("checkpoint at %d, applied %d: the crash would test nothing", st.CheckpointIndex, st.AppliedIndex)
	}
	c.crash(0)
	c.start(0)
	c.leader()
	// Readers sync first, as HERALD.HISTORY and a resume do: a node applies
	// the log after its checkpoint again once it knows it is committed.
	if err := c.nodes[0].store.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	after := mustHistory(t, c.nodes[0].store, "news")
	if got, want := historyText(after), historyText(before); got != want {
		t.Fatalf("history after the crash:\n%s\nwant:\n%s", got, want)
	}
	if last := acked[len(acked)-1]; after.Last != last.Seq || after.Epoch != last.Epoch {
		t.Fatalf("after the crash: last %d epoch %d, acknowledged last %d epoch %d", after.Last, after.Epoch, last.Seq, last.Epoch)
	}
	r, err := publish(ctx, c.nodes[0], "news", "next")
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != acked[len(acked)-1].Seq+1 || r.Epoch != acked[0].Epoch {
		t.Fatalf("next publish: seq %d epoch %d, want %d epoch %d", r.Seq, r.Epoch, acked[len(acked)-1].Seq+1, acked[0].Epoch)
	}

	applied := c.nodes[0].store.AppliedIndex()
	c.stop(0)
	c.start(0)
	if st := c.nodes[0].store.Status(); st.CheckpointIndex < applied {
		t.Fatalf("after a clean stop, the checkpoint is at index %d, before the last applied %d", st.CheckpointIndex, applied)
	}
}

func historyText(h broker.History) string {
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %d, %d..%d:", h.Epoch, h.First, h.Last)
	for _, m := range h.Messages {
		fmt.Fprintf(&b, " %d@%d=%q", m.Seq, m.Time, m.Payload)
	}
	return b.String()
}
