package main

import (
	"fmt"
	"sort"
	"time"
)

// channelState is one channel as one node has it after the run: its
// HERALD.CHANNEL fields and its whole HERALD.HISTORY.
type channelState struct {
	Epoch         uint64       `json:"epoch"`
	First         uint64       `json:"first"`
	Last          uint64       `json:"last"`
	Retained      int64        `json:"retained"`
	RetainedBytes int64        `json:"retained_bytes"`
	Created       int64        `json:"created"`
	LastPublish   int64        `json:"last_publish"`
	Messages      []historyMsg `json:"-"`
}

// channelMeta is a channel's HERALD.CHANNEL fields.
type channelMeta struct {
	Epoch, First, Last      uint64
	Retained, RetainedBytes int64
	Created, LastPublish    int64
}

func (cs channelState) meta() channelMeta {
	return channelMeta{cs.Epoch, cs.First, cs.Last, cs.Retained, cs.RetainedBytes, cs.Created, cs.LastPublish}
}

// historyMsg is one retained message.
type historyMsg struct {
	Seq     uint64
	Time    int64
	Payload string
}

// subResult is what one subscriber received, per channel, in order.
type subResult struct {
	Name        string
	Transport   string
	Got         map[string][]delivery
	Unrecovered []resumeNote
}

// observation is everything the checker judges.
type observation struct {
	Channels []string
	Ops      []publishOp
	Nodes    []map[string]channelState // per node, per channel
	Subs     []subResult
}

// anomaly is one violated property, with its evidence.
type anomaly struct {
	Kind    string `json:"kind"`
	Channel string `json:"channel,omitempty"`
	Node    string `json:"node,omitempty"`
	Detail  string `json:"detail"`
}

// maxPerKind bounds how many anomalies of one kind are listed; the rest
// are counted.
const maxPerKind = 20

// report collects anomalies.
type report struct {
	list   []anomaly
	counts map[string]int
}

func (r *report) add(kind, channel, node, format string, args ...any) {
	if r.counts == nil {
		r.counts = make(map[string]int)
	}
	r.counts[kind]++
	if r.counts[kind] <= maxPerKind {
		r.list = append(r.list, anomaly{Kind: kind, Channel: channel, Node: node, Detail: fmt.Sprintf(format, args...)})
	}
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i+1) }

// check runs every check of the run:
//
//   - every node holds the same state for every channel (meta and history);
//   - each node's history of a channel is contiguous from 1 (retention keeps
//     everything) in one epoch, each payload at most once, and every payload
//     was published by the workload;
//   - no two payloads share a (channel, epoch, seq) anywhere: acknowledgements,
//     histories, deliveries;
//   - every acknowledged publish is in the history, at the (epoch, seq) it was
//     acknowledged with; a publish refused with CLUSTERDOWN is not; an
//     indeterminate one is at most once (the duplicate check);
//   - acknowledged publishes are numbered in real-time order: one acknowledged
//     before another began has the lower position;
//   - every subscriber received every message of every channel exactly once,
//     in order, with the history's payloads.
func check(obs observation) *report {
	r := &report{counts: make(map[string]int)}
	ref := checkNodes(r, obs)
	checkHistories(r, obs)
	checkConflicts(r, obs)
	checkPublishes(r, obs, ref)
	checkRealTime(r, obs)
	checkSubscribers(r, obs, ref)
	return r
}

// checkNodes compares the nodes' states and returns the reference state per
// channel: the first node's, or the longest history where they differ.
func checkNodes(r *report, obs observation) map[string]channelState {
	ref := make(map[string]channelState)
	for _, ch := range obs.Channels {
		best := -1
		for i, st := range obs.Nodes {
			if best < 0 || len(st[ch].Messages) > len(obs.Nodes[best][ch].Messages) {
				best = i
			}
		}
		if best < 0 {
			continue
		}
		ref[ch] = obs.Nodes[best][ch]
		a := obs.Nodes[0][ch]
		for i := 1; i < len(obs.Nodes); i++ {
			b := obs.Nodes[i][ch]
			if d := diffState(a, b); d != "" {
				r.add("divergence", ch, nodeName(i), "%s differs from n1: %s", nodeName(i), d)
			}
		}
	}
	return ref
}

