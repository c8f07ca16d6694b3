package raftstore

import "encoding/binary"

// One Pebble database holds the Raft log, Raft's stable store and the FSM
// state. Each lives under its own one-byte prefix, and every iterator is
// bounded to its prefix (LowerBound/UpperBound), so no scan can wander into
// another's keys.
const (
	prefixLog    byte = 0x01 // prefixLog + index (8 bytes, big endian) -> encoded raft.Log
	prefixStable byte = 0x02 // prefixStable + key -> value
	prefixFSM    byte = 0x03 // FSM state; see fsmstate.go for the layout below it
)

// logKey returns the key of the log entry at index.
func logKey(index uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], index)
	return k
}

// stableKey returns the key under which the stable store keeps key.
func stableKey(key []byte) []byte {
	k := make([]byte, 1+len(key))
	k[0] = prefixStable
	copy(k[1:], key)
	return k
}

// prefixUpperBound returns the smallest key greater than every key that
// starts with p: the exclusive upper bound of an iterator over p.
func prefixUpperBound(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// appendLogKey appends the key of the log entry at index to dst, so a loop
// over many entries can reuse one buffer instead of calling logKey.
func appendLogKey(dst []byte, index uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixLog), index)
}

// logIndex returns the index in the log key k, and false if k is not a log
// key.
func logIndex(k []byte) (uint64, bool) {
	if len(k) != 9 || k[0] != prefixLog {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}
