package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// suiteReport turns a suite's runs into tables: text on the terminal, and
// the generated part of docs/benchmarks.md.
type suiteReport struct {
	cfg     *suiteConfig
	runs    []*suiteRun
	started time.Time
	took    time.Duration
	machine map[string]string
}

func newSuiteReport(cfg *suiteConfig, runs []*suiteRun, started time.Time, took time.Duration) *suiteReport {
	return &suiteReport{cfg: cfg, runs: runs, started: started, took: took, machine: machineInfo(cfg)}
}

func machineInfo(cfg *suiteConfig) map[string]string {
	m := map[string]string{
		"cpu":    "unknown",
		"cores":  fmt.Sprint(runtime.NumCPU()),
		"kernel": strings.TrimSpace(readFileString("/proc/sys/kernel/osrelease")),
		"go":     runtime.Version(),
		"redis":  redisVersion(versionOf(cfg.redis, "--version")),
		"herald": versionOf(cfg.herald, "--version"),
		"commit": gitCommit(),
		"disk":   fsType(cfg.dataDir),
		"files":  fmt.Sprint(raiseFileLimit()),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	for _, line := range strings.Split(readFileString("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			m["memory"] = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return m
}

// redisVersion shortens "Redis server v=7.0.15 sha=... malloc=jemalloc-5.3.0 ..."
// to "redis-server 7.0.15 (jemalloc-5.3.0)".
func redisVersion(v string) string {
	var ver, malloc string
	for _, f := range strings.Fields(v) {
		if s, ok := strings.CutPrefix(f, "v="); ok {
			ver = s
		}
		if s, ok := strings.CutPrefix(f, "malloc="); ok {
			malloc = " (" + s + ")"
		}
	}
	if ver == "" {
		return v
	}
	return "redis-server " + ver + malloc
}

func readFileString(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// find returns the run of workload id against target, or nil. Of a
// workload run several times (--publish-runs) it returns a run that failed,
// if any did, else the median by rate.
func (r *suiteReport) find(id, target string) *suiteRun {
	var runs []*suiteRun
	for _, run := range r.runs {
		if run.id != id || run.target != target {
			continue
		}
		if run.err != nil || run.res.Failed {
			return run
		}
		runs = append(runs, run)
	}
	if len(runs) == 0 {
		return nil
	}
	rate := func(x *Result) float64 { return x.PublishRate + x.DeliveryRate }
	slices.SortStableFunc(runs, func(a, b *suiteRun) int { return cmp.Compare(rate(a.res), rate(b.res)) })
	return runs[(len(runs)-1)/2]
}

// metric is one row of the side-by-side table.
type metric struct {
	label  string
	id     string
	value  func(*Result) float64
	format func(float64) string
	ratio  bool // print herald ÷ redis
}

func fmtRateCell(v float64) string { return fmtRate(v) + "/s" }

// fmtShareCell renders a percentage Herald's own counters gave, followed
// by suffix; 0 is a server without them (redis-server) and shows "—".
func fmtShareCell(suffix string) func(float64) string {
	return func(v float64) string {
		if v == 0 {
			return "—"
		}
		return fmt.Sprintf("%.0f", v) + suffix
	}
}
func fmtNanosCell(v float64) string {
	return fmtDuration(time.Duration(v))
}
func fmtPercentCell(v float64) string { return fmt.Sprintf("%.0f%%", v) }

func (r *suiteReport) metrics() []metric {
	c := r.cfg
	p99 := func(s *Summary) float64 {
		if s == nil {
			return 0
		}
		return float64(s.P99)
	}
	p50 := func(s *Summary) float64 {
		if s == nil {
			return 0
		}
		return float64(s.P50)
	}
	return []metric{
		{fmt.Sprintf("Publish, %d conns × pipeline %d, %d B: publishes/s", c.publishConns, c.publishPipeline, c.size), "publish",
			func(x *Result) float64 { return x.PublishRate }, fmtRateCell, true},
		{"Publish: p99 publish→reply", "publish", func(x *Result) float64 { return p99(x.AckLatency) }, fmtNanosCell, true},
		{"Publish: server CPU (tool CPU)", "publish", func(x *Result) float64 { return x.Server.CPUPercent }, fmtPercentCell, false},
		{"Publish: server CPU time per publish", "publish", func(x *Result) float64 { return perItem(x.Server.CPUSeconds, x.Published) }, fmtNanosCell, true},
		{"Publish: the leader's time in synced log writes (the disk's share of the publish path)", "publish", func(x *Result) float64 {
			if x.LogSync == nil {
				return 0
			}
			return 100 * x.LogSync.share(x.Elapsed)
		}, fmtShareCell("% of the run"), false},
		{"Publish: the log's share of a publish's round trip (an entry's mean commit ÷ the mean publish→reply)", "publish", func(x *Result) float64 {
			if x.Commit == nil || x.AckLatency == nil || x.AckLatency.Mean <= 0 {
				return 0
			}
			return 100 * float64(x.Commit.mean()) / float64(x.AckLatency.Mean)
		}, fmtShareCell("%"), false},
		{fmt.Sprintf("Fan-out to %s RESP subscribers, max rate: deliveries/s", fmtCount(uint64(c.subscribers))), "fanout",
			func(x *Result) float64 { return x.DeliveryRate }, fmtRateCell, true},
		{"Fan-out RESP: p99 publish→receipt (saturated)", "fanout", func(x *Result) float64 { return p99(x.Latency) }, fmtNanosCell, true},
		{"Fan-out RESP: p50 publish→reply, the publisher's wait (saturated)", "fanout", func(x *Result) float64 { return p50(x.AckLatency) }, fmtNanosCell, true},
		{"Fan-out RESP: server CPU (tool CPU)", "fanout", func(x *Result) float64 { return x.Server.CPUPercent }, fmtPercentCell, false},
		{"Fan-out RESP: server CPU time per delivery", "fanout", func(x *Result) float64 { return perItem(x.Server.CPUSeconds, x.Deliveries) }, fmtNanosCell, true},
		{"Fan-out RESP: deliveries per subscriber read (server write batching)", "fanout", func(x *Result) float64 { return x.DeliveriesPerRead }, func(v float64) string { return fmt.Sprintf("%.1f", v) }, true},
		{fmt.Sprintf("Fan-out to %s WebSocket subscribers, max rate: deliveries/s", fmtCount(uint64(c.wsSubscribers))), "ws-sat",
			func(x *Result) float64 { return x.DeliveryRate }, fmtRateCell, false},
		{"Fan-out WebSocket at half that rate: p99 publish→receipt", "ws-half", func(x *Result) float64 { return p99(x.Latency) }, fmtNanosCell, false},
		{"Fan-out WebSocket at half that rate: p50 publish→reply", "ws-half", func(x *Result) float64 { return p50(x.AckLatency) }, fmtNanosCell, false},
		{"Fan-out WebSocket, max rate: server CPU time per delivery", "ws-sat", func(x *Result) float64 { return perItem(x.Server.CPUSeconds, x.Deliveries) }, fmtNanosCell, false},
		{"Fan-out WebSocket, max rate: deliveries per frame", "ws-sat", func(x *Result) float64 { return x.DeliveriesPerRead }, func(v float64) string { return fmt.Sprintf("%.1f", v) }, false},
		{fmt.Sprintf("Idle WebSocket connections (%s): server RSS per connection", fmtCount(uint64(c.idleConns))), "idle",
			func(x *Result) float64 {
				if x.Idle == nil {
					return 0
				}
				return x.Idle.PerConnKB
			}, func(v float64) string { return fmt.Sprintf("%.1f KiB", v) }, false},
	}
}

var suiteTargets = []string{"herald-1", "herald-3", "redis"}

// perItem returns CPU seconds per item, in nanoseconds.
func perItem(cpuSeconds float64, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return cpuSeconds * 1e9 / float64(n)
}

// cell renders one run's metric, marking failed runs.
func (r *suiteReport) cell(m metric, target string) (string, float64, bool) {
	run := r.find(m.id, target)
	switch {
	case run == nil:
		return "—", 0, false
	case run.err != nil:
		return "error", 0, false
	}
	v := m.value(run.res)
	s := m.format(v)
	if strings.Contains(m.label, "(tool CPU)") {
		s += fmt.Sprintf(" (%.0f%%)", run.res.Tool.CPUPercent)
	}
	if run.res.Failed {
		s += " **FAILED**"
	}
	return s, v, !run.res.Failed
}

func (r *suiteReport) sideBySide(w io.Writer) {
	fmt.Fprintln(w, "| workload | Herald, 1 node | Herald, 3 nodes | redis-server | 1 node ÷ redis | 3 nodes ÷ redis |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|")
	for _, m := range r.metrics() {
		cells := make([]string, 0, 5)
		vals := map[string]float64{}
		for _, t := range suiteTargets {
			s, v, _ := r.cell(m, t)
			cells = append(cells, s)
			vals[t] = v
		}
		for _, t := range []string{"herald-1", "herald-3"} {
			if m.ratio && vals["redis"] > 0 && vals[t] > 0 {
				cells = append(cells, fmt.Sprintf("%.2f", vals[t]/vals["redis"]))
			} else {
				cells = append(cells, "")
			}
		}
		fmt.Fprintf(w, "| %s | %s |\n", m.label, strings.Join(cells, " | "))
	}
}

// goal is one of the targets, evaluated.
type goal struct {
	name, required, measured, status string
}

func (r *suiteReport) goals() []goal {
	var out []goal
	get := func(id, target string) (*Result, string) {
		run := r.find(id, target)
		switch {
		case run == nil:
			return nil, "not measured"
		case run.err != nil:
			return nil, "not measured: " + run.err.Error()
		case run.res.Failed:
			return run.res, "not met: the run FAILED (" + strings.Join(run.res.Failures, "; ") + ")"
		}
		return run.res, ""
	}
	status := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	// versusRedis fills in a goal of reaching frac of redis-server's rate
	// in the same workload.
	versusRedis := func(g *goal, id, target string, rate func(*Result) float64, frac float64) {
		h, hs := get(id, target)
		rd, rs := get(id, "redis")
		switch {
		case hs != "" && h == nil:
			g.status = hs
		case rs != "":
			g.status = "redis-server " + rs
		default:
			g.measured = fmt.Sprintf("%s/s vs %s/s (%.2f×)", fmtRate(rate(h)), fmtRate(rate(rd)), rate(h)/rate(rd))
			g.status = hs
			if g.status == "" {
				g.status = status(rate(h) >= frac*rate(rd))
			}
		}
	}
	// Fan-out to RESP subscribers: at least redis-server's deliveries/s.
	{
		g := goal{name: fmt.Sprintf("Fan-out to %s RESP subscribers (1 node)", fmtCount(uint64(r.cfg.subscribers))), required: "deliveries/s ≥ redis-server's"}
		versusRedis(&g, "fanout", "herald-1", func(r *Result) float64 { return r.DeliveryRate }, 1)
		out = append(out, g)
	}
	{
		g := goal{name: fmt.Sprintf("Fan-out to %s WebSocket subscribers, saturated", fmtCount(uint64(r.cfg.wsSubscribers))), required: "≥ 500,000 deliveries/s"}
		h, hs := get("ws-sat", "herald-1")
		if h != nil {
			g.measured = fmtRate(h.DeliveryRate) + "/s"
		}
		g.status = hs
		if g.status == "" {
			g.status = status(h.DeliveryRate >= 500_000)
		}
		out = append(out, g)
	}
	{
		g := goal{name: "The same at half the saturated rate", required: "p99 publish→receipt < 50 ms"}
		h, hs := get("ws-half", "herald-1")
		if h != nil && h.Latency != nil {
			g.measured = fmt.Sprintf("p99 %s at %s deliveries/s", fmtDuration(h.Latency.P99), fmtRate(h.DeliveryRate))
			if f := r.floor(); f != nil {
				g.measured += fmt.Sprintf(" (with no server at all, this machine's p99 gap between frames to %s connections: %s)",
					fmtCount(uint64(f.Subscribers)), fmtDuration(f.FrameGap.P99))
			}
		}
		g.status = hs
		if g.status == "" {
			g.status = status(h.Latency != nil && h.Latency.P99 < 50*time.Millisecond)
		}
		out = append(out, g)
	}
	for _, t := range []struct {
		target string
		frac   float64
		words  string
	}{{"herald-1", 0.5, "half"}, {"herald-3", 1.0 / 3, "a third"}} {
		g := goal{name: fmt.Sprintf("Publish throughput, %s, committed to the Raft log", strings.Replace(t.target, "herald-", "", 1)+map[bool]string{true: " node", false: " nodes"}[t.target == "herald-1"]),
			required: "≥ " + t.words + " of redis-server's PUBLISH rate"}
		versusRedis(&g, "publish", t.target, func(r *Result) float64 { return r.PublishRate }, t.frac)
		if d := r.durableRedis(); d != nil && g.measured != "" {
			g.measured += fmt.Sprintf(" (redis-server made durable, XADD with appendfsync always: %s/s)", fmtRate(d.PublishRate))
		}
		out = append(out, g)
	}
	{
		g := goal{name: fmt.Sprintf("Idle WebSocket connections at %s", fmtCount(uint64(r.cfg.idleConns))), required: "< 16 KB (16,000 bytes) of server memory each"}
		h, hs := get("idle", "herald-1")
		if h != nil && h.Idle != nil {
			g.measured = fmt.Sprintf("%.1f KiB (%.0f bytes)", h.Idle.PerConnKB, h.Idle.PerConnKB*1024)
		}
		g.status = hs
		if g.status == "" {
			g.status = status(h.Idle != nil && h.Idle.PerConnKB*1024 < 16000)
		}
		out = append(out, g)
	}
	return out
}

// succeeded returns the result find picks for workload id against target,
// or nil unless there is one and it succeeded.
func (r *suiteReport) succeeded(id, target string) *Result {
	run := r.find(id, target)
	if run == nil || run.err != nil || run.res.Failed {
		return nil
	}
	return run.res
}

// floor returns the suite's floor result, if it has one that succeeded.
func (r *suiteReport) floor() *Result {
	if f := r.succeeded("floor", "machine"); f != nil && f.FrameGap != nil {
		return f
	}
	return nil
}

// floorText says what the floor run bounds, for the report.
func (r *suiteReport) floorText(w io.Writer) {
	f := r.floor()
	if f == nil {
		return
	}
	perFrame := perItem(f.Server.CPUSeconds, f.Deliveries)
	fmt.Fprintf(w, "**This machine's floor.** `herald-bench floor` writes %d-byte frames to %s loopback TCP "+
		"connections in turn from one process, a write system call each, and reads them in another, as the WebSocket "+
		"subscribers do: no server logic at all. It moved %s frames/s (writer %.0f%% of a core, reader %.0f%%), so a round of "+
		"one frame to every connection took %s, and the gap between two frames to a connection was %s at p50 and %s "+
		"at p99. No server gives each of that many subscribers a frame more often on these %s cores while "+
		"the load tool shares them, and a message waits for its subscriber's turn. The writer alone spent %s of CPU a "+
		"frame, nearly all of it in the system call (on loopback, sending runs the receiving side's network stack too): "+
		"with every core to itself and a reader that cost nothing, a round would still take %s.\n",
		f.FrameSize, fmtCount(uint64(f.Subscribers)), fmtRate(f.DeliveryRate), f.Server.CPUPercent, f.Tool.CPUPercent,
		fmtDuration(f.round()), fmtDuration(f.FrameGap.P50), fmtDuration(f.FrameGap.P99), r.machine["cores"],
		fmtDuration(time.Duration(perFrame)), fmtDuration(time.Duration(perFrame*float64(f.Subscribers)/float64(runtime.NumCPU()))))
}

// durableRedis returns the median publish run against redis-server with
// appendfsync always, if the suite made one and it succeeded.
func (r *suiteReport) durableRedis() *Result {
	if d := r.succeeded("publish", "redis-aof"); d != nil && d.PublishRate > 0 {
		return d
	}
	return nil
}

// durableText compares Herald's committed publishes with redis-server's
// own durable mode, for the report.
func (r *suiteReport) durableText(w io.Writer) {
	d := r.durableRedis()
	if d == nil {
		return
	}
	rate := func(target string) float64 {
		if x := r.succeeded("publish", target); x != nil {
			return x.PublishRate
		}
		return 0
	}
	fmt.Fprintf(w, "**redis-server, durable.** The same publish workload, sent as `XADD <channel> MAXLEN ~ %d * m <payload>` "+
		"(a Redis stream per channel, keeping about as many messages as Herald retains by default), to a redis-server "+
		"started with `--appendonly yes --appendfsync always`: it appends every command to its append-only file and "+
		"syncs the file before it replies, which is what Redis offers when an acknowledged message must survive a crash. "+
		"It did %s/s%s, p99 publish→reply %s, with its server at %.0f%% of a core and %.0f%% iowait.",
		xaddMaxLen, fmtRate(d.PublishRate), medianOf(r.cfg.publishRuns), fmtDuration(d.AckLatency.P99), d.Server.CPUPercent, d.Machine.IOWaitPercent)
	if p := rate("redis"); p > 0 {
		fmt.Fprintf(w, " That is %.2f× of its PUBLISH rate, which commits nothing.", d.PublishRate/p)
	}
	var parts []string
	for _, t := range []struct{ target, words string }{{"herald-1", "on one node"}, {"herald-3", "on three"}} {
		if h := rate(t.target); h > 0 {
			parts = append(parts, fmt.Sprintf("%.2f× of it %s", h/d.PublishRate, t.words))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, " Herald, which commits every publish to its Raft log on disk before replying, did %s.", strings.Join(parts, " and "))
	}
	fmt.Fprintln(w, " The publish targets above are set against redis-server committing nothing.")
}

// medianOf says which of n runs a figure comes from, or nothing for one.
func medianOf(n int) string {
	if n < 2 {
		return ""
	}
	return fmt.Sprintf(" (the median of %d runs)", n)
}

func (r *suiteReport) goalsTable(w io.Writer) {
	fmt.Fprintln(w, "| target | required | measured | status |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, g := range r.goals() {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", g.name, g.required, g.measured, strings.ReplaceAll(g.status, "|", "/"))
	}
}

// runsTable lists every run with its resource use.
func (r *suiteReport) runsTable(w io.Writer) {
	fmt.Fprintln(w, "| run | target | result | publishes/s | deliveries/s | latency p50 / p99 / p99.9 / max | server CPU | tool CPU | kernel (interrupts, threads) | other processes | iowait | server RSS (max) |")
	fmt.Fprintln(w, "|---|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|")
	for _, run := range r.runs {
		if run.err != nil {
			fmt.Fprintf(w, "| %s | %s | error: %s | | | | | | | | | |\n", run.id, run.target, strings.ReplaceAll(run.err.Error(), "\n", " "))
			continue
		}
		x := run.res
		result := "ok"
		if x.Machine.OtherPercent > noisyPercent {
			result = "ok, but the machine was busy"
		}
		if x.Failed {
			result = "**FAILED**: " + strings.Join(x.Failures, "; ")
		}
		lat, which := x.Latency, "receipt"
		if lat == nil || lat.Count == 0 {
			lat, which = x.AckLatency, "reply"
		}
		latency := ""
		if lat != nil && lat.Count > 0 {
			latency = fmt.Sprintf("%s / %s / %s / %s (%s)", fmtDuration(lat.P50), fmtDuration(lat.P99), fmtDuration(lat.P999), fmtDuration(lat.Max), which)
		}
		pubs, dels := fmtRate(x.PublishRate), ""
		if x.Subscribers > 0 {
			dels = fmt.Sprintf("%s (%.1f a read)", fmtRate(x.DeliveryRate), x.DeliveriesPerRead)
		}
		if x.Idle != nil {
			pubs = ""
			latency = fmt.Sprintf("%d connections: %.1f KiB each", x.Idle.Connections, x.Idle.PerConnKB)
		}
		if g := x.FrameGap; g != nil {
			pubs = ""
			dels = fmt.Sprintf("%s frames (%.1f a read)", fmtRate(x.DeliveryRate), x.DeliveriesPerRead)
			latency = fmt.Sprintf("%s / %s / %s / %s (gap between frames)", fmtDuration(g.P50), fmtDuration(g.P99), fmtDuration(g.P999), fmtDuration(g.Max))
		}
		others := fmt.Sprintf("%.0f%%", x.Machine.OtherPercent)
		if x.Machine.OtherPercent > noisyPercent && x.Machine.Others != "" {
			others += " (" + x.Machine.Others + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %.0f%% | %.0f%% | %.0f%% | %s | %.0f%% | %s |\n",
			run.id, run.target, strings.ReplaceAll(result, "|", "/"), pubs, dels, latency,
			x.Server.CPUPercent, x.Tool.CPUPercent, x.Machine.KernelPercent+x.Machine.IRQPercent, others, x.Machine.IOWaitPercent, fmtKB(x.Server.RSSMaxKB))
	}
}

func (r *suiteReport) printText(w io.Writer) {
	fmt.Fprintf(w, "\nherald-bench suite: %s, %s cores; took %s\n\n", r.machine["cpu"], r.machine["cores"], r.took)
	r.goalsTable(w)
	fmt.Fprintln(w)
	r.sideBySide(w)
	fmt.Fprintln(w)
	r.runsTable(w)
}

// jsonView is the suite's result for --json.
func (r *suiteReport) jsonView() any {
	type run struct {
		ID     string  `json:"id"`
		Target string  `json:"target"`
		Error  string  `json:"error,omitempty"`
		Result *Result `json:"result,omitempty"`
	}
	type goalJSON struct {
		Name     string `json:"name"`
		Required string `json:"required"`
		Measured string `json:"measured"`
		Status   string `json:"status"`
	}
	v := struct {
		Machine map[string]string `json:"machine"`
		Started time.Time         `json:"started"`
		TookNS  time.Duration     `json:"took_ns"`
		Goals   []goalJSON        `json:"goals"`
		Runs    []run             `json:"runs"`
	}{Machine: r.machine, Started: r.started, TookNS: r.took}
	for _, g := range r.goals() {
		v.Goals = append(v.Goals, goalJSON{g.name, g.required, g.measured, g.status})
	}
	for _, x := range r.runs {
		j := run{ID: x.id, Target: x.target, Result: x.res}
		if x.err != nil {
			j.Error = x.err.Error()
		}
		v.Runs = append(v.Runs, j)
	}
	return v
}

const (
	docsBegin = "<!-- herald-bench suite: begin. Generated by `make bench`; edit outside these markers. -->"
	docsEnd   = "<!-- herald-bench suite: end -->"
)

// markdown renders the generated part of docs/benchmarks.md.
func (r *suiteReport) markdown() string {
	var b strings.Builder
	m := r.machine
	fmt.Fprintln(&b, docsBegin)
	fmt.Fprintln(&b, "## Herald beside redis-server")
	fmt.Fprintln(&b)
	fmt.Fprintf(&b, "Measured by `herald-bench suite` on %s; the suite took %s.\n\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.took)
	herald := m["herald"]
	if !strings.HasSuffix(herald, " "+m["commit"]) {
		herald += " (working tree at commit " + m["commit"] + ")"
	}
	fmt.Fprintf(&b, "**Machine.** %s, %s cores, %s of memory, Linux %s; servers' data on %s. "+
		"Go %s; %s; %s. Open files per process: %s.\n\n",
		m["cpu"], m["cores"], m["memory"], m["kernel"], m["disk"], strings.TrimPrefix(m["go"], "go"), m["redis"], herald, m["files"])
	fmt.Fprintf(&b, "The load tool and the servers share these %s cores: every run reports the "+
		"server's CPU, the tool's own and what other processes took, in percent of one core "+
		"(%d%% is the whole machine), and what the kernel took for no process in particular (interrupts "+
		"and softirqs, which is where loopback networking runs, and kernel threads). A run in which other "+
		"processes took more than %d%% says so.\n\n",
		m["cores"], 100*runtime.NumCPU(), noisyPercent)
	fmt.Fprintln(&b, "### Targets")
	fmt.Fprintln(&b)
	r.goalsTable(&b)
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "### Side by side")
	fmt.Fprintln(&b)
	r.sideBySide(&b)
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "Ratios are Herald ÷ redis-server: above 1 is better for rates and batching, below 1 for "+
		"latencies and CPU time. The three-node fan-out is the cluster run: a publisher on every node, "+
		"subscribers spread over all three. Batching is the messages a subscriber's read (RESP) or "+
		"WebSocket frame carried on average: each read is a system call on both sides.")
	if r.cfg.publishRuns > 1 {
		fmt.Fprintln(&b)
		fmt.Fprintf(&b, "The publish workload ran %d times against each target, interleaved: the tables above show "+
			"each target's median run (or a failed one, if any failed); every run is listed below.\n", r.cfg.publishRuns)
	}
	if r.durableRedis() != nil {
		fmt.Fprintln(&b)
		r.durableText(&b)
	}
	if r.floor() != nil {
		fmt.Fprintln(&b)
		r.floorText(&b)
	}
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "### Every run")
	fmt.Fprintln(&b)
	r.runsTable(&b)
	fmt.Fprintln(&b)
	fmt.Fprintf(&b, `### How it is measured

- Each run starts its servers afresh on random loopback ports (Herald with `+"`--max-clients 20000 --max-http-connections 20000`"+`, data
  on disk as above; redis-server with `+"`--save \"\" --appendonly no`"+`, so it commits nothing, or, as redis-aof, with
  `+"`--appendonly yes --appendfsync always`"+`), and stops them after.
- Every payload carries its publisher, a per-publisher counter and its send time. Every subscriber must receive
  every acknowledged message exactly once and in each publisher's order; Herald's WebSocket streams must also
  have contiguous sequence numbers. A run with anything missing, duplicated, reordered, any publish error or
  any dropped connection is **FAILED**, whatever its rate.
- Latency is publish to receipt (the time the subscriber's read returned), over every delivery, in a
  log-linear histogram (0.8%% resolution); for publish-only runs, publish to reply. At a fixed rate the send time
  is when the message was due, so a publisher that falls behind shows as latency.
- "Max rate" fan-out keeps at most %d messages per channel published but not yet received by every
  subscriber: the fastest rate the server sustains without dropping anyone. Publishing open-loop above it
  only fills buffers until the server disconnects subscribers as slow.
- Publishes/s counts acknowledged publishes from the first send to the last reply; deliveries/s, messages
  received by all subscribers from the first send to the last receipt.
- The leader's time in synced log writes is the growth of its `+"`log_sync_seconds_sum`"+` (`+"`INFO metrics`"+`, the
  same as `+"`herald_log_sync_seconds`"+` in /metrics) over a publish run, divided by the run's time: each publish
  waits for one such write, so it is the disk's share of the time a publish takes. The log's share of a
  publish's round trip is the mean time from proposing an entry of publishes to its being applied on the
  leader (`+"`commit_seconds`"+`, summed over the nodes published to) over the mean publish→reply: the rest is
  the way in and out of the server and the load tool's own turn.
- CPU is user+system time from /proc/<pid>/stat over the run; RSS from /proc/<pid>/status. Idle memory is
  the server's RSS growth from before the connections opened to %s after, divided by the connections: past
  Herald's first ping of each connection (at 25 s), so that what a round of pings costs is counted, as it
  is on a server that runs.

### Reproduce

    make bench

runs the Go micro-benchmarks, then this suite:

    %s

Each run alone, against servers you start (addresses in angle brackets):

`, r.cfg.window, fmt.Sprintf("%.0f s", idleSettle.Seconds()), r.suiteCommand())
	listed := map[string]bool{}
	for _, run := range r.runs {
		if k := run.id + " " + run.target; !listed[k] {
			listed[k] = true
			fmt.Fprintf(&b, "    # %s on %s\n    %s\n", run.id, run.target, run.reproduce())
		}
	}
	if r.cfg.gobench != "" {
		if text, err := os.ReadFile(r.cfg.gobench); err == nil {
			fmt.Fprintln(&b)
			fmt.Fprintln(&b, "### Go micro-benchmarks")
			fmt.Fprintln(&b)
			fmt.Fprintln(&b, "    go test -run '^$' -bench . -benchmem ./...")
			fmt.Fprintln(&b)
			fmt.Fprintln(&b, "```")
			for _, line := range strings.Split(string(text), "\n") {
				if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") {
					fmt.Fprintln(&b, line)
				}
			}
			fmt.Fprintln(&b, "```")
		}
	}
	fmt.Fprintln(&b, docsEnd)
	return b.String()
}

// suiteCommand is how this suite was run.
func (r *suiteReport) suiteCommand() string {
	return "go run ./cmd/herald-bench " + strings.TrimPrefix(r.cfg.command, "herald-bench ")
}

// writeDocs puts the generated part into path between its markers, or,
// the first time, after the file's title, keeping what was there.
func (r *suiteReport) writeDocs(path string) error {
	gen := r.markdown()
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	var out string
	i, j := strings.Index(s, docsBegin), strings.Index(s, docsEnd)
	switch {
	case i >= 0 && j > i:
		out = s[:i] + strings.TrimSuffix(gen, "\n") + s[j+len(docsEnd):]
	case strings.TrimSpace(s) == "":
		out = "# Benchmarks\n\n" + gen
	default:
		title, rest := "", s
		if strings.HasPrefix(s, "# ") {
			nl := strings.IndexByte(s, '\n')
			if nl < 0 {
				nl = len(s)
			}
			title, rest = s[:nl+1], strings.TrimLeft(s[min(nl+1, len(s)):], "\n")
		}
		out = title + "\n" + gen + "\n" + rest
	}
	return os.WriteFile(path, []byte(out), 0o644)
}
