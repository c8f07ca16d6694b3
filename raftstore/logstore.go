package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// logStore implements raft.LogStore and raft.StableStore on a Pebble database
// it shares with the FSM. Log entries live under prefixLog, keyed by index;
// stable keys under prefixStable. Every iterator is bounded to one prefix.
//
// Durability: every write (StoreLog, StoreLogs, DeleteRange, Set, SetUint64)
// is one Pebble batch committed with pebble.Sync, so it is in the fsynced
// WAL before the call returns. Raft's safety rests on this. A node
// acknowledges AppendEntries, and a leader counts itself toward a commit
// quorum, as soon as StoreLogs returns: an entry lost in a crash after that
// can lose a committed write. The current term and the vote (SetUint64 and
// Set) must be durable before the node answers a vote request: a node that
// forgets its vote can vote twice in one term and elect two leaders.
// DeleteRange is synced too, so that entries stay deleted once it returns:
// a conflict truncation undone by a crash would bring back entries from a
// stale term behind the ones that replaced them.
// Pebble groups concurrent Sync commits into one fsync.
//
// Concurrency: all methods are safe for concurrent use. Raft's replication
// goroutines call GetLog, FirstIndex and LastIndex while its main loop calls
// StoreLogs and its snapshot goroutine calls DeleteRange. Writers of the log
// are serialised by a mutex; readers take no lock. FirstIndex and LastIndex
// are cached in memory: they grow only after the batch storing the new
// entries has committed, and shrink before the batch deleting entries
// commits. So an entry within the bounds a reader saw is readable unless a
// DeleteRange has begun since; GetLog then returns raft.ErrLogNotFound and
// the bounds no longer include it. Raft handles that: it retries with the
// new FirstIndex, or sends a lagging follower a snapshot.
//
// Gaps: the log need not be contiguous. After a follower installs a
// snapshot, raft appends entries after the snapshot's index and leaves the
// older ones in place, so the log can hold 1..10 and 20..25. GetLog in a gap
// returns raft.ErrLogNotFound. logStore does not implement
// raft.MonotonicLogStore.
type logStore struct {
	db *pebble.DB

	// mu serialises StoreLogs and DeleteRange, so that each sees first and
	// last as the previous one left them.
	mu sync.Mutex

	// first and last are the lowest and highest stored indexes, both 0 when
	// the log is empty. Written under mu (raised after a store commits,
	// lowered before a delete commits); read without it.
	first atomic.Uint64
	last  atomic.Uint64

	// observe, if set, is called after each synced StoreLogs with how
	// long the write took, waiting for the lock included, and how many
	// entries it stored (Config.ObserveLogSync).
	observe func(time.Duration, int)

	// bulkDelete is how many indexes a DeleteRange must span for it to
	// write one range tombstone rather than a point delete per entry
	// (defaultBulkDelete; tests lower it).
	bulkDelete uint64
}

// defaultBulkDelete is the span from which DeleteRange writes a range
// tombstone. Raft drops the log up to a snapshot in one call: under load,
// hundreds of thousands of entries, which point deletes would have to
// find, write and sync one by one while StoreLogs waits for the lock. Below
// it (a follower truncating a conflicting tail, a short log), point deletes
// keep the log's prefix free of many small range tombstones.
const defaultBulkDelete = 1024

var (
	_ raft.LogStore    = (*logStore)(nil)
	_ raft.StableStore = (*logStore)(nil)
)

// logPrefixLower and logPrefixUpper bound an iterator over every log key.
var (
	logPrefixLower = []byte{prefixLog}
	logPrefixUpper = prefixUpperBound([]byte{prefixLog})
)

