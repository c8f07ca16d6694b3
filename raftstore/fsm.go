package raftstore

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
	"github.com/herald-broker/herald/broker"
)

// expireBatchLimit bounds how many channels one log entry expires, so that a
// burst of deadlines is spread over several entries instead of stalling one.
// It is part of the state machine: every node must use the same value.
const expireBatchLimit = 1000

// A checkpoint is written early, whatever the interval, once the tails hold
// checkpointBytes of payload or checkpointChannels channels have changed:
// they bound the memory the tails take and the size of one checkpoint.
const (
	checkpointBytes    = 64 << 20
	checkpointChannels = 1 << 14
)

// fsm applies committed log entries to the channel state and hands each
// message to the broker for local fan-out.
//
// The state is in memory (every channel's meta, and the retained messages
// applied since the last checkpoint) and in Pebble (everything up to the
// last checkpoint, with that checkpoint's applied index, in one batch).
// Checkpoints are written every checkpointEvery and before a snapshot; a
// message published and trimmed between two checkpoints never reaches
// Pebble. Nothing is lost between checkpoints: the Raft log holds every
// entry after the last one, and a restarted node applies them again. Raft
// drops log entries only after a snapshot, which writes a checkpoint first.
//
// hashicorp/raft calls ApplyBatch, Snapshot and Restore from one goroutine;
// it changes the state holding mu. Readers on other goroutines (history,
// channel info, backups) hold mu to read the in-memory state and open their
// Pebble iterators, so both come from the same point in the log.
type fsm struct {
	db                *pebble.DB
	broker            *broker.Broker
	logger            *slog.Logger
	observe           func(time.Duration, int) // Config.ObserveApply, or nil
	observeCheckpoint func(time.Duration, int) // Config.ObserveCheckpoint, or nil
	checkpointEvery   time.Duration            // Config.CheckpointInterval; 0: after every batch
	maxUnwritten      int64                    // checkpointBytes
	maxDirty          int                      // checkpointChannels

	mu sync.RWMutex
	// Guarded by mu; changed by the apply goroutine only, except that
	// checkpointNow may write a checkpoint from another goroutine.
	metas        map[chanKey]*channelMeta
	policy       Policy
	policyGen    uint64
	applied      uint64
	lastTs       int64       // leader time of the last applied entry; never decreases
	nextDeadline int64       // no expiry index entry is earlier than this
	dirty        []dirtyMeta // channels changed since the last checkpoint
	batch        *applyBatch // writes since the last checkpoint, besides the dirty channels'
	unwritten    int64       // payload bytes in the channels' tails
	checkpointAt time.Time   // when the last checkpoint was written
	persisted    uint64      // the applied index of the last checkpoint

	// Copies for other goroutines, updated after each applied batch.
	appliedIndex     atomic.Uint64
	persistedIndex   atomic.Uint64 // persisted, updated at each checkpoint
	appliedTime      atomic.Int64
	nextDeadlineCopy atomic.Int64
	policyCopy       atomic.Pointer[Policy]
	appliedWait      notifier
}