// diffState describes the first difference between two nodes' states of a
// channel, or returns "".
func diffState(a, b channelState) string {
	if a.meta() != b.meta() {
		return fmt.Sprintf("channel state %+v vs %+v", a.meta(), b.meta())
	}
	for i := 0; i < min(len(a.Messages), len(b.Messages)); i++ {
		if a.Messages[i] != b.Messages[i] {
			return fmt.Sprintf("history entry %d: %+v vs %+v", i, a.Messages[i], b.Messages[i])
		}
	}
	if len(a.Messages) != len(b.Messages) {
		return fmt.Sprintf("history holds %d vs %d messages", len(a.Messages), len(b.Messages))
	}
	return ""
}

func checkHistories(r *report, obs observation) {
	sent := make(map[string]bool, len(obs.Ops))
	for _, op := range obs.Ops {
		sent[op.Channel+"\x00"+op.Payload] = true
	}
	for i, st := range obs.Nodes {
		for _, ch := range obs.Channels {
			cs := st[ch]
			if cs.Epoch == 0 {
				if len(cs.Messages) > 0 {
					r.add("gap", ch, nodeName(i), "messages without an epoch")
				}
				continue
			}
			if cs.First != 1 || cs.Last != uint64(len(cs.Messages)) {
				r.add("gap", ch, nodeName(i), "history spans %d..%d with %d messages; retention keeps everything, want 1..%d",
					cs.First, cs.Last, len(cs.Messages), len(cs.Messages))
			}
			if cs.Retained != int64(len(cs.Messages)) {
				r.add("gap", ch, nodeName(i), "HERALD.CHANNEL says %d retained, history holds %d", cs.Retained, len(cs.Messages))
			}
			seen := make(map[string]uint64, len(cs.Messages))
			for k, m := range cs.Messages {
				if want := cs.First + uint64(k); m.Seq != want {
					r.add("gap", ch, nodeName(i), "history entry %d has seq %d, want %d (previous %d)", k, m.Seq, want, cs.First+uint64(k)-1)
				}
				if prev, dup := seen[m.Payload]; dup {
					r.add("duplicate", ch, nodeName(i), "payload %q at seq %d and %d", m.Payload, prev, m.Seq)
				}
				seen[m.Payload] = m.Seq
				if !sent[ch+"\x00"+m.Payload] {
					r.add("phantom", ch, nodeName(i), "payload %q at seq %d was never published", m.Payload, m.Seq)
				}
			}
		}
	}
}

// slot names one message position.
type slot struct {
	channel    string
	epoch, seq uint64
}

func checkConflicts(r *report, obs observation) {
	at := make(map[slot]string)
	from := make(map[slot]string)
	see := func(s slot, payload, source string) {
		if prev, ok := at[s]; ok && prev != payload {
			r.add("conflict", s.channel, "", "epoch %d seq %d holds %q (%s) and %q (%s)", s.epoch, s.seq, prev, from[s], payload, source)
			return
		}
		at[s], from[s] = payload, source
	}
	for _, op := range obs.Ops {
		if op.Outcome == outcomeOK && op.Seq != 0 {
			see(slot{op.Channel, op.Epoch, op.Seq}, op.Payload, fmt.Sprintf("ack of publish %d on %s", op.ID, nodeName(op.Node)))
		}
	}
	for i, st := range obs.Nodes {
		for ch, cs := range st {
			for _, m := range cs.Messages {
				see(slot{ch, cs.Epoch, m.Seq}, m.Payload, "history of "+nodeName(i))
			}
		}
	}
	for _, s := range obs.Subs {
		for ch, ds := range s.Got {
			for _, d := range ds {
				see(slot{ch, d.Epoch, d.Seq}, d.Payload, fmt.Sprintf("subscriber %s via %s", s.Name, nodeName(d.Node)))
			}
		}
	}
}

