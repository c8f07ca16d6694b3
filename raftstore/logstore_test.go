package raftstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// logStoreEnv is a logStore on its own Pebble database under a test's temp
// dir, which can be closed and reopened to simulate a restart.
type logStoreEnv struct {
	t   *testing.T
	dir string
	db  *pebble.DB
	s   *logStore
}

// newLogStoreEnv opens a logStore on a fresh database, closed at cleanup.
func newLogStoreEnv(t *testing.T) *logStoreEnv {
	t.Helper()
	e := &logStoreEnv{t: t, dir: t.TempDir()}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *logStoreEnv) open() {
	e.t.Helper()
	db, err := openPebble(e.dir, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := newLogStore(db)
	if err != nil {
		e.t.Fatal(err)
	}
	e.db, e.s = db, s
}

func (e *logStoreEnv) close() {
	e.t.Helper()
	if e.db == nil {
		return
	}
	if err := e.db.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.db, e.s = nil, nil
}

// reopen closes the database and opens it again, as a restart would.
func (e *logStoreEnv) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

// testEntry returns the entry the tests store at index i: every field set,
// varied by index, AppendedAt to the nanosecond and outside UTC.
func testEntry(i uint64) *raft.Log {
	l := &raft.Log{
		Index:      i,
		Term:       i/10 + 1,
		Type:       raft.LogType(i % 4),
		Data:       fmt.Appendf(nil, "entry-%d", i),
		AppendedAt: time.Unix(1_700_000_000+int64(i), int64(i*7919%1e9)).In(time.FixedZone("X", 3600)),
	}
	if i%2 == 0 {
		l.Extensions = fmt.Appendf(nil, "ext-%d", i)
	}
	return l
}

// testEntries returns testEntry(lo) through testEntry(hi).
func testEntries(lo, hi uint64) []*raft.Log {
	var ls []*raft.Log
	for i := lo; i <= hi; i++ {
		ls = append(ls, testEntry(i))
	}
	return ls
}

// logsEqual reports whether a and b hold the same entry (AppendedAt as an
// instant, nil and empty byte slices alike).
func logsEqual(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func storeLogs(t *testing.T, s *logStore, ls []*raft.Log) {
	t.Helper()
	if err := s.StoreLogs(ls); err != nil {
		t.Fatal(err)
	}
}

func checkBounds(t *testing.T, s *logStore, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("FirstIndex, LastIndex = %d, %d; want %d, %d", f, l, first, last)
	}
}

// checkPresent checks that entries lo..hi read back as testEntry.
func checkPresent(t *testing.T, s *logStore, lo, hi uint64) {
	t.Helper()
	for i := lo; i >= lo && i <= hi; i++ { // i >= lo stops at hi == MaxUint64
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if want := testEntry(i); !logsEqual(&got, want) {
			t.Fatalf("GetLog(%d) = %+v; want %+v", i, got, *want)
		}
	}
}

// checkAbsent checks that GetLog returns raft.ErrLogNotFound itself (raft
// compares with ==) for lo..hi.
func checkAbsent(t *testing.T, s *logStore, lo, hi uint64) {
	t.Helper()
	for i := lo; i >= lo && i <= hi; i++ { // i >= lo stops at hi == MaxUint64
		var got raft.Log
		if err := s.GetLog(i, &got); err != raft.ErrLogNotFound {
			t.Fatalf("GetLog(%d) = %v; want raft.ErrLogNotFound", i, err)
		}
	}
}

func TestLogStoreEmpty(t *testing.T) {
	e := newLogStoreEnv(t)
	checkBounds(t, e.s, 0, 0)
	checkAbsent(t, e.s, 0, 3)
	checkAbsent(t, e.s, math.MaxUint64, math.MaxUint64)
	if err := e.s.DeleteRange(1, 10); err != nil {
		t.Fatalf("DeleteRange on an empty log: %v", err)
	}
	if err := e.s.StoreLogs(nil); err != nil {
		t.Fatalf("StoreLogs(nil): %v", err)
	}
	e.reopen()
	checkBounds(t, e.s, 0, 0)
}

func TestLogStoreStore(t *testing.T) {
	t.Run("StoreLog", func(t *testing.T) {
		e := newLogStoreEnv(t)
		if err := e.s.StoreLog(testEntry(7)); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, e.s, 7, 7)
		checkPresent(t, e.s, 7, 7)
		checkAbsent(t, e.s, 6, 6)
		checkAbsent(t, e.s, 8, 8)
	})
	t.Run("StoreLogs", func(t *testing.T) {
		e := newLogStoreEnv(t)
		storeLogs(t, e.s, testEntries(1, 64))
		storeLogs(t, e.s, testEntries(65, 100))
		checkBounds(t, e.s, 1, 100)
		checkPresent(t, e.s, 1, 100)
		checkAbsent(t, e.s, 101, 101)
	})
	t.Run("Overwrite", func(t *testing.T) {
		e := newLogStoreEnv(t)
		storeLogs(t, e.s, testEntries(1, 5))
		repl := &raft.Log{Index: 3, Term: 99, Data: []byte("new")}
		storeLogs(t, e.s, []*raft.Log{repl})
		var got raft.Log
		if err := e.s.GetLog(3, &got); err != nil || !logsEqual(&got, repl) {
			t.Fatalf("GetLog(3) = %+v, %v; want %+v", got, err, *repl)
		}
		checkBounds(t, e.s, 1, 5)
	})
	t.Run("BelowFirst", func(t *testing.T) {
		e := newLogStoreEnv(t)
		storeLogs(t, e.s, testEntries(10, 12))
		storeLogs(t, e.s, testEntries(4, 5))
		checkBounds(t, e.s, 4, 12)
	})
	t.Run("Observed", func(t *testing.T) {
		e := newLogStoreEnv(t)
		var got []int
		e.s.observe = func(d time.Duration, n int) {
			if d <= 0 {
				t.Errorf("observed a write of %d entries taking %v", n, d)
			}
			got = append(got, n)
		}
		storeLogs(t, e.s, testEntries(1, 64))
		storeLogs(t, e.s, testEntries(65, 65))
		if err := e.s.StoreLogs([]*raft.Log{testEntry(66), nil}); err == nil {
			t.Fatal("StoreLogs with a nil entry: no error")
		}
		// Deletes are not log writes Raft waits for entry by entry.
		if err := e.s.DeleteRange(1, 10); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []int{64, 1}) {
			t.Errorf("observed writes of %v entries; want [64 1]", got)
		}
	})
	t.Run("Rejects", func(t *testing.T) {
		e := newLogStoreEnv(t)
		if err := e.s.StoreLogs([]*raft.Log{testEntry(1), {Index: 0}}); err == nil {
			t.Error("StoreLogs with index 0: no error")
		}
		if err := e.s.StoreLogs([]*raft.Log{testEntry(1), nil}); err == nil {
			t.Error("StoreLogs with a nil entry: no error")
		}
		checkBounds(t, e.s, 0, 0)
		checkAbsent(t, e.s, 1, 1)
	})
}

func TestLogStoreRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xa5}, 1<<20)
	tests := []struct {
		name string
		l    raft.Log
	}{
		{"Zero", raft.Log{}},
		{"Command", raft.Log{Term: 3, Type: raft.LogCommand, Data: []byte("publish news hello")}},
		{"Noop", raft.Log{Term: 4, Type: raft.LogNoop}},
		{"Configuration", raft.Log{Term: 5, Type: raft.LogConfiguration, Data: []byte{0, 1, 2}}},
		{"Extensions", raft.Log{Term: 6, Data: []byte("d"), Extensions: []byte("chunk:1/3")}},
		{"OnlyExtensions", raft.Log{Term: 6, Extensions: []byte{0}}},
		{"MaxTermAndType", raft.Log{Term: math.MaxUint64, Type: raft.LogType(255)}},
		{"LargeData", raft.Log{Term: 1, Data: big, Extensions: big[:1000]}},
		{"Nanoseconds", raft.Log{Term: 1, AppendedAt: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)}},
		{"Local", raft.Log{Term: 1, AppendedAt: time.Now()}},
		{"Epoch", raft.Log{Term: 1, AppendedAt: time.Unix(0, 0)}},
		{"Before1970", raft.Log{Term: 1, AppendedAt: time.Date(1900, 1, 1, 0, 0, 0, 999999999, time.UTC)}},
		{"FarFuture", raft.Log{Term: 1, AppendedAt: time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC)}},
	}
	e := newLogStoreEnv(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.l
			want.Index = uint64(i + 1)
			storeLogs(t, e.s, []*raft.Log{&want})
			// Decode over a stale entry: every field must be replaced.
			got := *testEntry(1000)
			if err := e.s.GetLog(want.Index, &got); err != nil {
				t.Fatal(err)
			}
			if !logsEqual(&got, &want) {
				t.Fatalf("GetLog = %+v; want %+v", got, want)
			}
			if want.AppendedAt.IsZero() != got.AppendedAt.IsZero() {
				t.Fatalf("AppendedAt %v read back as %v", want.AppendedAt, got.AppendedAt)
			}
			// The result is the caller's: changing it changes nothing stored.
			if len(got.Data) > 0 {
				got.Data[0]++
				var again raft.Log
				if err := e.s.GetLog(want.Index, &again); err != nil || !bytes.Equal(again.Data, want.Data) {
					t.Fatal("GetLog's Data aliases stored memory")
				}
			}
		})
	}
}

