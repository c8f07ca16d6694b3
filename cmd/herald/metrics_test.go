package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// scrape GETs /metrics and returns every series by its printed name
// (herald_connections{transport="websocket"}) and value.
func scrape(t testing.TB, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// infoFields returns INFO's metrics section as name -> value.
func infoFields(t testing.TB, respAddr string) map[string]string {
	t.Helper()
	out, err := cli(t, respAddr, "INFO", "metrics")
	if err != nil {
		t.Fatalf("INFO metrics: %v: %s", err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// TestMetrics drives a real herald with redis-cli and a WebSocket client,
// scrapes /metrics over HTTP and checks the numbers, and that INFO shows
// the same ones.
func TestMetrics(t *testing.T) {
	respAddr, httpAddr := freeAddr(t), freeAddr(t)
	startHerald(t, respAddr, "--resp-addr", respAddr, "--http-addr", httpAddr, "--raft-addr", freeAddr(t), "--data-dir", t.TempDir())
	waitFor(t, 30*time.Second, "ready", func() bool { return scrape(t, httpAddr)["herald_ready"] == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws?channel=news", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// Subscribed once its resume event arrives: publishes from then on
	// reach it.
	readUntil(t, ctx, ws, `"type":"resume"`)
	sub := subscribe(t, respAddr, "SUBSCRIBE", "news", "other")
	sub.expect(t, "subscribe", "news", "1", "subscribe", "other", "2")

	for i := range 5 {
		if out, err := cli(t, respAddr, "PUBLISH", "news", "m"+strconv.Itoa(i)); err != nil || out != "2" {
			t.Fatalf("PUBLISH: %q, %v", out, err)
		}
		sub.expect(t, "message", "news", "m"+strconv.Itoa(i))
	}
	// The WebSocket client reads its five messages, so the deliveries
	// are all written.
	for got := 0; got < 5; {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("websocket read: %v", err)
		}
		got += strings.Count(string(data), `"type":"message"`)
	}

	want := map[string]float64{
		`herald_publishes_total`:                    5,
		`herald_messages_applied_total`:             5,
		`herald_deliveries_total`:                   10,
		`herald_connections{transport="websocket"}`: 1,
		`herald_connections{transport="sse"}`:       0,
		`herald_subscriptions`:                      3,
		`herald_channels`:                           2,
		`herald_slow_consumer_disconnects_total`:    0,
		`herald_dropped_messages_total`:             0,
		`herald_raft_leader`:                        1,
		`herald_raft_state{state="Leader"}`:         1,
		`herald_raft_state{state="Follower"}`:       0,
		`herald_raft_nodes`:                         1,
		`herald_ready`:                              1,
	}
	m := scrape(t, httpAddr)
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	// The subscriber's connection and the ones redis-cli opened to publish.
	if got := m[`herald_connections{transport="resp"}`]; got < 1 {
		t.Errorf("resp connections = %v, want at least 1", got)
	}
	if got := m["herald_resp_commands_total"]; got < 6 {
		t.Errorf("herald_resp_commands_total = %v, want at least 6", got)
	}
	if got := m["herald_commit_seconds_count"]; got < 1 || got > 5 {
		t.Errorf("herald_commit_seconds_count = %v, want 1 to 5 (one per log entry)", got)
	}
	if got := m["herald_apply_seconds_count"]; got < 1 {
		t.Errorf("herald_apply_seconds_count = %v, want at least 1", got)
	}
	// Each PUBLISH waited for its own entry's synced write.
	if got := m["herald_log_sync_seconds_count"]; got < 5 || m["herald_log_sync_seconds_sum"] <= 0 {
		t.Errorf("herald_log_sync_seconds count %v, sum %v: want at least 5 writes, taking some time", got, m["herald_log_sync_seconds_sum"])
	}
	if m["herald_pebble_disk_bytes"] <= 0 || m["herald_raft_applied_index"] <= 0 {
		t.Errorf("pebble disk bytes %v, applied index %v: want both > 0", m["herald_pebble_disk_bytes"], m["herald_raft_applied_index"])
	}

	// INFO metrics shows the same numbers under the same names.
	info := infoFields(t, respAddr)
	for k, v := range map[string]string{
		"publishes_total": "5", "deliveries_total": "10", "connections_websocket": "1",
		"subscriptions": "3", "raft_state_leader": "1", "ready": "1",
		"raft_leader": "1", // herald-bench finds the leader by it
	} {
		if info[k] != v {
			t.Errorf("INFO metrics %s = %q, want %q", k, info[k], v)
		}
	}
	for _, k := range []string{"commit_seconds_count", "log_sync_seconds_count"} {
		if n, err := strconv.Atoi(info[k]); err != nil || n < 1 {
			t.Errorf("INFO metrics %s = %q", k, info[k])
		}
	}

	// The state machine writes a checkpoint once 250 ms have passed, at
	// the next batch it applies.
	waitFor(t, 10*time.Second, "a checkpoint", func() bool {
		if _, err := cli(t, respAddr, "PUBLISH", "tick", "x"); err != nil {
			t.Fatal(err)
		}
		m := scrape(t, httpAddr)
		return m["herald_raft_checkpoint_index"] > 0 && m["herald_checkpoint_seconds_count"] > 0
	})
	if m := scrape(t, httpAddr); m["herald_raft_checkpoint_index"] > m["herald_raft_applied_index"] {
		t.Errorf("checkpoint index %v past the applied index %v", m["herald_raft_checkpoint_index"], m["herald_raft_applied_index"])
	}

	// Closing the WebSocket takes it off the gauge.
	ws.Close(websocket.StatusNormalClosure, "")
	waitFor(t, 10*time.Second, "websocket gauge to drop", func() bool {
		return scrape(t, httpAddr)[`herald_connections{transport="websocket"}`] == 0
	})
}

// TestConfigSetLogLevel changes the log level at run time: debug lines,
// with connection ids, appear only after CONFIG SET loglevel debug.
func TestConfigSetLogLevel(t *testing.T) {
	respAddr := freeAddr(t)
	p := startHerald(t, respAddr, "--resp-addr", respAddr, "--http-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--data-dir", t.TempDir())
	if out, _ := cli(t, respAddr, "CONFIG", "GET", "loglevel"); out != "loglevel\nnotice" {
		t.Fatalf("CONFIG GET loglevel: %q", out)
	}
	if strings.Contains(p.logs(), "client connected") {
		t.Fatal("debug line logged at level info")
	}
	if out, _ := cli(t, respAddr, "CONFIG", "SET", "loglevel", "loud"); !strings.Contains(out, "argument(s) must be one of the following") {
		t.Fatalf("CONFIG SET loglevel loud: %q", out)
	}
	if out, err := cli(t, respAddr, "CONFIG", "SET", "loglevel", "debug"); err != nil || out != "OK" {
		t.Fatalf("CONFIG SET loglevel debug: %q, %v", out, err)
	}
	if out, _ := cli(t, respAddr, "CONFIG", "GET", "loglevel"); out != "loglevel\ndebug" {
		t.Fatalf("CONFIG GET loglevel after SET: %q", out)
	}
	cli(t, respAddr, "PING")
	waitFor(t, 10*time.Second, "a debug line with a client id", func() bool {
		return strings.Contains(p.logs(), "msg=\"client connected\" server=resp client=")
	})
	if out, err := cli(t, respAddr, "CONFIG", "SET", "loglevel", "warning"); err != nil || out != "OK" {
		t.Fatalf("CONFIG SET loglevel warning: %q, %v", out, err)
	}
	before := strings.Count(p.logs(), "client connected")
	cli(t, respAddr, "PING")
	if after := strings.Count(p.logs(), "client connected"); after != before {
		t.Fatalf("debug lines logged at level warning: %d, then %d", before, after)
	}
}
