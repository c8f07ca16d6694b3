package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// idleSettle is how long the suite's idle connections stay open before
// their memory is measured: past Herald's first ping of each of them (every
// 25 s by default). A server runs with its pings, not before them: with
// coder/websocket's Ping, a round left about 1 KiB more per connection than
// the first seconds showed.
const idleSettle = 30 * time.Second

// suiteConfig is the standard comparison: Herald on one node, Herald on
// three, and redis-server, on the same workloads, one after the other on
// this machine, each against freshly started servers.
type suiteConfig struct {
	herald, redis   string // binaries
	out, gobench    string // docs file to write; go test -bench output to include
	dataDir         string // parent of the servers' temporary directories
	keep            bool   // keep data and logs
	duration        time.Duration
	publishConns    int
	publishPipeline int
	publishRuns     int
	size            int
	subscribers     int // RESP fan-out
	wsSubscribers   int
	idleConns       int
	perProc         int
	window          int
	only            map[string]bool
	waitQuiet       time.Duration
	json            bool
	log             io.Writer
	command         string
}

// suiteRun is one workload against one target.
type suiteRun struct {
	id     string // publish, fanout, ws-sat, ws-half, idle
	target string // herald-1, herald-3, redis, redis-aof (durable: appendfsync always)
	cmd    string // the workload command
	args   []string
	res    *Result
	err    error
}

// reproduce returns the command that runs this workload again, against a
// server at the given addresses.
func (r *suiteRun) reproduce() string {
	s := "herald-bench " + r.cmd + " " + strings.Join(r.args, " ")
	switch {
	case r.cmd == "floor":
		return s // it starts its own writer
	case r.target == "redis", r.target == "redis-aof":
		s += " --addr <redis>"
	case r.target == "herald-3":
		s += " --addr <n1>,<n2>,<n3>"
	default:
		s += " --addr <resp>"
	}
	if r.id == "ws-sat" || r.id == "ws-half" || r.id == "idle" {
		s += " --ws-url ws://<http>/ws"
	}
	return s
}

func runSuiteCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg suiteConfig
	var only string
	fs.StringVar(&cfg.herald, "herald", "bin/herald", "the herald `binary` to run (make build)")
	fs.StringVar(&cfg.redis, "redis-server", "", "the redis-server `binary` to compare with (make deps installs Debian's)")
	fs.StringVar(&cfg.out, "out", "", "write the report into this markdown `file` (docs/benchmarks.md), between its herald-bench markers")
	fs.StringVar(&cfg.gobench, "gobench", "", "include this `file` of go test -bench output in the report")
	fs.StringVar(&cfg.dataDir, "data-dir", os.TempDir(), "`directory` for the servers' data and logs (on the disk to measure: Herald fsyncs there)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the servers' data and logs")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "publishing time of each workload")
	fs.IntVar(&cfg.publishConns, "publish-conns", 64, "publish workload: connections")
	fs.IntVar(&cfg.publishPipeline, "publish-pipeline", 16, "publish workload: pipeline depth")
	fs.IntVar(&cfg.publishRuns, "publish-runs", 3, "publish workload: runs against each target, interleaved; the report shows the median")
	fs.IntVar(&cfg.size, "size", 64, "payload bytes")
	fs.IntVar(&cfg.subscribers, "subscribers", 10000, "RESP fan-out: subscribers")
	fs.IntVar(&cfg.wsSubscribers, "ws-subscribers", 10000, "WebSocket fan-out: subscribers")
	fs.IntVar(&cfg.idleConns, "idle-conns", 15000, "idle workload: WebSocket connections")
	fs.IntVar(&cfg.perProc, "per-process", 5000, "idle workload: connections per worker process")
	fs.IntVar(&cfg.window, "window", defaultWindow, "fan-out at max rate: messages in flight per channel")
	fs.StringVar(&only, "only", "", "run only these workloads: comma-separated publish, fanout, ws (with the machine's floor), idle (default all)")
	fs.DurationVar(&cfg.waitQuiet, "wait-quiet", 2*time.Minute, "before each run, wait up to this long for other processes to leave the CPU alone (0: don't)")
	fs.BoolVar(&cfg.json, "json", false, "print every result as JSON instead of tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.log = stderr
	cfg.command = "herald-bench suite " + strings.Join(args, " ")
	if only != "" {
		cfg.only = map[string]bool{}
		for _, o := range strings.Split(only, ",") {
			switch o = strings.TrimSpace(o); o {
			case "publish", "fanout", "ws", "idle":
				cfg.only[o] = true
			default:
				return fmt.Errorf("--only %q: want publish, fanout, ws or idle", o)
			}
		}
	}
	if cfg.publishRuns < 1 {
		return fmt.Errorf("--publish-runs %d: want at least 1", cfg.publishRuns)
	}
	if _, err := os.Stat(cfg.herald); err != nil {
		return fmt.Errorf("herald binary %q: %w (build it: make build)", cfg.herald, err)
	}
	if cfg.redis == "" {
		p, err := exec.LookPath("redis-server")
		if err != nil {
			return errors.New("redis-server not found: install it (make deps), or give --redis-server")
		}
		cfg.redis = p
	}
	if _, err := os.Stat(cfg.redis); err != nil {
		return fmt.Errorf("redis-server %q: %w (install it: make deps)", cfg.redis, err)
	}
	started := time.Now()
	runs, err := runSuite(ctx, &cfg)
	took := time.Since(started).Round(time.Second)
	if err != nil {
		return err
	}
	rep := newSuiteReport(&cfg, runs, started, took)
	if cfg.json {
		writeJSON(stdout, rep.jsonView())
	} else {
		rep.printText(stdout)
	}
	if cfg.out != "" {
		if err := rep.writeDocs(cfg.out); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s\n", cfg.out)
	}
	for _, r := range runs {
		if r.err != nil || r.res == nil || r.res.Failed {
			return errFailed
		}
	}
	return nil
}