// newLogStore returns a log and stable store on db, reading the first and
// last log indexes from disk. It does not take ownership of db: the caller
// closes db after it is done with the store.
func newLogStore(db *pebble.DB) (*logStore, error) {
	s := &logStore{db: db, bulkDelete: defaultBulkDelete}
	first, err := s.seekIndex(logPrefixLower, logPrefixUpper, false)
	if err != nil {
		return nil, fmt.Errorf("open log store: %w", err)
	}
	last, err := s.seekIndex(logPrefixLower, logPrefixUpper, true)
	if err != nil {
		return nil, fmt.Errorf("open log store: %w", err)
	}
	s.first.Store(first)
	s.last.Store(last)
	return s, nil
}

// FirstIndex returns the lowest index in the log, or 0 if it is empty.
func (s *logStore) FirstIndex() (uint64, error) {
	return s.first.Load(), nil
}

// LastIndex returns the highest index in the log, or 0 if it is empty.
func (s *logStore) LastIndex() (uint64, error) {
	return s.last.Load(), nil
}

// GetLog reads the entry at index into l. It returns raft.ErrLogNotFound,
// unwrapped, when there is no such entry: raft compares with ==.
func (s *logStore) GetLog(index uint64, l *raft.Log) error {
	v, closer, err := s.db.Get(logKey(index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	// v is Pebble's memory until closer is closed; decodeLog copies Data and
	// Extensions out of it.
	err = decodeLog(index, v, l)
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	return nil
}

// StoreLog stores one entry, synced. See StoreLogs.
func (s *logStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

// StoreLogs stores the entries in one batch, synced to disk before it
// returns. An entry replaces any stored at the same index. The entries need
// not be contiguous with each other or with the stored log. Index 0 is
// rejected: raft never uses it, and FirstIndex and LastIndex use 0 for an
// empty log.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	lo, hi := uint64(math.MaxUint64), uint64(0)
	for _, l := range logs {
		if l == nil {
			return errors.New("store logs: nil entry")
		}
		if l.Index == 0 {
			return errors.New("store logs: index 0 is not a valid raft index")
		}
		lo, hi = min(lo, l.Index), max(hi, l.Index)
	}

	b := s.db.NewBatch()
	defer b.Close()
	var key, val []byte // reused: the batch copies both
	for _, l := range logs {
		key = appendLogKey(key[:0], l.Index)
		val = encodeLog(val[:0], l)
		if err := b.Set(key, val, nil); err != nil {
			return fmt.Errorf("store logs %d..%d: %w", lo, hi, err)
		}
	}

	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store logs %d..%d: %w", lo, hi, err)
	}
	if s.observe != nil {
		s.observe(time.Since(start), len(logs))
	}
	if first := s.first.Load(); first == 0 || lo < first {
		s.first.Store(lo)
	}
	if hi > s.last.Load() {
		s.last.Store(hi)
	}
	return nil
}

// DeleteRange deletes the entries from lo to hi inclusive, clamped to the
// stored [FirstIndex, LastIndex], in one synced batch. A span of
// bulkDelete indexes or more is deleted with one range tombstone, which
// Pebble's compactions drop whole files under; a shorter one with a point
// delete for each entry present, found by a bounded scan, so that a range
// spanning a gap costs only the entries that exist (frequent small range
// tombstones over a queue-like prefix such as the log fragment and slow
// Pebble down). Deleting every entry leaves FirstIndex and LastIndex at 0.
func (s *logStore) DeleteRange(lo, hi uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	first, last := s.first.Load(), s.last.Load()
	lo, hi = max(lo, first), min(hi, last)
	if first == 0 || lo > hi {
		return nil // empty log, or nothing stored in [lo, hi]
	}

	b := s.db.NewBatch()
	defer b.Close()
	if hi-lo+1 >= s.bulkDelete { // clamped above: lo >= 1, no overflow
		some, err := s.seekIndex(logKey(lo), upperLogKey(hi), false)
		if err != nil {
			return fmt.Errorf("delete logs %d..%d: %w", lo, hi, err)
		}
		if some == 0 {
			return nil // [lo, hi] lies in a gap
		}
		if err := b.DeleteRange(logKey(lo), upperLogKey(hi), nil); err != nil {
			return fmt.Errorf("delete logs %d..%d: %w", lo, hi, err)
		}
	} else {
		if err := s.deleteEntries(b, lo, hi); err != nil {
			return fmt.Errorf("delete logs %d..%d: %w", lo, hi, err)
		}
		if b.Empty() {
			return nil // [lo, hi] lies in a gap
		}
	}

	// The log may have gaps, so the new bounds are found on disk, not
	// assumed to be hi+1 and lo-1. The seeks skip the entries being
	// deleted, so they neither see them nor wade through their tombstones.
	newFirst, newLast := first, last
	var err error
	if lo == first {
		if newFirst, err = s.seekIndex(upperLogKey(hi), logPrefixUpper, false); err != nil {
			return fmt.Errorf("delete logs %d..%d: find first index: %w", lo, hi, err)
		}
	}
	if hi == last {
		if newLast, err = s.seekIndex(logPrefixLower, logKey(lo), true); err != nil {
			return fmt.Errorf("delete logs %d..%d: find last index: %w", lo, hi, err)
		}
	}
	if newFirst == 0 || newLast == 0 {
		newFirst, newLast = 0, 0
	}

	// Shrink the bounds before the entries go, so that a reader who finds
	// an entry gone sees bounds that no longer include it.
	s.last.Store(newLast)
	s.first.Store(newFirst)
	if err := b.Commit(pebble.Sync); err != nil {
		s.first.Store(first)
		s.last.Store(last)
		return fmt.Errorf("delete logs %d..%d: %w", lo, hi, err)
	}
	return nil
}

// deleteEntries adds to b a point delete for every entry stored in [lo, hi].
func (s *logStore) deleteEntries(b *pebble.Batch, lo, hi uint64) (err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: logKey(lo),
		UpperBound: upperLogKey(hi),
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for valid := it.First(); valid; valid = it.Next() {
		if err := b.Delete(it.Key(), nil); err != nil {
			return err
		}
	}
	return it.Error()
}

// seekIndex returns the lowest (or, if last, the highest) log index whose
// key is in [lower, upper), or 0 if there is none.
func (s *logStore) seekIndex(lower, upper []byte, last bool) (index uint64, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	var valid bool
	if last {
		valid = it.Last()
	} else {
		valid = it.First()
	}
	if !valid {
		return 0, it.Error()
	}
	index, ok := logIndex(it.Key())
	if !ok {
		return 0, fmt.Errorf("malformed log key %x", it.Key())
	}
	return index, nil
}

// upperLogKey returns the exclusive upper bound of an iterator over the log
// entries up to and including index.
func upperLogKey(index uint64) []byte {
	if index == math.MaxUint64 {
		return logPrefixUpper
	}
	return logKey(index + 1)
}

// Set stores val under key, synced.
func (s *logStore) Set(key, val []byte) error {
	if err := s.db.Set(stableKey(key), val, pebble.Sync); err != nil {
		return fmt.Errorf("set stable key %q: %w", key, err)
	}
	return nil
}

// Get returns a copy of the value stored under key. A key never set returns
// an error whose text is exactly "not found", the only form raft
// recognises.
func (s *logStore) Get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(stableKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get stable key %q: %w", key, err)
	}
	// Copy out of Pebble's memory before closing; non-nil even when empty,
	// since raft takes a nil value to mean "no vote".
	val := append([]byte{}, v...)
	if err := closer.Close(); err != nil {
		return nil, fmt.Errorf("get stable key %q: %w", key, err)
	}
	return val, nil
}