func newFSM(db *pebble.DB, b *broker.Broker, logger *slog.Logger) (*fsm, error) {
	f := &fsm{db: db, broker: b, logger: logger, batch: newApplyBatch(db), maxUnwritten: checkpointBytes, maxDirty: checkpointChannels}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

// load reads the FSM's state from Pebble into memory, dropping whatever the
// memory held that the last checkpoint did not.
func (f *fsm) load() error {
	f.metas = make(map[chanKey]*channelMeta)
	f.policy = DefaultPolicy()
	f.applied, f.lastTs = 0, 0
	f.batch.reset()
	clear(f.dirty)
	f.dirty = f.dirty[:0]
	f.unwritten = 0
	if v, closer, err := f.db.Get(fsmAppliedKey); err == nil {
		if len(v) != 16 {
			closer.Close()
			return fmt.Errorf("load fsm: corrupt applied index")
		}
		f.applied = binary.BigEndian.Uint64(v)
		f.lastTs = int64(binary.BigEndian.Uint64(v[8:]))
		closer.Close()
	} else if err != pebble.ErrNotFound {
		return fmt.Errorf("load fsm: %w", err)
	}
	if v, closer, err := f.db.Get(fsmPolicyKey); err == nil {
		cmd, derr := decodeCommand(append([]byte(nil), v...))
		closer.Close()
		if derr != nil {
			return fmt.Errorf("load fsm policy: %w", derr)
		}
		f.policy = cmd.policy
	} else if err != pebble.ErrNotFound {
		return fmt.Errorf("load fsm: %w", err)
	}
	f.policyGen++
	f.persisted = f.applied
	f.persistedIndex.Store(f.persisted)
	f.checkpointAt = time.Now()
	if err := f.loadMetas(); err != nil {
		return err
	}
	f.nextDeadline = f.firstDeadline(f.db)
	f.share()
	return nil
}

// loadMetas reads every channel's meta, skipping over retained messages.
func (f *fsm) loadMetas() error {
	lower := []byte{prefixFSM, fsmChannel}
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixUpperBound(lower)})
	if err != nil {
		return fmt.Errorf("load channels: %w", err)
	}
	defer it.Close()
	for valid := it.First(); valid; {
		key, rest, err := parseChannelKey(it.Key())
		if err != nil || len(rest) != 1 || rest[0] != chanMeta {
			return fmt.Errorf("load channels: unexpected key %q", it.Key())
		}
		m, err := decodeMeta(it.Value())
		if err != nil {
			return fmt.Errorf("load channel %q: %w", key.name, err)
		}
		m.prefix = channelPrefix(key)
		m.storedFirst, m.storedLast = m.firstSeq, m.lastSeq // none if count is 0
		f.metas[key] = m
		// Skip this channel's messages.
		valid = it.SeekGE(append(append([]byte(nil), m.prefix...), chanMsg+1))
	}
	return it.Error()
}

// share makes the applied position visible to other goroutines.
func (f *fsm) share() {
	f.appliedIndex.Store(f.applied)
	f.appliedTime.Store(f.lastTs)
	f.nextDeadlineCopy.Store(f.nextDeadline)
	p := f.policy
	f.policyCopy.Store(&p)
	f.appliedWait.notify()
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

type dirtyMeta struct {
	key chanKey
	m   *channelMeta
}

// applyResult is what applying one command entry produced. It is the
// response hashicorp/raft hands to the leader's Apply future, which the
// leader passes on to a follower that forwarded the entry.
type applyResult struct {
	receipts []broker.Receipt // cmdPublish: one per message
	existed  bool             // cmdDelete: the channel had state
}

// outcome is what one applied entry produced, to deliver and report once
// the batch is committed.
type outcome struct {
	pos     int // index of the entry in the ApplyBatch call
	msgs    []*broker.Message
	existed bool
}

// ApplyBatch implements raft.BatchingFSM. It applies the entries in
// memory, writes a checkpoint if one is due, then fans the messages out in
// log order, and returns each entry's *applyResult. Entries at or below the
// applied index (replayed after a restart) are skipped.
func (f *fsm) ApplyBatch(logs []*raft.Log) []interface{} {
	resps := make([]interface{}, len(logs))
	if f.observe != nil {
		defer func(start time.Time) { f.observe(time.Since(start), len(logs)) }(time.Now())
	}
	f.mu.Lock()
	b := f.batch
	var outs []outcome
	start := f.applied
	for i, l := range logs {
		if l.Index <= f.applied {
			continue
		}
		if l.Type == raft.LogCommand {
			if o, ok := f.applyCommand(b, l); ok {
				o.pos = i
				outs = append(outs, o)
			}
		}
		f.applied = l.Index
	}
	if f.applied == start {
		f.mu.Unlock()
		return resps
	}
	if f.unwritten >= f.maxUnwritten || len(f.dirty) >= f.maxDirty || time.Since(f.checkpointAt) >= f.checkpointEvery {
		f.checkpoint()
	}
	f.mu.Unlock()
	f.deliver(outs, resps)
	f.share()
	return resps
}

// checkpoint writes what changed since the last checkpoint to Pebble, with
// the applied index, in one batch. The caller holds mu for writing.
func (f *fsm) checkpoint() {
	b := f.batch
	if f.applied == f.persisted && len(f.dirty) == 0 && b.empty() {
		return
	}
	start, channels := time.Now(), len(f.dirty)
	for _, d := range f.dirty {
		d.m.dirty = false
		if f.metas[d.key] == d.m { // not forgotten meanwhile
			f.writeChannel(b, d.key, d.m)
		}
	}
	clear(f.dirty)
	f.dirty = f.dirty[:0]
	var v [16]byte
	binary.BigEndian.PutUint64(v[:8], f.applied)
	binary.BigEndian.PutUint64(v[8:], uint64(f.lastTs))
	b.set(fsmAppliedKey, v[:])
	// NoSync: the Raft log is synced, and entries above the durable applied
	// index are applied again after a crash.
	if err := b.commit(); err != nil {
		// The disk is behind the memory and cannot catch up: continuing
		// would let Raft drop log entries the disk does not reflect.
		panic(fmt.Sprintf("raftstore: commit applied state: %v", err))
	}
	f.persisted = f.applied
	f.persistedIndex.Store(f.persisted)
	f.unwritten = 0
	f.checkpointAt = time.Now()
	if f.observeCheckpoint != nil {
		f.observeCheckpoint(f.checkpointAt.Sub(start), channels)
	}
}

// writeChannel adds to b a channel's changes since the last checkpoint: its
// trimmed messages go, its new retained ones and its meta are written.
func (f *fsm) writeChannel(b *applyBatch, key chanKey, m *channelMeta) {
	for seq := m.storedFirst; seq <= min(m.storedLast, m.firstSeq-1); seq++ {
		b.delete(msgKey(m.prefix, seq))
	}
	for _, t := range m.tail {
		b.set(msgKey(m.prefix, t.seq), encodeMsgValue(t.ts, t.payload))
	}
	// Readers may hold the old tail: leave its array alone.
	m.tail = nil
	m.storedFirst, m.storedLast = m.firstSeq, m.lastSeq // none if count is 0
	b.set(metaKey(key), m.encode())
}

// checkpointNow writes a checkpoint from any goroutine, so that Pebble holds
// the whole applied state (a backup; a clean shutdown; tests).
func (f *fsm) checkpointNow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checkpoint()
}

