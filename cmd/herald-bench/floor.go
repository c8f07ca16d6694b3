package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// floorConfig is the loopback floor: what it costs this machine to move
// frames from one process to many TCP connections read by another, with no
// server logic at all. A worker process (this program, re-executed) plays a
// server that only writes: it accepts conns connections and writes a frame
// of size bytes to each in turn, one write system call a frame, as fast as
// the sockets take them. This process reads them as the WebSocket
// subscribers do, a goroutine per connection.
//
// No server can give each of conns connections a frame more often than
// that: the frames per second measured here bound any fan-out to conns
// subscribers on this machine, whatever the server does above its
// sockets, and a subscriber waits for its turn at least conns ÷ that rate.
type floorConfig struct {
	conns    int
	size     int
	duration time.Duration
	frames   uint64 // stop after this many frames received (0: no limit)
	name     string
	setup    time.Duration
	progress time.Duration
	log      io.Writer
	command  string
}

// floorMsg is the floor worker's report on its stdout, one JSON object a
// line.
type floorMsg struct {
	Addr   string `json:"addr,omitempty"`
	Done   bool   `json:"done,omitempty"`
	Frames uint64 `json:"frames,omitempty"`
	Err    string `json:"err,omitempty"`
}

// floorReader is one connection's reading side, with its own counters.
type floorReader struct {
	bytes, reads atomic.Uint64
	err          atomic.Pointer[error] // why reading ended
}

func runFloor(ctx context.Context, cfg floorConfig) (*Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	res := &Result{
		Workload: "floor", Target: cfg.name, Command: cfg.command, Started: time.Now(), Subscribers: cfg.conns, FrameSize: cfg.size,
		Desc: fmt.Sprintf("%d-byte frames to %d loopback TCP connections in turn, one write each, no server logic", cfg.size, cfg.conns),
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(wctx, exe, "worker-floor", "--conns", fmt.Sprint(cfg.conns), "--size", fmt.Sprint(cfg.size),
		"--limit", (cfg.setup + cfg.duration + 10*time.Second).String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start floor worker: %w", err)
	}
	defer func() {
		stdin.Close()
		cancel() // a worker still accepting or writing is killed
		cmd.Wait()
	}()
	msgs := json.NewDecoder(stdout)
	var hello floorMsg
	if err := msgs.Decode(&hello); err != nil || hello.Addr == "" {
		return nil, fmt.Errorf("floor worker did not say where it listens: %v %s", err, hello.Err)
	}

	// Connect every reader before the worker writes anything.
	sctx, scancel := context.WithTimeout(ctx, cfg.setup)
	defer scancel()
	conns := make([]net.Conn, cfg.conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var d net.Dialer
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := d.DialContext(sctx, "tcp", hello.Addr)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := range conns {
		next <- i
	}
	close(next)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return nil, fmt.Errorf("%d of %d connections to the floor worker failed; the first: %w", n, cfg.conns, *firstErr.Load())
	}

	readers := make([]floorReader, cfg.conns)
	gaps := newShardedHistogram(64)
	for i, c := range conns {
		go readFloor(c, &readers[i], gaps.shard(i))
	}
	total := func() (bytes, reads uint64) {
		for i := range readers {
			bytes += readers[i].bytes.Load()
			reads += readers[i].reads.Load()
		}
		return
	}

	srv := startSampler([]int{cmd.Process.Pid})
	tool := startSampler([]int{ownPID()})
	mach := startMachineSampler()
	start := time.Now()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		return nil, fmt.Errorf("start the floor worker's writes: %w", err)
	}
	prog := startProgress(cfg.log, cfg.progress, func(el time.Duration) string {
		b, _ := total()
		scpu, _ := srv.interval()
		return fmt.Sprintf("[floor] %s  %s frames/s  writer %.0f%% CPU", el, fmtRate(float64(b/uint64(cfg.size))/el.Seconds()), scpu)
	})
	tick := time.NewTicker(20 * time.Millisecond)
	deadline := time.After(cfg.duration)
wait:
	for {
		select {
		case <-ctx.Done():
			tick.Stop()
			prog.end()
			return nil, ctx.Err()
		case <-deadline:
			break wait
		case <-tick.C:
			if b, _ := total(); cfg.frames > 0 && b/uint64(cfg.size) >= cfg.frames {
				break wait
			}
		}
	}
	tick.Stop()
	bytes, reads := total()
	res.Elapsed = time.Since(start)
	prog.end()
	res.Server, res.Tool = srv.finish(), tool.finish()
	res.Machine = mach.finish(append(append([]int{}, res.Server.PIDs...), res.Tool.PIDs...))
	for i := range readers {
		if readers[i].err.Load() != nil {
			res.Loss.Disconnects++
		}
	}

	// Stop the worker (it closes its ends: the readers see EOF) and hear how much it wrote.
	stdin.Close()
	var last floorMsg
	for msgs.Decode(&last) == nil && !last.Done && last.Err == "" {
	}
	if last.Err != "" {
		res.Failures = append(res.Failures, "floor worker: "+last.Err)
	}
	for i, c := range conns {
		c.Close()
		conns[i] = nil
	}

	res.Deliveries = bytes / uint64(cfg.size)
	res.Sent = last.Frames
	res.DeliveryRate = float64(res.Deliveries) / res.Elapsed.Seconds()
	if reads > 0 {
		res.DeliveriesPerRead = float64(bytes) / float64(cfg.size) / float64(reads)
	}
	if s := gaps.merged().Summary(); s.Count > 0 {
		res.FrameGap = &s
	}
	starved := 0
	for i := range readers {
		if readers[i].bytes.Load() == 0 {
			starved++
		}
	}
	if starved > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("%d of %d connections received no frame", starved, cfg.conns))
	}
	res.finish()
	return res, nil
}