// span is an inclusive range of indexes.
type span struct{ lo, hi uint64 }

func TestLogStoreDeleteRange(t *testing.T) {
	dense := []span{{1, 100}}
	gappy := []span{{1, 10}, {20, 25}}
	tests := []struct {
		name        string
		stored      []span
		min, max    uint64
		first, last uint64
		present     []span
		absent      []span
	}{
		{"Front", dense, 1, 40, 41, 100, []span{{41, 100}}, []span{{1, 40}}},
		{"Back", dense, 61, 100, 1, 60, []span{{1, 60}}, []span{{61, 100}}},
		{"Middle", dense, 40, 60, 1, 100, []span{{1, 39}, {61, 100}}, []span{{40, 60}}},
		{"One", dense, 50, 50, 1, 100, []span{{1, 49}, {51, 100}}, []span{{50, 50}}},
		{"ClampBelow", dense, 0, 10, 11, 100, []span{{11, 100}}, []span{{0, 10}}},
		{"ClampAbove", dense, 90, math.MaxUint64, 1, 89, []span{{1, 89}}, []span{{90, 101}}},
		{"Everything", dense, 1, 100, 0, 0, nil, []span{{1, 100}}},
		{"EverythingClamped", dense, 0, math.MaxUint64, 0, 0, nil, []span{{0, 101}}},
		{"Beyond", dense, 200, 300, 1, 100, dense, nil},
		{"Before", []span{{50, 60}}, 1, 49, 50, 60, []span{{50, 60}}, nil},
		{"Inverted", dense, 60, 40, 1, 100, dense, nil},
		{"GapFront", gappy, 1, 10, 20, 25, []span{{20, 25}}, []span{{1, 19}}},
		{"GapFrontIntoGap", gappy, 1, 15, 20, 25, []span{{20, 25}}, []span{{1, 19}}},
		{"GapBack", gappy, 20, 25, 1, 10, []span{{1, 10}}, []span{{11, 26}}},
		{"GapBackFromGap", gappy, 12, 30, 1, 10, []span{{1, 10}}, []span{{11, 26}}},
		{"GapAcross", gappy, 5, 22, 1, 25, []span{{1, 4}, {23, 25}}, []span{{5, 22}}},
		{"GapOnly", gappy, 11, 19, 1, 25, gappy, []span{{11, 19}}},
		{"GapEverything", gappy, 1, 25, 0, 0, nil, []span{{1, 25}}},
	}
	// Every case twice: with point deletes (these spans are below
	// defaultBulkDelete) and with a range tombstone for any span.
	for _, bulk := range []uint64{defaultBulkDelete, 1} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/bulk%d", tt.name, bulk), func(t *testing.T) {
				e := newLogStoreEnv(t)
				e.s.bulkDelete = bulk
				for _, sp := range tt.stored {
					storeLogs(t, e.s, testEntries(sp.lo, sp.hi))
				}
				if err := e.s.DeleteRange(tt.min, tt.max); err != nil {
					t.Fatal(err)
				}
				check := func() {
					t.Helper()
					checkBounds(t, e.s, tt.first, tt.last)
					for _, sp := range tt.present {
						checkPresent(t, e.s, sp.lo, sp.hi)
					}
					for _, sp := range tt.absent {
						checkAbsent(t, e.s, sp.lo, sp.hi)
					}
				}
				check()
				e.reopen() // the cached bounds must match what is on disk
				check()
			})
		}
	}
}