func checkPublishes(r *report, obs observation, ref map[string]channelState) {
	where := make(map[string]map[string]uint64) // channel -> payload -> seq
	for ch, cs := range ref {
		m := make(map[string]uint64, len(cs.Messages))
		for _, msg := range cs.Messages {
			m[msg.Payload] = msg.Seq
		}
		where[ch] = m
	}
	for _, op := range obs.Ops {
		seq, found := where[op.Channel][op.Payload]
		switch op.Outcome {
		case outcomeOK:
			if !found {
				r.add("lost", op.Channel, nodeName(op.Node), "acknowledged publish %d %q (%s, seq %d, acked at %s) is in no history",
					op.ID, op.Payload, op.Command, op.Seq, op.End.Round(time.Millisecond))
			} else if op.Seq != 0 && (op.Seq != seq || op.Epoch != ref[op.Channel].Epoch) {
				r.add("wrong-position", op.Channel, nodeName(op.Node), "publish %d %q acknowledged at epoch %d seq %d, history has it at epoch %d seq %d",
					op.ID, op.Payload, op.Epoch, op.Seq, ref[op.Channel].Epoch, seq)
			}
		case outcomeFail:
			if found {
				r.add("failed-appeared", op.Channel, nodeName(op.Node), "publish %d %q was refused (%s) but is at seq %d", op.ID, op.Payload, op.Err, seq)
			}
		}
	}
}

// checkRealTime checks that acknowledged publishes on a channel are
// numbered consistently with real time: if A was acknowledged before B was
// sent, A's position is lower.
func checkRealTime(r *report, obs observation) {
	by := make(map[string][]publishOp)
	for _, op := range obs.Ops {
		if op.Outcome == outcomeOK && op.Seq != 0 {
			by[op.Channel] = append(by[op.Channel], op)
		}
	}
	for ch, ops := range by {
		sort.Slice(ops, func(i, j int) bool {
			if ops[i].Epoch != ops[j].Epoch {
				return ops[i].Epoch < ops[j].Epoch
			}
			return ops[i].Seq < ops[j].Seq
		})
		// Walking down the positions, keep the op with the earliest end
		// among those above: it must not have ended before this one began.
		var earliest *publishOp
		for i := len(ops) - 1; i >= 0; i-- {
			if earliest != nil && earliest.End < ops[i].Start {
				r.add("real-time-order", ch, "", "publish %d %q (seq %d) was acknowledged at %s, before publish %d %q (seq %d) was sent at %s",
					earliest.ID, earliest.Payload, earliest.Seq, earliest.End.Round(time.Millisecond), ops[i].ID, ops[i].Payload, ops[i].Seq, ops[i].Start.Round(time.Millisecond))
			}
			if earliest == nil || ops[i].End < earliest.End {
				earliest = &ops[i]
			}
		}
	}
}

func checkSubscribers(r *report, obs observation, ref map[string]channelState) {
	for _, s := range obs.Subs {
		for _, ch := range obs.Channels {
			h := ref[ch]
			bySeq := make(map[uint64]string, len(h.Messages))
			for _, m := range h.Messages {
				bySeq[m.Seq] = m.Payload
			}
			got := s.Got[ch]
			var next uint64 = 1
			bad := false
			for _, d := range got {
				switch {
				case d.Epoch != h.Epoch:
					r.add("sub-epoch", ch, s.Name, "received seq %d in epoch %d, the channel's epoch is %d", d.Seq, d.Epoch, h.Epoch)
				case d.Seq < next:
					r.add("sub-duplicate", ch, s.Name, "received seq %d again (via %s) after seq %d", d.Seq, nodeName(d.Node), next-1)
				case d.Seq > next:
					r.add("sub-gap", ch, s.Name, "received seq %d (via %s) after seq %d: missed %d..%d", d.Seq, nodeName(d.Node), next-1, next, d.Seq-1)
				case bySeq[d.Seq] != d.Payload:
					r.add("sub-mismatch", ch, s.Name, "received %q at seq %d (via %s), history differs", d.Payload, d.Seq, nodeName(d.Node))
				}
				if d.Epoch != h.Epoch || d.Seq != next {
					bad = true
				}
				if d.Seq >= next {
					next = d.Seq + 1
				}
			}
			if !bad && next-1 != h.Last {
				r.add("sub-incomplete", ch, s.Name, "received up to seq %d of %d", next-1, h.Last)
			}
		}
	}
}
