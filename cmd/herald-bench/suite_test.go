package main

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestSuiteReportPicksMedian: of a workload run several times against a
// target, the report shows the median run by rate, unless one of them
// failed: a run that lost messages is never hidden by its siblings.
func TestSuiteReportPicksMedian(t *testing.T) {
	pub := func(target string, rate float64) *suiteRun {
		return &suiteRun{id: "publish", target: target, res: &Result{PublishRate: rate}}
	}
	runs := []*suiteRun{
		pub("redis", 900), pub("herald-1", 300), pub("herald-3", 90),
		pub("redis", 800), pub("herald-1", 200), pub("herald-3", 95),
		pub("redis", 1000), pub("herald-1", 250), pub("herald-3", 85),
		pub("redis", 700),
	}
	failed := pub("herald-3", 500)
	failed.res.Failed = true
	failed.res.Failures = []string{"3 messages missing"}
	runs = append(runs, failed)
	r := newSuiteReport(&suiteConfig{publishRuns: 3, publishConns: 64, publishPipeline: 16, size: 64}, runs, time.Now(), 0)

	for target, want := range map[string]float64{"redis": 800, "herald-1": 250} {
		if got := r.find("publish", target); got == nil || got.res.PublishRate != want {
			t.Errorf("%s: picked %v, want the median run at %v/s", target, got.res.PublishRate, want)
		}
	}
	if got := r.find("publish", "herald-3"); got != failed {
		t.Errorf("herald-3: picked the run at %v/s, want the failed one", got.res.PublishRate)
	}
	if got := r.find("fanout", "redis"); got != nil {
		t.Errorf("fanout: found a run that was not made")
	}
	var status string
	for _, g := range r.goals() {
		if strings.Contains(g.name, "3 nodes") {
			status = g.status
		}
	}
	if !strings.Contains(status, "FAILED") || !strings.Contains(status, "3 messages missing") {
		t.Errorf("three-node publish target: %q, want the failure", status)
	}

	// The leader's synced log writes: Herald's share, none for redis-server.
	r.find("publish", "herald-1").res.LogSync = &LogSyncStats{Writes: 10, Seconds: 0.6}
	r.find("publish", "herald-1").res.Elapsed = time.Second
	r.find("publish", "herald-1").res.Commit = &CommitStats{Entries: 100, Seconds: 0.2}
	r.find("publish", "herald-1").res.AckLatency = &Summary{Mean: 4 * time.Millisecond}
	var side strings.Builder
	r.sideBySide(&side)
	if want := "| Publish: the leader's time in synced log writes (the disk's share of the publish path) | 60% of the run | — **FAILED** | — |"; !strings.Contains(side.String(), want) {
		t.Errorf("side-by-side table lacks\n%s\n%s", want, side.String())
	}
	if want := "| Publish: the log's share of a publish's round trip (an entry's mean commit ÷ the mean publish→reply) | 50% | — **FAILED** | — |"; !strings.Contains(side.String(), want) {
		t.Errorf("side-by-side table lacks\n%s\n%s", want, side.String())
	}

	errRun := &suiteRun{id: "publish", target: "herald-1", err: errors.New("server did not start")}
	r.runs = append(r.runs, errRun)
	if got := r.find("publish", "herald-1"); got != errRun {
		t.Errorf("herald-1 with a run that could not start: picked %+v, want that run", got)
	}
}

