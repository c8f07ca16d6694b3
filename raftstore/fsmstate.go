package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/herald-broker/herald/broker"
)

// The FSM's keys, all under prefixFSM:
//
//	'a'                                   -> applied index, last time (fsmMetaKey)
//	'p'                                   -> retention policy, as a cmdPolicy body
//	'k' ns uvarint(len) channel 0x00      -> channel meta
//	'k' ns uvarint(len) channel 0x01 seq  -> retained message: time (8 bytes) + payload
//	'x' deadline ns uvarint(len) channel  -> expiry index (empty value)
//
// A channel's meta and messages share one prefix, so one iterator reads both
// from the same point in time. The length prefix keeps one channel's keys
// from ever being a prefix of another's.
const (
	fsmApplied byte = 'a'
	fsmPolicy  byte = 'p'
	fsmChannel byte = 'k'
	fsmExpiry  byte = 'x'

	chanMeta byte = 0x00
	chanMsg  byte = 0x01
)

var (
	fsmAppliedKey = []byte{prefixFSM, fsmApplied}
	fsmPolicyKey  = []byte{prefixFSM, fsmPolicy}
)

// chanKey identifies a channel in memory.
type chanKey struct {
	ns   broker.Namespace
	name string
}

// channelPrefix returns the prefix of every key of the channel.
func channelPrefix(k chanKey) []byte {
	b := make([]byte, 0, 3+binary.MaxVarintLen64+len(k.name)+9)
	b = append(b, prefixFSM, fsmChannel, byte(k.ns))
	b = binary.AppendUvarint(b, uint64(len(k.name)))
	return append(b, k.name...)
}

func metaKey(k chanKey) []byte { return append(channelPrefix(k), chanMeta) }

func msgKey(prefix []byte, seq uint64) []byte {
	b := make([]byte, len(prefix), len(prefix)+9)
	copy(b, prefix)
	b = append(b, chanMsg)
	return binary.BigEndian.AppendUint64(b, seq)
}

func expiryKey(deadline int64, k chanKey) []byte {
	b := make([]byte, 0, 11+binary.MaxVarintLen64+len(k.name))
	b = append(b, prefixFSM, fsmExpiry)
	b = binary.BigEndian.AppendUint64(b, uint64(deadline))
	b = append(b, byte(k.ns))
	b = binary.AppendUvarint(b, uint64(len(k.name)))
	return append(b, k.name...)
}

// parseExpiryKey splits an expiry index key.
func parseExpiryKey(key []byte) (int64, chanKey, error) {
	if len(key) < 11 || key[0] != prefixFSM || key[1] != fsmExpiry {
		return 0, chanKey{}, errors.New("not an expiry key")
	}
	deadline := int64(binary.BigEndian.Uint64(key[2:10]))
	ns := broker.Namespace(key[10])
	n, w := binary.Uvarint(key[11:])
	if w <= 0 || uint64(len(key)-11-w) != n {
		return 0, chanKey{}, errors.New("bad expiry key")
	}
	return deadline, chanKey{ns: ns, name: string(key[11+w:])}, nil
}

// parseChannelKey splits a channel key into the channel and the rest.
func parseChannelKey(key []byte) (chanKey, []byte, error) {
	if len(key) < 4 || key[0] != prefixFSM || key[1] != fsmChannel {
		return chanKey{}, nil, errors.New("not a channel key")
	}
	ns := broker.Namespace(key[2])
	n, w := binary.Uvarint(key[3:])
	start := 3 + w
	if w <= 0 || n > uint64(len(key)-start) {
		return chanKey{}, nil, errors.New("bad channel key")
	}
	end := start + int(n)
	return chanKey{ns: ns, name: string(key[start:end])}, key[end:], nil
}

// channelMeta is a channel's replicated state.
type channelMeta struct {
	epoch    uint64 // log index of the entry that created the channel
	lastSeq  uint64
	firstSeq uint64 // oldest retained; lastSeq+1 when nothing is retained
	count    uint64 // retained messages
	bytes    int64  // retained payload bytes
	created  int64  // leader time, Unix ms
	lastPub  int64
	oldestTs int64 // time of the oldest retained message, or an earlier time
	indexed  int64 // deadline under which the channel sits in the expiry index; 0 if none

	// In memory only.
	prefix  []byte // channelPrefix
	ruleGen uint64 // policy generation rule was computed for
	rule    Rule
	oldest  []msgStat // the oldest retained messages, from firstSeq on; at most oldestCap, maybe fewer than count
	dirty   bool      // changed since the last checkpoint

	// The retained messages are those from firstSeq to lastSeq. Those up
	// to storedLast are in Pebble (as of the last checkpoint: Pebble also
	// holds storedFirst up to firstSeq-1, trimmed since); the tail holds
	// the rest, in order. An element of tail is never changed once
	// appended: readers copy the slice and read it without the lock.
	storedFirst, storedLast uint64 // none stored when storedFirst > storedLast
	tail                    []tailMsg
}

