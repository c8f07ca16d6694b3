package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Result is one workload's outcome against one target.
type Result struct {
	Workload string    `json:"workload"` // publish, fanout, cluster, idle
	Target   string    `json:"target"`   // a label: herald-1, herald-3, redis, or --name
	Desc     string    `json:"desc"`     // the workload's parameters, in words
	Command  string    `json:"command"`  // how to run it again
	Started  time.Time `json:"started"`
	// Elapsed is the measured phase: from the first publish to the last
	// reply (publish) or the last delivery (fan-out).
	Elapsed time.Duration `json:"elapsed_ns"`

	Sent        uint64  `json:"sent"`
	Published   uint64  `json:"published"` // acknowledged
	PublishRate float64 `json:"publishes_per_sec"`
	// AckLatency is publish to reply, as the publisher sees it.
	AckLatency *Summary `json:"ack_latency,omitempty"`
	// LogSync is the leader's synced Raft log writes during the run
	// (Herald only).
	LogSync *LogSyncStats `json:"log_sync,omitempty"`
	// Commit is the log entries of publishes committed during the run, and
	// their time from proposal to applied (Herald only).
	Commit *CommitStats `json:"commit,omitempty"`

	Subscribers  int     `json:"subscribers,omitempty"`
	Expected     uint64  `json:"expected_deliveries,omitempty"`
	Deliveries   uint64  `json:"deliveries,omitempty"`
	DeliveryRate float64 `json:"deliveries_per_sec,omitempty"`
	// Latency is publish to receipt, over every delivery.
	Latency *Summary `json:"latency,omitempty"`
	MaxLag  int64    `json:"max_lag,omitempty"` // most messages in flight on a channel, sampled
	// DeliveriesPerRead is how many messages a subscriber's read (RESP) or
	// WebSocket frame carried on average: how much the server batches its
	// writes. Each read costs a system call on both sides.
	DeliveriesPerRead float64 `json:"deliveries_per_read,omitempty"`

	Idle *IdleStats `json:"idle,omitempty"`
	// FrameGap is the floor workload's time between a connection's
	// reads: how long each waited for its turn (Sent is then the frames
	// the writer wrote, Deliveries the frames read in the measured time).
	FrameGap  *Summary `json:"frame_gap,omitempty"`
	FrameSize int      `json:"frame_size,omitempty"`

	Loss     Loss         `json:"loss"`
	Server   ProcStats    `json:"server"`
	Tool     ProcStats    `json:"tool"`
	Machine  MachineStats `json:"machine"`
	Verified string       `json:"verified,omitempty"` // what was checked on the server after the run
	Notes    []string     `json:"notes,omitempty"`
	Failed   bool         `json:"failed"`
	Failures []string     `json:"failures,omitempty"`
}

// IdleStats is the outcome of the idle-connections workload.
type IdleStats struct {
	Connections int     `json:"connections"`
	Failed      int     `json:"failed"`
	Processes   int     `json:"processes"`
	RSSBeforeKB int64   `json:"rss_before_kb"`
	RSSAfterKB  int64   `json:"rss_after_kb"`
	PerConnKB   float64 `json:"rss_per_connection_kb"`
}

// noisyPercent is how much CPU (percent of one core) other processes may
// use during a run before its result carries a warning.
const noisyPercent = 20

// finish marks the result failed if anything was lost.
func (r *Result) finish() {
	if len(r.Server.PIDs) > 0 && r.Idle == nil && r.Server.CPUPercent < 25 {
		why := "a lock, a timer, the network"
		if r.Server.DiskWait >= 0.1 || r.Machine.IOWaitPercent >= 10 {
			why = fmt.Sprintf("the disk: %.1f of its threads in disk wait on average, machine iowait %.0f%%", r.Server.DiskWait, r.Machine.IOWaitPercent)
		}
		r.Notes = append(r.Notes, fmt.Sprintf("the server used only %.0f%% of a core: it was mostly waiting (%s)", r.Server.CPUPercent, why))
	}
	for _, p := range r.Server.Exited {
		r.Failures = append(r.Failures, fmt.Sprintf("server process %d exited during the run", p))
	}
	if r.Machine.OtherPercent > noisyPercent {
		r.Notes = append(r.Notes, fmt.Sprintf("other processes used %.0f%% of a core during the run (%s): these numbers are not reliable", r.Machine.OtherPercent, r.Machine.Others))
	}
	r.Failures = append(r.Failures, r.Loss.Failures()...)
	r.Failed = len(r.Failures) > 0
}

// round is, for the floor workload, the time it takes at the measured rate
// to write one frame to every connection: the least a subscriber of that
// many waits for its turn on this machine.
func (r *Result) round() time.Duration {
	if r.DeliveryRate <= 0 {
		return 0
	}
	return time.Duration(float64(r.Subscribers) / r.DeliveryRate * float64(time.Second))
}