func (cfg *suiteConfig) want(w string) bool { return cfg.only == nil || cfg.only[w] }

// runSuite runs every workload of the suite and returns the runs, failed
// ones included. It returns an error only when it could not go on (the
// context ended).
func runSuite(ctx context.Context, cfg *suiteConfig) ([]*suiteRun, error) {
	base, err := os.MkdirTemp(cfg.dataDir, "herald-bench-")
	if err != nil {
		return nil, err
	}
	if cfg.keep {
		fmt.Fprintf(cfg.log, "servers' data and logs in %s\n", base)
	} else {
		defer os.RemoveAll(base)
	}
	dur := cfg.duration.String()
	var runs []*suiteRun
	do := func(id, label, cmd string, args ...string) *suiteRun {
		r := &suiteRun{id: id, target: label, cmd: cmd, args: args}
		runs = append(runs, r)
		if ctx.Err() != nil {
			r.err = ctx.Err()
			return r
		}
		r.res, r.err = runOne(ctx, cfg, base, r)
		if r.err != nil {
			fmt.Fprintf(cfg.log, "== %s on %s: %v\n", id, label, r.err)
		}
		return r
	}
	if cfg.want("publish") {
		args := []string{"--conns", fmt.Sprint(cfg.publishConns), "--pipeline", fmt.Sprint(cfg.publishPipeline),
			"--size", fmt.Sprint(cfg.size), "--duration", dur}
		// The shortest workload, and the noisiest: run it several times,
		// interleaved, so that a slow moment of the machine does not
		// land on one target only.
		for range cfg.publishRuns {
			for _, t := range []string{"redis", "redis-aof", "herald-1", "herald-3"} {
				if t == "redis-aof" {
					// What redis-server does when what it acknowledges
					// must be on disk: stream entries, synced.
					do("publish", t, "publish", append(args[:len(args):len(args)], "--xadd")...)
					continue
				}
				do("publish", t, "publish", args...)
			}
		}
	}
	if cfg.want("fanout") {
		args := []string{"--subscribers", fmt.Sprint(cfg.subscribers), "--size", fmt.Sprint(cfg.size),
			"--window", fmt.Sprint(cfg.window), "--duration", dur}
		do("fanout", "redis", "fanout", args...)
		do("fanout", "herald-1", "fanout", args...)
		// The cluster run: a publisher on every node, subscribers spread
		// over all three.
		do("fanout", "herald-3", "cluster", append(args, "--publishers", "3")...)
	}
	if cfg.want("ws") {
		args := []string{"--transport", "ws", "--subscribers", fmt.Sprint(cfg.wsSubscribers), "--size", fmt.Sprint(cfg.size), "--duration", dur}
		sat := do("ws-sat", "herald-1", "fanout", append(args, "--window", fmt.Sprint(cfg.window))...)
		if sat.res != nil && sat.res.DeliveryRate > 0 {
			// Half the saturation rate, as publishes per second.
			rate := sat.res.DeliveryRate / 2 / float64(cfg.wsSubscribers)
			do("ws-half", "herald-1", "fanout", append(args, "--rate", fmt.Sprintf("%.1f", rate), "--window", "0")...)
		}
		// What any server could do here: frames to as many connections,
		// with nothing above the sockets.
		do("floor", "machine", "floor", "--conns", fmt.Sprint(cfg.wsSubscribers), "--duration", dur)
	}
	if cfg.want("idle") {
		do("idle", "herald-1", "idle", "--conns", fmt.Sprint(cfg.idleConns), "--per-process", fmt.Sprint(cfg.perProc), "--settle", idleSettle.String())
	}
	return runs, ctx.Err()
}