// tailMsg is a retained message not yet written to Pebble.
type tailMsg struct {
	seq     uint64
	ts      int64
	payload []byte
}

// oldestCap bounds each channel's in-memory cache of its oldest retained
// messages. Trimming takes sizes and times from it; when it runs dry one
// iterator scan refills it, instead of a Pebble read per trimmed message.
const oldestCap = 1024

// msgStat is a retained message's time and payload size.
type msgStat struct {
	ts   int64
	size int64
}

func (m *channelMeta) encode() []byte {
	b := make([]byte, 0, 9*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, m.epoch)
	b = binary.AppendUvarint(b, m.lastSeq)
	b = binary.AppendUvarint(b, m.firstSeq)
	b = binary.AppendUvarint(b, m.count)
	b = binary.AppendVarint(b, m.bytes)
	b = binary.AppendVarint(b, m.created)
	b = binary.AppendVarint(b, m.lastPub)
	b = binary.AppendVarint(b, m.oldestTs)
	return binary.AppendVarint(b, m.indexed)
}

func decodeMeta(b []byte) (*channelMeta, error) {
	m := &channelMeta{}
	var ok = true
	u := func(p *uint64) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			ok = false
			return
		}
		*p, b = v, b[n:]
	}
	s := func(p *int64) {
		v, n := binary.Varint(b)
		if n <= 0 {
			ok = false
			return
		}
		*p, b = v, b[n:]
	}
	u(&m.epoch)
	u(&m.lastSeq)
	u(&m.firstSeq)
	u(&m.count)
	s(&m.bytes)
	s(&m.created)
	s(&m.lastPub)
	s(&m.oldestTs)
	s(&m.indexed)
	if !ok || len(b) != 0 {
		return nil, errors.New("corrupt channel meta")
	}
	return m, nil
}

func (m *channelMeta) info() broker.ChannelInfo {
	return broker.ChannelInfo{
		Epoch: m.epoch, LastSeq: m.lastSeq, FirstSeq: m.firstSeq,
		Retained: int(m.count), RetainedBytes: m.bytes,
		Created: m.created, LastPublish: m.lastPub,
	}
}

func encodeMsgValue(ts int64, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint64(b, uint64(ts))
	return append(b, payload...)
}

func decodeMsgValue(v []byte) (ts int64, payload []byte, err error) {
	if len(v) < 8 {
		return 0, nil, errors.New("corrupt message value")
	}
	return int64(binary.BigEndian.Uint64(v)), v[8:], nil
}

// fillOldest loads the times and sizes of up to oldestCap of a channel's
// oldest retained messages, from Pebble (r holds the last checkpoint) and
// the tail.
func fillOldest(r pebble.Reader, m *channelMeta) {
	m.oldest = m.oldest[:0]
	if from := max(m.firstSeq, m.storedFirst); from <= m.storedLast {
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: msgKey(m.prefix, from), UpperBound: msgKey(m.prefix, m.storedLast+1)})
		if err != nil {
			panic(fmt.Sprintf("raftstore: read retained messages: %v", err))
		}
		for valid := it.First(); valid && len(m.oldest) < oldestCap; valid = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				panic(fmt.Sprintf("raftstore: read retained messages: %v", err))
			}
			ts, payload, err := decodeMsgValue(v)
			if err != nil {
				panic(fmt.Sprintf("raftstore: read retained messages: %v", err))
			}
			m.oldest = append(m.oldest, msgStat{ts: ts, size: int64(len(payload))})
		}
		if err := it.Close(); err != nil {
			panic(fmt.Sprintf("raftstore: read retained messages: %v", err))
		}
	}
	for _, t := range m.tail {
		if len(m.oldest) == oldestCap {
			break
		}
		m.oldest = append(m.oldest, msgStat{ts: t.ts, size: int64(len(t.payload))})
	}
	if len(m.oldest) == 0 {
		panic(fmt.Sprintf("raftstore: channel %q counts %d retained messages from %d but has none", m.prefix, m.count, m.firstSeq))
	}
}