// TestSuiteReportFloor: the WebSocket latency target is reported beside
// the machine's floor when the floor was measured, and not when it failed.
func TestSuiteReportFloor(t *testing.T) {
	half := &suiteRun{id: "ws-half", target: "herald-1", res: &Result{DeliveryRate: 400_000, Latency: &Summary{P99: 250 * time.Millisecond}}}
	floor := &suiteRun{id: "floor", target: "machine", res: &Result{Subscribers: 10_000, FrameSize: 256, DeliveryRate: 100_000,
		Deliveries: 1_000_000, Server: ProcStats{CPUSeconds: 10}, // 10 µs a frame
		FrameGap: &Summary{P50: 95 * time.Millisecond, P99: 170 * time.Millisecond}}}
	cfg := &suiteConfig{publishRuns: 1, wsSubscribers: 10_000, size: 64}
	measured := func(r *suiteReport) string {
		for _, g := range r.goals() {
			if strings.Contains(g.required, "50 ms") {
				return g.measured
			}
		}
		t.Fatal("no WebSocket latency target in the report")
		return ""
	}

	r := newSuiteReport(cfg, []*suiteRun{half, floor}, time.Now(), 0)
	if m := measured(r); !strings.Contains(m, "p99 250.0ms") || !strings.Contains(m, "10,000 connections: 170.0ms") {
		t.Errorf("WebSocket latency target measured %q, want Herald's p99 and the floor's", m)
	}
	md := r.markdown()
	round := fmt.Sprintf("a round would still take %s", fmtDuration(10_000*10*time.Microsecond/time.Duration(runtime.NumCPU())))
	for _, want := range []string{"This machine's floor", "100,000 frames/s", "took 100.0ms", "95.0ms at p50 and 170.0ms at p99",
		"spent 10µs of CPU a frame", round, "| floor | machine | ok |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	floor.res.Failed, floor.res.Failures = true, []string{"3 of 10000 connections received no frame"}
	r = newSuiteReport(cfg, []*suiteRun{half, floor}, time.Now(), 0)
	if m := measured(r); strings.Contains(m, "floor") || strings.Contains(m, "no server") {
		t.Errorf("with the floor run failed, the target still cites it: %q", m)
	}
	if strings.Contains(r.markdown(), "This machine's floor") {
		t.Error("with the floor run failed, the report still describes it")
	}
}

// TestSuiteReportDurableRedis: the publish targets are reported beside
// redis-server's durable mode when it was measured, and not when that run
// failed.
func TestSuiteReportDurableRedis(t *testing.T) {
	pub := func(target string, rate float64) *suiteRun {
		return &suiteRun{id: "publish", target: target, res: &Result{PublishRate: rate,
			AckLatency: &Summary{P99: 8 * time.Millisecond}, Server: ProcStats{CPUPercent: 80}, Machine: MachineStats{IOWaitPercent: 19}}}
	}
	aof := pub("redis-aof", 250_000)
	runs := []*suiteRun{pub("redis", 1_000_000), aof, pub("herald-1", 300_000), pub("herald-3", 100_000)}
	cfg := &suiteConfig{publishRuns: 1, publishConns: 64, publishPipeline: 16, size: 64}

	r := newSuiteReport(cfg, runs, time.Now(), 0)
	for _, g := range r.goals() {
		if strings.HasPrefix(g.name, "Publish throughput") && !strings.Contains(g.measured, "XADD with appendfsync always: 250,000/s") {
			t.Errorf("%s: measured %q, want redis-server's durable rate beside it", g.name, g.measured)
		}
	}
	md := r.markdown()
	for _, want := range []string{"**redis-server, durable.**", "`--appendonly yes --appendfsync always`", "It did 250,000/s, p99",
		"p99 publish→reply 8.00ms", "80% of a core and 19% iowait", "0.25× of its PUBLISH rate",
		"did 1.20× of it on one node and 0.40× of it on three", "| publish | redis-aof | ok |", "# publish on redis-aof"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	aof.res.Failed, aof.res.Failures = true, []string{"XINFO STREAM counts 9 messages committed, 10 were acknowledged"}
	r = newSuiteReport(cfg, runs, time.Now(), 0)
	for _, g := range r.goals() {
		if strings.Contains(g.measured, "XADD") {
			t.Errorf("with the durable run failed, %s still cites it: %q", g.name, g.measured)
		}
	}
	if md := r.markdown(); strings.Contains(md, "redis-server, durable") {
		t.Error("with the durable run failed, the report still describes it")
	}
}
