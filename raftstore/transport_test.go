package raftstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestDialFromRaftIP checks that node-to-node connections leave from the IP
// the node's Raft address listens on, and from the kernel's choice when it
// listens on all addresses.
func TestDialFromRaftIP(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.13:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	for _, tc := range []struct {
		listen string
		want   string
	}{
		{"127.0.0.12:0", "127.0.0.12"},
		{"0.0.0.0:0", ""},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			own, err := net.Listen("tcp", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer own.Close()
			from := sourceIP(own.Addr())
			if got := from.String(); (from == nil) != (tc.want == "") || (from != nil && got != tc.want) {
				t.Fatalf("sourceIP(%s) = %v, want %q", own.Addr(), from, tc.want)
			}
			c, err := dialStream(context.Background(), from, target.Addr().String(), streamForward, time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			in, err := target.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			ip := in.RemoteAddr().(*net.TCPAddr).IP.String()
			if tc.want != "" && ip != tc.want {
				t.Fatalf("connection came from %s, want %s", ip, tc.want)
			}
		})
	}
}

// streamProxy forwards connections from its own address to target and
// counts the streams it carried by kind.
type streamProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	kinds  map[byte]int
}

func newStreamProxy(t *testing.T, target string) *streamProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &streamProxy{ln: ln, target: target, kinds: make(map[byte]int)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *streamProxy) serve(c net.Conn) {
	defer c.Close()
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		return
	}
	p.mu.Lock()
	p.kinds[kind[0]]++
	p.mu.Unlock()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	if _, err := up.Write(kind[:]); err != nil {
		return
	}
	go func() {
		io.Copy(c, up)
		c.Close()
	}()
	io.Copy(up, c)
}

func (p *streamProxy) count(kind byte) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kinds[kind]
}

// TestForwardToConfiguredAddress runs a cluster whose members are known by
// addresses other than the ones they listen on (a proxy in front of each,
// as a NAT or a fault-injecting test proxy would be): a follower's forward
// calls must go to the leader's configured address. They used to go to the
// address the leader listens on, which Raft reports as the leader's
// address: that bypassed the proxy, and with --raft-addr 0.0.0.0:port it
// was not the leader's address at all.
func TestForwardToConfiguredAddress(t *testing.T) {
	c := &testCluster{t: t, cfg: Config{ElectionTimeout: 500 * time.Millisecond, LeaderPoll: 10 * time.Millisecond, CommitTimeout: 5 * time.Second}}
	var lns []net.Listener
	var proxies []*streamProxy
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		p := newStreamProxy(t, ln.Addr().String())
		proxies = append(proxies, p)
		node := &testNode{id: "n" + strconv.Itoa(i+1), addr: ln.Addr().String(), dir: t.TempDir()}
		c.nodes = append(c.nodes, node)
		c.peers = append(c.peers, Peer{ID: node.id, Addr: p.ln.Addr().String()})
	}
	for i := range 3 {
		c.startWith(i, lns[i])
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	l, f := c.leader(), c.follower()
	waitFor(t, 10*time.Second, "the follower to know the leader", func() bool {
		return c.nodes[f].store.Status().LeaderID == c.nodes[l].id
	})
	if got, want := c.nodes[f].store.Status().LeaderAddr, c.peers[l].Addr; got != want {
		t.Errorf("follower reports leader address %s, want the configured %s", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := publish(ctx, c.nodes[f], "a", "through the proxy"); err != nil {
		t.Fatalf("publish on follower: %v", err)
	}
	if n := proxies[l].count(streamForward); n == 0 {
		t.Fatalf("the follower's forward call did not go through the leader's configured address %s", c.peers[l].Addr)
	}
	c.waitConverged()
}

// TestForwardBeforeRaftStarts reproduces a crash the chaos test found
// (herald-chaos, seed 20261122): a node restarted after kill -9 opens its
// Raft port before Raft has started, and its peers, some still taking it for
// the leader, call it at once. The forward handler then used the store's
// *raft.Raft before it was set, and the node died of a nil pointer
// dereference. Here the port is open and Raft never starts: a call must
// wait (until the caller gives up), not crash the node.
func TestForwardBeforeRaftStarts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{cfg: Config{}.withDefaults(), raftUp: make(chan struct{})}
	s.logger = s.cfg.Logger
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.listen(ln) // as Open does, before it starts Raft
	defer func() {
		s.cancel()
		s.closeResources()
	}()
	c := newFwdClient(nil, time.Second, nil)
	defer c.close()
	for _, typ := range []byte{fwdApply, fwdReadIndex} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := c.call(ctx, ln.Addr().String(), typ, []byte{0})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("forward call %d before Raft started: %v, want it to wait until the caller's deadline", typ, err)
		}
	}
}
