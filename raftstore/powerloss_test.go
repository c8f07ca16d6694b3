package raftstore

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// TestLogStoreSurvivesPowerLoss checks the log store's sync points the way
// kill -9 cannot: kill -9 leaves the page cache, so a process crash loses
// nothing the kernel accepted. Here Pebble runs on a file system that can
// crash like a machine losing power, keeping only what was fsynced (and, in
// the random cases, some of what was not). Right after each acknowledged
// StoreLogs, DeleteRange or stable-store write, with unsynced state-machine
// writes in flight, a simulated power loss must keep everything
// acknowledged so far: that is what lets Raft count this node's
// acknowledgement and vote.
func TestLogStoreSurvivesPowerLoss(t *testing.T) {
	for _, unsynced := range []int{0, 50} {
		t.Run(fmt.Sprintf("unsynced-%d%%", unsynced), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			db, err := openPebbleFS("/db", fs, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ls, err := newLogStore(db)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(uint64(unsynced), 1))
			var want []*raft.Log
			var next uint64 = 1
			var term uint64
			var vote string
			step := func(what string) {
				t.Helper()
				// State-machine writes go without sync; they must not be
				// what makes the log durable.
				db.Set([]byte{prefixFSM, byte(rng.IntN(256))}, bytes.Repeat([]byte{'x'}, 100), pebble.NoSync)
				cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: unsynced}
				if unsynced > 0 {
					cfg.RNG = rand.New(rand.NewPCG(rng.Uint64(), 2))
				}
				checkSurvivor(t, what, fs.CrashClone(cfg), want, term, vote)
			}
			for b := range 12 {
				var batch []*raft.Log
				for range 5 {
					batch = append(batch, &raft.Log{Index: next, Term: uint64(b/4 + 1), Type: raft.LogCommand,
						Data: []byte(fmt.Sprintf("entry %d", next))})
					next++
				}
				if err := ls.StoreLogs(batch); err != nil {
					t.Fatal(err)
				}
				want = append(want, batch...)
				step(fmt.Sprintf("StoreLogs %d", b))
				switch b {
				case 5:
					if err := ls.DeleteRange(1, 20); err != nil {
						t.Fatal(err)
					}
					want = want[20:]
					step("DeleteRange")
				case 7:
					term = 3
					if err := ls.SetUint64([]byte("CurrentTerm"), term); err != nil {
						t.Fatal(err)
					}
					step("SetUint64")
					vote = "n2"
					if err := ls.Set([]byte("LastVoteCand"), []byte(vote)); err != nil {
						t.Fatal(err)
					}
					step("Set")
				}
			}
		})
	}
}

// checkSurvivor opens the file system left by a power loss and checks that
// it holds exactly the acknowledged log and the stable store values.
func checkSurvivor(t *testing.T, after string, fs vfs.FS, want []*raft.Log, term uint64, vote string) {
	t.Helper()
	db, err := openPebbleFS("/db", fs, nil)
	if err != nil {
		t.Fatalf("power loss after %s: reopen: %v", after, err)
	}
	defer db.Close()
	ls, err := newLogStore(db)
	if err != nil {
		t.Fatal(err)
	}
	if first, _ := ls.FirstIndex(); first != want[0].Index {
		t.Fatalf("power loss after %s: first index %d, want %d", after, first, want[0].Index)
	}
	if last, _ := ls.LastIndex(); last != want[len(want)-1].Index {
		t.Fatalf("power loss after %s: last index %d, want %d", after, last, want[len(want)-1].Index)
	}
	for _, w := range want {
		var got raft.Log
		if err := ls.GetLog(w.Index, &got); err != nil {
			t.Fatalf("power loss after %s: entry %d lost: %v", after, w.Index, err)
		}
		if got.Term != w.Term || !bytes.Equal(got.Data, w.Data) {
			t.Fatalf("power loss after %s: entry %d is %+v, want %+v", after, w.Index, got, w)
		}
	}
	if term != 0 {
		if got, err := ls.GetUint64([]byte("CurrentTerm")); err != nil || got != term {
			t.Fatalf("power loss after %s: term %d, %v; want %d", after, got, err, term)
		}
	}
	if vote != "" {
		if got, err := ls.Get([]byte("LastVoteCand")); err != nil || string(got) != vote {
			t.Fatalf("power loss after %s: vote %q, %v; want %q", after, got, err, vote)
		}
	}
}
