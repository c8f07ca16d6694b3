package raftstore

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"github.com/herald-broker/herald/broker"
)

// errorStatus maps an error to the status a forward response carries.
func errorStatus(err error) byte {
	switch {
	case errors.Is(err, errNotLeader):
		return fwdNotLeader
	case errors.Is(err, broker.ErrNoQuorum):
		return fwdUnavailable
	default:
		return fwdFailed
	}
}

// fromRemote turns a forward call's error into the local errors callers
// test for.
func fromRemote(err error) error {
	var re *remoteError
	if !errors.As(err, &re) {
		return err
	}
	switch re.code {
	case fwdNotLeader:
		return fmt.Errorf("%w (%s)", errNotLeader, re.msg)
	case fwdUnavailable:
		return fmt.Errorf("%w (%s)", broker.ErrNoQuorum, re.msg)
	}
	return errors.New(re.msg)
}

// fromRaft translates hashicorp/raft's errors at the boundary: ErrNotLeader
// and ErrLeadershipTransferInProgress (nothing was appended: safe to
// retry), ErrLeadershipLost (the entry may still commit: indeterminate),
// and the rest.
func fromRaft(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Nothing was appended. A leader handing over (a node stopping
		// gracefully) refuses writes until its successor takes them.
		return errNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w: leadership lost before the write was confirmed; it may or may not be committed", broker.ErrTimeout)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: node is shutting down", broker.ErrNoQuorum)
	}
	return err
}