// applyCommand applies one command entry to b.
func (f *fsm) applyCommand(b *applyBatch, l *raft.Log) (outcome, bool) {
	cmd, err := decodeCommand(l.Data)
	if err != nil {
		// Every node sees the same bytes and skips them alike.
		f.logger.Error("skipping undecodable log entry", "index", l.Index, "err", err)
		return outcome{}, false
	}
	f.lastTs = max(f.lastTs, cmd.time)
	now := f.lastTs
	f.expire(b, now)
	var o outcome
	switch cmd.typ {
	case cmdPublish:
		o.msgs = make([]*broker.Message, len(cmd.msgs))
		for i, p := range cmd.msgs {
			o.msgs[i] = f.applyPublish(b, p, now, l.Index)
		}
	case cmdDelete:
		o.existed = f.deleteChannel(b, chanKey{cmd.msgs[0].Namespace, cmd.msgs[0].Channel})
	case cmdPolicy:
		f.setPolicy(b, cmd.policy, l.Data, now)
	}
	return o, true
}

// deliver fans the outcomes' messages out to this node's subscribers, all
// in one batch, and stores each entry's result in resps.
func (f *fsm) deliver(outs []outcome, resps []interface{}) {
	var msgs []*broker.Message
	for _, o := range outs {
		msgs = append(msgs, o.msgs...)
	}
	receivers := make([]int, len(msgs))
	f.broker.DeliverBatch(msgs, receivers)
	for _, o := range outs {
		r := &applyResult{existed: o.existed}
		if len(o.msgs) > 0 {
			r.receipts = make([]broker.Receipt, len(o.msgs))
		}
		for i, m := range o.msgs {
			r.receipts[i] = broker.Receipt{Epoch: m.Epoch, Seq: m.Seq, Receivers: receivers[i]}
		}
		receivers = receivers[len(o.msgs):]
		resps[o.pos] = r
	}
}

// rule returns the retention rule of a channel under the current policy.
func (f *fsm) rule(m *channelMeta, name string) Rule {
	if m.ruleGen != f.policyGen {
		m.rule = f.policy.ruleFor(name)
		m.ruleGen = f.policyGen
	}
	return m.rule
}

