package resp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
)

// The tests in this file run real client libraries, unchanged, against
// Herald: redis-py (RESP2), node-redis (RESP2 and RESP3) and ioredis. Each
// script in testdata/clients prints one JSON line of what it saw, and the
// test checks every value. Each script also runs against redis-server, with
// the same expectations, so the expected values are Redis's behaviour and
// not whatever Herald happens to do.
//
// Every connection goes through clientProxy, which records the bytes both
// ways: a failure shows exactly what the client sent and what the server
// answered. Set HERALD_TEST_TRANSCRIPTS to a directory to keep every
// transcript, to compare Herald's with Redis's.
//
// The tests install nothing: a missing interpreter or library fails the
// test with the command that installs it (make deps runs them all).

const (
	clientsDir   = "testdata/clients"
	clientPython = "/usr/bin/python3" // Debian's, with python3-redis; not a pyenv shim
	// clientScriptTimeout bounds one script run; the scripts take about a
	// second.
	clientScriptTimeout = 2 * time.Minute
)

// clientTarget is a server a client script runs against, through a
// recording proxy.
type clientTarget struct {
	name  string
	start func(t *testing.T) *clientProxy
}

var clientTargets = []clientTarget{
	{"herald", func(t *testing.T) *clientProxy {
		s := startServer(t, broker.Config{}, resp.Config{})
		return startClientProxy(t, "tcp", s.addr)
	}},
	{"redis-server", func(t *testing.T) *clientProxy {
		return startClientProxy(t, "unix", startClientRedisServer(t))
	}},
}

func TestClientRedisPy(t *testing.T) {
	requireClientRedisPy(t)
	want := map[string]any{
		"client":                   "redis-py",
		"setname":                  true,
		"getname":                  "herald-redispy-pub",
		"subscribed":               [][]any{{"subscribe", "news", 1}, {"psubscribe", "news.*", 2}},
		"numsub":                   [][]any{{"news", 1}, {"nobody", 0}},
		"numpat":                   1,
		"ping":                     []any{"pong", ""},
		"ping_arg":                 []any{"pong", "hi"},
		"health_checks_sent":       1,
		"health_checks_unanswered": 0,
		"stray":                    []any{},
		"plain_receivers":          append(clientRepeat(1, 2*10+1), 0),
		"pipelined_replies":        1000,
		"pipelined_receivers":      []int{1},
		"received":                 2*10 + 1 + 1000,
		"in_order":                 true,
		"first_mismatch":           nil,
		"unsubscribed":             [][]any{{"unsubscribe", "news", 1}, {"punsubscribe", "news.*", 0}},
		"subscribed_after":         false,
		"numsub_after":             [][]any{{"news", 0}},
		"publish_after":            0,
	}
	wire := []clientWire{
		// pubsub.ping() while subscribed, and its RESP2 answer.
		{sent: "*2\r\n$4\r\nPING\r\n$0\r\n\r\n", recv: "*2\r\n$4\r\npong\r\n$0\r\n\r\n"},
		// health_check_interval while subscribed.
		{sent: "*2\r\n$4\r\nPING\r\n$21\r\nredis-py-health-check\r\n", recv: "*2\r\n$4\r\npong\r\n$21\r\nredis-py-health-check\r\n"},
		// UNSUBSCRIBE with no arguments.
		{sent: "*1\r\n$11\r\nUNSUBSCRIBE\r\n", recv: "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n"},
	}
	for _, target := range clientTargets {
		t.Run(target.name, func(t *testing.T) {
			p := target.start(t)
			got := runClientScript(t, p, clientPython, filepath.Join(clientsDir, "redispy_pubsub.py"), p.addr())
			t.Logf("redis-py %v", got["version"])
			checkClientResult(t, p, got, want, "")
			checkClientWire(t, p, wire)
		})
	}
}

