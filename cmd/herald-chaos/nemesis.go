package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"
)

// Fault kinds. Each is injected, held for a while, and healed before the
// next; the order is a seeded shuffle of all kinds, repeated, so every kind
// occurs once the run is long enough for one round (about a minute).
const (
	faultKillLeader      = "kill-leader"           // kill -9 the leader; restart it
	faultKillFollower    = "kill-follower"         // kill -9 a follower; restart it
	faultKillAll         = "kill-all"              // kill -9 every node at once; restart them
	faultRestartLeader   = "restart-leader"        // SIGTERM the leader (it hands over); restart it
	faultPauseLeader     = "pause-leader"          // SIGSTOP the leader; SIGCONT
	faultPauseFollower   = "pause-follower"        // SIGSTOP a follower; SIGCONT
	faultIsolateLeader   = "isolate-leader"        // partition the leader from both followers
	faultMinority        = "partition-minority"    // a random node alone against the other two
	faultBridge          = "partition-bridge"      // two nodes cut from each other, both still reach the third
	faultIsolatedCrash   = "isolated-leader-crash" // isolate the leader, let it append unreplicated entries, kill -9 it, heal, restart
	faultKickSubscribers = "kick-subscribers"      // close every subscriber's connection
)

// allFaults lists every kind, in a fixed order.
var allFaults = []string{faultKillLeader, faultKillFollower, faultKillAll, faultRestartLeader, faultPauseLeader,
	faultPauseFollower, faultIsolateLeader, faultMinority, faultBridge, faultIsolatedCrash, faultKickSubscribers}

// faultRecord is one injected fault.
type faultRecord struct {
	Kind    string   `json:"kind"`
	Targets []string `json:"targets,omitempty"`
	Mode    string   `json:"mode,omitempty"`
	StartS  float64  `json:"start_s"`
	EndS    float64  `json:"end_s"`
	Note    string   `json:"note,omitempty"`
}

// nemesis injects faults into a cluster.
type nemesis struct {
	c      *cluster
	subs   []*subscriber
	kinds  []string
	rng    *rand.Rand
	start  time.Time
	logger *slog.Logger

	mu     sync.Mutex
	faults []faultRecord
}

func (n *nemesis) records() []faultRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]faultRecord(nil), n.faults...)
}

func (n *nemesis) since() float64 { return time.Since(n.start).Seconds() }

// run injects faults until ctx ends, then heals everything.
func (n *nemesis) run(ctx context.Context) {
	defer n.healAll()
	var round []string
	for ctx.Err() == nil {
		if len(round) == 0 {
			round = append([]string(nil), n.kinds...)
			n.rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		kind := round[0]
		round = round[1:]
		// Every draw is made whatever happens, so a seed gives the same
		// schedule of kinds, durations, modes and picks.
		quiet := time.Duration(500+n.rng.IntN(2500)) * time.Millisecond
		hold := time.Duration(1500+n.rng.IntN(4500)) * time.Millisecond
		mode := modeHold
		if n.rng.IntN(2) == 0 {
			mode = modeReset
		}
		pick := n.rng.IntN(1 << 20)
		if !sleepCtx(ctx, quiet) {
			return
		}
		n.inject(ctx, kind, hold, mode, pick)
	}
}

// inject applies one fault, holds it, and heals it.
func (n *nemesis) inject(ctx context.Context, kind string, hold time.Duration, mode cutMode, pick int) {
	c := n.c
	rec := faultRecord{Kind: kind, StartS: n.since()}
	for i := range c.nodes {
		if !c.running(i) {
			// It died by itself (the summary reports it): bring it back,
			// so the faults keep meeting a whole cluster.
			n.logger.Warn("node found down; restarting it", "node", nodeName(i))
			n.restart(i)
		}
	}
	leader := c.leader()
	if leader < 0 {
		leader = pick % len(c.nodes)
		rec.Note = "no leader found; picked a node"
	}
	follower := (leader + 1 + pick%(len(c.nodes)-1)) % len(c.nodes)
	target := func(i int) { rec.Targets = append(rec.Targets, nodeName(i)) }
	n.logger.Info("fault", "kind", kind, "leader", nodeName(leader), "hold", hold.String(), "mode", string(mode))
	switch kind {
	case faultKillLeader, faultKillFollower:
		i := leader
		if kind == faultKillFollower {
			i = follower
		}
		target(i)
		c.kill(i, syscall.SIGKILL, 0)
		sleepCtx(ctx, hold)
		n.restart(i)
	case faultKillAll:
		for i := range c.nodes {
			target(i)
			c.kill(i, syscall.SIGKILL, 0)
		}
		sleepCtx(ctx, hold/2)
		for i := range c.nodes {
			n.restart(i)
		}
	case faultRestartLeader:
		target(leader)
		c.kill(leader, syscall.SIGTERM, 20*time.Second)
		n.restart(leader)
	case faultPauseLeader, faultPauseFollower:
		i := leader
		if kind == faultPauseFollower {
			i = follower
		}
		target(i)
		if err := c.pause(i, true); err == nil {
			sleepCtx(ctx, hold)
			c.pause(i, false)
		}
	case faultIsolateLeader, faultMinority:
		i := leader
		if kind == faultMinority {
			i = pick % len(c.nodes)
		}
		target(i)
		rec.Mode = string(mode)
		c.nw.partition(mode, isolate(i, len(c.nodes)))
		sleepCtx(ctx, hold)
		c.nw.heal()
	case faultBridge:
		// The bridge is the node other than a and b; leaders on both
		// sides can reach it.
		a, b := leader, follower
		target(a)
		target(b)
		rec.Mode = string(mode)
		rec.Note = "bridge " + nodeName(3-a-b)
		c.nw.partition(mode, [][2]int{{a, b}})
		sleepCtx(ctx, hold)
		c.nw.heal()
	case faultIsolatedCrash:
		target(leader)
		rec.Mode = string(modeHold)
		c.nw.partition(modeHold, isolate(leader, len(c.nodes)))
		// Long enough for the old leader to take publishes into its log
		// that reach no follower, and for the others to elect a leader.
		sleepCtx(ctx, hold)
		c.kill(leader, syscall.SIGKILL, 0)
		c.nw.heal()
		sleepCtx(ctx, hold/2)
		n.restart(leader)
	case faultKickSubscribers:
		for _, s := range n.subs {
			s.kick()
		}
	}
	rec.EndS = n.since()
	n.mu.Lock()
	n.faults = append(n.faults, rec)
	n.mu.Unlock()
}

// isolate returns the links between node i and every other node.
func isolate(i, n int) [][2]int {
	var pairs [][2]int
	for j := range n {
		if j != i {
			pairs = append(pairs, [2]int{i, j})
		}
	}
	return pairs
}

// restart starts node i again if it is down and waits until it serves.
func (n *nemesis) restart(i int) {
	if n.c.running(i) {
		return
	}
	if err := n.c.start(i); err != nil {
		n.logger.Error("restart failed", "node", nodeName(i), "err", err)
		return
	}
	if err := n.c.waitServing(i, 60*time.Second); err != nil {
		n.logger.Error("node not serving after restart", "node", nodeName(i), "err", err)
	}
}

// healAll ends every fault: the network is whole, no node is paused, every
// node runs.
func (n *nemesis) healAll() {
	n.c.nw.heal()
	for i := range n.c.nodes {
		if n.c.running(i) && !n.c.available(i) {
			n.c.pause(i, false)
		}
		n.restart(i)
	}
}

// sleepCtx sleeps for d or until ctx ends, and reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
