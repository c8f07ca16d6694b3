package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idleConfig is the idle-connections workload: open conns WebSocket
// connections, each subscribed to a channel of its own (as a browser tab
// waiting for its user's events), and measure the server's memory per
// connection. The connections come from worker processes (this program,
// re-executed), perProc each: a process may have at most 20,000 open files
// here, and the server needs its own.
type idleConfig struct {
	common
	conns     int
	perProc   int
	settle    time.Duration // measure after the connections have been open this long
	subscribe bool
	dialers   int
}

// workerMsg is a worker's report on its stdout, one JSON object a line.
type workerMsg struct {
	Connected   int    `json:"connected"`
	Failed      int    `json:"failed"`
	Ready       bool   `json:"ready,omitempty"`
	Done        bool   `json:"done,omitempty"`
	Disconnects int    `json:"disconnects,omitempty"`
	Err         string `json:"err,omitempty"`
}

// worker is a running worker process, seen from the parent.
type worker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	msgs  chan workerMsg
	last  atomic.Pointer[workerMsg]
}

func runIdle(ctx context.Context, cfg idleConfig) (*Result, error) {
	if len(cfg.wsURLs) == 0 {
		return nil, errors.New("idle needs --ws-url")
	}
	pids := cfg.serverPIDs()
	if len(pids) == 0 {
		return nil, errors.New("idle measures the server's memory: give its --pid (it was not found listening on the target's port)")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	res := &Result{
		Workload: "idle", Target: cfg.name, Command: cfg.command, Started: time.Now(),
		Desc: fmt.Sprintf("%d WebSocket connections, each subscribed to its own channel, over processes of %d", cfg.conns, cfg.perProc),
	}
	if !cfg.subscribe {
		res.Desc = fmt.Sprintf("%d WebSocket connections, no subscriptions, over processes of %d", cfg.conns, cfg.perProc)
	}
	run := newRunID()
	rssBefore := sumRSS(pids)
	srv := startSampler(pids)

	var workers []*worker
	defer func() {
		for _, w := range workers {
			w.stdin.Close()
			w.cmd.Process.Kill()
			w.cmd.Wait()
		}
	}()
	for off := 0; off < cfg.conns; off += cfg.perProc {
		n := min(cfg.perProc, cfg.conns-off)
		args := []string{"worker-idle",
			"--ws-url", strings.Join(cfg.wsURLs, ","), "--count", fmt.Sprint(n), "--offset", fmt.Sprint(off),
			"--prefix", "hb:" + run + ":idle:", fmt.Sprintf("--subscribe=%v", cfg.subscribe),
			"--dialers", fmt.Sprint(cfg.dialers), "--setup", cfg.setup.String()}
		w := &worker{cmd: exec.CommandContext(ctx, exe, args...), msgs: make(chan workerMsg, 1024)}
		w.cmd.Stderr = os.Stderr
		if w.stdin, err = w.cmd.StdinPipe(); err != nil {
			return nil, err
		}
		stdout, err := w.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := w.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start worker: %w", err)
		}
		workers = append(workers, w)
		go func() {
			defer close(w.msgs)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var m workerMsg
				if json.Unmarshal(sc.Bytes(), &m) == nil {
					w.last.Store(&m)
					w.msgs <- m
				}
			}
		}()
	}
	var toolPIDs []int
	for _, w := range workers {
		toolPIDs = append(toolPIDs, w.cmd.Process.Pid)
	}
	tool := startSampler(append([]int{ownPID()}, toolPIDs...))
	connected := func() (c, f int) {
		for _, w := range workers {
			if m := w.last.Load(); m != nil {
				c += m.Connected
				f += m.Failed
			}
		}
		return
	}
	prog := startProgress(cfg.log, cfg.progress, func(el time.Duration) string {
		c, f := connected()
		scpu, srss := srv.interval()
		return fmt.Sprintf("[idle %s] %s  %d/%d connected (%d failed)  server %.0f%% CPU %s", cfg.name, el, c, cfg.conns, f, scpu, fmtKB(srss))
	})
	defer prog.end()
	for i, w := range workers {
		for m := range w.msgs {
			if m.Err != "" {
				return nil, fmt.Errorf("worker %d: %s", i, m.Err)
			}
			if m.Ready {
				break
			}
		}
		if m := w.last.Load(); m == nil || !m.Ready {
			return nil, fmt.Errorf("worker %d ended before its connections were open", i)
		}
	}
	prog.end()
	c, f := connected()
	cfg.logf("[idle %s] %d connections open (%d failed); measuring for %s", cfg.name, c, f, cfg.settle)
	// CPU is measured while the connections sit idle.
	srv.finish()
	tool.finish()
	srv, tool = startSampler(pids), startSampler(tool.pids)
	start := time.Now()
	mach := startMachineSampler()
	sleepCtx(ctx, cfg.settle)
	rssAfter := sumRSS(pids)
	res.Elapsed = time.Since(start)
	res.Server, res.Tool = srv.finish(), tool.finish()
	res.Machine = mach.finish(append(append([]int{}, res.Server.PIDs...), res.Tool.PIDs...))

	for _, w := range workers {
		w.stdin.Close()
	}
	for i, w := range workers {
		for m := range w.msgs {
			if m.Done {
				res.Loss.Disconnects += uint64(m.Disconnects)
			}
		}
		if m := w.last.Load(); m == nil || !m.Done {
			res.Failures = append(res.Failures, fmt.Sprintf("worker %d ended without its report", i))
		}
		w.cmd.Wait()
	}
	workers = nil
	res.Idle = &IdleStats{Connections: c, Failed: f, Processes: len(toolPIDs), RSSBeforeKB: rssBefore, RSSAfterKB: rssAfter}
	if c > 0 {
		res.Idle.PerConnKB = float64(rssAfter-rssBefore) / float64(c)
	}
	if f > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("%d connections failed to open", f))
	}
	res.finish()
	return res, nil
}