// SetUint64 stores val under key as 8 big-endian bytes, synced.
func (s *logStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the number SetUint64 stored under key. A key never set
// returns 0 and the "not found" error, as Get does; a value that is not 8
// bytes long is an error.
func (s *logStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err // errKeyNotFound must reach raft unwrapped
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("get uint64 %q: value is %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// logFormatV1 is the first version of the encoding of a raft.Log value:
//
//	version     byte, 1
//	term        uvarint
//	type        byte (raft.LogType)
//	data        uvarint length, then the bytes
//	extensions  uvarint length, then the bytes
//	appendedAt  varint Unix seconds, then uvarint nanoseconds (< 1e9);
//	            absent when AppendedAt is the zero time
//
// The index is not stored: it is in the key. A later version gets a new
// number and decodeLog keeps reading this one.
const logFormatV1 byte = 1

// encodeLog appends the encoding of l, without its index, to dst.
func encodeLog(dst []byte, l *raft.Log) []byte {
	dst = slices.Grow(dst, 1+binary.MaxVarintLen64+1+
		binary.MaxVarintLen64+len(l.Data)+
		binary.MaxVarintLen64+len(l.Extensions)+
		2*binary.MaxVarintLen64)
	dst = append(dst, logFormatV1)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type))
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	if !l.AppendedAt.IsZero() {
		dst = binary.AppendVarint(dst, l.AppendedAt.Unix())
		dst = binary.AppendUvarint(dst, uint64(l.AppendedAt.Nanosecond()))
	}
	return dst
}

// decodeLog decodes b, as encodeLog wrote it, into l, setting l.Index to
// index (the index comes from the key). Data and Extensions are copies that
// share no memory with b; empty ones are nil. AppendedAt is in UTC, or the
// zero time. Truncated, oversized or otherwise malformed input returns an
// error and leaves l unchanged; no input makes decodeLog panic.
func decodeLog(index uint64, b []byte, l *raft.Log) error {
	if len(b) == 0 {
		return fmt.Errorf("decode log %d: empty value", index)
	}
	if b[0] != logFormatV1 {
		return fmt.Errorf("decode log %d: unknown format version %d", index, b[0])
	}
	b = b[1:]

	term, n := binary.Uvarint(b)
	if n <= 0 {
		return fmt.Errorf("decode log %d: bad term", index)
	}
	b = b[n:]
	if len(b) == 0 {
		return fmt.Errorf("decode log %d: missing type", index)
	}
	typ := raft.LogType(b[0])
	b = b[1:]

	data, b, ok := splitField(b)
	if !ok {
		return fmt.Errorf("decode log %d: bad data length", index)
	}
	ext, b, ok := splitField(b)
	if !ok {
		return fmt.Errorf("decode log %d: bad extensions length", index)
	}

	var at time.Time
	if len(b) > 0 {
		sec, n := binary.Varint(b)
		if n <= 0 {
			return fmt.Errorf("decode log %d: bad appended-at seconds", index)
		}
		b = b[n:]
		nsec, n := binary.Uvarint(b)
		if n <= 0 || nsec >= uint64(time.Second) {
			return fmt.Errorf("decode log %d: bad appended-at nanoseconds", index)
		}
		b = b[n:]
		if len(b) > 0 {
			return fmt.Errorf("decode log %d: %d trailing bytes", index, len(b))
		}
		at = time.Unix(sec, int64(nsec)).UTC()
	}

	// One allocation holds both copies; the capacity limits keep an append
	// to Data from overwriting Extensions.
	var buf []byte
	if len(data)+len(ext) > 0 {
		buf = make([]byte, len(data)+len(ext))
	}
	l.Index = index
	l.Term = term
	l.Type = typ
	l.Data = copyField(buf[:0:len(data)], data)
	l.Extensions = copyField(buf[len(data):len(data):len(buf)], ext)
	l.AppendedAt = at
	return nil
}

// splitField splits a uvarint length and that many bytes off the front of b.
func splitField(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	b = b[k:]
	return b[:n], b[n:], true
}

// copyField copies src into dst, which has room for it, and returns nil
// for an empty src.
func copyField(dst, src []byte) []byte {
	if len(src) == 0 {
		return nil
	}
	return append(dst, src...)
}
