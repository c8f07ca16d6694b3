package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// common is what every workload takes.
type common struct {
	addrs    []string // RESP servers (host:port); several for a cluster
	wsURLs   []string // Herald WebSocket endpoints
	pids     []int    // server processes to measure; none: found by port
	name     string   // the target's label in reports
	duration time.Duration
	messages uint64 // 0: no limit but duration
	setup    time.Duration
	progress time.Duration
	log      io.Writer // progress lines; nil: none
	command  string    // the command line, for reports
	// toolPIDs are other processes of this tool to count as its CPU
	// (workers); this process is always counted.
	toolPIDs []int
}

// serverPIDs returns the processes to measure: the configured ones, or
// those listening on the targets' ports.
func (c *common) serverPIDs() []int {
	if len(c.pids) > 0 {
		return c.pids
	}
	seen := map[int]bool{}
	var pids []int
	for _, a := range append(append([]string{}, c.addrs...), c.wsHostPorts()...) {
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		p, _ := strconv.Atoi(port)
		if pid := pidListening(p); pid != 0 && !seen[pid] {
			seen[pid] = true
			pids = append(pids, pid)
		}
	}
	return pids
}

func (c *common) wsHostPorts() []string {
	var out []string
	for _, u := range c.wsURLs {
		rest := u[strings.Index(u, "://")+3:]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest = rest[:i]
		}
		out = append(out, rest)
	}
	return out
}

func (c *common) logf(format string, args ...any) {
	if c.log != nil {
		fmt.Fprintf(c.log, format+"\n", args...)
	}
}

// newRunID returns a short random id that keeps one run's channels apart
// from every other's.
func newRunID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// publishConfig is the publish-only workload.
type publishConfig struct {
	common
	conns    int
	pipeline int
	size     int
	channels int  // 0: one per connection
	verb     verb // the command each message is sent with
	verify   bool // check the servers' state after the run (Herald; streams for XADD)
}

// runPublish opens conns pipelined publishing connections (spread over the
// addresses) and publishes until the duration or message budget runs out.
func runPublish(ctx context.Context, cfg publishConfig) (*Result, error) {
	if cfg.channels <= 0 {
		cfg.channels = cfg.conns
	}
	if _, err := newPayload(cfg.size); err != nil {
		return nil, err
	}
	run := newRunID()
	names := make([]string, cfg.channels)
	for i := range names {
		names[i] = fmt.Sprintf("hb:%s:%d", run, i)
	}
	ackHist := newShardedHistogram(16)
	pubs := make([]*publisher, cfg.conns)
	setupCtx, cancel := context.WithTimeout(ctx, cfg.setup)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, cfg.conns)
	for i := range pubs {
		chs := channelsOf(i, cfg.conns, cfg.channels)
		pc := publisherConfig{
			id: uint32(i), addr: cfg.addrs[i%len(cfg.addrs)], channels: chs, names: names,
			verb: cfg.verb, pipeline: cfg.pipeline, size: cfg.size,
			messages: share(cfg.messages, cfg.conns, i), ackHist: ackHist.shard(i),
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pubs[i], errs[i] = dialPublisher(setupCtx, pc)
		}()
	}
	wg.Wait()
	defer func() {
		for _, p := range pubs {
			if p != nil {
				p.conn.Close()
			}
		}
	}()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}

	res := &Result{
		Workload: "publish", Target: cfg.name, Command: cfg.command, Started: time.Now(),
		Desc: fmt.Sprintf("%d connections × pipeline %d, %d B payloads, %d channels, %s", cfg.conns, cfg.pipeline, cfg.size, cfg.channels, cfg.verb),
	}
	before := readCounters(ctx, cfg.addrs)
	srv := startSampler(cfg.serverPIDs())
	mach := startMachineSampler()
	tool := startSampler(append([]int{ownPID()}, cfg.toolPIDs...))
	runCtx, stop := context.WithTimeout(ctx, cfg.duration)
	defer stop()
	pm := rateMeter{lastT: time.Now()}
	prog := startProgress(cfg.log, cfg.progress, func(el time.Duration) string {
		var acked uint64
		for _, p := range pubs {
			acked += p.acked.Load()
		}
		scpu, srss := srv.interval()
		tcpu, _ := tool.interval()
		return fmt.Sprintf("[publish %s] %s  %s publishes/s  server %.0f%% CPU %s  tool %.0f%% CPU",
			cfg.name, el, fmtRate(pm.rate(acked)), scpu, fmtKB(srss), tcpu)
	})
	start := time.Now()
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(runCtx, 30*time.Second)
		}()
	}
	wg.Wait()
	prog.end()
	res.Server, res.Tool = srv.finish(), tool.finish()
	res.Machine = mach.finish(append(append([]int{}, res.Server.PIDs...), res.Tool.PIDs...))

	after := readCounters(ctx, cfg.addrs)
	res.LogSync, res.Commit = logSyncBetween(before, after), commitsBetween(before, after)
	lastAck := addPublishers(res, pubs)
	res.Elapsed = time.Duration(lastAck - start.UnixNano())
	if res.Elapsed > 0 {
		res.PublishRate = float64(res.Published) / res.Elapsed.Seconds()
	}
	s := ackHist.merged().Summary()
	res.AckLatency = &s
	if cfg.verify {
		verifyChannels(ctx, cfg.addrs[0], names, cfg.verb, res)
	}
	res.finish()
	return res, nil
}

