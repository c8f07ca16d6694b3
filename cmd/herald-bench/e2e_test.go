package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/raftstore/raftstoretest"
	"github.com/herald-broker/herald/resp"
	"github.com/herald-broker/herald/wsbridge"
)

// TestMain lets the idle and floor workloads re-execute the test binary as
// a worker, as they re-execute herald-bench.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker-idle" {
		os.Exit(workerIdle(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "worker-floor" {
		os.Exit(workerFloor(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// heraldServer is a single-node Herald in this process: the broker, a real
// Raft store on Pebble, and the RESP and HTTP servers on random ports.
type heraldServer struct {
	resp string
	ws   string
}

func startHeraldInProcess(t *testing.T) heraldServer {
	t.Helper()
	b := broker.New(broker.Config{})
	// The log's synced writes and the commits, counted as cmd/herald
	// counts them for INFO.
	var syncs, commits atomic.Uint64
	var syncNanos, commitNanos atomic.Int64
	raftstoretest.Open(t, b, raftstore.Config{
		ObserveLogSync: func(d time.Duration, _ int) {
			syncNanos.Add(int64(d))
			syncs.Add(1)
		},
		ObserveCommit: func(d time.Duration, _ int) {
			commitNanos.Add(int64(d))
			commits.Add(1)
		},
	})
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := resp.New(b, resp.Config{InfoFields: func() [][2]string {
		return [][2]string{
			{"raft_leader", "1"},
			{"log_sync_seconds_count", strconv.FormatUint(syncs.Load(), 10)},
			{"log_sync_seconds_sum", strconv.FormatFloat(time.Duration(syncNanos.Load()).Seconds(), 'f', 6, 64)},
			{"commit_seconds_count", strconv.FormatUint(commits.Load(), 10)},
			{"commit_seconds_sum", strconv.FormatFloat(time.Duration(commitNanos.Load()).Seconds(), 'f', 6, 64)},
		}
	}})
	go rs.Serve(rl)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := wsbridge.New(b, wsbridge.Config{})
	go hs.Serve(hl)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rs.Shutdown(ctx)
		hs.Shutdown(ctx)
	})
	return heraldServer{resp: rl.Addr().String(), ws: "ws://" + hl.Addr().String() + "/ws"}
}

func testCommon(h heraldServer) common {
	return common{
		addrs: []string{h.resp}, wsURLs: []string{h.ws}, pids: []int{os.Getpid()}, name: "in-process",
		duration: time.Second, messages: 20_000, setup: 30 * time.Second,
	}
}

// checkRun fails the test unless the run lost nothing and moved messages.
func checkRun(t *testing.T, res *Result, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printResult(&b, res)
	t.Logf("\n%s", b.String())
	if res.Failed || res.Loss != (Loss{}) {
		t.Fatalf("run failed: %v (%+v)", res.Failures, res.Loss)
	}
	if res.Published == 0 || res.PublishRate <= 0 {
		t.Fatalf("published %d at %.0f/s", res.Published, res.PublishRate)
	}
	if res.Subscribers > 0 && (res.Deliveries != res.Expected || res.DeliveryRate <= 0 || res.Latency.Count != res.Deliveries) {
		t.Fatalf("delivered %d of %d at %.0f/s, %d latencies", res.Deliveries, res.Expected, res.DeliveryRate, res.Latency.Count)
	}
	if len(res.Server.PIDs) == 0 || res.Server.RSSEndKB == 0 {
		t.Fatalf("server not measured: %+v", res.Server)
	}
}

func TestPublishWorkload(t *testing.T) {
	h := startHeraldInProcess(t)
	for _, v := range []verb{verbPublish, verbHeraldPublish} {
		t.Run(string(v), func(t *testing.T) {
			res, err := runPublish(context.Background(), publishConfig{common: testCommon(h), conns: 4, pipeline: 8, size: 64, channels: 2, verb: v, verify: true})
			checkRun(t, res, err)
			if !strings.Contains(res.Verified, "as acknowledged") {
				t.Fatalf("server state not verified: %q %v", res.Verified, res.Notes)
			}
			// Every publish waited for a synced write of the log, and
			// a write held at least one publish.
			if ls := res.LogSync; ls == nil || ls.Node != h.resp || ls.Writes == 0 || ls.Writes > res.Published || ls.Seconds <= 0 {
				t.Fatalf("leader's log writes: %+v, for %d publishes", ls, res.Published)
			}
			// Every entry held at least one publish, and a publish's round
			// trip includes its entry's commit.
			if cs := res.Commit; cs == nil || cs.Entries == 0 || cs.Entries > res.Published || cs.mean() <= 0 || cs.mean() > res.AckLatency.Max {
				t.Fatalf("commits: %+v, for %d publishes (slowest reply %s)", cs, res.Published, res.AckLatency.Max)
			}
		})
	}
}

// startTestRedis starts a redis-server as the suite does (durable: with
// appendfsync always) and returns it with a connection to it.
func startTestRedis(t *testing.T, durable bool) (*target, net.Conn, *respReader) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: install it (make deps, or apt-get install -y redis-server)")
	}
	srv, err := startRedis(context.Background(), bin, t.TempDir(), durable)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)
	conn, err := net.Dial("tcp", srv.addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, conn, newRESPReader(conn, 64<<10)
}

// TestPublishXAdd runs the publish workload as XADD against a real
// redis-server in its durable mode, as the suite's redis-aof target does:
// every publish is acknowledged, and the streams account for each one.
func TestPublishXAdd(t *testing.T) {
	ctx := context.Background()
	srv, conn, rd := startTestRedis(t, true)
	addr := srv.addrs()[0]
	if v, err := roundTrip(conn, rd, "CONFIG", "GET", "appendfsync"); err != nil || v.String() != `["appendfsync" "always"]` {
		t.Fatalf("CONFIG GET appendfsync: %v %v, want always", v, err)
	}

	c := common{addrs: []string{addr}, pids: srv.pids(), name: "redis-aof", duration: 10 * time.Second, messages: 20_000, setup: 30 * time.Second}
	res, err := runPublish(ctx, publishConfig{common: c, conns: 4, pipeline: 8, size: 64, channels: 3, verb: verbXAdd, verify: true})
	checkRun(t, res, err)
	if res.Published != 20_000 || !strings.HasPrefix(res.Verified, "XINFO STREAM: 20,000 messages committed over 3 channels") {
		t.Fatalf("published %d, verified %q %v: want all 20,000 found in the streams", res.Published, res.Verified, res.Notes)
	}
	// Trimmed as Herald retains: about xaddMaxLen entries a stream.
	keys, err := roundTrip(conn, rd, "KEYS", "hb:*")
	if err != nil || len(keys.elems) != 3 {
		t.Fatalf("KEYS hb:*: %v %v, want the 3 streams", keys, err)
	}
	for _, k := range keys.elems {
		n, err := roundTrip(conn, rd, "XLEN", string(k.str))
		if err != nil || n.num < xaddMaxLen || n.num > 2*xaddMaxLen {
			t.Fatalf("XLEN %s: %v %v, want about %d", k.str, n, err, xaddMaxLen)
		}
	}
}

// TestVerifyStreams: the count XINFO STREAM gives must match what was
// acknowledged, or the run fails.
func TestVerifyStreams(t *testing.T) {
	ctx := context.Background()
	srv, conn, rd := startTestRedis(t, false)
	addr := srv.addrs()[0]
	for _, s := range []string{"a", "b", "b"} {
		if _, err := roundTrip(conn, rd, "XADD", s, "*", "m", "x"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		published, errs uint64
		names           []string
		ok              bool
		note            string
	}{
		{3, 0, []string{"a", "b"}, true, ""},
		{2, 1, []string{"a", "b"}, true, ""}, // one failed reply that did commit
		{4, 0, []string{"a", "b"}, false, ""},
		{2, 0, []string{"a", "b"}, false, ""},
		{3, 0, []string{"a", "b", "c"}, false, "not verified: XINFO: ERR no such key"},
	} {
		res := &Result{Published: c.published, Loss: Loss{Errors: c.errs}}
		verifyChannels(ctx, addr, c.names, verbXAdd, res)
		switch {
		case c.note != "":
			if len(res.Notes) != 1 || res.Notes[0] != c.note || res.Verified != "" || len(res.Failures) != 0 {
				t.Errorf("%+v: verified %q, failures %v, notes %q: want the note %q", c, res.Verified, res.Failures, res.Notes, c.note)
			}
		case c.ok != (res.Verified != "") || c.ok == (len(res.Failures) > 0):
			t.Errorf("%+v: verified %q, failures %v, notes %v", c, res.Verified, res.Failures, res.Notes)
		}
	}
}

func TestFanoutWorkload(t *testing.T) {
	h := startHeraldInProcess(t)
	cases := []struct {
		name string
		cfg  fanoutConfig
	}{
		{"resp max rate", fanoutConfig{transport: "resp", channels: 2, subscribers: 20, publishers: 2, window: 16}},
		{"resp herald.subscribe", fanoutConfig{transport: "resp", heraldSub: true, verb: verbHeraldPublish, channels: 1, subscribers: 10, publishers: 1, window: 16}},
		{"ws max rate", fanoutConfig{transport: "ws", channels: 2, subscribers: 20, publishers: 3, window: 16}},
		{"ws fixed rate", fanoutConfig{transport: "ws", channels: 1, subscribers: 20, publishers: 1, rate: 200}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.common = testCommon(h)
			cfg.pipeline, cfg.size, cfg.drain, cfg.dialers = 32, 64, 10*time.Second, 8
			res, err := runFanout(context.Background(), cfg)
			checkRun(t, res, err)
			// A fixed rate is a ceiling: messages are sent when due, so no
			// more than rate × duration (and one per publisher at the
			// start) can go out. How close a loaded machine gets to it is
			// for benchmarks to say, not tests.
			if limit := cfg.rate*cfg.duration.Seconds() + float64(cfg.publishers); cfg.rate > 0 && float64(res.Sent) > limit {
				t.Fatalf("sent %d messages in %s at %.0f/s: more than the %.0f due", res.Sent, cfg.duration, cfg.rate, limit)
			}
		})
	}
}

// TestClusterWorkload publishes on every node of a three-node cluster and
// subscribes on all of them: every subscriber must get every message, in
// each publisher's order, whichever node it came through.
func TestClusterWorkload(t *testing.T) {
	c := raftstoretest.OpenCluster(t, 3, broker.Config{}, raftstore.Config{})
	var addrs []string
	for _, b := range c.Brokers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rs := resp.New(b, resp.Config{})
		go rs.Serve(ln)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			rs.Shutdown(ctx)
		})
		addrs = append(addrs, ln.Addr().String())
	}
	cfg := fanoutConfig{common: common{addrs: addrs, pids: []int{os.Getpid()}, name: "cluster", duration: time.Second, messages: 5000, setup: 30 * time.Second},
		transport: "resp", channels: 2, subscribers: 9, publishers: 3, pipeline: 32, size: 64, window: 16, drain: 10 * time.Second, dialers: 8}
	res, err := runFanout(context.Background(), cfg)
	checkRun(t, res, err)
	if res.Workload != "cluster" {
		t.Fatalf("workload %q", res.Workload)
	}
}