// applyPublish assigns the channel's next sequence number, retains the
// message as the rule says, and returns the message to deliver.
func (f *fsm) applyPublish(b *applyBatch, p broker.Publish, now int64, index uint64) *broker.Message {
	key := chanKey{p.Namespace, p.Channel}
	m := f.metas[key]
	if m == nil {
		// A new channel, or a new life of a forgotten one: the entry's
		// index is unique, so it makes a fresh epoch.
		m = &channelMeta{epoch: index, created: now, firstSeq: 1, prefix: channelPrefix(key)}
		f.metas[key] = m
	}
	m.lastSeq++
	m.lastPub = now
	r := f.rule(m, p.Channel)
	size := int64(len(p.Payload))
	if r.MaxCount > 0 && (r.MaxBytes == 0 || size <= r.MaxBytes) {
		if m.count == 0 {
			m.oldestTs = now
		}
		m.tail = append(m.tail, tailMsg{seq: m.lastSeq, ts: now, payload: p.Payload})
		f.unwritten += size
		if len(m.oldest) == int(m.count) && len(m.oldest) < oldestCap {
			// The cache holds every retained message: keep it so.
			m.oldest = append(m.oldest, msgStat{ts: now, size: size})
		}
		m.count++
		m.bytes += size
		f.trim(m, r.MaxCount, r.MaxBytes)
	} else {
		// Not retained. Older messages go too: history never has a hole.
		f.trim(m, 0, 0)
	}
	f.schedule(b, key, m)
	f.touch(key, m)
	return &broker.Message{
		Namespace: p.Namespace, Channel: p.Channel, Payload: p.Payload,
		Epoch: m.epoch, Seq: m.lastSeq, Time: now,
	}
}

// trim drops the oldest retained messages until at most maxCount remain
// and, if maxBytes > 0, their payloads total at most maxBytes.
func (f *fsm) trim(m *channelMeta, maxCount int, maxBytes int64) {
	for m.count > 0 && (m.count > uint64(maxCount) || (maxBytes > 0 && m.bytes > maxBytes)) {
		f.dropOldest(m)
	}
	if m.count == 0 {
		m.firstSeq = m.lastSeq + 1
		m.bytes = 0
		m.oldest = nil
	}
}

// peekOldest returns the time and size of the oldest retained message.
func (f *fsm) peekOldest(m *channelMeta) msgStat {
	if len(m.oldest) == 0 {
		fillOldest(f.db, m)
	}
	return m.oldest[0]
}

// dropOldest drops the oldest retained message: from the tail if it is
// there, else from Pebble at the next checkpoint.
func (f *fsm) dropOldest(m *channelMeta) {
	st := f.peekOldest(m)
	m.oldest = m.oldest[1:]
	if len(m.tail) > 0 && m.tail[0].seq == m.firstSeq {
		f.unwritten -= st.size
		m.tail = m.tail[1:] // readers may hold the tail: no write to its array
	}
	m.firstSeq++
	m.count--
	m.bytes -= st.size
}

// touch marks a channel to be written at the next checkpoint: once,
// however many messages changed it meanwhile.
func (f *fsm) touch(key chanKey, m *channelMeta) {
	if !m.dirty {
		m.dirty = true
		f.dirty = append(f.dirty, dirtyMeta{key, m})
	}
}

// deadline returns when the channel next needs attention: its oldest
// retained message expiring, or, with nothing retained, being forgotten.
// Zero means never.
func (f *fsm) deadline(m *channelMeta, r Rule) int64 {
	switch {
	case m.count > 0 && r.MaxAge > 0:
		return m.oldestTs + r.MaxAge.Milliseconds()
	case m.count == 0 && f.policy.IdleTTL > 0:
		return m.lastPub + f.policy.IdleTTL.Milliseconds()
	}
	return 0
}

// schedule makes sure the channel sits in the expiry index no later than its
// deadline. The index may hold an earlier time than the true deadline (it is
// corrected when reached), which spares an index write on most publishes.
func (f *fsm) schedule(b *applyBatch, key chanKey, m *channelMeta) {
	d := f.deadline(m, m.rule)
	if d == 0 || (m.indexed != 0 && m.indexed <= d) {
		return
	}
	f.reindex(b, key, m, d)
}

