package main

import (
	"strings"
	"testing"
	"time"
)

// goodObservation is a consistent run: three messages on one channel, all
// acknowledged, on three nodes, seen by one subscriber.
func goodObservation() observation {
	msgs := []historyMsg{{1, 100, "a"}, {2, 101, "b"}, {3, 102, "c"}}
	obs := observation{Channels: []string{"ch"}}
	for i, p := range []string{"a", "b", "c"} {
		obs.Ops = append(obs.Ops, publishOp{ID: int64(i + 1), Channel: "ch", Payload: p, Command: "HERALD.PUBLISH",
			Start: time.Duration(i) * time.Second, End: time.Duration(i)*time.Second + 500*time.Millisecond,
			Outcome: outcomeOK, Epoch: 7, Seq: uint64(i + 1)})
	}
	for range 3 {
		obs.Nodes = append(obs.Nodes, map[string]channelState{"ch": {Epoch: 7, First: 1, Last: 3, Retained: 3,
			Messages: append([]historyMsg(nil), msgs...)}})
	}
	obs.Subs = []subResult{{Name: "s", Got: map[string][]delivery{"ch": {{0, 7, 1, "a"}, {0, 7, 2, "b"}, {0, 7, 3, "c"}}}}}
	return obs
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(o *observation)
		want   []string // anomaly kinds expected
	}{
		{"consistent", func(o *observation) {}, nil},
		{"lost acknowledged publish", func(o *observation) {
			o.Ops = append(o.Ops, publishOp{ID: 9, Channel: "ch", Payload: "d", Outcome: outcomeOK, Epoch: 7, Seq: 4, Start: 5 * time.Second, End: 6 * time.Second})
		}, []string{"lost"}},
		{"acknowledged at another position", func(o *observation) { o.Ops[1].Seq = 3; o.Ops[1].Start = 3 * time.Second }, []string{"wrong-position", "conflict", "real-time-order"}},
		{"indeterminate applied twice", func(o *observation) {
			o.Ops = append(o.Ops, publishOp{ID: 9, Channel: "ch", Payload: "d", Outcome: outcomeInfo})
			for _, n := range o.Nodes {
				cs := n["ch"]
				cs.Messages = append(cs.Messages, historyMsg{4, 103, "d"}, historyMsg{5, 104, "d"})
				cs.Last, cs.Retained = 5, 5
				n["ch"] = cs
			}
			o.Subs = nil
		}, []string{"duplicate"}},
		{"refused publish appears", func(o *observation) { o.Ops[2].Outcome = outcomeFail; o.Ops[2].Seq = 0 }, []string{"failed-appeared"}},
		{"a node diverges", func(o *observation) {
			cs := o.Nodes[2]["ch"]
			cs.Messages = []historyMsg{{1, 100, "a"}, {2, 101, "c"}, {3, 102, "b"}}
			o.Nodes[2]["ch"] = cs
		}, []string{"divergence", "conflict"}},
		{"gap in history", func(o *observation) {
			for _, n := range o.Nodes {
				cs := n["ch"]
				cs.Messages = []historyMsg{{1, 100, "a"}, {3, 102, "c"}}
				cs.Retained = 2
				n["ch"] = cs
			}
		}, []string{"gap", "lost", "sub-mismatch"}},
		{"phantom message", func(o *observation) { o.Ops = o.Ops[:2] }, []string{"phantom"}},
		{"numbered against real time", func(o *observation) {
			o.Ops[2].Start, o.Ops[2].End = 0, 100*time.Millisecond // c acknowledged before b was sent
			o.Ops[1].Start = 200 * time.Millisecond
		}, []string{"real-time-order"}},
		{"subscriber misses a message", func(o *observation) { o.Subs[0].Got["ch"] = []delivery{{0, 7, 1, "a"}, {0, 7, 3, "c"}} }, []string{"sub-gap"}},
		{"subscriber sees a message twice", func(o *observation) {
			o.Subs[0].Got["ch"] = []delivery{{0, 7, 1, "a"}, {0, 7, 2, "b"}, {1, 7, 2, "b"}, {0, 7, 3, "c"}}
		}, []string{"sub-duplicate"}},
		{"subscriber stops early", func(o *observation) { o.Subs[0].Got["ch"] = o.Subs[0].Got["ch"][:2] }, []string{"sub-incomplete"}},
		{"subscriber gets another payload", func(o *observation) { o.Subs[0].Got["ch"][1].Payload = "x" }, []string{"sub-mismatch", "conflict"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := goodObservation()
			tc.mutate(&obs)
			r := check(obs)
			var got []string
			for k := range r.counts {
				got = append(got, k)
			}
			for _, k := range tc.want {
				if r.counts[k] == 0 {
					t.Errorf("no %s anomaly; got %v: %+v", k, got, r.list)
				}
			}
			if len(r.counts) != len(tc.want) {
				t.Errorf("anomaly kinds %v, want exactly %v: %+v", got, tc.want, r.list)
			}
			for _, a := range r.list {
				if strings.TrimSpace(a.Detail) == "" {
					t.Errorf("anomaly without evidence: %+v", a)
				}
			}
		})
	}
}
