package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// nodeIP is the loopback IP of node i: 127.0.0.11, 127.0.0.12, ... Linux
// routes all of 127.0.0.0/8 to the loopback interface.
func nodeIP(i int) string { return fmt.Sprintf("127.0.0.%d", 11+i) }

// node is one herald process and its addresses. The process may be
// running, paused (SIGSTOP) or dead; it keeps its data directory across
// restarts.
type node struct {
	idx       int
	id        string
	raftAddr  string // where the process listens for Raft
	proxyAddr string // where its peers reach it: the fault proxy
	respAddr  string
	httpAddr  string
	dataDir   string
	logPath   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	paused bool
	starts int
	// stopping is set while the harness kills the process; an exit
	// without it is unexpected, and recorded.
	stopping   bool
	unexpected []string
}

// cluster is three herald processes behind fault proxies.
type cluster struct {
	bin     string
	args    []string // extra flags for every node
	nodes   []*node
	nw      *network
	proxies []*proxy
	logger  *slog.Logger
}

// freePort returns host:port on ip with a port that was free a moment ago.
func freePort(ip string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", fmt.Errorf("listen on %s (Linux routes 127.0.0.0/8 to loopback; other systems need the addresses added): %w", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startCluster starts n nodes with data under dir and waits until each
// answers PING.
func startCluster(bin, dir string, n int, args []string, logger *slog.Logger) (*cluster, error) {
	c := &cluster{bin: bin, args: args, nw: newNetwork(n, logger), logger: logger}
	for i := range n {
		ip := nodeIP(i)
		nd := &node{idx: i, id: fmt.Sprintf("n%d", i+1), dataDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1))}
		var err error
		for _, a := range []*string{&nd.raftAddr, &nd.respAddr, &nd.httpAddr} {
			if *a, err = freePort(ip); err != nil {
				c.close()
				return nil, err
			}
		}
		c.nodes = append(c.nodes, nd)
	}
	// Every node is listed before the first proxy starts: the proxies'
	// goroutines read the list (nodeOf).
	for i, nd := range c.nodes {
		p, err := startProxy(c.nw, i, net.JoinHostPort(nodeIP(i), "0"), nd.raftAddr, c.nodeOf)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("start proxy for %s: %w", nd.id, err)
		}
		nd.proxyAddr = p.addr()
		c.proxies = append(c.proxies, p)
	}
	for i := range c.nodes {
		if err := c.start(i); err != nil {
			c.close()
			return nil, err
		}
	}
	for i := range c.nodes {
		if err := c.waitServing(i, 60*time.Second); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// nodeOf tells which node a connection to a proxy comes from.
func (c *cluster) nodeOf(a net.Addr) int {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return -1
	}
	for i := range c.nodes {
		if ta.IP.String() == nodeIP(i) {
			return i
		}
	}
	return -1
}

func (c *cluster) peers() string {
	var ps []string
	for _, nd := range c.nodes {
		ps = append(ps, nd.id+"="+nd.proxyAddr)
	}
	return strings.Join(ps, ",")
}

// start starts node i's process on its data directory.
func (c *cluster) start(i int) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		return fmt.Errorf("%s is already running", nd.id)
	}
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", nd.id, err)
	}
	nd.starts++
	fmt.Fprintf(logf, "=== herald-chaos: start %d of %s at %s\n", nd.starts, nd.id, time.Now().Format(time.RFC3339Nano))
	args := append([]string{"--node-id", nd.id, "--raft-addr", nd.raftAddr, "--resp-addr", nd.respAddr,
		"--http-addr", nd.httpAddr, "--data-dir", nd.dataDir, "--peers", c.peers()}, c.args...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The nodes die with the harness, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", nd.id, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		logf.Close()
		nd.mu.Lock()
		if !nd.stopping {
			nd.unexpected = append(nd.unexpected, fmt.Sprintf("start %d exited by itself at %s: %v", nd.starts, time.Now().Format(time.RFC3339Nano), err))
		}
		nd.mu.Unlock()
		close(done)
	}()
	nd.cmd, nd.done, nd.paused, nd.stopping = cmd, done, false, false
	return nil
}

// waitServing waits until node i answers PING.
func (c *cluster) waitServing(i int, timeout time.Duration) error {
	nd := c.nodes[i]
	deadline := time.Now().Add(timeout)
	for {
		if rc, err := dialRESP(nd.respAddr, time.Second); err == nil {
			v, err := rc.do(2*time.Second, "PING")
			rc.Close()
			if err == nil && v.str == "PONG" {
				return nil
			}
		}
		if !c.running(i) {
			return fmt.Errorf("%s exited while starting (see %s)", nd.id, nd.logPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer PING within %s (see %s)", nd.id, timeout, nd.logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running reports whether node i's process is alive (possibly paused).
func (c *cluster) running(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// available reports whether node i runs and is not paused.
func (c *cluster) available(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	paused := nd.paused
	nd.mu.Unlock()
	return !paused && c.running(i)
}

// kill sends sig to node i (SIGKILL or SIGTERM) and waits until it exits;
// after grace it is killed with SIGKILL.
func (c *cluster) kill(i int, sig syscall.Signal, grace time.Duration) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	cmd, done, paused := nd.cmd, nd.done, nd.paused
	nd.stopping = true
	nd.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	if paused && sig != syscall.SIGKILL {
		cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot act on SIGTERM
	}
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	nd.mu.Lock()
	nd.cmd, nd.paused = nil, false
	nd.mu.Unlock()
	return nil
}

// pause stops (SIGSTOP) or continues (SIGCONT) node i.
func (c *cluster) pause(i int, stop bool) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return errors.New(nd.id + " is not running")
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	if err := nd.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", nd.id, err)
	}
	nd.paused = stop
	return nil
}

// status is the part of HERALD.CLUSTER STATUS the harness uses.
type status struct {
	State        string
	LeaderID     string
	Term         int64
	CommitIndex  int64
	AppliedIndex int64
}

// status asks node i for its view of the cluster.
func (c *cluster) status(i int) (status, error) {
	rc, err := dialRESP(c.nodes[i].respAddr, time.Second)
	if err != nil {
		return status{}, err
	}
	defer rc.Close()
	v, err := rc.do(2*time.Second, "HERALD.CLUSTER", "STATUS")
	if err != nil {
		return status{}, err
	}
	m, err := fields(v)
	if err != nil {
		return status{}, err
	}
	return status{State: m["state"].str, LeaderID: m["leader_id"].str, Term: m["term"].num,
		CommitIndex: m["commit_index"].num, AppliedIndex: m["applied_index"].num}, nil
}

// leader returns the node that says it leads with the highest term among
// the available nodes, or -1.
func (c *cluster) leader() int {
	best, term := -1, int64(-1)
	for i := range c.nodes {
		if !c.available(i) {
			continue
		}
		if st, err := c.status(i); err == nil && st.State == "Leader" && st.Term > term {
			best, term = i, st.Term
		}
	}
	return best
}

// close kills every node and stops the proxies.
func (c *cluster) close() {
	for i := range c.nodes {
		c.kill(i, syscall.SIGKILL, 0)
	}
	c.nw.close()
	for _, p := range c.proxies {
		p.close()
	}
}