func TestClientNodeRedis(t *testing.T) {
	node := requireClientNodeModules(t)
	protocols := []struct {
		resp string // the script's argument: node-redis's RESP option
		ping string // what sub.ping() returns while subscribed
		wire []clientWire
	}{
		{"default", "pong", []clientWire{
			// No HELLO: the name is set with CLIENT SETNAME.
			{sent: "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$16\r\nherald-noderedis\r\n", recv: "+OK\r\n"},
			// In RESP2 subscribed mode PING answers ["pong", ""], which
			// node-redis returns as "pong".
			{sent: "*1\r\n$4\r\nPING\r\n", recv: "*2\r\n$4\r\npong\r\n$0\r\n\r\n"},
			{recv: "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$7\r\nplain-0\r\n"},
			{sent: "*1\r\n$11\r\nunsubscribe\r\n", recv: "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"},
		}},
		{"2", "pong", []clientWire{
			{sent: "*4\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$7\r\nSETNAME\r\n$16\r\nherald-noderedis\r\n", recv: "*14\r\n$6\r\nserver\r\n"},
			{sent: "*1\r\n$4\r\nPING\r\n", recv: "*2\r\n$4\r\npong\r\n$0\r\n\r\n"},
			{recv: "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$7\r\nplain-0\r\n"},
			{sent: "*1\r\n$11\r\nunsubscribe\r\n", recv: "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"},
		}},
		{"3", "PONG", []clientWire{
			{sent: "*4\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$7\r\nSETNAME\r\n$16\r\nherald-noderedis\r\n", recv: "%7\r\n$6\r\nserver\r\n"},
			// In RESP3 PING is an ordinary command while subscribed.
			{sent: "*1\r\n$4\r\nPING\r\n", recv: "+PONG\r\n"},
			{recv: ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$7\r\nplain-0\r\n"},
			{sent: "*1\r\n$11\r\nunsubscribe\r\n", recv: ">3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"},
		}},
	}
	for _, proto := range protocols {
		var subscriberCommands any // RESP3 only: commands on the subscribed connection
		received := 3*10 + 1 + 1000
		if proto.resp == "3" {
			subscriberCommands = []any{1, map[string]any{"news": 1}, "herald-noderedis"}
			received++
		}
		want := map[string]any{
			"client":              "node-redis",
			"resp":                proto.resp,
			"getname":             "herald-noderedis",
			"numsub":              map[string]any{"news": 1, "nobody": 0},
			"numpat":              1,
			"shardnumsub":         map[string]any{"shard": 1},
			"ping":                proto.ping,
			"plain_receivers":     append(clientRepeat(1, 3*10+1), 0),
			"pipelined_replies":   1000,
			"pipelined_receivers": []int{1},
			"subscriber_commands": subscriberCommands,
			"received":            received,
			"in_order":            true,
			"first_mismatch":      nil,
			"subscribed_after":    false,
			"numsub_after":        map[string]any{"news": 0},
			"publish_after":       0,
			"spublish_after":      0,
			"ping_after":          "PONG",
			"errors":              []any{},
		}
		for _, target := range clientTargets {
			t.Run("RESP-"+proto.resp+"/"+target.name, func(t *testing.T) {
				p := target.start(t)
				got := runClientScript(t, p, node, filepath.Join(clientsDir, "noderedis_pubsub.mjs"), p.addr(), proto.resp)
				checkClientResult(t, p, got, want, "redis")
				checkClientWire(t, p, proto.wire)
			})
		}
	}
}

func TestClientIORedis(t *testing.T) {
	node := requireClientNodeModules(t)
	want := map[string]any{
		"client":              "ioredis",
		"status":              "ready",
		"getname":             "herald-ioredis",
		"subscribed":          []int{1, 2},
		"numsub":              []any{"news", 1, "nobody", 0},
		"numpat":              1,
		"ping":                []any{"pong", ""},
		"ping_arg":            []any{"pong", "hi"},
		"plain_receivers":     append(clientRepeat(1, 2*10+1), 0),
		"pipelined_replies":   1000,
		"pipelined_errors":    []any{},
		"pipelined_receivers": []int{1},
		"received":            2*10 + 1 + 1000,
		"in_order":            true,
		"first_mismatch":      nil,
		"unsubscribed":        []int{1, 0},
		"ping_after":          "PONG",
		"numsub_after":        []any{"news", 0},
		"publish_after":       0,
		"errors":              []any{},
	}
	wire := []clientWire{
		// The ready check: INFO must answer with a bulk string.
		{sent: "*1\r\n$4\r\ninfo\r\n", recv: "\r\nloading:0\r\n"},
		{recv: "*4\r\n$8\r\npmessage\r\n$6\r\nnews.*\r\n$9\r\nnews.bulk\r\n$6\r\npipe-1\r\n"},
	}
	for _, target := range clientTargets {
		t.Run(target.name, func(t *testing.T) {
			p := target.start(t)
			got := runClientScript(t, p, node, filepath.Join(clientsDir, "ioredis_pubsub.mjs"), p.addr())
			checkClientResult(t, p, got, want, "ioredis")
			checkClientWire(t, p, wire)
		})
	}
}

func clientRepeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// requireClientRedisPy fails the test unless Debian's python3 can import
// redis.
func requireClientRedisPy(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(clientPython); err != nil {
		t.Fatalf("%s not found: apt-get install python3 python3-redis (make deps)", clientPython)
	}
	out, err := exec.Command(clientPython, "-c", "import redis").CombinedOutput()
	if err != nil {
		t.Fatalf("python3 redis module not found: apt-get install python3-redis (make deps)\n%s: %v\n%s", clientPython, err, out)
	}
}

// requireClientNodeModules fails the test unless node is installed and
// testdata/clients/node_modules holds exactly the versions package.json
// pins. It returns the path of node.
func requireClientNodeModules(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: apt-get install nodejs npm (make deps)")
	}
	pinned := readClientPackage(t, filepath.Join(clientsDir, "package.json"), "dependencies")
	for name, version := range pinned {
		installed := readClientPackage(t, filepath.Join(clientsDir, "node_modules", name, "package.json"), "")
		if installed["version"] != version {
			t.Fatalf("node_modules has %s %q, package.json pins %q: run npm ci in resp/testdata/clients (make deps)",
				name, installed["version"], version)
		}
	}
	return node
}

