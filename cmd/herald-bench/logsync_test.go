package main

import (
	"math"
	"testing"
	"time"
)

func TestLogSyncBetween(t *testing.T) {
	a := logSyncCounters{node: "n1", writes: 100, seconds: 0.05}
	b := logSyncCounters{node: "n1", writes: 1100, seconds: 0.65}
	got := logSyncBetween(a, b, true, true)
	if got == nil || got.Node != "n1" || got.Writes != 1000 || math.Abs(got.Seconds-0.6) > 1e-9 {
		t.Fatalf("between %+v and %+v: %+v", a, b, got)
	}
	want := "1,000 synced writes (500/s), 600µs each on average, 30% of the run; 3 publishes a write"
	if s := got.describe(2*time.Second, 3000); s != want {
		t.Errorf("describe: %q\nwant       %q", s, want)
	}
	for _, c := range []struct {
		name     string
		a, b     logSyncCounters
		okA, okB bool
	}{
		{"no counters before (redis-server)", a, b, false, true},
		{"no counters after", a, b, true, false},
		{"leadership moved", a, logSyncCounters{node: "n2", writes: 2000}, true, true},
		{"counters went back (a restart)", b, a, true, true},
	} {
		if got := logSyncBetween(c.a, c.b, c.okA, c.okB); got != nil {
			t.Errorf("%s: %+v; want none", c.name, got)
		}
	}
}
