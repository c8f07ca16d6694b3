// Command herald-bench is Herald's load generator. It speaks RESP (to Herald
// or any Redis server, so the same workload runs against redis-server) and
// Herald's WebSocket protocol, checks that every subscriber receives every
// acknowledged message exactly once and in order, and reports rates,
// publish-to-receipt latency, and the server's and its own CPU and memory.
//
//	herald-bench publish  [flags]   N connections publishing, pipelined
//	herald-bench fanout   [flags]   channels × subscribers, RESP or WebSocket
//	herald-bench cluster  [flags]   fan-out spread over several nodes
//	herald-bench idle     [flags]   C idle WebSocket connections: server memory each
//	herald-bench floor    [flags]   the machine's floor: frames/s to C connections, no server
//	herald-bench suite    [flags]   the standard comparison; writes docs/benchmarks.md
//
// Every workload is bounded by --duration and --messages, whichever comes
// first, and targets loopback addresses only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usageText = `herald-bench: load generator for Herald and other RESP servers.

Usage:
  herald-bench publish [flags]   publish-only: N connections, pipeline depth P, payload size S
  herald-bench fanout  [flags]   fan-out: M channels × K subscribers (RESP or WebSocket)
  herald-bench cluster [flags]   fan-out over several nodes: publish to any, subscribe on all
  herald-bench idle    [flags]   C idle WebSocket connections: server RSS per connection
  herald-bench floor   [flags]   frames/s this machine moves to C loopback connections with no server logic
  herald-bench suite   [flags]   Herald (1 and 3 nodes) beside redis-server; writes docs/benchmarks.md

Run "herald-bench <command> -h" for a command's flags. Every load loop is
bounded by --duration and --messages (whichever comes first) and targets
loopback only. A run that loses, duplicates or reorders a message is marked
FAILED: it is not a fast run.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	// The tool allocates little that lives long; a higher GC target trades
	// memory for CPU, which it shares with the server.
	debug.SetGCPercent(400)
	raiseFileLimit()
	cmd, args := args[0], args[1:]
	var err error
	switch cmd {
	case "publish", "fanout", "cluster", "idle", "floor":
		err = runWorkload(ctx, cmd, args, stdout, stderr)
	case "suite":
		err = runSuiteCommand(ctx, args, stdout, stderr)
	case "worker-idle": // hidden: a process of the idle workload
		return workerIdle(args)
	case "worker-floor": // hidden: the writing process of the floor workload
		return workerFloor(args)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return 0
	default:
		fmt.Fprintf(stderr, "herald-bench: unknown command %q\n\n%s", cmd, usageText)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errFailed):
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "herald-bench:", err)
		return 1
	}
	return 0
}

var (
	errUsage  = errors.New("usage")
	errFailed = errors.New("run failed")
)

func ownPID() int { return os.Getpid() }

// listFlag is a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// workloadFlags registers the flags every workload shares.
type workloadFlags struct {
	addrs, wsURLs, pids listFlag
	name                string
	duration            time.Duration
	messages            uint64
	setup               time.Duration
	progress            time.Duration
	json                bool
	cpuProfile          string
}

func (w *workloadFlags) register(fs *flag.FlagSet, duration time.Duration) {
	fs.Var(&w.addrs, "addr", "RESP server `host:port`, repeatable or comma-separated (default 127.0.0.1:6379)")
	fs.Var(&w.wsURLs, "ws-url", "Herald WebSocket `URL`, repeatable or comma-separated (default ws://127.0.0.1:8080/ws)")
	fs.Var(&w.pids, "pid", "server process `ids` to measure (CPU, RSS); default: the processes listening on the targets' ports")
	fs.StringVar(&w.name, "name", "server", "the target's label in reports")
	fs.DurationVar(&w.duration, "duration", duration, "publish for at most this long")
	fs.Uint64Var(&w.messages, "messages", 10_000_000, "publish at most this many messages in all (0: no limit but --duration)")
	fs.DurationVar(&w.setup, "setup-timeout", 2*time.Minute, "longest time to open and subscribe the connections")
	fs.DurationVar(&w.progress, "progress", time.Second, "print a progress line to stderr this often (0: never)")
	fs.BoolVar(&w.json, "json", false, "print the result as JSON instead of a table")
	fs.StringVar(&w.cpuProfile, "cpuprofile", "", "write this tool's CPU profile to `file` (to check the tool is not the bottleneck)")
}