// readClientPackage returns the string fields of a package.json, or of
// one of its objects ("dependencies").
func readClientPackage(t *testing.T, path, object string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && strings.Contains(path, "node_modules") {
		t.Fatalf("node_modules missing: run npm ci in resp/testdata/clients (make deps) (no %s)", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if object != "" {
		var inner map[string]json.RawMessage
		if err := json.Unmarshal(doc[object], &inner); err != nil {
			t.Fatalf("%s: %s: %v", path, object, err)
		}
		doc = inner
	}
	out := map[string]string{}
	for k, raw := range doc {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			out[k] = s
		}
	}
	return out
}

// runClientScript runs a client script and returns the JSON object it
// printed, failing the test (with the transcript) if it exits non-zero or
// prints anything but one JSON line.
func runClientScript(t *testing.T, p *clientProxy, name string, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientScriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	p.closeAndWait()
	p.save(t)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s\nstdout:\n%s\n%s", name, strings.Join(args, " "), err,
			stderr.Bytes(), stdout.Bytes(), p.dump())
	}
	if stderr.Len() > 0 {
		t.Logf("stderr of %s:\n%s", args[0], stderr.Bytes())
	}
	line := bytes.TrimSpace(stdout.Bytes())
	var got map[string]any
	if bytes.Count(line, []byte("\n")) != 0 || json.Unmarshal(line, &got) != nil {
		t.Fatalf("%s did not print one JSON line:\n%s\nstderr:\n%s", args[0], stdout.Bytes(), stderr.Bytes())
	}
	return got
}

// checkClientResult compares a script's result with want, value by value.
// When npmPackage is set, the reported version must be the one
// package.json pins.
func checkClientResult(t *testing.T, p *clientProxy, got, want map[string]any, npmPackage string) {
	t.Helper()
	// Normalize want to what encoding/json produces (float64, []any, ...).
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var norm map[string]any
	if err := json.Unmarshal(b, &norm); err != nil {
		t.Fatal(err)
	}
	if npmPackage != "" {
		pinned := readClientPackage(t, filepath.Join(clientsDir, "package.json"), "dependencies")
		if got["version"] != pinned[npmPackage] {
			t.Errorf("script ran %s %v, package.json pins %q", npmPackage, got["version"], pinned[npmPackage])
		}
	}
	if v, ok := got["version"].(string); !ok || v == "" {
		t.Errorf("script reported no client version: %v", got["version"])
	}
	keys := map[string]bool{}
	for k := range norm {
		keys[k] = true
	}
	for k := range got {
		if k != "version" {
			keys[k] = true
		}
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	failed := false
	for _, k := range sorted {
		g, gok := got[k]
		w, wok := norm[k]
		switch {
		case !gok:
			t.Errorf("%s: missing from the script's output, want %s", k, clientJSON(w))
		case !wok:
			t.Errorf("%s: unexpected in the script's output: %s", k, clientJSON(g))
		case !reflect.DeepEqual(g, w):
			t.Errorf("%s: got %s, want %s", k, clientJSON(g), clientJSON(w))
		default:
			continue
		}
		failed = true
	}
	if failed {
		t.Log(p.dump())
	}
}

func clientJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// clientWire is bytes a client must have sent and bytes the server must have
// answered, both on one connection. Either may be empty.
type clientWire struct {
	sent, recv string
}

func checkClientWire(t *testing.T, p *clientProxy, checks []clientWire) {
	t.Helper()
	sessions := p.sessions()
	failed := false
	for _, c := range checks {
		found := false
		for _, s := range sessions {
			if bytes.Contains(s.sent.bytes(), []byte(c.sent)) && bytes.Contains(s.recv.bytes(), []byte(c.recv)) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no connection sent %q and received %q", c.sent, c.recv)
			failed = true
		}
	}
	if failed {
		t.Log(p.dump())
	}
}

// startClientRedisServer starts a redis-server listening on a Unix socket
// only, so no TCP port has to be picked, and returns the socket's path.
func startClientRedisServer(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: apt-get install redis-server (make deps)")
	}
	// Unix socket paths are limited to about 100 bytes: t.TempDir's may be
	// longer.
	dir, err := os.MkdirTemp("", "herald-redis")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--loglevel", "notice")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// redis-server logs "Ready to accept connections" (TCP) or "The server
	// is now ready to accept connections at <socket>" once it does.
	ready := make(chan bool, 1)
	var logged bytes.Buffer
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled {
				logged.Write(sc.Bytes())
				logged.WriteByte('\n')
				if strings.Contains(strings.ToLower(sc.Text()), "ready to accept connections") {
					ready <- true
					signalled = true
				}
			}
		}
		if !signalled {
			ready <- false
		}
		cmd.Wait()
		close(exited)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("redis-server exited before it was ready:\n%s", logged.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("redis-server not ready after 30s")
	}
	return sock
}

