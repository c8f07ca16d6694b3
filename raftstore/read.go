package raftstore

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/herald-broker/herald/broker"
)

// History implements broker.Log. It reads this node's applied state through
// one Pebble iterator, so the channel's meta and messages come from the same
// point in the log.
func (s *Store) History(ns broker.Namespace, channel string, q broker.HistoryQuery) (broker.History, error) {
	prefix := channelPrefix(chanKey{ns, channel})
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixUpperBound(prefix)})
	if err != nil {
		return broker.History{}, fmt.Errorf("read history of %q: %w", channel, err)
	}
	defer it.Close()
	mk := append(append([]byte(nil), prefix...), chanMeta)
	if !it.SeekGE(mk) || string(it.Key()) != string(mk) {
		return broker.History{}, it.Error()
	}
	m, err := decodeMeta(it.Value())
	if err != nil {
		return broker.History{}, fmt.Errorf("read history of %q: %w", channel, err)
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
	for valid := it.SeekGE(msgKey(prefix, start)); valid && (limit == 0 || len(h.Messages) < limit); valid = it.Next() {
		k := it.Key()
		if len(k) != len(prefix)+9 || k[len(prefix)] != chanMsg {
			return h, fmt.Errorf("read history of %q: unexpected key %q", channel, k)
		}
		seq := binary.BigEndian.Uint64(k[len(prefix)+1:])
		if seq > m.lastSeq {
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return h, fmt.Errorf("read history of %q: %w", channel, err)
		}
		ts, payload, err := decodeMsgValue(v)
		if err != nil {
			return h, fmt.Errorf("read history of %q: %w", channel, err)
		}
		h.Messages = append(h.Messages, &broker.Message{
			Namespace: ns, Channel: channel, Payload: append([]byte(nil), payload...),
			Epoch: m.epoch, Seq: seq, Time: ts,
		})
	}
	return h, it.Error()
}

// Info implements broker.Log.
func (s *Store) Info(ns broker.Namespace, channel string) (broker.ChannelInfo, error) {
	v, closer, err := s.db.Get(metaKey(chanKey{ns, channel}))
	if err == pebble.ErrNotFound {
		return broker.ChannelInfo{}, nil
	}
	if err != nil {
		return broker.ChannelInfo{}, fmt.Errorf("read channel %q: %w", channel, err)
	}
	defer closer.Close()
	m, err := decodeMeta(v)
	if err != nil {
		return broker.ChannelInfo{}, fmt.Errorf("read channel %q: %w", channel, err)
	}
	return m.info(), nil
}
