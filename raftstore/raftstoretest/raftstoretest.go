// Package raftstoretest starts real raftstore nodes for the tests of the
// packages built on them: real Raft over loopback TCP, real Pebble in a
// temporary directory, with timeouts short enough for tests.
package raftstoretest

import (
	"context"
	"fmt"
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

// Cluster is n real nodes, each delivering to its own broker.
type Cluster struct {
	Brokers []*broker.Broker
	Stores  []*raftstore.Store
}

// OpenCluster starts an n-node cluster on loopback, bootstrapped with
// static peers, each node with its own broker made from bcfg (attached to
// its store), and waits until every node is ready. cfg applies to every
// node as in Open. The nodes are closed when the test ends.
func OpenCluster(t testing.TB, n int, bcfg broker.Config, cfg raftstore.Config) *Cluster {
	t.Helper()
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = 500 * time.Millisecond
	}
	if cfg.LeaderPoll == 0 {
		cfg.LeaderPoll = 10 * time.Millisecond
	}
	lns := make([]net.Listener, n)
	var peers []raftstore.Peer
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		peers = append(peers, raftstore.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: ln.Addr().String()})
	}
	c := &Cluster{}
	for i := range n {
		nc := cfg
		nc.NodeID, nc.Listener, nc.Peers, nc.DataDir = peers[i].ID, lns[i], peers, t.TempDir()
		b := broker.New(bcfg)
		s, err := raftstore.Open(nc, b)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		b.SetLog(s)
		c.Brokers = append(c.Brokers, b)
		c.Stores = append(c.Stores, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range c.Stores {
		if err := s.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Leader returns the index of the node that leads now, or -1.
func (c *Cluster) Leader() int {
	for i, s := range c.Stores {
		if s.IsLeader() {
			return i
		}
	}
	return -1
}
