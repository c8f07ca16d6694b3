package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Herald's own counters, read with INFO metrics before and after a publish
// run: what the run spent in the log.

// LogSyncStats is what the leader's Raft log spent in synced writes during
// a run, from Herald's INFO metrics (log_sync_seconds): every publish
// waits for one, so their share of the run is the disk's share of the
// publish path.
type LogSyncStats struct {
	Node    string  `json:"node"` // the leader's RESP address
	Writes  uint64  `json:"writes"`
	Seconds float64 `json:"seconds"`
}

// CommitStats is the log entries of publishes committed during a run and
// the time they took, from proposing one to its being applied on the
// leader, summed over the nodes published to (INFO metrics
// commit_seconds): the part of a publish's round trip spent in the log.
type CommitStats struct {
	Entries uint64  `json:"entries"`
	Seconds float64 `json:"seconds"`
}

// serverCounters is one reading of Herald's counters.
type serverCounters struct {
	leader      string // the leading node's address; empty: none answered as the leader
	syncWrites  uint64
	syncSeconds float64
	entries     uint64 // every node's commit_seconds_count, summed
	commitSecs  float64
	nodes       int // nodes that answered with the counters
}

// readCounters asks each address for INFO metrics. A server without
// Herald's counters (redis-server) counts as no node.
func readCounters(ctx context.Context, addrs []string) serverCounters {
	var c serverCounters
	for _, addr := range addrs {
		f, err := infoMetrics(ctx, addr)
		if err != nil {
			continue
		}
		entries, err1 := strconv.ParseUint(f["commit_seconds_count"], 10, 64)
		commitSecs, err2 := strconv.ParseFloat(f["commit_seconds_sum"], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		c.nodes++
		c.entries += entries
		c.commitSecs += commitSecs
		if f["raft_leader"] != "1" {
			continue
		}
		writes, err1 := strconv.ParseUint(f["log_sync_seconds_count"], 10, 64)
		seconds, err2 := strconv.ParseFloat(f["log_sync_seconds_sum"], 64)
		if err1 == nil && err2 == nil {
			c.leader, c.syncWrites, c.syncSeconds = addr, writes, seconds
		}
	}
	return c
}

// infoMetrics returns the fields of INFO's metrics section at addr.
func infoMetrics(ctx context.Context, addr string) (map[string]string, error) {
	conn, rd, err := dialCheck(ctx, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	v, err := roundTrip(conn, rd, "INFO", "metrics")
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
// or nil unless both found the same leader (leadership moved, or the
// server has no such counters).
func logSyncBetween(before, after serverCounters) *LogSyncStats {
	if before.leader == "" || before.leader != after.leader || after.syncWrites < before.syncWrites {
		return nil
	}
	return &LogSyncStats{Node: after.leader, Writes: after.syncWrites - before.syncWrites, Seconds: after.syncSeconds - before.syncSeconds}
}

// commitsBetween returns the entries committed between two readings, or
// nil unless both read the same number of nodes (a node that did not
// answer once would make the difference meaningless).
func commitsBetween(before, after serverCounters) *CommitStats {
	if before.nodes == 0 || before.nodes != after.nodes || after.entries < before.entries {
		return nil
	}
	return &CommitStats{Entries: after.entries - before.entries, Seconds: after.commitSecs - before.commitSecs}
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

// mean returns an entry's average commit time.
func (s *CommitStats) mean() time.Duration {
	if s.Entries == 0 {
		return 0
	}
	return time.Duration(s.Seconds / float64(s.Entries) * 1e9)
}

// describe renders the stats beside the run's mean publish→reply.
func (s *CommitStats) describe(published uint64, ack time.Duration) string {
	if s.Entries == 0 {
		return "no entries committed"
	}
	return fmt.Sprintf("%s entries of %.1f publishes, %s each on average from proposal to applied, of a publish's %s round trip",
		fmtCount(s.Entries), float64(published)/float64(s.Entries), fmtDuration(s.mean()), fmtDuration(ack))
}
