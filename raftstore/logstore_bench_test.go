package raftstore

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// newBenchLogStore opens a logStore on a fresh database, closed at cleanup.
func newBenchLogStore(b *testing.B) *logStore {
	b.Helper()
	db, err := openPebble(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	s, err := newLogStore(db)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchEntries returns n entries with dataSize bytes of data each, as the
// leader hands them to StoreLogs, indexes unset.
func benchEntries(n, dataSize int) []*raft.Log {
	data := bytes.Repeat([]byte{'x'}, dataSize)
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
	}
	return logs
}

// BenchmarkStoreLogs measures one synced StoreLogs of a full
// MaxAppendEntries batch (64 entries of 128 bytes), the leader's write path.
func BenchmarkStoreLogs(b *testing.B) {
	const batch, dataSize = 64, 128
	s := newBenchLogStore(b)
	logs := benchEntries(batch, dataSize)
	next := uint64(1)
	b.ReportAllocs()
	b.SetBytes(batch * dataSize)
	for b.Loop() {
		for _, l := range logs {
			l.Index = next
			next++
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(next-1)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkGetLog measures reading one 128-byte entry of 16,384, as
// replication to a follower does.
func BenchmarkGetLog(b *testing.B) {
	const n, batch, dataSize = 16384, 64, 128
	s := newBenchLogStore(b)
	logs := benchEntries(batch, dataSize)
	for lo := uint64(1); lo <= n; lo += batch {
		for i, l := range logs {
			l.Index = lo + uint64(i)
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	var l raft.Log
	i := uint64(0)
	b.ReportAllocs()
	b.SetBytes(dataSize)
	for b.Loop() {
		if err := s.GetLog(i%n+1, &l); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