// readFloor reads one connection until it closes, counting bytes and
// reads, and records the time between reads that returned data: how long
// the connection waited for its turn.
func readFloor(c net.Conn, r *floorReader, gaps *Histogram) {
	buf := make([]byte, 4096)
	var last time.Time
	for {
		n, err := c.Read(buf)
		if n > 0 {
			now := time.Now()
			if !last.IsZero() {
				gaps.Record(now.Sub(last))
			}
			last = now
			r.bytes.Add(uint64(n))
			r.reads.Add(1)
		}
		if err != nil {
			r.err.Store(&err)
			return
		}
	}
}

// workerFloor is the floor's writing process: it listens on loopback, says
// where on stdout, accepts its connections, and on "go" from stdin writes a
// frame to each in turn from one goroutine per core until stdin closes or
// its time limit passes. Then it reports how many frames it wrote.
func workerFloor(args []string) int {
	fs := flag.NewFlagSet("worker-floor", flag.ContinueOnError)
	conns := fs.Int("conns", 0, "")
	size := fs.Int("size", 0, "")
	limit := fs.Duration("limit", time.Minute, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	raiseFileLimit()
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		out.Encode(floorMsg{Err: err.Error()})
		return 1
	}
	end := time.Now().Add(*limit)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	ln.(*net.TCPListener).SetDeadline(end)
	out.Encode(floorMsg{Addr: ln.Addr().String()})
	cs := make([]net.Conn, *conns)
	for i := range cs {
		if cs[i], err = ln.Accept(); err != nil {
			return fail(fmt.Errorf("accept connection %d: %w", i, err))
		}
		cs[i].SetWriteDeadline(end)
	}
	ln.Close()
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return fail(errors.New("no go from the parent"))
	}
	var stop atomic.Bool
	go func() {
		io.Copy(io.Discard, in) // until the parent closes stdin
		stop.Store(true)
	}()
	frame := make([]byte, *size)
	var written atomic.Uint64
	var wg sync.WaitGroup
	g := runtime.GOMAXPROCS(0)
	for w := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n uint64
			defer func() { written.Add(n) }()
			for !stop.Load() && time.Now().Before(end) {
				for i := w; i < len(cs); i += g {
					if _, err := cs[i].Write(frame); err != nil {
						return
					}
					n++
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range cs {
		c.Close()
	}
	out.Encode(floorMsg{Done: true, Frames: written.Load()})
	return 0
}

// parseFloor reads the floor workload's flags. It has no target: it starts
// its own writer on loopback.
func parseFloor(fs *flag.FlagSet, args []string, stderr io.Writer) (*workload, error) {
	cfg := floorConfig{log: stderr, command: "herald-bench floor " + strings.Join(args, " ")}
	var asJSON bool
	var cpuProfile string
	fs.IntVar(&cfg.conns, "conns", 10000, "connections (the writer and this process each hold one end of each)")
	fs.IntVar(&cfg.size, "size", 256, "bytes a frame")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measure for at most this long")
	fs.Uint64Var(&cfg.frames, "messages", 100_000_000, "stop after this many frames read (0: no limit but --duration)")
	fs.StringVar(&cfg.name, "name", "machine", "the run's label in reports")
	fs.DurationVar(&cfg.setup, "setup-timeout", 2*time.Minute, "longest time to open the connections")
	fs.DurationVar(&cfg.progress, "progress", time.Second, "print a progress line to stderr this often (0: never)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON instead of a table")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write this tool's CPU profile to `file`")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		return nil, errUsage
	}
	switch {
	case cfg.conns < 1 || cfg.size < 1:
		return nil, errors.New("--conns and --size must be at least 1")
	case cfg.duration <= 0 || cfg.duration > time.Hour:
		return nil, fmt.Errorf("--duration %s: want more than 0 and at most 1h", cfg.duration)
	}
	run := func(ctx context.Context) (*Result, error) { return runFloor(ctx, cfg) }
	return &workload{run: run, json: asJSON, cpuProfile: cpuProfile}, nil
}