// TestLogStoreBulkDelete: a DeleteRange spanning defaultBulkDelete indexes
// or more writes one range tombstone, not a delete per entry; a shorter
// one writes a point delete per entry. What each writes is measured by the
// bytes it adds to Pebble's write-ahead log.
func TestLogStoreBulkDelete(t *testing.T) {
	e := newLogStoreEnv(t)
	const n = 3 * defaultBulkDelete
	for lo := uint64(1); lo <= n; lo += 256 {
		storeLogs(t, e.s, testEntries(lo, lo+255))
	}
	walBytes := func(lo, hi uint64) uint64 {
		t.Helper()
		before := e.db.Metrics().WAL.BytesIn
		if err := e.s.DeleteRange(lo, hi); err != nil {
			t.Fatal(err)
		}
		return e.db.Metrics().WAL.BytesIn - before
	}
	short := uint64(defaultBulkDelete - 1)
	if got := walBytes(1, short); got < short*uint64(len(logKey(1))) {
		t.Errorf("deleting %d entries wrote %d bytes to the WAL: fewer than a point delete each", short, got)
	}
	checkBounds(t, e.s, short+1, n)
	if got := walBytes(short+1, short+defaultBulkDelete); got > 256 {
		t.Errorf("deleting %d entries wrote %d bytes to the WAL, want one range tombstone", defaultBulkDelete, got)
	}
	checkBounds(t, e.s, short+defaultBulkDelete+1, n)
	checkAbsent(t, e.s, 1, short+defaultBulkDelete)
	checkPresent(t, e.s, short+defaultBulkDelete+1, n)
	e.reopen()
	checkBounds(t, e.s, short+defaultBulkDelete+1, n)
	checkAbsent(t, e.s, 1, short+defaultBulkDelete)
}

func TestLogStoreGaps(t *testing.T) {
	e := newLogStoreEnv(t)
	storeLogs(t, e.s, testEntries(1, 10))
	storeLogs(t, e.s, testEntries(20, 25))
	checkBounds(t, e.s, 1, 25)
	checkPresent(t, e.s, 1, 10)
	checkAbsent(t, e.s, 11, 19)
	checkPresent(t, e.s, 20, 25)

	// Raft compacts up to the snapshot: the new first index is across the
	// gap, not max+1.
	if err := e.s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, e.s, 20, 25)

	// After everything is gone, the log can restart anywhere.
	if err := e.s.DeleteRange(1, 25); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, e.s, 0, 0)
	storeLogs(t, e.s, testEntries(500, 510))
	checkBounds(t, e.s, 500, 510)
	e.reopen()
	checkBounds(t, e.s, 500, 510)
	checkPresent(t, e.s, 500, 510)
}

func TestLogStoreRestart(t *testing.T) {
	e := newLogStoreEnv(t)
	storeLogs(t, e.s, testEntries(1, 50))
	if err := e.s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteRange(46, 50); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
		t.Fatal(err)
	}

	e.reopen()
	checkBounds(t, e.s, 11, 45)
	checkPresent(t, e.s, 11, 45)
	checkAbsent(t, e.s, 1, 10)
	checkAbsent(t, e.s, 46, 50)
	if v, err := e.s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Errorf("GetUint64(CurrentTerm) = %d, %v; want 7", v, err)
	}
	if v, err := e.s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-2" {
		t.Errorf("Get(LastVoteCand) = %q, %v; want node-2", v, err)
	}
}

