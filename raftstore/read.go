package raftstore

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/herald-broker/herald/broker"
)

// History implements broker.Log. It reads this node's applied state: the
// channel's meta and the messages of its tail from memory, older messages
// through a Pebble iterator opened at the same point in the log.
func (s *Store) History(ns broker.Namespace, channel string, q broker.HistoryQuery) (broker.History, error) {
	return s.fsm.history(chanKey{ns, channel}, q)
}

func (f *fsm) history(key chanKey, q broker.HistoryQuery) (broker.History, error) {
	f.mu.RLock()
	m := f.metas[key]
	if m == nil {
		f.mu.RUnlock()
		return broker.History{}, nil
	}
	h := broker.History{Epoch: m.epoch, First: m.firstSeq, Last: m.lastSeq}
	start, limit := q.After+1, q.Limit
	if q.Last > 0 {
		start = 1
		if m.lastSeq > uint64(q.Last) {
			start = m.lastSeq - uint64(q.Last) + 1
		}
		if limit == 0 || limit > q.Last {
			limit = q.Last
		}
	}
	start = max(start, m.firstSeq)
	prefix, storedLast, tail := m.prefix, m.storedLast, m.tail
	var it *pebble.Iterator
	var err error
	if start <= storedLast {
		it, err = f.db.NewIter(&pebble.IterOptions{LowerBound: msgKey(prefix, start), UpperBound: msgKey(prefix, storedLast+1)})
	}
	f.mu.RUnlock()
	if err != nil {
		return broker.History{}, fmt.Errorf("read history of %q: %w", key.name, err)
	}
	full := func() bool { return limit > 0 && len(h.Messages) >= limit }
	if it != nil {
		defer it.Close()
		for valid := it.First(); valid && !full(); valid = it.Next() {
			k := it.Key()
			if len(k) != len(prefix)+9 || k[len(prefix)] != chanMsg {
				return h, fmt.Errorf("read history of %q: unexpected key %q", key.name, k)
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return h, fmt.Errorf("read history of %q: %w", key.name, err)
			}
			ts, payload, err := decodeMsgValue(v)
			if err != nil {
				return h, fmt.Errorf("read history of %q: %w", key.name, err)
			}
			h.Messages = append(h.Messages, &broker.Message{
				Namespace: key.ns, Channel: key.name, Payload: append([]byte(nil), payload...),
				Epoch: h.Epoch, Seq: binary.BigEndian.Uint64(k[len(prefix)+1:]), Time: ts,
			})
		}
		if err := it.Error(); err != nil {
			return h, fmt.Errorf("read history of %q: %w", key.name, err)
		}
	}
	for _, t := range tail {
		if full() {
			break
		}
		if t.seq >= start {
			h.Messages = append(h.Messages, &broker.Message{
				Namespace: key.ns, Channel: key.name, Payload: t.payload,
				Epoch: h.Epoch, Seq: t.seq, Time: t.ts,
			})
		}
	}
	return h, nil
}

// Info implements broker.Log.
func (s *Store) Info(ns broker.Namespace, channel string) (broker.ChannelInfo, error) {
	f := s.fsm
	f.mu.RLock()
	defer f.mu.RUnlock()
	if m := f.metas[chanKey{ns, channel}]; m != nil {
		return m.info(), nil
	}
	return broker.ChannelInfo{}, nil
}
