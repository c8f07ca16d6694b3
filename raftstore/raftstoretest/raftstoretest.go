// Package raftstoretest starts real raftstore nodes for the tests of the
// packages built on them: real Raft over loopback TCP, real Pebble in a
// temporary directory, with timeouts short enough for tests.
package raftstoretest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
)

// ElectionTimeout is the Raft timeout test nodes use.
const ElectionTimeout = 150 * time.Millisecond

// Open starts a single-node store delivering to b, attaches it to b, and
// waits until it is leader. It listens on a random loopback port; an empty
// cfg.DataDir means a temporary directory, and other zero fields take test
// defaults. The store is closed when the test ends.
func Open(t testing.TB, b *broker.Broker, cfg raftstore.Config) *raftstore.Store {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = ElectionTimeout
	}
	if cfg.LeaderPoll == 0 {
		cfg.LeaderPoll = 10 * time.Millisecond
	}
	s, err := raftstore.Open(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b.SetLog(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}
