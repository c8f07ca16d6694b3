package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/internal/heraldbin"
)

// heraldBin is the herald binary the tests run, built once with the race
// detector.
var heraldBin string

func TestMain(m *testing.M) { heraldbin.Main(m, "../herald", &heraldBin) }

// TestChaos is the short fault run CI makes on every change: a minute of
// publishes and subscriptions on three race-detector builds of herald while
// every kind of fault is injected, then the full check. CHAOS_DURATION and
// CHAOS_SEED change the length and the seed; a failure prints the seed.
func TestChaos(t *testing.T) {
	d := 60 * time.Second
	if v := os.Getenv("CHAOS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("CHAOS_DURATION: %v", err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED: %v", err)
		}
	}
	t.Logf("seed %d (replay: CHAOS_SEED=%d go test -race -run TestChaos ./cmd/herald-chaos/)", seed, seed)
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	sum, err := run(context.Background(), options{Herald: heraldBin, Duration: d, Seed: seed, Dir: dir,
		Rate: 60, Logger: logger})
	if err != nil {
		dumpLogs(t, dir)
		t.Fatalf("seed %d: %v", seed, err)
	}
	var b strings.Builder
	sum.print(&b)
	t.Log("\n" + b.String())
	if err := sum.writeJSON(filepath.Join(dir, "summary.json")); err != nil {
		t.Fatal(err)
	}
	if sum.Publishes.Acknowledged == 0 {
		t.Errorf("no publish was acknowledged: the workload did not run")
	}
	if sum.FaultsTotal == 0 {
		t.Errorf("no fault was injected")
	}
	if !sum.OK {
		dumpLogs(t, dir)
		t.Fatalf("seed %d: %d anomalies (see above)", seed, len(sum.Anomalies))
	}
}

// dumpLogs prints the tail of every node's log.
func dumpLogs(t *testing.T, dir string) {
	for i := range nodes {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)))
		if err != nil {
			continue
		}
		if len(b) > 20000 {
			b = b[len(b)-20000:]
		}
		t.Logf("n%d log (tail):\n%s", i+1, b)
	}
}

// testWriter sends the harness's progress log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
