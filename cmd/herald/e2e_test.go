package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-broker/herald/internal/heraldbin"
	"github.com/herald-broker/herald/internal/syncio"
)

// heraldBin is the herald binary the end-to-end tests run, built once.
var heraldBin string

func TestMain(m *testing.M) { heraldbin.Main(m, ".", &heraldBin) }

// redisCLI returns the path of redis-cli, failing the test if it is
// missing.
func redisCLI(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not found: install redis-tools (make deps)")
	}
	return p
}

// cli runs one redis-cli command against addr and returns its output.
func cli(t testing.TB, addr string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, redisCLI(t), append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a running herald process.
type proc struct {
	t     testing.TB
	args  []string
	cmd   *exec.Cmd
	log   *bytes.Buffer
	mu    sync.Mutex
	done  chan struct{}
	resp  string
	err   error
	state *os.ProcessState
}

func startHerald(t testing.TB, respAddr string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: args, resp: respAddr}
	p.start()
	t.Cleanup(func() {
		if p.running() {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("herald %s log:\n%s", p.resp, p.logs())
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	p.log = &bytes.Buffer{}
	p.cmd = exec.Command(heraldBin, p.args...)
	w := &syncio.LockedWriter{Mu: &p.mu, W: p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() {
		p.err = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	waitFor(p.t, 30*time.Second, "herald to answer PING on "+p.resp, func() bool {
		out, err := cli(p.t, p.resp, "PING")
		return err == nil && out == "PONG"
	})
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// kill9 kills the process without letting it clean up.
func (p *proc) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subscriber is a redis-cli SUBSCRIBE running in the background.
type subscriber struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

func subscribe(t testing.TB, addr string, args ...string) *subscriber {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(redisCLI(t), append([]string{"-h", host, "-p", port}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &subscriber{cmd: cmd, lines: make(chan string, 10000), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return s
}

// expect reads the next lines and checks them.
func (s *subscriber) expect(t testing.TB, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got, ok := <-s.lines:
			if !ok {
				t.Fatalf("subscriber ended; want %q", w)
			}
			if got != w {
				t.Fatalf("subscriber printed %q, want %q", got, w)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("subscriber printed nothing; want %q", w)
		}
	}
}

// TestSingleNode runs the binary with its defaults but for addresses and
// data directory, drives it with redis-cli, and stops it with SIGTERM: the
// subscriber's connection is closed cleanly and herald exits 0.
func TestSingleNode(t *testing.T) {
	resp, dir := freeAddr(t), t.TempDir()
	p := startHerald(t, resp, "--resp-addr", resp, "--http-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--data-dir", dir)
	sub := subscribe(t, resp, "SUBSCRIBE", "news")
	sub.expect(t, "subscribe", "news", "1")
	if out, err := cli(t, resp, "PUBLISH", "news", "hello"); err != nil || out != "1" {
		t.Fatalf("PUBLISH: %q, %v", out, err)
	}
	sub.expect(t, "message", "news", "hello")
	if out, err := cli(t, resp, "PUBSUB", "NUMSUB", "news"); err != nil || out != "news\n1" {
		t.Fatalf("PUBSUB NUMSUB: %q, %v", out, err)
	}
	out, err := cli(t, resp, "HERALD.PUBLISH", "news", "second")
	if err != nil || !strings.HasPrefix(out, "2\n") {
		t.Fatalf("HERALD.PUBLISH: %q, %v", out, err)
	}
	sub.expect(t, "message", "news", "second")

	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("herald did not exit after SIGTERM")
	}
	if !p.state.Success() {
		t.Fatalf("herald exited with %v", p.err)
	}
	// redis-cli reports the closed connection and exits.
	select {
	case <-sub.done:
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber still running after herald stopped")
	}
	// State survives: restart on the same data directory.
	p.start()
	out, err = cli(t, resp, "HERALD.HISTORY", "news")
	if err != nil || !strings.Contains(out, "hello") || !strings.Contains(out, "second") {
		t.Fatalf("history after restart: %q, %v", out, err)
	}
}

// TestSnapshotFlags: --snapshot-interval and --snapshot-threshold reach
// Raft (with the defaults, 2,040 entries would bring no snapshot for
// minutes), and a node that has dropped its log but --trailing-logs
// entries restarts with every message. The threshold makes Raft drop more
// than 1,024 entries at once, which the log store does with one range
// tombstone.
func TestSnapshotFlags(t *testing.T) {
	resp, httpAddr, dir := freeAddr(t), freeAddr(t), t.TempDir()
	p := startHerald(t, resp, "--resp-addr", resp, "--http-addr", httpAddr, "--raft-addr", freeAddr(t), "--data-dir", dir,
		"--snapshot-interval", "20ms", "--snapshot-threshold", "1500", "--trailing-logs", "4")
	// One log entry each: redis-cli waits for every reply.
	if out, err := cli(t, resp, "-r", "2000", "PUBLISH", "bulk", "x"); err != nil || strings.Count(out, "0") != 2000 {
		t.Fatalf("2,000 PUBLISH: %v\n%.200s", err, out)
	}
	for i := range 40 {
		if out, err := cli(t, resp, "PUBLISH", "news", fmt.Sprint("m", i)); err != nil || out != "0" {
			t.Fatalf("PUBLISH %d: %q, %v", i, out, err)
		}
	}
	waitFor(t, 30*time.Second, "a Raft snapshot on disk", func() bool {
		return scrape(t, httpAddr)["herald_snapshot_bytes"] > 0
	})
	p.kill9()
	p.start()
	out, err := cli(t, resp, "HERALD.HISTORY", "news")
	if err != nil {
		t.Fatalf("HERALD.HISTORY: %v", err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		lines[l] = true
	}
	for i := range 40 {
		if !lines[fmt.Sprint("m", i)] {
			t.Fatalf("history after restart lacks m%d:\n%s", i, out)
		}
	}
	if out, err := cli(t, resp, "HERALD.CHANNEL", "bulk"); err != nil || !strings.Contains(out, "last_seq\n2000\n") {
		t.Fatalf("HERALD.CHANNEL bulk after restart: %v\n%s", err, out)
	}
}

// cluster3 is three herald processes bootstrapped with --peers.
type cluster3 struct {
	procs []*proc
	resp  []string
	http  []string
}

// startCluster3 starts three nodes with the flags extra besides their
// addresses (retention, log level).
func startCluster3(t *testing.T, extra ...string) *cluster3 {
	t.Helper()
	c := &cluster3{}
	var raft, peers []string
	for i := range 3 {
		raft = append(raft, freeAddr(t))
		c.resp = append(c.resp, freeAddr(t))
		c.http = append(c.http, freeAddr(t))
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, raft[i]))
	}
	// Start the three together: each waits for a quorum to answer PING?
	// PING needs no quorum, so sequential starts are fine.
	for i := range 3 {
		args := []string{"--node-id", fmt.Sprintf("n%d", i+1), "--raft-addr", raft[i], "--resp-addr", c.resp[i],
			"--http-addr", c.http[i], "--data-dir", t.TempDir(), "--peers", strings.Join(peers, ","),
			"--raft-election-timeout", "500ms"}
		c.procs = append(c.procs, startHerald(t, c.resp[i], append(args, extra...)...))
	}
	return c
}

// leader returns the index of the process that says it leads.
func (c *cluster3) leader(t *testing.T) int {
	t.Helper()
	idx := -1
	waitFor(t, 30*time.Second, "a leader", func() bool {
		for i, p := range c.procs {
			if !p.running() {
				continue
			}
			out, err := cli(t, c.resp[i], "HERALD.CLUSTER", "STATUS")
			if err == nil && strings.Contains(out, "state\nLeader") {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

// TestThreeNodesKill9 publishes with redis-cli on a follower, subscribes on
// another node, kills the leader with SIGKILL and keeps publishing: every
// acknowledged publish is delivered and in every node's history.
func TestThreeNodesKill9(t *testing.T) {
	c := startCluster3(t, "--retain", "*=100000")
	l := c.leader(t)
	f1, f2 := (l+1)%3, (l+2)%3
	sub := subscribe(t, c.resp[f2], "SUBSCRIBE", "orders")
	sub.expect(t, "subscribe", "orders", "1")
	var acked []string
	for i := 0; i < 20; i++ {
		msg := "before-" + strconv.Itoa(i)
		if out, err := cli(t, c.resp[f1], "PUBLISH", "orders", msg); err != nil || out != "0" {
			t.Fatalf("PUBLISH on follower: %q, %v", out, err)
		}
		acked = append(acked, msg)
		sub.expect(t, "message", "orders", msg)
	}
	c.procs[l].kill9()
	// Publishes on the survivors succeed once a new leader is elected;
	// one that fails is not acknowledged and is not expected.
	for i := 0; i < 20; i++ {
		msg := "after-" + strconv.Itoa(i)
		out, err := cli(t, c.resp[f1], "PUBLISH", "orders", msg)
		if err != nil || strings.HasPrefix(out, "ERR") || strings.HasPrefix(out, "TRYAGAIN") || strings.HasPrefix(out, "CLUSTERDOWN") {
			t.Logf("publish %s not acknowledged: %s", msg, out)
			continue
		}
		acked = append(acked, msg)
	}
	if len(acked) < 30 {
		t.Fatalf("only %d of 40 publishes acknowledged", len(acked))
	}
	// The subscriber on the surviving node sees every acknowledged message
	// after the crash, in order.
	want := acked[20:]
	for _, msg := range want {
		for {
			var line string
			select {
			case line = <-sub.lines:
			case <-time.After(20 * time.Second):
				t.Fatalf("subscriber did not receive %q", msg)
			}
			if line == msg {
				break
			}
		}
	}
	// The old leader comes back and catches up; every node's history
	// holds every acknowledged publish, in the same order.
	c.procs[l].start()
	for i := range c.procs {
		waitFor(t, 30*time.Second, "history on "+c.resp[i], func() bool {
			out, err := cli(t, c.resp[i], "HERALD.HISTORY", "orders")
			if err != nil {
				return false
			}
			pos := 0
			for _, msg := range acked {
				j := strings.Index(out[pos:], "\n"+msg+"\n")
				if j < 0 && !strings.HasSuffix(out, "\n"+msg) {
					return false
				}
				pos += j + 1
			}
			return true
		})
	}
}
