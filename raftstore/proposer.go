package raftstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/herald-broker/herald/broker"
)

// A publish request waits in the proposer's queue until it is packed, with
// whatever else is queued, into one log entry: group commit.
type request struct {
	msgs     []broker.Publish
	bytes    int
	receipts []broker.Receipt
	err      error
	done     chan struct{}
}

// runProposer packs queued publishes into log entries. It allows at most
// MaxInflight entries in flight: while they commit, new requests queue up and
// go out together in the next entry, so the busier the node, the larger its
// entries and the fewer its fsyncs per message.
func (s *Store) runProposer() {
	defer s.wg.Done()
	sem := make(chan struct{}, s.cfg.MaxInflight)
	for {
		var first *request
		select {
		case first = <-s.queue:
		case <-s.stop:
			return
		}
		select {
		case sem <- struct{}{}:
		case <-s.stop:
			finish([]*request{first}, nil, broker.ErrClosed)
			return
		}
		batch := []*request{first}
		n, size := len(first.msgs), first.bytes
	gather:
		for n < s.cfg.MaxBatchMessages && size < s.cfg.MaxBatchBytes {
			select {
			case r := <-s.queue:
				batch = append(batch, r)
				n += len(r.msgs)
				size += r.bytes
			default:
				break gather
			}
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-sem }()
			s.commitBatch(batch, n)
		}()
	}
}

// commitBatch commits one entry holding every request of batch and hands
// each request its receipts.
func (s *Store) commitBatch(batch []*request, n int) {
	msgs := make([]broker.Publish, 0, n)
	for _, r := range batch {
		msgs = append(msgs, r.msgs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CommitTimeout)
	defer cancel()
	start := time.Now()
	res, local, err := s.propose(ctx, encodePublish(msgs))
	if err == nil && s.cfg.ObserveCommit != nil {
		s.cfg.ObserveCommit(time.Since(start), len(msgs))
	}
	if err == nil && len(res.receipts) != len(msgs) {
		err = fmt.Errorf("commit: %d receipts for %d messages", len(res.receipts), len(msgs))
	}
	if err != nil {
		finish(batch, nil, err)
		return
	}
	if !local {
		// Committed by the leader, which counted its own subscribers:
		// count this node's, which will receive the messages as soon as
		// this node applies them.
		for i := range msgs {
			res.receipts[i].Receivers = s.fsm.broker.Receivers(msgs[i].Namespace, msgs[i].Channel)
		}
	}
	finish(batch, res.receipts, nil)
}

func finish(batch []*request, receipts []broker.Receipt, err error) {
	for _, r := range batch {
		if err != nil {
			r.err = err
		} else {
			r.receipts, receipts = receipts[:len(r.msgs):len(r.msgs)], receipts[len(r.msgs):]
		}
		close(r.done)
	}
}

// propose gets data committed, through Raft on the leader or forwarded to
// the leader from a follower, and returns the result of applying it on the
// leader; local reports whether that was this node. It retries while the
// node it submits to turns out not to be the leader (nothing was appended
// then).
func (s *Store) propose(ctx context.Context, data []byte) (res *applyResult, local bool, err error) {
	for {
		leaderAddr, leaderID := s.leader()
		switch {
		case leaderID == raft.ServerID(s.cfg.NodeID) && s.raft.State() == raft.Leader:
			res, err = s.applyAsLeader(ctx, data)
			local = true
		case leaderAddr != "":
			var b []byte
			if b, err = s.callLeader(ctx, string(leaderAddr), fwdApply, data); err == nil {
				res, err = decodeApplyResult(b)
			}
		default:
			err = errNotLeader
		}
		if !errors.Is(err, errNotLeader) {
			return res, local, err
		}
		if err := s.waitLeaderChange(ctx, leaderAddr); err != nil {
			return nil, false, err
		}
	}
}

// applyAsLeader stamps data with the leader's time, appends it, and waits
// until it is committed and applied here.
func (s *Store) applyAsLeader(ctx context.Context, data []byte) (*applyResult, error) {
	if err := stamp(data, time.Now().UnixMilli()); err != nil {
		return nil, err
	}
	f := s.raft.Apply(data, 0)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fromRaft(err)
		}
		res, ok := f.Response().(*applyResult)
		if !ok {
			return nil, fmt.Errorf("entry %d was not applied as a command", f.Index())
		}
		return res, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: not committed within %s (it may still be)", broker.ErrTimeout, s.cfg.CommitTimeout)
	}
}

