package raftstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/herald-broker/herald/broker"
)

// Status is a cluster as one node sees it.
type Status struct {
	NodeID       string
	State        string // Leader, Follower, Candidate, Shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastLogIndex uint64
	// CheckpointIndex is the applied index of the state machine's last
	// checkpoint in Pebble: a restart applies the entries after it again.
	CheckpointIndex uint64
	Nodes           []Node
}

// Node is one member of the cluster configuration.
type Node struct {
	ID       string
	Addr     string
	Suffrage string // Voter, Nonvoter
}

// Status describes the cluster as this node sees it.
func (s *Store) Status() Status {
	addr, id := s.leader()
	st := Status{
		NodeID:       s.cfg.NodeID,
		State:        s.raft.State().String(),
		LeaderID:     string(id),
		LeaderAddr:   string(addr),
		Term:         s.raft.CurrentTerm(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		LastLogIndex: s.raft.LastIndex(),

		CheckpointIndex: s.fsm.persistedIndex.Load(),
	}
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			st.Nodes = append(st.Nodes, Node{ID: string(srv.ID), Addr: string(srv.Address), Suffrage: srv.Suffrage.String()})
		}
	}
	return st
}

// IsLeader reports whether this node is the leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// AddNode adds a voter (or a non-voter, which receives the log but does not
// vote) through the leader.
func (s *Store) AddNode(ctx context.Context, id, addr string, voter bool) error {
	if id == "" || addr == "" {
		return errors.New("add node: id and address are required")
	}
	return s.changeMembership(ctx, id, addr, voter, false)
}

// RemoveNode removes a node through the leader.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("remove node: id is required")
	}
	return s.changeMembership(ctx, id, "", false, true)
}

// changeMembership applies a membership change on the leader, or forwards
// it there.
func (s *Store) changeMembership(ctx context.Context, id, addr string, voter, remove bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	for {
		leaderAddr, leaderID := s.leader()
		var err error
		switch {
		case leaderID == raft.ServerID(s.cfg.NodeID) && s.raft.State() == raft.Leader:
			var f raft.IndexFuture
			switch {
			case remove:
				f = s.raft.RemoveServer(raft.ServerID(id), 0, 0)
			case voter:
				f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
			default:
				f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
			}
			err = waitFuture(ctx, f)
		case leaderAddr != "":
			var payload []byte
			typ := fwdRemove
			payload = appendString(payload, []byte(id))
			if !remove {
				typ = fwdJoin
				payload = appendString(payload, []byte(addr))
				payload = append(payload, boolByte(voter))
			}
			_, err = s.callLeader(ctx, string(leaderAddr), typ, payload)
		default:
			err = errNotLeader
		}
		if !errors.Is(err, errNotLeader) {
			if err != nil {
				return fmt.Errorf("change membership (%s %s): %w", map[bool]string{true: "remove", false: "add"}[remove], id, err)
			}
			s.logger.Info("membership changed", "id", id, "addr", addr, "removed", remove, "voter", voter)
			return nil
		}
		if err := s.waitLeaderChange(ctx, leaderAddr); err != nil {
			return err
		}
	}
}

func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return fromRaft(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// String formats the status for logs.
func (st Status) String() string {
	return st.NodeID + " " + st.State + " leader=" + st.LeaderID + " term=" + strconv.FormatUint(st.Term, 10)
}

// readyLag is how far a node's applied index may trail its commit index
// with the node still ready: entries are committed before they are applied,
// so a node that keeps up under load always trails by a few. A node further
// behind is catching up (after a partition, a restart, a snapshot).
const readyLag = 1024

// readyPoll is how long Ready reuses the leader's commit index it asked
// for: load balancers poll readiness often.
const readyPoll = 500 * time.Millisecond

// Ready reports whether the node can serve: it knows a leader and is
// keeping up with the log: it trails the leader's commit index by at most
// readyLag entries. A follower asks the leader (at most every readyPoll):
// its own commit index stops at the end of the log it has received, so a
// follower still fetching a long stretch of log would look caught up.
func (s *Store) Ready() error {
	if err := s.ready(readyLag); err != nil {
		return err
	}
	if s.raft.State() == raft.Leader {
		return nil
	}
	commit, err := s.leaderCommit()
	if err != nil {
		return fmt.Errorf("leader's commit index: %w", err)
	}
	if applied := s.raft.AppliedIndex(); applied+readyLag < commit {
		return fmt.Errorf("catching up: applied %d of the leader's %d", applied, commit)
	}
	return nil
}

// leaderCommit returns the leader's commit index, asked of it at most
// every readyPoll.
func (s *Store) leaderCommit() (uint64, error) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if !s.readyAt.IsZero() && time.Since(s.readyAt) < readyPoll {
		return s.readyCommit, s.readyErr
	}
	addr, _ := s.leader()
	if addr == "" {
		return 0, errors.New("no leader")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ElectionTimeout)
	defer cancel()
	b, err := s.callLeader(ctx, string(addr), fwdCommit, nil)
	var commit uint64
	if err == nil {
		var n int
		if commit, n = binary.Uvarint(b); n <= 0 {
			err = fmt.Errorf("%w: commit index reply", errCorrupt)
		}
	}
	s.readyAt, s.readyCommit, s.readyErr = time.Now(), commit, err
	return commit, err
}

func (s *Store) ready(lag uint64) error {
	if addr, _ := s.leader(); addr == "" {
		return errors.New("no leader")
	}
	if applied, commit := s.raft.AppliedIndex(), s.raft.CommitIndex(); applied+lag < commit {
		return fmt.Errorf("catching up: applied %d of %d", applied, commit)
	}
	return nil
}

// WaitReady waits until the node knows a leader and has applied everything
// it knows to be committed, or ctx ends.
func (s *Store) WaitReady(ctx context.Context) error {
	for {
		ch := s.leaderWait.wait()
		applied := s.fsm.appliedWait.wait()
		err := s.ready(0)
		if err == nil {
			return nil
		}
		select {
		case <-ch:
		case <-applied:
		case <-time.After(s.cfg.LeaderPoll):
			// Raft's own entries (its no-op, barriers) advance the
			// applied index without the state machine seeing them.
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (%w)", err, ctx.Err())
		case <-s.stop:
			return broker.ErrClosed
		}
	}
}
