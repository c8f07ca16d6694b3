package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// serverProc is one server process the suite started.
type serverProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	resp    string // RESP host:port
	http    string // Herald's HTTP host:port; empty for redis-server
	exited  chan struct{}
}

// target is what a workload runs against: one server, or a cluster's
// nodes.
type target struct {
	label string // herald-1, herald-3, redis
	nodes []*serverProc
}

func (t *target) addrs() []string {
	var out []string
	for _, n := range t.nodes {
		out = append(out, n.resp)
	}
	return out
}

func (t *target) wsURLs() []string {
	var out []string
	for _, n := range t.nodes {
		if n.http != "" {
			out = append(out, "ws://"+n.http+"/ws")
		}
	}
	return out
}

func (t *target) pids() []int {
	var out []int
	for _, n := range t.nodes {
		out = append(out, n.cmd.Process.Pid)
	}
	return out
}

// stop ends every process: SIGTERM, then SIGKILL after 10 s.
func (t *target) stop() {
	for _, n := range t.nodes {
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(10 * time.Second)
	for _, n := range t.nodes {
		select {
		case <-n.exited:
		case <-deadline:
			n.cmd.Process.Kill()
			<-n.exited
		}
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startProc starts a server with its output in logPath. It dies with this
// process (Pdeathsig) should the suite's own cleanup not run.
func startProc(name, logPath, bin string, args ...string) (*serverProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &serverProc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// logTail returns the end of a process's log, for error messages.
func (p *serverProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// startHerald starts a Herald target of n nodes (n > 1: a cluster
// bootstrapped with --peers) with data and logs under dir, and waits until
// every node is ready.
func startHerald(ctx context.Context, bin, dir string, n int, extra []string) (*target, error) {
	t := &target{label: fmt.Sprintf("herald-%d", n)}
	type addrs struct{ resp, http, raft string }
	as := make([]addrs, n)
	var peers []string
	for i := range as {
		var err error
		if as[i].resp, err = freeAddr(); err == nil {
			if as[i].http, err = freeAddr(); err == nil {
				as[i].raft, err = freeAddr()
			}
		}
		if err != nil {
			return nil, err
		}
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, as[i].raft))
	}
	for i, a := range as {
		id := fmt.Sprintf("n%d", i+1)
		args := []string{"--node-id", id, "--resp-addr", a.resp, "--http-addr", a.http, "--raft-addr", a.raft,
			"--data-dir", filepath.Join(dir, id), "--max-clients", "20000", "--max-http-connections", "20000", "--log-level", "warn"}
		if n > 1 {
			args = append(args, "--peers", strings.Join(peers, ","))
		}
		args = append(args, extra...)
		p, err := startProc(t.label+" "+id, filepath.Join(dir, id+".log"), bin, args...)
		if err != nil {
			t.stop()
			return nil, err
		}
		p.resp, p.http = a.resp, a.http
		t.nodes = append(t.nodes, p)
	}
	if err := t.waitReady(ctx, 60*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

// startRedis starts redis-server on a random port. Without durable it
// persists nothing, as the suite's PUBLISH comparison wants; with it, it
// appends every write to its append-only file and syncs the file before it
// replies (appendfsync always): Redis's durable mode, where an XADD it
// acknowledged survives a crash, as a publish Herald acknowledged does.
func startRedis(ctx context.Context, bin, dir string, durable bool) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	label, persist := "redis", []string{"--appendonly", "no"}
	if durable {
		label, persist = "redis-aof", []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", ""}, persist...)
	p, err := startProc("redis-server", filepath.Join(dir, "redis.log"), bin,
		append(args, "--maxclients", "20000", "--dir", dir)...)
	if err != nil {
		return nil, err
	}
	p.resp = addr
	t := &target{label: label, nodes: []*serverProc{p}}
	if err := t.waitReady(ctx, 30*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

// waitReady waits until every node answers PING and, for Herald, /readyz.
func (t *target) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for _, n := range t.nodes {
		for {
			err := n.ready(ctx, client)
			if err == nil {
				break
			}
			select {
			case <-n.exited:
				return fmt.Errorf("%s exited while starting; its log:\n%s", n.name, n.logTail())
			case <-ctx.Done():
				return fmt.Errorf("%s not ready within %s: %v; its log:\n%s", n.name, limit, err, n.logTail())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func (n *serverProc) ready(ctx context.Context, client *http.Client) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", n.resp)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := roundTrip(conn, newRESPReader(conn, 512), "PING"); err != nil {
		return err
	}
	if n.http == "" {
		return nil
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.http+"/readyz", nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// versionOf runs a binary with a version flag and returns its first line.
func versionOf(bin string, arg string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, arg).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	return string(line)
}
