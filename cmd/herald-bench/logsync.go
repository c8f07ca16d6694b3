package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// LogSyncStats is what the leader's Raft log spent in synced writes during
// a run, from Herald's INFO metrics (log_sync_seconds): every publish
// waits for one, so their share of the run is the disk's share of the
// publish path.
type LogSyncStats struct {
	Node    string  `json:"node"` // the leader's RESP address
	Writes  uint64  `json:"writes"`
	Seconds float64 `json:"seconds"`
}

// logSyncCounters is one reading of a leader's counters.
type logSyncCounters struct {
	node    string
	writes  uint64
	seconds float64
}

// readLogSync asks each address for INFO metrics and returns the counters
// of the one that leads. ok is false for a server without them
// (redis-server) or when no node answers as the leader.
func readLogSync(ctx context.Context, addrs []string) (c logSyncCounters, ok bool) {
	for _, addr := range addrs {
		f, err := infoMetrics(ctx, addr)
		if err != nil || f["raft_leader"] != "1" {
			continue
		}
		writes, err1 := strconv.ParseUint(f["log_sync_seconds_count"], 10, 64)
		seconds, err2 := strconv.ParseFloat(f["log_sync_seconds_sum"], 64)
		if err1 != nil || err2 != nil {
			return c, false
		}
		return logSyncCounters{node: addr, writes: writes, seconds: seconds}, true
	}
	return c, false
}

// infoMetrics returns the fields of INFO's metrics section at addr.
func infoMetrics(ctx context.Context, addr string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	v, err := roundTrip(conn, newRESPReader(conn, 64<<10), "INFO", "metrics")
	if err != nil {
		return nil, err
	}
	f := map[string]string{}
	for line := range strings.Lines(string(v.str)) {
		if k, val, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = val
		}
	}
	return f, nil
}

// logSyncBetween returns the leader's synced writes between two readings,
// or nil if they are not of the same leader (leadership moved, or the
// server has no such counters).
func logSyncBetween(before, after logSyncCounters, okBefore, okAfter bool) *LogSyncStats {
	if !okBefore || !okAfter || before.node != after.node || after.writes < before.writes {
		return nil
	}
	return &LogSyncStats{Node: after.node, Writes: after.writes - before.writes, Seconds: after.seconds - before.seconds}
}

// share returns the part of elapsed the leader spent in synced writes.
func (s *LogSyncStats) share(elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return s.Seconds / elapsed.Seconds()
}

// describe renders the stats of a run that took elapsed and had published
// messages acknowledged.
func (s *LogSyncStats) describe(elapsed time.Duration, published uint64) string {
	if s.Writes == 0 {
		return "no synced writes"
	}
	mean := time.Duration(s.Seconds / float64(s.Writes) * 1e9)
	return fmt.Sprintf("%s synced writes (%s/s), %s each on average, %.0f%% of the run; %.0f publishes a write",
		fmtCount(s.Writes), fmtRate(float64(s.Writes)/elapsed.Seconds()), fmtDuration(mean), 100*s.share(elapsed), float64(published)/float64(s.Writes))
}
