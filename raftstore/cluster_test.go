package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/internal/testcert"
)

// testNode is one member of a test cluster.
type testNode struct {
	id     string
	addr   string
	dir    string
	store  *Store
	broker *broker.Broker
}

// testCluster is n real nodes on loopback, each with Pebble in its own
// temporary directory, bootstrapped with static peers.
type testCluster struct {
	t     testing.TB
	cfg   Config
	nodes []*testNode
	peers []Peer
}

// newTestCluster starts n nodes configured from cfg (DataDir, NodeID,
// RaftAddr, Peers and Listener are set per node) and waits for a leader.
func newTestCluster(t testing.TB, n int, cfg Config) *testCluster {
	t.Helper()
	c := &testCluster{t: t, cfg: cfg}
	if c.cfg.ElectionTimeout == 0 {
		// Long enough that a loaded 2-core machine running -race does not
		// miss heartbeats and flap leaders; short enough for quick
		// failovers.
		c.cfg.ElectionTimeout = 500 * time.Millisecond
	}
	if c.cfg.LeaderPoll == 0 {
		c.cfg.LeaderPoll = 10 * time.Millisecond
	}
	if c.cfg.CommitTimeout == 0 {
		c.cfg.CommitTimeout = 5 * time.Second
	}
	lns := make([]net.Listener, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		node := &testNode{id: "n" + strconv.Itoa(i+1), addr: ln.Addr().String(), dir: t.TempDir()}
		c.nodes = append(c.nodes, node)
		c.peers = append(c.peers, Peer{ID: node.id, Addr: node.addr})
	}
	for i := range n {
		c.startWith(i, lns[i])
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	c.leader()
	return c
}

// start (re)starts node i on its address and data directory.
func (c *testCluster) start(i int) {
	c.t.Helper()
	var ln net.Listener
	var err error
	// The port was ours a moment ago; another process taking it meanwhile
	// is possible but rare on loopback. Retry briefly in case the kernel
	// has not released it yet.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ln, err = net.Listen("tcp", c.nodes[i].addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("relisten on %s: %v", c.nodes[i].addr, err)
	}
	c.startWith(i, ln)
}

func (c *testCluster) startWith(i int, ln net.Listener) {
	c.t.Helper()
	node := c.nodes[i]
	cfg := c.cfg
	cfg.DataDir = node.dir
	cfg.NodeID = node.id
	cfg.Listener = ln
	cfg.Peers = c.peers
	node.broker = broker.New(broker.Config{})
	s, err := Open(cfg, node.broker)
	if err != nil {
		c.t.Fatalf("open %s: %v", node.id, err)
	}
	node.broker.SetLog(s)
	node.store = s
}

// stop closes node i gracefully (it hands over leadership first).
func (c *testCluster) stop(i int) {
	if s := c.nodes[i].store; s != nil {
		s.Close()
		c.nodes[i].store = nil
	}
}

// crash stops node i the hard way: no leadership transfer, Raft and its
// network cut at once.
func (c *testCluster) crash(i int) {
	c.t.Helper()
	s := c.nodes[i].store
	if s == nil {
		return
	}
	c.nodes[i].store = nil
	close(s.stop)
	s.cancel()
	s.mux.close() // no more Raft traffic in or out of this node
	s.raft.Shutdown().Error()
	s.wg.Wait()
	s.closeResources()
}