// TestFanoutDetectsLoss runs a fan-out against a server that drops a
// message: the run must fail, and say what was lost.
func TestFanoutDetectsLoss(t *testing.T) {
	addr := startLossyServer(t, 3)
	cfg := fanoutConfig{common: common{addrs: []string{addr}, name: "lossy", duration: time.Second, messages: 10, setup: 10 * time.Second},
		transport: "resp", channels: 1, subscribers: 2, publishers: 1, pipeline: 4, size: 64, window: 4, drain: time.Second, dialers: 2}
	res, err := runFanout(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Failed || res.Loss.Missing != 2 || res.Loss.Duplicate != 2 {
		t.Fatalf("failed %v, loss %+v: want 2 missing and 2 duplicates (one of each per subscriber)", res.Failed, res.Loss)
	}
}

func TestIdleWorkload(t *testing.T) {
	h := startHeraldInProcess(t)
	c := testCommon(h)
	res, err := runIdle(context.Background(), idleConfig{common: c, conns: 200, perProc: 100, settle: 200 * time.Millisecond, subscribe: true, dialers: 8})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printResult(&b, res)
	t.Logf("\n%s", b.String())
	if res.Failed || res.Idle.Connections != 200 || res.Idle.Processes != 2 {
		t.Fatalf("failed %v %v, idle %+v", res.Failed, res.Failures, res.Idle)
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:6379", "localhost:1", "[::1]:80", "ws://127.0.0.1:8080/ws"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"10.0.0.1:6379", "example.com:80", "ws://192.168.1.1:8080/ws", "6379"} {
		if err := checkLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