// common validates the shared flags and returns the workloads' common
// configuration.
func (w *workloadFlags) common(cmd string, args []string, stderr io.Writer) (common, error) {
	if len(w.addrs) == 0 {
		w.addrs = listFlag{"127.0.0.1:6379"}
	}
	if len(w.wsURLs) == 0 {
		w.wsURLs = listFlag{"ws://127.0.0.1:8080/ws"}
	}
	for _, a := range append(append([]string{}, w.addrs...), w.wsURLs...) {
		if err := checkLoopback(a); err != nil {
			return common{}, err
		}
	}
	if w.duration <= 0 || w.duration > time.Hour {
		return common{}, fmt.Errorf("--duration %s: want more than 0 and at most 1h", w.duration)
	}
	c := common{
		addrs: w.addrs, wsURLs: w.wsURLs, name: w.name, duration: w.duration, messages: w.messages,
		setup: w.setup, progress: w.progress, log: stderr,
		command: "herald-bench " + cmd + " " + strings.Join(args, " "),
	}
	for _, p := range w.pids {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return common{}, fmt.Errorf("--pid %q: want process ids", p)
		}
		c.pids = append(c.pids, pid)
	}
	return c, nil
}

// checkLoopback refuses targets that are not on this machine's loopback:
// this tool generates load, and only against the local host.
func checkLoopback(target string) error {
	hostport := target
	if i := strings.Index(target, "://"); i >= 0 {
		hostport = target[i+3:]
		if j := strings.IndexByte(hostport, '/'); j >= 0 {
			hostport = hostport[:j]
		}
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("target %q: %w", target, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("target %q is not a loopback address: herald-bench only loads this machine", target)
}

// workload is a parsed workload command, ready to run.
type workload struct {
	run        func(context.Context) (*Result, error)
	json       bool
	cpuProfile string
}

func runWorkload(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	w, err := parseWorkload(cmd, args, stderr)
	if err != nil {
		return err
	}
	if w.cpuProfile != "" {
		f, err := os.Create(w.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := w.run(ctx)
	if err != nil {
		return err
	}
	if w.json {
		writeJSON(stdout, res)
	} else {
		printResult(stdout, res)
	}
	if res.Failed {
		return errFailed
	}
	return nil
}

// parseWorkload reads a workload's flags. The suite runs its workloads
// through it too, so the commands it prints are the ones it ran.
func parseWorkload(cmd string, args []string, stderr io.Writer) (*workload, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var wf workloadFlags
	var (
		conns, pipeline, size, channels, subscribers, publishers, window, dialers, perProc int
		rate                                                                               float64
		herald, xadd, heraldSub, verify, subscribe                                         bool
		transport                                                                          string
		drain, settle                                                                      time.Duration
	)
	switch cmd {
	case "publish":
		wf.register(fs, 10*time.Second)
		fs.IntVar(&conns, "conns", 64, "publishing connections")
		fs.IntVar(&pipeline, "pipeline", 16, "publishes in flight per connection")
		fs.IntVar(&size, "size", 64, fmt.Sprintf("payload bytes (at least %d)", MinPayloadSize))
		fs.IntVar(&channels, "channels", 0, "channels published to (0: one per connection)")
		fs.BoolVar(&herald, "herald-publish", false, "publish with HERALD.PUBLISH (replies with the sequence number)")
		fs.BoolVar(&xadd, "xadd", false, fmt.Sprintf("publish with XADD <channel> MAXLEN ~ %d * m <payload>: a Redis stream entry, what redis-server keeps durably (appendfsync always)", xaddMaxLen))
		fs.BoolVar(&verify, "verify", true, "after the run, check that the server committed every acknowledged publish: with HERALD.CHANNEL (Herald; skipped elsewhere), or XINFO STREAM (--xadd)")
	case "fanout", "cluster":
		wf.register(fs, 10*time.Second)
		fs.IntVar(&channels, "channels", 1, "channels")
		fs.IntVar(&subscribers, "subscribers", 1000, "subscribers per channel (one connection each)")
		fs.StringVar(&transport, "transport", "resp", "subscribers' transport: resp or ws")
		fs.BoolVar(&heraldSub, "herald-subscribe", false, "RESP subscribers use HERALD.SUBSCRIBE and check sequence numbers")
		fs.BoolVar(&herald, "herald-publish", false, "publish with HERALD.PUBLISH")
		fs.IntVar(&publishers, "publishers", 0, "publishing connections (0: one per node)")
		fs.IntVar(&pipeline, "pipeline", 256, "publishes in flight per publisher (let the window, not this, bound a max-rate run)")
		fs.IntVar(&size, "size", 64, fmt.Sprintf("payload bytes (at least %d)", MinPayloadSize))
		fs.Float64Var(&rate, "rate", 0, "publishes per second in all (0: as fast as the slowest subscriber receives; see --window)")
		fs.IntVar(&window, "window", -1, fmt.Sprintf("most messages per channel published and not yet received by all its subscribers (0: unbounded; default %d at max rate, unbounded at a fixed rate)", defaultWindow))
		fs.DurationVar(&drain, "drain", 20*time.Second, "after publishing, wait this long at most for every subscriber to receive everything")
		fs.IntVar(&dialers, "dialers", 64, "connections opened at once during setup")
	case "idle":
		wf.register(fs, 10*time.Second)
		fs.IntVar(&conns, "conns", 15000, "WebSocket connections")
		fs.IntVar(&perProc, "per-process", 5000, "connections per worker process (a process may open at most its file limit)")
		fs.DurationVar(&settle, "settle", 5*time.Second, "keep the connections open this long before measuring")
		fs.BoolVar(&subscribe, "subscribe", true, "subscribe each connection to a channel of its own")
		fs.IntVar(&dialers, "dialers", 32, "connections each worker opens at once")
	case "floor":
		return parseFloor(fs, args, stderr)
	default:
		return nil, fmt.Errorf("unknown workload %q", cmd)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		return nil, errUsage
	}
	c, err := wf.common(cmd, args, stderr)
	if err != nil {
		return nil, err
	}
	w := &workload{json: wf.json, cpuProfile: wf.cpuProfile}
	switch cmd {
	case "publish":
		if conns < 1 || pipeline < 1 {
			return nil, errors.New("--conns and --pipeline must be at least 1")
		}
		if herald && xadd {
			return nil, errors.New("--herald-publish and --xadd: choose one")
		}
		cfg := publishConfig{common: c, conns: conns, pipeline: pipeline, size: size, channels: channels, verb: verbFor(herald, xadd), verify: verify}
		w.run = func(ctx context.Context) (*Result, error) { return runPublish(ctx, cfg) }
	case "fanout", "cluster":
		if cmd == "cluster" && max(len(c.addrs), len(c.wsURLs)) < 2 {
			return nil, errors.New("cluster needs the nodes' addresses: --addr a,b,c (and --ws-url for WebSocket)")
		}
		if transport != "resp" && transport != "ws" {
			return nil, fmt.Errorf("--transport %q: want resp or ws", transport)
		}
		if channels < 1 || subscribers < 1 || pipeline < 1 {
			return nil, errors.New("--channels, --subscribers and --pipeline must be at least 1")
		}
		if publishers <= 0 {
			publishers = len(c.addrs)
		}
		if window < 0 {
			window = 0
			if rate == 0 {
				window = defaultWindow
			}
		}
		cfg := fanoutConfig{common: c, transport: transport, heraldSub: heraldSub, verb: verbFor(herald, false),
			channels: channels, subscribers: subscribers, publishers: publishers, pipeline: pipeline, size: size,
			rate: rate, window: window, drain: drain, dialers: dialers}
		w.run = func(ctx context.Context) (*Result, error) { return runFanout(ctx, cfg) }
	case "idle":
		if conns < 1 || perProc < 1 {
			return nil, errors.New("--conns and --per-process must be at least 1")
		}
		cfg := idleConfig{common: c, conns: conns, perProc: perProc, settle: settle, subscribe: subscribe, dialers: dialers}
		w.run = func(ctx context.Context) (*Result, error) { return runIdle(ctx, cfg) }
	}
	return w, nil
}

// defaultWindow is the fan-out's default bound on messages in flight per
// channel at max rate; see window.
const defaultWindow = 32