// leader waits for a running node to lead and returns its index.
func (c *testCluster) leader() int {
	c.t.Helper()
	var idx int
	waitFor(c.t, 20*time.Second, "a leader", func() bool {
		for i, n := range c.nodes {
			if n.store != nil && n.store.IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

// follower returns a running node that is not the leader.
func (c *testCluster) follower() int {
	l := c.leader()
	for i, n := range c.nodes {
		if i != l && n.store != nil {
			return i
		}
	}
	c.t.Fatal("no running follower")
	return -1
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// publish publishes one message through node i's broker.
func publish(ctx context.Context, n *testNode, channel, payload string) (broker.Receipt, error) {
	r, err := n.broker.Publish(ctx, []broker.Publish{{Channel: channel, Payload: []byte(payload)}})
	if err != nil {
		return broker.Receipt{}, err
	}
	return r[0], nil
}

// stateDump returns every FSM key and value of a node, as a string, after a
// checkpoint has written the whole applied state to Pebble.
func stateDump(t testing.TB, s *Store) string {
	t.Helper()
	if s.fsm != nil {
		s.fsm.checkpointNow()
	}
	lower := []byte{prefixFSM}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixUpperBound(lower)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var b bytes.Buffer
	for it.First(); it.Valid(); it.Next() {
		if bytes.Equal(it.Key(), fsmAppliedKey) {
			continue // the applied index is checked separately
		}
		fmt.Fprintf(&b, "%q=%q\n", it.Key(), it.Value())
	}
	return b.String()
}

// waitConverged waits until every running node has applied the leader's
// last index and then checks their states are identical.
func (c *testCluster) waitConverged() {
	c.t.Helper()
	l := c.nodes[c.leader()].store
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Sync(ctx); err != nil {
		c.t.Fatal(err)
	}
	target := l.AppliedIndex()
	var want string
	for _, n := range c.nodes {
		if n.store == nil {
			continue
		}
		if err := n.store.WaitApplied(ctx, target); err != nil {
			c.t.Fatalf("%s: %v", n.id, err)
		}
		got := stateDump(c.t, n.store)
		if want == "" {
			want = got
		} else if got != want {
			c.t.Fatalf("%s's state differs:\n%s\nwant:\n%s", n.id, got, want)
		}
	}
}

func TestClusterFollowerForwards(t *testing.T) {
	c := newTestCluster(t, 3, Config{})
	f := c.nodes[c.follower()]
	ctx := context.Background()
	for i := 1; i <= 20; i++ {
		r, err := publish(ctx, f, "room", "m"+strconv.Itoa(i))
		if err != nil {
			t.Fatalf("publish %d on follower: %v", i, err)
		}
		if r.Seq != uint64(i) {
			t.Fatalf("publish %d: seq %d", i, r.Seq)
		}
	}
	// A read on the follower after Sync (what HERALD.HISTORY does) sees
	// every publish acknowledged before it.
	if err := f.store.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	h, err := f.store.History(broker.Global, "room", broker.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Last != 20 || len(h.Messages) != 20 {
		t.Fatalf("history on follower: last %d, %d messages", h.Last, len(h.Messages))
	}
	c.waitConverged()
}

// TestClusterEveryNodeDeliversInOrder subscribes on every node and
// publishes on every node: each subscriber sees each message once, in
// sequence order, with the same sequence numbers everywhere.
func TestClusterEveryNodeDeliversInOrder(t *testing.T) {
	c := newTestCluster(t, 3, Config{})
	type sub struct {
		node int
		got  chan string
	}
	var subs []sub
	for i, n := range c.nodes {
		cl := n.broker.NewClient(textFormat{})
		cl.Subscribe(broker.KindSequenced, "room")
		s := sub{node: i, got: make(chan string, 1000)}
		go drain(cl, s.got)
		subs = append(subs, s)
	}
	const per = 30
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				if _, err := publish(context.Background(), c.nodes[i], "room", fmt.Sprintf("n%d-%d", i, j)); err != nil {
					t.Errorf("publish on n%d: %v", i+1, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var first []string
	for _, s := range subs {
		var seen []string
		for seq := 1; seq <= 3*per; seq++ {
			select {
			case f := <-s.got:
				var ch, payload string
				var epoch, got uint64
				if _, err := fmt.Sscanf(f, "msg %s %d %d %s", &ch, &epoch, &got, &payload); err != nil {
					t.Fatalf("node %d frame %q: %v", s.node, f, err)
				}
				if got != uint64(seq) {
					t.Fatalf("node %d: got seq %d, want %d", s.node, got, seq)
				}
				seen = append(seen, payload)
			case <-time.After(10 * time.Second):
				t.Fatalf("node %d: only %d messages", s.node, seq-1)
			}
		}
		if first == nil {
			first = seen
		} else if fmt.Sprint(seen) != fmt.Sprint(first) {
			t.Fatalf("node %d saw a different order:\n%v\nwant\n%v", s.node, seen, first)
		}
	}
	// Per publisher, its own messages keep their order.
	for i := range c.nodes {
		next := 0
		for _, p := range first {
			var n, j int
			fmt.Sscanf(p, "n%d-%d", &n, &j)
			if n == i {
				if j != next {
					t.Fatalf("publisher %d out of order: %d after %d", i, j, next-1)
				}
				next++
			}
		}
	}
}

// TestClusterLeaderCrashLosesNothing publishes from every node while the
// leader crashes; every acknowledged publish is then present, with its
// sequence number, on the survivors and on the old leader once it is back.
func TestClusterLeaderCrashLosesNothing(t *testing.T) {
	c := newTestCluster(t, 3, Config{CommitTimeout: 3 * time.Second})
	type ack struct {
		payload string
		seq     uint64
	}
	var mu sync.Mutex
	var acked []ack
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var attempts, failed int
	for i := range c.nodes {
		s := c.nodes[i].store
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 2000; j++ {
				select {
				case <-stop:
					return
				default:
				}
				payload := fmt.Sprintf("n%d-%d", i, j)
				ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
				r, err := s.Publish(ctx, []broker.Publish{{Channel: "orders", Payload: []byte(payload)}})
				cancel()
				if errors.Is(err, broker.ErrClosed) {
					return // this node crashed
				}
				mu.Lock()
				attempts++
				if err == nil {
					acked = append(acked, ack{payload, r[0].Seq})
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	// Let some publishes through, crash the leader mid-stream, let more
	// through on the new leader.
	countAcked := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor(t, 20*time.Second, "100 acknowledged publishes", func() bool { return countAcked() >= 100 })
	old := c.leader()
	c.crash(old)
	before := countAcked()
	waitFor(t, 20*time.Second, "publishes acknowledged after the crash", func() bool { return countAcked() >= before+100 })
	close(stop)
	wg.Wait()
	t.Logf("attempts %d, acknowledged %d, failed %d", attempts, len(acked), failed)

	c.start(old)
	c.waitConverged()
	for _, n := range c.nodes {
		h, err := n.store.History(broker.Global, "orders", broker.HistoryQuery{})
		if err != nil {
			t.Fatal(err)
		}
		bySeq := map[uint64]string{}
		for _, m := range h.Messages {
			bySeq[m.Seq] = string(m.Payload)
		}
		// The default retention keeps the last 100; everything acknowledged
		// is numbered, and what is retained matches the acknowledgments.
		for _, a := range acked {
			if a.seq > h.Last {
				t.Fatalf("%s: acknowledged seq %d beyond last %d", n.id, a.seq, h.Last)
			}
			if p, ok := bySeq[a.seq]; ok && p != a.payload {
				t.Fatalf("%s: seq %d holds %q, acknowledged %q", n.id, a.seq, p, a.payload)
			}
		}
	}
}

// TestClusterAcknowledgedAllRetained checks, with retention large enough to
// keep everything, that every acknowledged publish is in every node's
// history with its sequence number, sequences are contiguous, and no
// payload appears twice.
func TestClusterAcknowledgedAllRetained(t *testing.T) {
	big := Policy{Rules: []Rule{{Pattern: "*", MaxCount: 100000}}}
	c := newTestCluster(t, 3, Config{Retention: &big, CommitTimeout: 3 * time.Second})
	acked := map[string]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	crashed := make(chan struct{})
	for i := range c.nodes {
		s := c.nodes[i].store
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 300; j++ {
				payload := fmt.Sprintf("n%d-%d", i, j)
				ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
				r, err := s.Publish(ctx, []broker.Publish{{Channel: "ledger", Payload: []byte(payload)}})
				cancel()
				if err == nil {
					mu.Lock()
					acked[payload] = r[0].Seq
					mu.Unlock()
				}
				if j == 100 && i == 0 {
					close(crashed)
				}
			}
		}()
	}
	<-crashed
	old := c.leader()
	c.crash(old)
	wg.Wait()
	c.start(old)
	c.waitConverged()
	for _, n := range c.nodes {
		h, err := n.store.History(broker.Global, "ledger", broker.HistoryQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if h.First != 1 || uint64(len(h.Messages)) != h.Last {
			t.Fatalf("%s: first %d last %d with %d messages: not contiguous", n.id, h.First, h.Last, len(h.Messages))
		}
		seen := map[string]uint64{}
		for i, m := range h.Messages {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d", n.id, i, m.Seq)
			}
			if prev, dup := seen[string(m.Payload)]; dup {
				t.Fatalf("%s: %q at seq %d and %d", n.id, m.Payload, prev, m.Seq)
			}
			seen[string(m.Payload)] = m.Seq
		}
		for p, seq := range acked {
			if seen[p] != seq {
				t.Fatalf("%s: acknowledged %q as seq %d, history has seq %d", n.id, p, seq, seen[p])
			}
		}
	}
	t.Logf("acknowledged %d", len(acked))
}

func TestClusterRestartFromDisk(t *testing.T) {
	c := newTestCluster(t, 3, Config{})
	ctx := context.Background()
	l := c.nodes[c.leader()]
	for i := 1; i <= 10; i++ {
		if _, err := publish(ctx, l, "news", "a"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged()
	epoch := mustHistory(t, l.store, "news").Epoch
	for i := range c.nodes {
		c.stop(i)
	}
	for i := range c.nodes {
		c.start(i)
	}
	l = c.nodes[c.leader()]
	r, err := publish(ctx, l, "news", "after")
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 11 || r.Epoch != epoch {
		t.Fatalf("after restart: seq %d epoch %d, want 11 epoch %d", r.Seq, r.Epoch, epoch)
	}
	c.waitConverged()
	h := mustHistory(t, c.nodes[0].store, "news")
	if len(h.Messages) != 11 || string(h.Messages[0].Payload) != "a1" || string(h.Messages[10].Payload) != "after" {
		t.Fatalf("history after restart: %d messages", len(h.Messages))
	}
}

// TestClusterWipedNodeCatchesUpFromSnapshot wipes a follower's disk after
// the log has been truncated by snapshots: it must be rebuilt from a
// snapshot the leader sends.
func TestClusterWipedNodeCatchesUpFromSnapshot(t *testing.T) {
	c := newTestCluster(t, 3, Config{SnapshotThreshold: 64, TrailingLogs: 16, SnapshotInterval: 50 * time.Millisecond})
	ctx := context.Background()
	f := c.follower()
	for i := 0; i < 400; i++ {
		l := c.nodes[c.leader()]
		if _, err := publish(ctx, l, "ch"+strconv.Itoa(i%7), "p"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged()
	l := c.nodes[c.leader()].store
	waitFor(t, 20*time.Second, "the leader's log to be truncated", func() bool {
		first, _ := l.logs.FirstIndex()
		return first > 1
	})
	c.stop(f)
	if err := os.RemoveAll(c.nodes[f].dir); err != nil {
		t.Fatal(err)
	}
	c.start(f)
	c.waitConverged()
	snaps, err := c.nodes[f].store.snaps.List()
	if err != nil || len(snaps) == 0 {
		t.Fatalf("wiped node has no snapshot (err %v): it did not catch up from one", err)
	}
	h := mustHistory(t, c.nodes[f].store, "ch3")
	if h.Last == 0 || len(h.Messages) == 0 {
		t.Fatalf("wiped node's history of ch3 is empty")
	}
}

// TestClusterMinorityRefusesToAcknowledge leaves one node of three: it must
// refuse publishes within the commit timeout, and acknowledge none.
func TestClusterMinorityRefusesToAcknowledge(t *testing.T) {
	c := newTestCluster(t, 3, Config{CommitTimeout: time.Second})
	ctx := context.Background()
	l := c.leader()
	if _, err := publish(ctx, c.nodes[l], "q", "before"); err != nil {
		t.Fatal(err)
	}
	// Keep the old leader alone: the other two go.
	for i := range c.nodes {
		if i != l {
			c.crash(i)
		}
	}
	alone := c.nodes[l]
	for i := 0; i < 3; i++ {
		start := time.Now()
		_, err := publish(ctx, alone, "q", "lonely-"+strconv.Itoa(i))
		if err == nil {
			t.Fatal("a node without a quorum acknowledged a publish")
		}
		if !errors.Is(err, broker.ErrNoQuorum) && !errors.Is(err, broker.ErrTimeout) {
			t.Fatalf("publish without quorum: %v, want ErrNoQuorum or ErrTimeout", err)
		}
		// Bounded: it fails on its own, not by the caller's context.
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("publish without quorum took %s", d)
		}
	}
	for i := range c.nodes {
		if i != l {
			c.start(i)
		}
	}
	c.leader()
	l2 := c.nodes[c.leader()]
	r, err := publish(ctx, l2, "q", "after")
	if err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
	for _, n := range c.nodes {
		h := mustHistory(t, n.store, "q")
		// A publish that failed is indeterminate: it may have been
		// committed after all, but then only once.
		seen := map[string]int{}
		for _, m := range h.Messages {
			seen[string(m.Payload)]++
		}
		for p, k := range seen {
			if k > 1 {
				t.Fatalf("%s: %q appears %d times", n.id, p, k)
			}
		}
		if h.Last != r.Seq || string(h.Messages[len(h.Messages)-1].Payload) != "after" {
			t.Fatalf("%s: last message %q", n.id, h.Messages[len(h.Messages)-1].Payload)
		}
	}
}

func TestClusterAddAndRemoveNode(t *testing.T) {
	ca := testcert.NewCA(t, "herald cluster CA")
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{}},
		{"mutual TLS", Config{TLS: PeerTLSConfig(ca.Issue(t, "node").TLS, ca.Pool())}},
	} {
		t.Run(tc.name, func(t *testing.T) { testAddAndRemoveNode(t, tc.cfg) })
	}
}

func testAddAndRemoveNode(t *testing.T, base Config) {
	c := newTestCluster(t, 3, base)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if _, err := publish(ctx, c.nodes[c.leader()], "x", "p"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	want := mustHistory(t, c.nodes[c.leader()].store, "x").Last
	// A fourth node joins through a follower.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.cfg
	cfg.NodeID, cfg.DataDir, cfg.Listener, cfg.Join = "n4", t.TempDir(), ln, c.nodes[c.follower()].addr
	b4 := broker.New(broker.Config{})
	s4, err := Open(cfg, b4)
	if err != nil {
		t.Fatal(err)
	}
	b4.SetLog(s4)
	defer s4.Close()
	waitFor(t, 20*time.Second, "n4 in the configuration", func() bool {
		return len(c.nodes[c.leader()].store.Status().Nodes) == 4
	})
	l := c.nodes[c.leader()].store
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.Sync(ctx2); err != nil {
		t.Fatal(err)
	}
	if err := s4.WaitApplied(ctx2, l.AppliedIndex()); err != nil {
		t.Fatal(err)
	}
	if h := mustHistory(t, s4, "x"); h.Last != want {
		t.Fatalf("n4 history last %d, want %d", h.Last, want)
	}
	// Publishing on the new node works, and it can be removed.
	if _, err := publish(ctx, &testNode{broker: b4}, "x", "from-n4"); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[c.follower()].store.RemoveNode(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "n4 out of the configuration", func() bool {
		return len(c.nodes[c.leader()].store.Status().Nodes) == 3
	})
}

func mustHistory(t testing.TB, s *Store, ch string) broker.History {
	t.Helper()
	h, err := s.History(broker.Global, ch, broker.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// textFormat encodes deliveries as readable lines for tests.
type textFormat struct{}

func (textFormat) AppendMessage(dst []byte, k broker.Kind, name string, m *broker.Message) []byte {
	return fmt.Appendf(dst, "msg %s %d %d %s", m.Channel, m.Epoch, m.Seq, m.Payload)
}

func (textFormat) AppendResume(dst []byte, ch string, r broker.Resume) []byte {
	return fmt.Appendf(dst, "resume %s %t %d %d %d", ch, r.Recovered, r.Epoch, r.From, r.Last)
}

// drain forwards what a client receives, frame by frame, until it closes.
func drain(c *broker.Client, out chan<- string) {
	var buf [][]byte
	for {
		var err error
		buf, err = c.Outbox().Next(nil, buf[:0])
		for _, f := range buf {
			out <- string(f)
		}
		if err != nil {
			return
		}
	}
}

// TestClusterReadyAsksLeader: a follower's readiness is measured against
// the leader's commit index, which it asks the leader for, not against its
// own, which stops at the end of the log it has received.
func TestClusterReadyAsksLeader(t *testing.T) {
	c := newTestCluster(t, 3, Config{})
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		if _, err := publish(ctx, c.nodes[c.leader()], "room", "m"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged()
	l, f := c.nodes[c.leader()].store, c.nodes[c.follower()].store
	waitFor(t, 10*time.Second, "the follower to be ready", func() bool { return f.Ready() == nil })

	// What the follower learns is the leader's commit index, asked anew
	// once the cached answer is older than readyPoll.
	f.readyMu.Lock()
	f.readyAt = time.Time{}
	f.readyMu.Unlock()
	want := l.raft.CommitIndex()
	got, err := f.leaderCommit()
	if err != nil || got < want {
		t.Fatalf("follower learned commit index %d (%v); the leader's was %d", got, err, want)
	}

	// A follower further behind the leader than readyLag is not ready,
	// whatever its own commit index says.
	f.readyMu.Lock()
	f.readyAt, f.readyCommit, f.readyErr = time.Now(), f.raft.AppliedIndex()+readyLag+1, nil
	f.readyMu.Unlock()
	if err := f.Ready(); err == nil || !strings.Contains(err.Error(), "catching up") {
		t.Fatalf("Ready on a follower behind the leader: %v, want catching up", err)
	}
	// The leader answers from its own state.
	if err := l.Ready(); err != nil {
		t.Fatalf("leader not ready: %v", err)
	}
}