// runOne starts the run's target, runs the workload against it through the
// same flags a user would give, and stops the target.
func runOne(ctx context.Context, cfg *suiteConfig, base string, r *suiteRun) (*Result, error) {
	if cfg.waitQuiet > 0 {
		if other, who := waitQuiet(cfg.waitQuiet, noisyPercent, []int{ownPID()}, func(f string, a ...any) { fmt.Fprintf(cfg.log, f+"\n", a...) }); other >= noisyPercent {
			fmt.Fprintf(cfg.log, "machine still busy (other processes %.0f%% of a core: %s): running anyway; the result will say so\n", other, who)
		}
	}
	if r.cmd == "floor" {
		return runServerless(ctx, cfg, r)
	}
	dir, err := os.MkdirTemp(base, r.id+"-"+r.target+"-")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.log, "== %s on %s: starting servers\n", r.id, r.target)
	var t *target
	switch r.target {
	case "redis", "redis-aof":
		t, err = startRedis(ctx, cfg.redis, dir, r.target == "redis-aof")
	case "herald-1":
		t, err = startHerald(ctx, cfg.herald, dir, 1, nil)
	case "herald-3":
		t, err = startHerald(ctx, cfg.herald, dir, 3, nil)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		t.stop()
		if !cfg.keep {
			os.RemoveAll(dir)
		}
	}()
	args := append([]string{}, r.args...)
	args = append(args, "--addr", strings.Join(t.addrs(), ","), "--name", t.label, "--progress", "2s")
	if ws := t.wsURLs(); len(ws) > 0 {
		args = append(args, "--ws-url", strings.Join(ws, ","))
	}
	for _, p := range t.pids() {
		args = append(args, "--pid", fmt.Sprint(p))
	}
	w, err := parseWorkload(r.cmd, args, cfg.log)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.log, "== %s on %s: %s\n", r.id, r.target, r.reproduce())
	res, err := w.run(ctx)
	if err != nil {
		return nil, err
	}
	res.Command = r.reproduce()
	for _, n := range t.nodes {
		select {
		case <-n.exited:
			res.Failures = append(res.Failures, n.name+" exited during the run; log: "+n.logPath)
			res.Failed = true
		default:
		}
	}
	printResult(cfg.log, res)
	return res, nil
}

// runServerless runs a workload that starts no server: the floor.
func runServerless(ctx context.Context, cfg *suiteConfig, r *suiteRun) (*Result, error) {
	w, err := parseWorkload(r.cmd, append(append([]string{}, r.args...), "--progress", "2s"), cfg.log)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.log, "== %s: %s\n", r.id, r.reproduce())
	res, err := w.run(ctx)
	if err != nil {
		return nil, err
	}
	res.Command = r.reproduce()
	printResult(cfg.log, res)
	return res, nil
}

// gitCommit describes the working tree Herald was built from, if this is
// run from its repository.
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}

// fsType returns the filesystem type holding dir, from /proc/mounts.
func fsType(dir string) string {
	abs, _ := filepath.Abs(dir)
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "unknown"
	}
	best, typ := "", "unknown"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best, typ = mp, f[2]+" ("+f[0]+")"
		}
	}
	return typ
}
