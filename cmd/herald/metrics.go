package main

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/resp"
	"github.com/herald-broker/herald/wsbridge"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metrics exports the components' counters to Prometheus at /metrics and to
// INFO's metrics section: both read one sample, taken at scrape time, and
// go through the same table, so they always show the same numbers. The
// components keep plain atomic counters and know nothing of Prometheus;
// only the latency histograms are Prometheus objects, fed by the
// store's hooks.
type metrics struct {
	// Set by serve once the components exist.
	broker *broker.Broker
	resp   *resp.Server
	http   *wsbridge.Server
	store  *raftstore.Store

	commit     prometheus.Histogram
	apply      prometheus.Histogram
	checkpoint prometheus.Histogram
	logSync    prometheus.Histogram
	reg        *prometheus.Registry
}

// sample is every component's counters at one moment.
type sample struct {
	broker broker.Stats
	resp   resp.Stats
	http   wsbridge.Stats
	raft   raftstore.Status
	ready  bool
	disk   raftstore.DiskUsage
}

// metric is one exported number. INFO names it by its Prometheus name
// without "herald_", followed by its label's value: connections_resp.
type metric struct {
	name  string
	help  string
	kind  prometheus.ValueType
	label [2]string // optional label name and value
	value func(*sample) float64
}

var (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

// raftStates are the values herald_raft_state's state label takes.
var raftStates = []string{"Leader", "Follower", "Candidate", "Shutdown"}

// metricTable lists every exported number, in docs/operations.md's order.
var metricTable = func() []metric {
	t := []metric{
		{name: "herald_connections", help: "Open client connections, by transport.", kind: gauge, label: [2]string{"transport", "resp"},
			value: func(s *sample) float64 { return float64(s.resp.Connections) }},
		{name: "herald_connections", kind: gauge, label: [2]string{"transport", "websocket"},
			value: func(s *sample) float64 { return float64(s.http.WebSocket) }},
		{name: "herald_connections", kind: gauge, label: [2]string{"transport", "sse"},
			value: func(s *sample) float64 { return float64(s.http.SSE) }},
		{name: "herald_connections", kind: gauge, label: [2]string{"transport", "longpoll"},
			value: func(s *sample) float64 { return float64(s.http.LongPoll) }},
		{name: "herald_resp_connections_accepted_total", help: "RESP connections accepted.", kind: counter,
			value: func(s *sample) float64 { return float64(s.resp.Accepted) }},
		{name: "herald_resp_connections_rejected_total", help: "RESP connections refused at --max-clients.", kind: counter,
			value: func(s *sample) float64 { return float64(s.resp.Rejected) }},
		{name: "herald_resp_commands_total", help: "RESP commands run.", kind: counter,
			value: func(s *sample) float64 { return float64(s.resp.Commands) }},
		{name: "herald_subscriptions", help: "Subscriptions of this node's clients (channels, patterns, shard channels, sequenced).", kind: gauge,
			value: func(s *sample) float64 { return float64(s.broker.Subscriptions) }},
		{name: "herald_channels", help: "Channels with at least one subscriber on this node.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.broker.Channels + s.broker.ShardChannels) }},
		{name: "herald_patterns", help: "Distinct patterns subscribed to on this node.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.broker.Patterns) }},
		{name: "herald_publishes_total", help: "Messages published through this node and acknowledged.", kind: counter,
			value: func(s *sample) float64 { return float64(s.broker.Accepted) }},
		{name: "herald_messages_applied_total", help: "Messages of the replicated log delivered to this node (whichever node they were published on).", kind: counter,
			value: func(s *sample) float64 { return float64(s.broker.Published) }},
		{name: "herald_deliveries_total", help: "Messages queued to this node's subscribers.", kind: counter,
			value: func(s *sample) float64 { return float64(s.broker.Delivered) }},
		{name: "herald_dropped_messages_total", help: "Frames discarded because their subscriber was disconnected as a slow consumer.", kind: counter,
			value: func(s *sample) float64 { return float64(s.broker.Dropped) }},
		{name: "herald_slow_consumer_disconnects_total", help: "Clients disconnected for passing their outbox limits.", kind: counter,
			value: func(s *sample) float64 { return float64(s.broker.SlowDisconnect) }},
		{name: "herald_outbox_bytes", help: "Bytes queued in every client's outbox.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.broker.OutboxBytes) }},
		{name: "herald_outbox_frames", help: "Frames queued in every client's outbox.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.broker.OutboxFrames) }},
		{name: "herald_ready", help: "1 when /readyz answers 200: a leader is known and this node keeps up with the log.", kind: gauge,
			value: func(s *sample) float64 { return b2f(s.ready) }},
		{name: "herald_raft_leader", help: "1 when this node is the Raft leader.", kind: gauge,
			value: func(s *sample) float64 { return b2f(s.raft.State == "Leader") }},
		{name: "herald_raft_has_leader", help: "1 when this node knows a leader.", kind: gauge,
			value: func(s *sample) float64 { return b2f(s.raft.LeaderID != "") }},
	}
	for i, st := range raftStates {
		m := metric{name: "herald_raft_state", kind: gauge, label: [2]string{"state", st},
			value: func(s *sample) float64 { return b2f(s.raft.State == st) }}
		if i == 0 {
			m.help = "1 for this node's Raft state."
		}
		t = append(t, m)
	}
	return append(t, []metric{
		{name: "herald_raft_term", help: "Current Raft term.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.raft.Term) }},
		{name: "herald_raft_commit_index", help: "Highest log index known to be committed.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.raft.CommitIndex) }},
		{name: "herald_raft_applied_index", help: "Highest log index applied on this node.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.raft.AppliedIndex) }},
		{name: "herald_raft_last_log_index", help: "Highest index in this node's log.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.raft.LastLogIndex) }},
		{name: "herald_raft_checkpoint_index", help: "Applied index of the state machine's last checkpoint in Pebble; a restart applies the entries after it again.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.raft.CheckpointIndex) }},
		{name: "herald_raft_nodes", help: "Members of the cluster configuration.", kind: gauge,
			value: func(s *sample) float64 { return float64(len(s.raft.Nodes)) }},
		{name: "herald_pebble_disk_bytes", help: "Pebble database on disk: sstables, WAL, manifest.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.disk.PebbleBytes) }},
		{name: "herald_pebble_table_bytes", help: "Live Pebble sstables.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.disk.TableBytes) }},
		{name: "herald_pebble_wal_bytes", help: "Live Pebble write-ahead log.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.disk.WALBytes) }},
		{name: "herald_pebble_memtable_bytes", help: "Pebble memtables.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.disk.MemTableBytes) }},
		{name: "herald_pebble_keyspace_bytes", help: "Estimated sstable bytes by key space.", kind: gauge, label: [2]string{"keyspace", "log"},
			value: func(s *sample) float64 { return float64(s.disk.LogBytes) }},
		{name: "herald_pebble_keyspace_bytes", kind: gauge, label: [2]string{"keyspace", "state"},
			value: func(s *sample) float64 { return float64(s.disk.StateBytes) }},
		{name: "herald_pebble_read_amp", help: "Pebble read amplification; rising means compactions lag.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.disk.ReadAmp) }},
		{name: "herald_snapshot_bytes", help: "Raft snapshots kept on disk.", kind: gauge,
			value: func(s *sample) float64 { return float64(s.disk.SnapshotBytes) }},
	}...)
}()

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// latencyBuckets span 0.5 ms to about 4 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 14)

// syncBuckets span 0.1 ms to about 6.5 s: a disk's flush takes from tens
// of microseconds (NVMe with power-loss protection) to milliseconds.
var syncBuckets = prometheus.ExponentialBuckets(0.0001, 2, 17)

func newMetrics() *metrics {
	m := &metrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_commit_seconds",
			Help:    "Time from proposing a log entry of publishes to its being committed and applied on the leader, as seen by this node (forwarding included).",
			Buckets: latencyBuckets,
		}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_apply_seconds",
			Help:    "Time to apply one batch of committed entries to the state and fan it out on this node (a checkpoint written on the way included).",
			Buckets: latencyBuckets,
		}),
		checkpoint: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_checkpoint_seconds",
			Help:    "Time to write one checkpoint of the state machine to Pebble.",
			Buckets: latencyBuckets,
		}),
		logSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_log_sync_seconds",
			Help:    "Time to store one batch of entries in this node's Raft log, synced to disk.",
			Buckets: syncBuckets,
		}),
		reg: prometheus.NewRegistry(),
	}
	m.reg.MustRegister(m.commit, m.apply, m.checkpoint, m.logSync, (*tableCollector)(m),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeCommit, observeApply, observeCheckpoint and observeLogSync are
// the store's hooks.
func (m *metrics) observeCommit(d time.Duration, _ int)     { m.commit.Observe(d.Seconds()) }
func (m *metrics) observeApply(d time.Duration, _ int)      { m.apply.Observe(d.Seconds()) }
func (m *metrics) observeCheckpoint(d time.Duration, _ int) { m.checkpoint.Observe(d.Seconds()) }
func (m *metrics) observeLogSync(d time.Duration, _ int)    { m.logSync.Observe(d.Seconds()) }

// handler serves /metrics.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) sample() *sample {
	s := &sample{broker: m.broker.Stats(), resp: m.resp.Stats(), http: m.http.Stats(), raft: m.store.Status(), disk: m.store.DiskUsage()}
	s.ready = m.store.Ready() == nil
	return s
}

// infoFields returns INFO's metrics section: the table's numbers, then the
// histograms' counts and sums.
func (m *metrics) infoFields() [][2]string {
	s := m.sample()
	var out [][2]string
	for _, mt := range metricTable {
		name := strings.TrimPrefix(mt.name, "herald_")
		if mt.label[1] != "" {
			name += "_" + strings.ToLower(mt.label[1])
		}
		out = append(out, [2]string{name, strconv.FormatFloat(mt.value(s), 'f', -1, 64)})
	}
	for _, h := range []struct {
		name string
		h    prometheus.Histogram
	}{{"commit_seconds", m.commit}, {"apply_seconds", m.apply}, {"checkpoint_seconds", m.checkpoint}, {"log_sync_seconds", m.logSync}} {
		var d dto.Metric
		if h.h.Write(&d) == nil {
			out = append(out,
				[2]string{h.name + "_count", strconv.FormatUint(d.GetHistogram().GetSampleCount(), 10)},
				[2]string{h.name + "_sum", strconv.FormatFloat(d.GetHistogram().GetSampleSum(), 'f', 6, 64)})
		}
	}
	return out
}

// tableCollector exports metricTable to Prometheus.
type tableCollector metrics

// descs holds one description per metric name.
var descs = func() map[string]*prometheus.Desc {
	out := map[string]*prometheus.Desc{}
	help := map[string]string{}
	for _, mt := range metricTable {
		if mt.help != "" {
			help[mt.name] = mt.help
		}
	}
	for _, mt := range metricTable {
		if out[mt.name] != nil {
			continue
		}
		var labels []string
		if mt.label[0] != "" {
			labels = []string{mt.label[0]}
		}
		out[mt.name] = prometheus.NewDesc(mt.name, help[mt.name], labels, nil)
	}
	return out
}()

// Describe implements prometheus.Collector.
func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	s := (*metrics)(c).sample()
	for _, mt := range metricTable {
		var labels []string
		if mt.label[0] != "" {
			labels = []string{mt.label[1]}
		}
		ch <- prometheus.MustNewConstMetric(descs[mt.name], mt.kind, mt.value(s), labels...)
	}
}