// callLeader makes a forward call to the leader at addr.
func (s *Store) callLeader(ctx context.Context, addr string, typ byte, payload []byte) ([]byte, error) {
	res, err := s.fwd.call(ctx, addr, typ, payload)
	if err == nil {
		return res, nil
	}
	var re *remoteError
	if errors.As(err, &re) {
		return nil, fromRemote(err)
	}
	if errors.Is(err, errNotSent) {
		// The leader we knew is unreachable: wait for the next one.
		return nil, fmt.Errorf("%w: %v", errNotLeader, err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: leader %s did not answer within %s (the write may or may not be committed)", broker.ErrTimeout, addr, s.cfg.CommitTimeout)
	}
	if typ == fwdApply {
		return nil, fmt.Errorf("%w: lost the connection to leader %s (the write may or may not be committed): %v", broker.ErrTimeout, addr, err)
	}
	// Nothing was done for reads and membership calls: try again, at
	// the leader of the moment.
	return nil, fmt.Errorf("%w: %v", errNotLeader, err)
}

// waitLeaderChange waits until the known leader differs from was, or ctx
// ends. A node with no leader in sight for the whole wait reports
// ErrNoQuorum.
func (s *Store) waitLeaderChange(ctx context.Context, was raft.ServerAddress) error {
	t := time.NewTicker(s.cfg.LeaderPoll)
	defer t.Stop()
	for {
		ch := s.leaderWait.wait()
		if addr, _ := s.leader(); addr != "" && addr != was {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			// A leader re-elected at the same address, or observations
			// missed: look again.
			if addr, _ := s.leader(); addr != "" {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: no leader reachable within %s", broker.ErrNoQuorum, s.cfg.CommitTimeout)
		case <-s.stop:
			return fmt.Errorf("%w: node is shutting down", broker.ErrNoQuorum)
		}
	}
}

// handleForward serves a forward call. Commits and read positions need the
// leader; membership changes are passed on to it from any member, so a new
// node can join through whichever member it knows.
func (s *Store) handleForward(ctx context.Context, typ byte, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	switch typ {
	case fwdApply:
		if s.raft.State() != raft.Leader {
			return nil, errNotLeader
		}
		// payload is the follower's frame buffer, which is ours alone.
		res, err := s.applyAsLeader(ctx, payload)
		if err != nil {
			return nil, err
		}
		return encodeApplyResult(res), nil
	case fwdReadIndex:
		if s.raft.State() != raft.Leader {
			return nil, errNotLeader
		}
		idx, err := s.leaderReadIndex(ctx)
		if err != nil {
			return nil, err
		}
		return binary.AppendUvarint(nil, idx), nil
	case fwdCommit:
		if s.raft.State() != raft.Leader {
			return nil, errNotLeader
		}
		return binary.AppendUvarint(nil, s.raft.CommitIndex()), nil
	case fwdJoin:
		d := decoder{b: payload}
		id, addr := string(d.bytes()), string(d.bytes())
		voter := len(d.b) == 1 && d.b[0] == 1
		if d.err != nil || id == "" || addr == "" {
			return nil, errors.New("malformed join request")
		}
		return nil, s.changeMembership(ctx, id, addr, voter, false)
	case fwdRemove:
		d := decoder{b: payload}
		id := string(d.bytes())
		if d.err != nil || id == "" {
			return nil, errors.New("malformed remove request")
		}
		return nil, s.changeMembership(ctx, id, "", false, true)
	}
	return nil, fmt.Errorf("unknown forward call %d", typ)
}

// leaderReadIndex returns an index such that a node whose state machine has
// applied it has seen every write acknowledged before the call. A barrier
// entry gives that even on a leader elected a moment ago, whose commit index
// may not yet cover its predecessor's last writes: once the barrier returns,
// every command before it is applied here, and the state machine's applied
// index (which counts commands, not barriers) is the answer.
func (s *Store) leaderReadIndex(ctx context.Context) (uint64, error) {
	f := s.raft.Barrier(0)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return 0, fromRaft(err)
		}
		return s.fsm.appliedIndex.Load(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: read barrier not committed within %s", broker.ErrNoQuorum, s.cfg.CommitTimeout)
	}
}

// encodeApplyResult encodes a result for a forward reply:
//
//	existed byte, count uvarint, count × (epoch, seq, receivers uvarint)
func encodeApplyResult(r *applyResult) []byte {
	b := []byte{boolByte(r.existed)}
	b = binary.AppendUvarint(b, uint64(len(r.receipts)))
	for _, rc := range r.receipts {
		b = binary.AppendUvarint(b, rc.Epoch)
		b = binary.AppendUvarint(b, rc.Seq)
		b = binary.AppendUvarint(b, uint64(rc.Receivers))
	}
	return b
}

func decodeApplyResult(b []byte) (*applyResult, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty apply result", errCorrupt)
	}
	r := &applyResult{existed: b[0] == 1}
	d := decoder{b: b[1:]}
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: %d receipts in %d bytes", errCorrupt, n, len(d.b))
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		r.receipts = append(r.receipts, broker.Receipt{Epoch: d.uvarint(), Seq: d.uvarint(), Receivers: d.int()})
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}
