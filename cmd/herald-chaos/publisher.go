package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Outcomes of a publish, as Jepsen names them.
const (
	outcomeOK   = "ok"   // acknowledged: must be in every node's history
	outcomeFail = "fail" // refused with CLUSTERDOWN: documented as never appended
	outcomeInfo = "info" // indeterminate (TRYAGAIN, other errors, timeout, lost connection): at most once
)

// publishOp is one publish and what became of it. Times are since the
// start of the run.
type publishOp struct {
	ID      int64         `json:"id"`
	Node    int           `json:"node"`
	Worker  int           `json:"worker"`
	Command string        `json:"command"`
	Channel string        `json:"channel"`
	Payload string        `json:"payload"`
	Start   time.Duration `json:"start_ns"`
	End     time.Duration `json:"end_ns"`
	Outcome string        `json:"outcome"`
	Epoch   uint64        `json:"epoch,omitempty"`
	Seq     uint64        `json:"seq,omitempty"`
	Err     string        `json:"err,omitempty"`
}

// publishTimeout bounds one publish: Herald answers within its commit
// timeout (5s) plus a forward hop; past this the outcome is unknown.
const publishTimeout = 12 * time.Second

// opLog collects every publish of a run.
type opLog struct {
	start time.Time
	mu    sync.Mutex
	ops   []publishOp
}

func (l *opLog) add(op publishOp) {
	l.mu.Lock()
	l.ops = append(l.ops, op)
	l.mu.Unlock()
}

func (l *opLog) all() []publishOp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]publishOp(nil), l.ops...)
}

// publisher publishes to one node over RESP at about rate per second until
// ctx ends, one command at a time, on one connection it re-opens when it
// fails. Most publishes are HERALD.PUBLISH (the reply carries the sequence
// number); one in ten is a plain PUBLISH.
type publisher struct {
	c        *cluster
	log      *opLog
	node     int
	worker   int
	channels []string
	interval time.Duration
	rng      *rand.Rand
	nextID   func() int64
}

func (p *publisher) run(ctx context.Context) {
	var rc *respConn
	defer func() {
		if rc != nil {
			rc.Close()
		}
	}()
	addr := p.c.nodes[p.node].respAddr
	for n := 0; ctx.Err() == nil; n++ {
		// Jittered pacing, so publishers do not march in step.
		pause := p.interval/2 + time.Duration(p.rng.Int64N(int64(p.interval)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		if rc == nil {
			var err error
			if rc, err = dialRESP(addr, time.Second); err != nil {
				continue // the node is down: nothing was attempted
			}
		}
		op := publishOp{
			ID: p.nextID(), Node: p.node, Worker: p.worker, Command: "HERALD.PUBLISH",
			Channel: p.channels[p.rng.IntN(len(p.channels))],
		}
		op.Payload = fmt.Sprintf("n%d-w%d-%d", p.node+1, p.worker, n)
		if p.rng.IntN(10) == 0 {
			op.Command = "PUBLISH"
		}
		op.Start = time.Since(p.log.start)
		v, err := rc.do(publishTimeout, op.Command, op.Channel, op.Payload)
		op.End = time.Since(p.log.start)
		var er errorReply
		switch {
		case err == nil && op.Command == "PUBLISH" && v.kind == ':':
			op.Outcome = outcomeOK
		case err == nil && v.kind == '*' && len(v.elems) == 3:
			op.Outcome, op.Seq, op.Epoch = outcomeOK, uint64(v.elems[0].num), uint64(v.elems[1].num)
		case errors.As(err, &er) && strings.HasPrefix(string(er), "CLUSTERDOWN"):
			op.Outcome, op.Err = outcomeFail, string(er)
		case errors.As(err, &er):
			op.Outcome, op.Err = outcomeInfo, string(er)
		case err != nil:
			// Timed out or the connection broke: a late reply would be
			// taken for the next command's, so start a new connection.
			op.Outcome, op.Err = outcomeInfo, err.Error()
			rc.Close()
			rc = nil
		default:
			op.Outcome, op.Err = outcomeInfo, fmt.Sprintf("unexpected reply %+v", v)
		}
		p.log.add(op)
	}
}