// workerIdle is the worker process: it opens its connections, reports on
// stdout, holds them until its stdin closes, then reports the connections
// that ended early.
func workerIdle(args []string) int {
	fs := flag.NewFlagSet("worker-idle", flag.ContinueOnError)
	urls := fs.String("ws-url", "", "")
	count := fs.Int("count", 0, "")
	offset := fs.Int("offset", 0, "")
	prefix := fs.String("prefix", "", "")
	subscribe := fs.Bool("subscribe", true, "")
	dialers := fs.Int("dialers", 64, "")
	setup := fs.Duration("setup", time.Minute, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	raiseFileLimit()
	out := json.NewEncoder(os.Stdout)
	var outMu sync.Mutex
	report := func(m workerMsg) {
		outMu.Lock()
		defer outMu.Unlock()
		out.Encode(m)
	}
	list := strings.Split(*urls, ",")
	ctx, cancel := context.WithTimeout(context.Background(), *setup)
	defer cancel()
	var closing atomic.Bool
	hist := &Histogram{}
	subs := make([]*subscriber, *count)
	var connected, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	next := make(chan int)
	var wg sync.WaitGroup
	client := newHTTPClient()
	for range max(1, *dialers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				s := newSubscriber(*offset+i, 0, 0, hist, &closing)
				channel := ""
				if *subscribe {
					channel = fmt.Sprintf("%s%d", *prefix, *offset+i)
				}
				ws, err := dialWSSubscriber(ctx, s, list[(*offset+i)%len(list)], channel, client)
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				subs[i] = s
				go ws.readLoop()
				if n := connected.Add(1); n%1000 == 0 {
					report(workerMsg{Connected: int(n), Failed: int(failed.Load())})
				}
			}
		}()
	}
	for i := range *count {
		next <- i
	}
	close(next)
	wg.Wait()
	m := workerMsg{Connected: int(connected.Load()), Failed: int(failed.Load()), Ready: true}
	if f := firstErr.Load(); f != nil && m.Connected == 0 {
		m.Err = *f
	} else if f != nil {
		fmt.Fprintln(os.Stderr, "herald-bench worker: first connection error:", *f)
	}
	report(m)

	io.Copy(io.Discard, os.Stdin) // until the parent closes it
	closing.Store(true)
	disconnects := 0
	for _, s := range subs {
		if s == nil {
			continue
		}
		select {
		case <-s.done:
			disconnects++
		default:
		}
	}
	for _, s := range subs {
		if s != nil {
			s.close()
		}
	}
	report(workerMsg{Connected: int(connected.Load()), Failed: int(failed.Load()), Done: true, Disconnects: disconnects})
	return 0
}