// TestLogStoreOtherPrefixes checks that keys of the stable store and the FSM,
// which sort on both sides of the log's, never count as log entries: the bug
// that makes a public Pebble log store lose its log on restart.
func TestLogStoreOtherPrefixes(t *testing.T) {
	e := newLogStoreEnv(t)
	for _, k := range [][]byte{
		{0x00, 0xff, 0xff},
		stableKey([]byte("CurrentTerm")),
		{prefixFSM, 0x00},
		{prefixFSM, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0xff, 0xff},
	} {
		if err := e.db.Set(k, []byte("x"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	e.reopen()
	checkBounds(t, e.s, 0, 0)
	storeLogs(t, e.s, testEntries(5, 7))
	e.reopen()
	checkBounds(t, e.s, 5, 7)
	if err := e.s.DeleteRange(5, 7); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, e.s, 0, 0)

	// A malformed key under the log prefix is reported, not skipped.
	if err := e.db.Set([]byte{prefixLog, 1}, nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := newLogStore(e.db); err == nil {
		t.Fatal("newLogStore with a malformed log key: no error")
	}
}

// TestLogStoreConcurrent runs readers against a writer appending and a
// compactor trimming the front, as raft's replication goroutines, main loop
// and snapshot goroutine do. Run it with -race.
func TestLogStoreConcurrent(t *testing.T) {
	// Point deletes (the compactor's spans are short), and a range
	// tombstone for every span.
	for _, bulk := range []uint64{defaultBulkDelete, 1} {
		t.Run(fmt.Sprintf("bulk%d", bulk), func(t *testing.T) { testLogStoreConcurrent(t, bulk) })
	}
}

func testLogStoreConcurrent(t *testing.T, bulk uint64) {
	const total, batch, trailing = 3000, 16, 100
	e := newLogStoreEnv(t)
	s := e.s
	s.bulkDelete = bulk

	done := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	wg.Go(func() { // writer
		defer close(done)
		for lo := uint64(1); lo <= total; lo += batch {
			if err := s.StoreLogs(testEntries(lo, min(lo+batch-1, total))); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() { // compactor
		for {
			select {
			case <-done:
				return
			default:
			}
			first, _ := s.FirstIndex()
			last, _ := s.LastIndex()
			if last > first+trailing {
				if err := s.DeleteRange(first, last-trailing); err != nil {
					errs <- err
					return
				}
			}
		}
	})
	for r := range 2 {
		wg.Go(func() { // reader
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			var prevLast uint64
			for {
				select {
				case <-done:
					return
				default:
				}
				last, _ := s.LastIndex()
				first, _ := s.FirstIndex()
				if last < prevLast {
					errs <- fmt.Errorf("LastIndex went back from %d to %d", prevLast, last)
					return
				}
				prevLast = last
				if last == 0 {
					continue
				}
				if first == 0 {
					errs <- fmt.Errorf("FirstIndex 0 with LastIndex %d", last)
					return
				}
				if first > last {
					continue // compaction overtook the LastIndex just read
				}
				i := first + rng.Uint64N(last-first+1)
				var got raft.Log
				err := s.GetLog(i, &got)
				switch {
				case err == nil:
					if !logsEqual(&got, testEntry(i)) {
						errs <- fmt.Errorf("GetLog(%d) = %+v", i, got)
						return
					}
				case err == raft.ErrLogNotFound:
					// Only a concurrent compaction may remove an index
					// that was within the bounds.
					if now, _ := s.FirstIndex(); now <= i {
						errs <- fmt.Errorf("GetLog(%d) not found with FirstIndex %d", i, now)
						return
					}
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	last, _ := s.LastIndex()
	if last != total {
		t.Fatalf("LastIndex = %d; want %d", last, total)
	}
	first, _ := s.FirstIndex()
	if first <= 1 {
		t.Fatalf("FirstIndex = %d: the compactor never ran", first)
	}
	checkPresent(t, s, first, total)
	e.reopen()
	checkBounds(t, e.s, first, total)
}

func TestStableStore(t *testing.T) {
	e := newLogStoreEnv(t)
	s := e.s

	t.Run("SetGet", func(t *testing.T) {
		in := []byte("node-1")
		if err := s.Set([]byte("LastVoteCand"), in); err != nil {
			t.Fatal(err)
		}
		in[0] = 'X' // the store keeps its own copy
		got, err := s.Get([]byte("LastVoteCand"))
		if err != nil || string(got) != "node-1" {
			t.Fatalf("Get = %q, %v; want node-1", got, err)
		}
		got[0] = 'Y' // and hands out copies
		if again, _ := s.Get([]byte("LastVoteCand")); string(again) != "node-1" {
			t.Fatalf("Get after changing its result = %q", again)
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get([]byte("LastVoteCand")); string(got) != "node-2" {
			t.Fatalf("Get after overwrite = %q; want node-2", got)
		}
	})
	t.Run("EmptyValue", func(t *testing.T) {
		if err := s.Set([]byte("empty"), nil); err != nil {
			t.Fatal(err)
		}
		// Raft reads a nil LastVoteCand as "no vote": a set key is non-nil.
		got, err := s.Get([]byte("empty"))
		if err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Get = %#v, %v; want an empty non-nil slice", got, err)
		}
	})
	t.Run("Uint64", func(t *testing.T) {
		for _, v := range []uint64{0, 1, 1 << 40, math.MaxUint64} {
			if err := s.SetUint64([]byte("CurrentTerm"), v); err != nil {
				t.Fatal(err)
			}
			if got, err := s.GetUint64([]byte("CurrentTerm")); err != nil || got != v {
				t.Fatalf("GetUint64 = %d, %v; want %d", got, err, v)
			}
		}
	})
	t.Run("Missing", func(t *testing.T) {
		// hashicorp/raft tests err.Error() == "not found" (api.go, raft.go).
		v, err := s.Get([]byte("never-set"))
		if err == nil || err.Error() != "not found" || v != nil {
			t.Fatalf("Get of a missing key = %q, %v; want nil, \"not found\"", v, err)
		}
		n, err := s.GetUint64([]byte("never-set"))
		if err == nil || err.Error() != "not found" || n != 0 {
			t.Fatalf("GetUint64 of a missing key = %d, %v; want 0, \"not found\"", n, err)
		}
	})
	t.Run("NotUint64", func(t *testing.T) {
		if err := s.Set([]byte("short"), []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		_, err := s.GetUint64([]byte("short"))
		if err == nil || err.Error() == "not found" || !strings.Contains(err.Error(), "3 bytes") {
			t.Fatalf("GetUint64 of a 3-byte value: %v", err)
		}
	})
	t.Run("NotInLog", func(t *testing.T) {
		checkBounds(t, s, 0, 0)
	})
	t.Run("Restart", func(t *testing.T) {
		e.reopen()
		s = e.s
		if got, err := s.Get([]byte("LastVoteCand")); err != nil || string(got) != "node-2" {
			t.Errorf("Get after restart = %q, %v", got, err)
		}
		if got, err := s.GetUint64([]byte("CurrentTerm")); err != nil || got != math.MaxUint64 {
			t.Errorf("GetUint64 after restart = %d, %v", got, err)
		}
		if _, err := s.Get([]byte("never-set")); err == nil || err.Error() != "not found" {
			t.Errorf("Get of a missing key after restart: %v", err)
		}
	})
}

// TestStableStoreRaftHasExistingState runs raft's own check for a missing
// CurrentTerm, which fails on any error but one reading "not found".
func TestStableStoreRaftHasExistingState(t *testing.T) {
	e := newLogStoreEnv(t)
	snaps := raft.NewInmemSnapshotStore()
	if ok, err := raft.HasExistingState(e.s, e.s, snaps); err != nil || ok {
		t.Fatalf("HasExistingState on a new store = %v, %v; want false, nil", ok, err)
	}
	if err := e.s.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatal(err)
	}
	if ok, err := raft.HasExistingState(e.s, e.s, snaps); err != nil || !ok {
		t.Fatalf("HasExistingState with a term = %v, %v; want true, nil", ok, err)
	}
}

func TestLogStoreOpenPebble(t *testing.T) {
	db, err := openPebble(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := db.FormatMajorVersion(); v != pebble.FormatNewest {
		t.Errorf("FormatMajorVersion = %d; want %d", v, pebble.FormatNewest)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = openPebble(file, nil)
	if want := fmt.Sprintf("open pebble %q: ", file); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("openPebble on a file: %v; want an error starting %s", err, want)
	}
}

// countingFSM counts the commands applied to it.
type countingFSM struct {
	mu sync.Mutex
	n  uint64
}

func (f *countingFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return f.n
}

func (f *countingFSM) count() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) {
	return countSnapshot(f.count()), nil
}

func (f *countingFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n = binary.BigEndian.Uint64(b[:])
	return nil
}

// countSnapshot is a countingFSM's snapshot: its count.
type countSnapshot uint64

func (c countSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(c))); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

// pollUntil calls cond until it returns true, failing the test after
// timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLogStoreRaft runs a single-node hashicorp/raft on the store: bootstrap,
// apply, snapshot and compact, restart from the same Pebble directory, win
// the election again with the persisted term and keep applying.
func TestLogStoreRaft(t *testing.T) {
	dir := t.TempDir()
	snapDir := filepath.Join(dir, "snapshots")
	e := &logStoreEnv{t: t, dir: filepath.Join(dir, "pebble")}
	e.open()
	t.Cleanup(e.close)

	const id = raft.ServerID("node-1")
	var (
		r   *raft.Raft
		fsm *countingFSM
	)
	start := func() {
		t.Helper()
		conf := raft.DefaultConfig()
		conf.LocalID = id
		conf.HeartbeatTimeout = 50 * time.Millisecond
		conf.ElectionTimeout = 50 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.TrailingLogs = 10
		conf.SnapshotThreshold = math.MaxUint64 // snapshots only when asked
		conf.LogOutput = io.Discard
		snaps, err := raft.NewFileSnapshotStore(snapDir, 1, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		_, trans := raft.NewInmemTransport(raft.ServerAddress(id))
		fsm = &countingFSM{}
		existing, err := raft.HasExistingState(e.s, e.s, snaps)
		if err != nil {
			t.Fatal(err)
		}
		if r, err = raft.NewRaft(conf, fsm, e.s, e.s, snaps, trans); err != nil {
			t.Fatal(err)
		}
		if !existing {
			cfg := raft.Configuration{Servers: []raft.Server{{ID: id, Address: trans.LocalAddr()}}}
			if err := r.BootstrapCluster(cfg).Error(); err != nil {
				t.Fatal(err)
			}
		}
		pollUntil(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	}
	stop := func() {
		t.Helper()
		if err := r.Shutdown().Error(); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(n int) {
		t.Helper()
		futures := make([]raft.ApplyFuture, n)
		for i := range futures {
			futures[i] = r.Apply(fmt.Appendf(nil, "cmd-%d", i), 5*time.Second)
		}
		for _, f := range futures {
			if err := f.Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	term := func() uint64 {
		t.Helper()
		v, err := e.s.GetUint64([]byte("CurrentTerm"))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	start()
	apply(100)
	if err := r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	apply(20)
	if got := fsm.count(); got != 120 {
		t.Fatalf("applied %d commands; want 120", got)
	}
	// The snapshot compacted the log through raft's DeleteRange, keeping
	// TrailingLogs entries.
	if first, _ := e.s.FirstIndex(); first <= 1 {
		t.Fatalf("FirstIndex = %d after a snapshot; want the log compacted", first)
	}
	lastIndex := r.LastIndex()
	oldTerm := term()
	stop()

	e.reopen()
	if last, _ := e.s.LastIndex(); last != lastIndex {
		t.Fatalf("LastIndex after restart = %d; want %d", last, lastIndex)
	}
	start()
	// The persisted term was read back and a new election raised it.
	if newTerm := term(); newTerm <= oldTerm {
		t.Fatalf("term after restart = %d; want more than %d", newTerm, oldTerm)
	}
	if vote, err := e.s.GetUint64([]byte("LastVoteTerm")); err != nil || vote != term() {
		t.Fatalf("LastVoteTerm = %d, %v; want the current term %d", vote, err, term())
	}
	// Snapshot restore plus replay of the log brings the FSM back.
	pollUntil(t, 10*time.Second, "the FSM to catch up", func() bool { return fsm.count() == 120 })
	if got := r.LastIndex(); got <= lastIndex {
		t.Fatalf("raft LastIndex = %d; want more than %d", got, lastIndex)
	}
	apply(10)
	if got := fsm.count(); got != 130 {
		t.Fatalf("applied %d commands after restart; want 130", got)
	}
	stop()
}