// printResult writes a result as a two-column table.
func printResult(w io.Writer, r *Result) {
	status := "OK"
	if r.Failed {
		status = "FAILED: " + strings.Join(r.Failures, ", ")
	}
	rows := [][2]string{
		{"workload", r.Workload + " (" + r.Desc + ")"},
		{"target", r.Target},
		{"result", status},
		{"measured for", fmtDuration(r.Elapsed)},
	}
	switch {
	case r.FrameGap != nil:
		rows = append(rows,
			[2]string{"frames", fmt.Sprintf("%s read of %s written: %s/s (%.1f a read)", fmtCount(r.Deliveries), fmtCount(r.Sent), fmtRate(r.DeliveryRate), r.DeliveriesPerRead)},
			[2]string{"gap between frames", fmtSummary(*r.FrameGap)},
			[2]string{"shortest round", fmt.Sprintf("%s: a frame to each of the %d connections, at that rate", fmtDuration(r.round()), r.Subscribers)},
		)
	case r.Idle != nil:
		rows = append(rows,
			[2]string{"connections", fmt.Sprintf("%d open (%d failed) from %d processes", r.Idle.Connections, r.Idle.Failed, r.Idle.Processes)},
			[2]string{"server RSS", fmt.Sprintf("%s before, %s after", fmtKB(r.Idle.RSSBeforeKB), fmtKB(r.Idle.RSSAfterKB))},
			[2]string{"server RSS per connection", fmt.Sprintf("%.1f KiB", r.Idle.PerConnKB)},
		)
	default:
		rows = append(rows, [2]string{"published", fmt.Sprintf("%s acknowledged of %s sent: %s/s", fmtCount(r.Published), fmtCount(r.Sent), fmtRate(r.PublishRate))})
		if r.AckLatency != nil {
			rows = append(rows, [2]string{"publish→reply", fmtSummary(*r.AckLatency)})
		}
		if r.Commit != nil && r.AckLatency != nil {
			rows = append(rows, [2]string{"commits", r.Commit.describe(r.Published, r.AckLatency.Mean)})
		}
		if r.LogSync != nil {
			rows = append(rows, [2]string{"leader's log", r.LogSync.describe(r.Elapsed, r.Published)})
		}
		if r.Subscribers > 0 {
			rows = append(rows,
				[2]string{"deliveries", fmt.Sprintf("%s of %s expected, to %d subscribers: %s/s (%.1f per read)", fmtCount(r.Deliveries), fmtCount(r.Expected), r.Subscribers, fmtRate(r.DeliveryRate), r.DeliveriesPerRead)},
			)
			if r.Latency != nil {
				rows = append(rows, [2]string{"publish→receipt", fmtSummary(*r.Latency)})
			}
		}
	}
	rows = append(rows,
		[2]string{"server CPU, RSS", fmtProc(r.Server)},
		[2]string{"tool CPU, RSS", fmtProc(r.Tool)},
		[2]string{"machine CPU", fmtMachine(r.Machine)},
	)
	if r.Verified != "" {
		rows = append(rows, [2]string{"verified", r.Verified})
	}
	for _, n := range r.Notes {
		rows = append(rows, [2]string{"note", n})
	}
	width := 0
	for _, row := range rows {
		width = max(width, len(row[0]))
	}
	for _, row := range rows {
		fmt.Fprintf(w, "  %-*s  %s\n", width, row[0], row[1])
	}
}

func fmtProc(p ProcStats) string {
	if len(p.PIDs) == 0 {
		return "not measured (no pid)"
	}
	disk := ""
	if p.DiskWait >= 0.05 {
		disk = fmt.Sprintf("; %.1f threads waiting for the disk on average", p.DiskWait)
	}
	return fmt.Sprintf("%.0f%% of a core (%.1f s; %d cores), RSS %s (max %s)%s",
		p.CPUPercent, p.CPUSeconds, runtime.NumCPU(), fmtKB(p.RSSEndKB), fmtKB(p.RSSMaxKB), disk)
}

func fmtMachine(m MachineStats) string {
	others := ""
	if m.Others != "" {
		others = ": " + m.Others
	}
	kernel := ""
	if m.Kernel != "" {
		kernel = ": " + m.Kernel
	}
	return fmt.Sprintf("%.0f%% busy of %d%%; interrupts %.0f%%; other processes %.0f%%%s; kernel threads %.0f%%%s; iowait %.0f%%; steal %.0f%%",
		m.BusyPercent, 100*m.Cores, m.IRQPercent, m.OtherPercent, others, m.KernelPercent, kernel, m.IOWaitPercent, m.StealPercent)
}

func fmtSummary(s Summary) string {
	return fmt.Sprintf("p50 %s  p99 %s  p99.9 %s  max %s  (mean %s, n=%s)",
		fmtDuration(s.P50), fmtDuration(s.P99), fmtDuration(s.P999), fmtDuration(s.Max), fmtDuration(s.Mean), fmtCount(s.Count))
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func fmtKB(kb int64) string {
	if kb >= 10<<10 {
		return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
	}
	return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
}

// fmtCount writes n with thousands separators.
func fmtCount(n uint64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtRate(r float64) string { return fmtCount(uint64(r + 0.5)) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress prints a line every interval while a workload runs.
type progress struct {
	w        io.Writer
	interval time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

// startProgress calls line every interval and prints what it returns; a
// zero interval or nil writer prints nothing.
func startProgress(w io.Writer, interval time.Duration, line func(elapsed time.Duration) string) *progress {
	p := &progress{w: w, interval: interval, stop: make(chan struct{})}
	if w == nil || interval <= 0 {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t0 := time.Now()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				fmt.Fprintln(p.w, line(time.Since(t0).Round(100*time.Millisecond)))
			}
		}
	}()
	return p
}

// end stops the progress lines; it may be called more than once.
func (p *progress) end() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// rateMeter turns a growing total into a rate per interval.
type rateMeter struct {
	last  uint64
	lastT time.Time
}

func (m *rateMeter) rate(total uint64) float64 {
	now := time.Now()
	var r float64
	if !m.lastT.IsZero() {
		r = float64(total-m.last) / now.Sub(m.lastT).Seconds()
	}
	m.last, m.lastT = total, now
	return r
}
