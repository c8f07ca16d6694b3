package main

import "testing"

func TestStreamCheck(t *testing.T) {
	cases := []struct {
		name     string
		received []uint64
		acked    uint64
		want     Loss
	}{
		{"all in order", []uint64{0, 1, 2, 3}, 4, Loss{}},
		{"nothing yet", nil, 0, Loss{}},
		{"a missing one", []uint64{0, 1, 3}, 4, Loss{Missing: 1}},
		{"missing at the end", []uint64{0, 1}, 4, Loss{Missing: 2}},
		{"missing at the start", []uint64{2, 3}, 4, Loss{Missing: 2}},
		{"a duplicate", []uint64{0, 1, 1, 2}, 3, Loss{Duplicate: 1}},
		{"an old duplicate", []uint64{0, 1, 2, 0}, 3, Loss{Duplicate: 1}},
		{"out of order", []uint64{0, 2, 1, 3}, 4, Loss{OutOfOrder: 1}},
		{"out of order, then duplicated", []uint64{0, 2, 1, 1}, 3, Loss{OutOfOrder: 1, Duplicate: 1}},
		{"unacknowledged extra is fine", []uint64{0, 1, 2}, 2, Loss{}},
		{"a gap past what was acknowledged is fine", []uint64{0, 1, 5}, 2, Loss{}},
		{"everything wrong", []uint64{1, 1, 0, 4}, 6, Loss{Missing: 3, Duplicate: 1, OutOfOrder: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s streamCheck
			for _, r := range c.received {
				s.observe(r)
			}
			if got := s.loss(c.acked); got != c.want {
				t.Fatalf("loss %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestSeqCheck(t *testing.T) {
	type ev struct {
		resume     bool
		epoch, seq uint64
	}
	cases := []struct {
		name   string
		events []ev
		want   Loss
	}{
		{"contiguous after resume", []ev{{true, 5, 10}, {false, 5, 10}, {false, 5, 11}}, Loss{}},
		{"contiguous without resume", []ev{{false, 5, 10}, {false, 5, 11}}, Loss{}},
		{"resume after the first message", []ev{{false, 5, 10}, {true, 5, 11}, {false, 5, 11}}, Loss{}},
		{"gap", []ev{{true, 5, 1}, {false, 5, 1}, {false, 5, 4}}, Loss{SeqGaps: 2}},
		{"first message after resume skipped", []ev{{true, 5, 1}, {false, 5, 2}}, Loss{SeqGaps: 1}},
		{"repeat", []ev{{false, 5, 1}, {false, 5, 2}, {false, 5, 2}}, Loss{SeqBack: 1}},
		{"epoch change", []ev{{false, 5, 1}, {false, 6, 1}}, Loss{EpochChanges: 1}},
		{"announced new epoch", []ev{{false, 5, 1}, {true, 9, 1}, {false, 9, 1}}, Loss{EpochChanges: 1}},
		{"unknown resume position", []ev{{true, 5, 0}, {false, 5, 7}, {false, 5, 8}}, Loss{}},
		{"new channel: epoch 0 until its first message", []ev{{true, 0, 1}, {false, 6, 1}, {false, 6, 2}}, Loss{}},
		{"new channel, first message skipped", []ev{{true, 0, 1}, {false, 6, 2}}, Loss{SeqGaps: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s seqCheck
			for _, e := range c.events {
				if e.resume {
					s.resume(e.epoch, e.seq)
				} else {
					s.message(e.epoch, e.seq)
				}
			}
			if s.l != c.want {
				t.Fatalf("loss %+v, want %+v", s.l, c.want)
			}
		})
	}
}

func TestLossFailures(t *testing.T) {
	if f := (Loss{}).Failures(); len(f) != 0 {
		t.Fatalf("no loss reported as %v", f)
	}
	r := &Result{Loss: Loss{Missing: 1}}
	r.finish()
	if !r.Failed || len(r.Failures) != 1 || r.Failures[0] != "1 missing" {
		t.Fatalf("failed %v, failures %q", r.Failed, r.Failures)
	}
}
