package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// options configures a run. The zero value of each field means its
// default.
type options struct {
	// Herald is the herald binary. Required.
	Herald string
	// Duration is how long the workload and faults run. Default 2m.
	Duration time.Duration
	// Seed drives every random choice: fault schedule, targets, workload.
	Seed uint64
	// Dir holds the nodes' data and logs; default a new temporary
	// directory, removed after a run without anomalies.
	Dir string
	// Rate is the publishes per second over all publishers. Default 120.
	Rate float64
	// PublishersPerNode is the concurrent publishers on each node.
	// Default 2.
	PublishersPerNode int
	// Channels is how many channels the workload uses. Default 4.
	Channels int
	// Faults lists the fault kinds to inject. Default all.
	Faults []string
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

func (o options) withDefaults() options {
	if o.Duration <= 0 {
		o.Duration = 2 * time.Minute
	}
	if o.Rate <= 0 {
		o.Rate = 120
	}
	if o.PublishersPerNode <= 0 {
		o.PublishersPerNode = 2
	}
	if o.Channels <= 0 {
		o.Channels = 4
	}
	if len(o.Faults) == 0 {
		o.Faults = allFaults
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// nodeFlags are the flags every node runs with: history is kept whole, so
// the checker can demand every message of every channel.
var nodeFlags = []string{"--retain", "*=1000000", "--log-level", "info"}

// nodes is the cluster size.
const nodes = 3

// run starts a cluster, runs the workload and the faults for o.Duration,
// heals, waits for the cluster to converge, collects every node's state
// and checks it. The error is for a run that could not be carried out;
// anomalies are in the summary.
func run(ctx context.Context, o options) (*summary, error) {
	o = o.withDefaults()
	log := o.Logger
	if o.Herald == "" {
		return nil, errors.New("no herald binary given")
	}
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "herald-chaos"); err != nil {
			return nil, fmt.Errorf("create run directory: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	log.Info("starting cluster", "dir", dir, "seed", o.Seed, "duration", o.Duration.String())
	c, err := startCluster(o.Herald, dir, nodes, nodeFlags, log)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := waitFor(ctx, 60*time.Second, func() bool { return c.leader() >= 0 }); err != nil {
		return nil, fmt.Errorf("wait for a leader: %w", err)
	}

	seeds := rand.New(rand.NewPCG(o.Seed, 0x6865726c64))
	channels := make([]string, o.Channels)
	for i := range channels {
		channels[i] = "chaos:" + strconv.Itoa(i)
	}
	start := time.Now()
	ops := &opLog{start: start}

	var subs []*subscriber
	for i := range nodes {
		subs = append(subs, newSubscriber(fmt.Sprintf("resp@%s", nodeName(i)), "resp", i, c, channels, start))
		subs = append(subs, newSubscriber(fmt.Sprintf("ws@%s", nodeName(i)), "ws", i, c, channels, start))
	}
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	var subWG sync.WaitGroup
	for _, s := range subs {
		subWG.Add(1)
		go func() {
			defer subWG.Done()
			s.run(subCtx)
		}()
	}

	runCtx, stopRun := context.WithTimeout(ctx, o.Duration)
	defer stopRun()
	var ids atomic.Int64
	workers := nodes * o.PublishersPerNode
	interval := time.Duration(float64(workers) / o.Rate * float64(time.Second))
	var pubWG sync.WaitGroup
	for i := range nodes {
		for w := range o.PublishersPerNode {
			p := &publisher{c: c, log: ops, node: i, worker: w, channels: channels, interval: interval,
				rng: rand.New(rand.NewPCG(seeds.Uint64(), seeds.Uint64())), nextID: func() int64 { return ids.Add(1) }}
			pubWG.Add(1)
			go func() {
				defer pubWG.Done()
				p.run(runCtx)
			}()
		}
	}
	nem := &nemesis{c: c, subs: subs, kinds: o.Faults, rng: rand.New(rand.NewPCG(seeds.Uint64(), seeds.Uint64())),
		start: start, logger: log}
	nemDone := make(chan struct{})
	go func() {
		defer close(nemDone)
		nem.run(runCtx)
	}()
	<-runCtx.Done()
	pubWG.Wait()
	<-nemDone // healed: network whole, every node running
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	log.Info("workload over; waiting for the cluster to converge", "publishes", len(ops.all()))

	if err := waitConverged(ctx, c); err != nil {
		return nil, err
	}
	states, err := collect(ctx, c, channels)
	if err != nil {
		return nil, err
	}
	// Subscribers get until every stream reaches the end of its history.
	waitFor(ctx, 60*time.Second, func() bool {
		for _, s := range subs {
			pos := s.positions()
			for _, ch := range channels {
				if pos[ch].Seq < states[0][ch].Last {
					return false
				}
			}
		}
		return true
	})
	stopSubs()
	subWG.Wait()

	obs := observation{Channels: channels, Ops: ops.all(), Nodes: states}
	for _, s := range subs {
		s.mu.Lock()
		obs.Subs = append(obs.Subs, subResult{Name: s.name, Transport: s.transport, Got: s.got, Unrecovered: s.unrecovered})
		s.mu.Unlock()
	}
	rep := check(obs)
	scanLogs(rep, c)
	sum := summarize(o, dir, time.Since(start), obs, nem.records(), subs, rep)
	if sum.OK && o.Dir == "" {
		os.RemoveAll(dir)
		sum.Dir = ""
	}
	return sum, nil
}

// scanLogs reports what went wrong inside the nodes: an exit the harness
// did not cause, a data race (under -race), a panic, a fatal error.
func scanLogs(rep *report, c *cluster) {
	for i, nd := range c.nodes {
		nd.mu.Lock()
		for _, u := range nd.unexpected {
			rep.add("node-exit", "", nodeName(i), "%s (see %s)", u, nd.logPath)
		}
		nd.mu.Unlock()
		b, err := os.ReadFile(nd.logPath)
		if err != nil {
			rep.add("node-log", "", nodeName(i), "cannot read %s: %v", nd.logPath, err)
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "WARNING: DATA RACE") || strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
				rep.add("node-log", "", nodeName(i), "%s (see %s)", line, nd.logPath)
			}
		}
	}
}

// waitFor polls cond every 100ms until it holds, ctx ends or timeout
// passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %s", timeout)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}

// waitConverged waits until a leader is known and every node has applied
// the same index, which is everything committed.
func waitConverged(ctx context.Context, c *cluster) error {
	err := waitFor(ctx, 120*time.Second, func() bool {
		l := c.leader()
		if l < 0 {
			return false
		}
		ls, err := c.status(l)
		if err != nil {
			return false
		}
		for i := range c.nodes {
			st, err := c.status(i)
			if err != nil || st.AppliedIndex != ls.CommitIndex || st.LeaderID != nodeName(l) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("cluster did not converge after healing: %w", err)
	}
	return nil
}

// collect reads every channel's state and whole history from every node.
func collect(ctx context.Context, c *cluster, channels []string) ([]map[string]channelState, error) {
	states := make([]map[string]channelState, len(c.nodes))
	for i := range c.nodes {
		rc, err := dialRESP(c.nodes[i].respAddr, 2*time.Second)
		if err != nil {
			return nil, fmt.Errorf("read state of %s: %w", nodeName(i), err)
		}
		states[i] = make(map[string]channelState)
		for _, ch := range channels {
			cs, err := readChannel(rc, ch)
			if err != nil {
				rc.Close()
				return nil, fmt.Errorf("read %s on %s: %w", ch, nodeName(i), err)
			}
			states[i][ch] = cs
		}
		rc.Close()
	}
	return states, nil
}

// readChannel reads a channel's HERALD.CHANNEL fields and its history, in
// pages.
func readChannel(rc *respConn, ch string) (channelState, error) {
	var cs channelState
	v, err := rc.do(10*time.Second, "HERALD.CHANNEL", ch)
	if err != nil {
		return cs, err
	}
	m, err := fields(v)
	if err != nil {
		return cs, err
	}
	cs.Epoch, cs.Last, cs.First = uint64(m["epoch"].num), uint64(m["last_seq"].num), uint64(m["first_seq"].num)
	cs.Retained, cs.RetainedBytes = m["retained"].num, m["retained_bytes"].num
	cs.Created, cs.LastPublish = m["created"].num, m["last_publish"].num
	const page = 1000
	var after uint64
	for range 1 << 20 { // bounded: a page per 1000 messages
		v, err := rc.do(10*time.Second, "HERALD.HISTORY", ch, "SINCE", strconv.FormatUint(after, 10), "LIMIT", strconv.Itoa(page))
		if err != nil {
			return cs, err
		}
		h, err := fields(v)
		if err != nil {
			return cs, err
		}
		if uint64(h["epoch"].num) != cs.Epoch {
			return cs, fmt.Errorf("epoch changed while reading: %d then %d", cs.Epoch, h["epoch"].num)
		}
		msgs := h["messages"].elems
		for _, e := range msgs {
			if len(e.elems) != 3 {
				return cs, errors.New("malformed history entry")
			}
			cs.Messages = append(cs.Messages, historyMsg{Seq: uint64(e.elems[0].num), Time: e.elems[1].num, Payload: e.elems[2].str})
			after = uint64(e.elems[0].num)
		}
		if len(msgs) < page {
			return cs, nil
		}
	}
	return cs, errors.New("history longer than the harness reads")
}