// clientProxy forwards loopback TCP connections to a server and records
// the bytes each connection carries both ways.
type clientProxy struct {
	t       *testing.T
	ln      net.Listener
	network string
	target  string

	mu    sync.Mutex
	conns []net.Conn
	all   []*clientSession
	wg    sync.WaitGroup
}

// clientSession is one proxied connection: what the client sent and what
// the server answered.
type clientSession struct {
	id         int
	sent, recv clientRecording
}

// clientRecording keeps the first clientMaxTranscript bytes written to it.
type clientRecording struct {
	mu sync.Mutex
	b  []byte
}

const clientMaxTranscript = 4 << 20

func (c *clientRecording) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if room := clientMaxTranscript - len(c.b); room < len(p) {
		p = p[:room]
	}
	c.b = append(c.b, p...)
	return n, nil
}

func (c *clientRecording) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.b)
}

func startClientProxy(t *testing.T, network, target string) *clientProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &clientProxy{t: t, ln: ln, network: network, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.closeAndWait)
	return p
}

func (p *clientProxy) addr() string { return p.ln.Addr().String() }

func (p *clientProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial(p.network, p.target)
		if err != nil {
			p.t.Errorf("proxy: dial %s %s: %v", p.network, p.target, err)
			client.Close()
			continue
		}
		p.mu.Lock()
		s := &clientSession{id: len(p.all) + 1}
		p.all = append(p.all, s)
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(server, client, &s.sent)
		go p.pipe(client, server, &s.recv)
	}
}

// pipe copies src to dst, recording it, then passes the end of the stream
// on as a half-close, as the client or server would see it directly.
func (p *clientProxy) pipe(dst, src net.Conn, rec *clientRecording) {
	defer p.wg.Done()
	io.Copy(io.MultiWriter(dst, rec), src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
}

// closeAndWait stops the proxy and closes every connection through it.
// The client has exited when it is called, so every byte has been
// recorded.
func (p *clientProxy) closeAndWait() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *clientProxy) sessions() []*clientSession {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*clientSession(nil), p.all...)
}

// dump describes every connection's transcript, shortened.
func (p *clientProxy) dump() string {
	const head, tail = 1500, 500
	short := func(b []byte) string {
		if len(b) <= head+tail {
			return fmt.Sprintf("%q", b)
		}
		return fmt.Sprintf("%q ...[%d bytes]... %q", b[:head], len(b)-head-tail, b[len(b)-tail:])
	}
	var w strings.Builder
	for _, s := range p.sessions() {
		fmt.Fprintf(&w, "connection %d, client sent:\n  %s\nserver answered:\n  %s\n", s.id, short(s.sent.bytes()), short(s.recv.bytes()))
	}
	return w.String()
}

// save writes the transcripts to $HERALD_TEST_TRANSCRIPTS, if set, one
// file per connection and direction, named after the test.
func (p *clientProxy) save(t *testing.T) {
	dir := os.Getenv("HERALD_TEST_TRANSCRIPTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := strings.ReplaceAll(t.Name(), "/", "_")
	for _, s := range p.sessions() {
		for dir2, b := range map[string][]byte{"sent": s.sent.bytes(), "recv": s.recv.bytes()} {
			name := filepath.Join(dir, fmt.Sprintf("%s.%d.%s", base, s.id, dir2))
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