// share returns publisher i's part of a message budget split n ways.
func share(total uint64, n, i int) uint64 {
	if total == 0 {
		return 0
	}
	s := total / uint64(n)
	if uint64(i) < total%uint64(n) {
		s++
	}
	if s == 0 {
		s = 1 // 0 would mean unlimited; publish at least one
	}
	return s
}

// verifyChannels asks the server how many messages each channel got: their
// sum must be the number of publishes acknowledged, every one committed once
// (plus any that failed with an indeterminate error). Herald tells with
// HERALD.CHANNEL (the last sequence number); a Redis stream with XINFO
// STREAM (entries-added, which trimming leaves alone). A server without
// HERALD.CHANNEL (redis-server, PUBLISH) is not checked.
func verifyChannels(ctx context.Context, addr string, names []string, v verb, res *Result) {
	conn, rd, err := dialCheck(ctx, addr, 30*time.Second)
	if err != nil {
		res.Notes = append(res.Notes, "not verified: "+err.Error())
		return
	}
	defer conn.Close()
	cmd, field := []string{"HERALD.CHANNEL"}, "last_seq"
	if v == verbXAdd {
		cmd, field = []string{"XINFO", "STREAM"}, "entries-added"
	}
	var total uint64
	for _, name := range names {
		r, err := roundTrip(conn, rd, append(cmd, name)...)
		if err != nil {
			if v != verbXAdd && strings.Contains(err.Error(), "unknown command") {
				return
			}
			res.Notes = append(res.Notes, "not verified: "+err.Error())
			return
		}
		found := false
		for i := 0; i+1 < len(r.elems); i += 2 {
			if string(r.elems[i].str) == field {
				total += uint64(r.elems[i+1].num)
				found = true
			}
		}
		if !found {
			res.Notes = append(res.Notes, fmt.Sprintf("not verified: %s %s has no %s", strings.Join(cmd, " "), name, field))
			return
		}
	}
	acked, errs := res.Published, res.Loss.Errors
	what := fmt.Sprintf("%s: %s messages committed over %d channels", strings.Join(cmd, " "), fmtCount(total), len(names))
	switch {
	case total >= acked && total <= acked+errs:
		res.Verified = what + ", as acknowledged"
	default:
		res.Failures = append(res.Failures, fmt.Sprintf("%s, %s were acknowledged", what, fmtCount(acked)))
	}
}
