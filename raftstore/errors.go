package raftstore

import "errors"

// errKeyNotFound is returned by the stable store's Get and GetUint64 for a
// key that was never set. hashicorp/raft recognises a missing key only by
// err.Error() == "not found" (api.go HasExistingState and NewRaft,
// raft.go requestVote), so this error must be returned as is, never
// wrapped, and its text must not change.
var errKeyNotFound = errors.New("not found")
