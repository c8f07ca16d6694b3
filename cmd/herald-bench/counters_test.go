package main

import (
	"math"
	"testing"
	"time"
)

func TestCountersBetween(t *testing.T) {
	a := serverCounters{leader: "n1", syncWrites: 100, syncSeconds: 0.05, entries: 40, commitSecs: 0.1, nodes: 3}
	b := serverCounters{leader: "n1", syncWrites: 1100, syncSeconds: 0.65, entries: 540, commitSecs: 1.1, nodes: 3}
	ls := logSyncBetween(a, b)
	if ls == nil || ls.Node != "n1" || ls.Writes != 1000 || math.Abs(ls.Seconds-0.6) > 1e-9 {
		t.Fatalf("log syncs between %+v and %+v: %+v", a, b, ls)
	}
	want := "1,000 synced writes (500/s), 600µs each on average, 30% of the run; 3 publishes a write"
	if s := ls.describe(2*time.Second, 3000); s != want {
		t.Errorf("describe: %q\nwant       %q", s, want)
	}
	cs := commitsBetween(a, b)
	if cs == nil || cs.Entries != 500 || math.Abs(cs.Seconds-1) > 1e-9 {
		t.Fatalf("commits between %+v and %+v: %+v", a, b, cs)
	}
	want = "500 entries of 6.0 publishes, 2.00ms each on average from proposal to applied, of a publish's 4.00ms round trip"
	if s := cs.describe(3000, 4*time.Millisecond); s != want {
		t.Errorf("describe: %q\nwant       %q", s, want)
	}

	redis := serverCounters{}
	moved := b
	moved.leader = "n2"
	oneLess := b
	oneLess.nodes = 2
	for _, c := range []struct {
		name         string
		a, b         serverCounters
		sync, commit bool // whether each is reported
	}{
		{"redis-server", redis, redis, false, false},
		{"no counters before", redis, b, false, false},
		{"no counters after", a, redis, false, false},
		{"leadership moved", a, moved, false, true},
		{"a node did not answer", a, oneLess, true, false},
		{"counters went back (a restart)", b, a, false, false},
	} {
		if got := logSyncBetween(c.a, c.b); (got != nil) != c.sync {
			t.Errorf("%s: log syncs %+v; want reported %v", c.name, got, c.sync)
		}
		if got := commitsBetween(c.a, c.b); (got != nil) != c.commit {
			t.Errorf("%s: commits %+v; want reported %v", c.name, got, c.commit)
		}
	}
}