func (f *fsm) reindex(b *applyBatch, key chanKey, m *channelMeta, d int64) {
	if m.indexed != 0 {
		b.delete(expiryKey(m.indexed, key))
	}
	m.indexed = d
	if d != 0 {
		b.set(expiryKey(d, key), nil)
		f.nextDeadline = min(f.nextDeadline, d)
	}
}

// expire handles the channels whose deadline has passed at time now: it
// drops their messages older than the rule's age, forgets those idle long
// enough, and files the rest under their next deadline.
func (f *fsm) expire(b *applyBatch, now int64) {
	if now < f.nextDeadline {
		return
	}
	lower := []byte{prefixFSM, fsmExpiry}
	type due struct {
		deadline int64
		key      chanKey
	}
	var list []due
	it, err := b.reader().NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: expiryKey(now+1, chanKey{})})
	if err != nil {
		panic(fmt.Sprintf("raftstore: expire: %v", err))
	}
	for valid := it.First(); valid && len(list) < expireBatchLimit; valid = it.Next() {
		d, key, err := parseExpiryKey(it.Key())
		if err != nil {
			panic(fmt.Sprintf("raftstore: expire: %v", err))
		}
		list = append(list, due{d, key})
	}
	if err := it.Close(); err != nil {
		panic(fmt.Sprintf("raftstore: expire: %v", err))
	}
	for _, e := range list {
		m := f.metas[e.key]
		if m == nil || m.indexed != e.deadline {
			b.delete(expiryKey(e.deadline, e.key)) // stale entry
			continue
		}
		f.expireChannel(b, e.key, m, now)
	}
	f.nextDeadline = f.firstDeadline(b.reader())
}

// firstDeadline returns the earliest deadline in the expiry index.
func (f *fsm) firstDeadline(r pebble.Reader) int64 {
	lower := []byte{prefixFSM, fsmExpiry}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixUpperBound(lower)})
	if err != nil {
		panic(fmt.Sprintf("raftstore: expiry index: %v", err))
	}
	defer it.Close()
	if !it.First() {
		return math.MaxInt64
	}
	d, _, err := parseExpiryKey(it.Key())
	if err != nil {
		panic(fmt.Sprintf("raftstore: expiry index: %v", err))
	}
	return d
}

func (f *fsm) expireChannel(b *applyBatch, key chanKey, m *channelMeta, now int64) {
	r := f.rule(m, key.name)
	if r.MaxAge > 0 {
		cutoff := now - r.MaxAge.Milliseconds()
		for m.count > 0 {
			if st := f.peekOldest(m); st.ts > cutoff {
				m.oldestTs = st.ts
				break
			}
			f.dropOldest(m)
		}
	}
	// Limits may have tightened since the last publish (a policy change).
	f.trim(m, r.MaxCount, r.MaxBytes)
	if m.count == 0 && f.policy.IdleTTL > 0 && m.lastPub+f.policy.IdleTTL.Milliseconds() <= now {
		f.forget(b, key, m)
		return
	}
	f.reindex(b, key, m, f.deadline(m, r))
	f.touch(key, m)
}

// forget drops a channel's state; its next publish starts a new epoch.
func (f *fsm) forget(b *applyBatch, key chanKey, m *channelMeta) {
	f.trim(m, 0, 0)
	for seq := m.storedFirst; seq <= m.storedLast; seq++ {
		b.delete(msgKey(m.prefix, seq))
	}
	if m.indexed != 0 {
		b.delete(expiryKey(m.indexed, key))
	}
	b.delete(metaKey(key))
	delete(f.metas, key)
}

// deleteChannel drops a channel's history and sequence (HERALD.DELETE) and
// reports whether it had any state.
func (f *fsm) deleteChannel(b *applyBatch, key chanKey) bool {
	m := f.metas[key]
	if m == nil {
		return false
	}
	f.forget(b, key, m)
	return true
}

// setPolicy replaces the retention policy and files every channel for a
// visit at the next expiry pass, where the new limits are applied.
func (f *fsm) setPolicy(b *applyBatch, p Policy, raw []byte, now int64) {
	f.policy = p
	f.policyGen++
	b.set(fsmPolicyKey, raw)
	for key, m := range f.metas {
		f.reindex(b, key, m, now+1)
		f.touch(key, m)
	}
}
