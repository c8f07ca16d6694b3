package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// fanoutConfig is the fan-out workload: channels × subscribers (RESP or
// WebSocket), fed by publishers over RESP. With several addresses (a
// cluster), publishers and subscribers are spread over every node.
type fanoutConfig struct {
	common
	transport   string // "resp" or "ws"
	heraldSub   bool   // RESP subscribers use HERALD.SUBSCRIBE (sequence numbers)
	verb        verb   // the publishers' command: PUBLISH or HERALD.PUBLISH
	channels    int
	subscribers int // per channel
	publishers  int
	pipeline    int
	size        int
	rate        float64 // total messages/s; 0: as fast as the window allows
	window      int     // messages in flight per channel; 0: unbounded
	drain       time.Duration
	dialers     int // connections opened at once during setup
}

func (cfg *fanoutConfig) describe() string {
	rate := "max rate"
	if cfg.rate > 0 {
		rate = fmt.Sprintf("%s msg/s", fmtRate(cfg.rate))
	}
	sub := "RESP SUBSCRIBE"
	switch {
	case cfg.transport == "ws":
		sub = "WebSocket"
	case cfg.heraldSub:
		sub = "RESP HERALD.SUBSCRIBE"
	}
	nodes := ""
	if n := max(len(cfg.addrs), len(cfg.wsURLs)); n > 1 {
		nodes = fmt.Sprintf(", spread over %d nodes", n)
	}
	win := ""
	if cfg.window > 0 {
		win = fmt.Sprintf(", window %d", cfg.window)
	}
	return fmt.Sprintf("%d channel(s) × %d %s subscribers, %d publisher(s) × pipeline %d, %d B, %s%s%s",
		cfg.channels, cfg.subscribers, sub, cfg.publishers, cfg.pipeline, cfg.size, rate, win, nodes)
}

// runFanout connects every subscriber, then publishes, then waits until
// every subscriber has every acknowledged message (or the drain time
// passes), and checks what each received.
func runFanout(ctx context.Context, cfg fanoutConfig) (*Result, error) {
	if _, err := newPayload(cfg.size); err != nil {
		return nil, err
	}
	if cfg.transport == "ws" && len(cfg.wsURLs) == 0 {
		return nil, fmt.Errorf("WebSocket subscribers need --ws-url")
	}
	workload := "fanout"
	if max(len(cfg.addrs), len(cfg.wsURLs)) > 1 {
		workload = "cluster"
	}
	res := &Result{Workload: workload, Target: cfg.name, Command: cfg.command, Started: time.Now(), Desc: cfg.describe()}
	run := newRunID()
	names := make([]string, cfg.channels)
	for i := range names {
		names[i] = fmt.Sprintf("hb:%s:%d", run, i)
	}
	total := cfg.channels * cfg.subscribers
	hist := newShardedHistogram(64)
	ackHist := newShardedHistogram(4)
	var closing atomic.Bool
	var win *window
	if cfg.window > 0 {
		win = newWindow(cfg.window, cfg.channels)
	}

	// Subscribers first: every message published after they are all
	// confirmed is owed to each of them.
	subs := make([]*subscriber, total)
	for i := range subs {
		subs[i] = newSubscriber(i, i%cfg.channels, cfg.publishers, hist.shard(i), &closing)
		if win != nil {
			win.addSubscriber(subs[i].ch, &subs[i].recv)
		}
	}
	defer func() {
		closing.Store(true)
		for _, s := range subs {
			if s.close != nil {
				s.close()
			}
		}
	}()
	if err := connectSubscribers(ctx, &cfg, subs, names); err != nil {
		return nil, err
	}

	setupCtx, cancel := context.WithTimeout(ctx, cfg.setup)
	defer cancel()
	pubs := make([]*publisher, cfg.publishers)
	for i := range pubs {
		chs := channelsOf(i, cfg.publishers, cfg.channels)
		pc := publisherConfig{
			id: uint32(i), addr: cfg.addrs[i%len(cfg.addrs)], channels: chs, names: names,
			verb: cfg.verb, pipeline: cfg.pipeline, size: cfg.size, gate: win,
			messages: share(cfg.messages, cfg.publishers, i), ackHist: ackHist.shard(i),
		}
		if cfg.rate > 0 {
			pc.rate = cfg.rate / float64(cfg.publishers)
		}
		p, err := dialPublisher(setupCtx, pc)
		if err != nil {
			return nil, err
		}
		defer p.conn.Close()
		pubs[i] = p
	}

	received := func() uint64 {
		var n uint64
		for _, s := range subs {
			n += s.recv.Load()
		}
		return n
	}
	srv := startSampler(cfg.serverPIDs())
	mach := startMachineSampler()
	tool := startSampler(append([]int{ownPID()}, cfg.toolPIDs...))
	pm, dm := rateMeter{lastT: time.Now()}, rateMeter{lastT: time.Now()}
	var maxLag atomic.Int64
	prog := startProgress(cfg.log, cfg.progress, func(el time.Duration) string {
		var acked uint64
		for _, p := range pubs {
			acked += p.acked.Load()
		}
		lag := ""
		if win != nil {
			l := win.lag()
			if l > maxLag.Load() {
				maxLag.Store(l)
			}
			lag = fmt.Sprintf("  lag %d", l)
		}
		scpu, srss := srv.interval()
		tcpu, trss := tool.interval()
		return fmt.Sprintf("[%s %s] %s  %s publishes/s  %s deliveries/s%s  server %.0f%% CPU %s  tool %.0f%% CPU %s",
			workload, cfg.name, el, fmtRate(pm.rate(acked)), fmtRate(dm.rate(received())), lag, scpu, fmtKB(srss), tcpu, fmtKB(trss))
	})
	start := time.Now()
	runCtx, stop := context.WithTimeout(ctx, cfg.duration)
	defer stop()
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(runCtx, cfg.drain)
		}()
	}
	wg.Wait()

	// Every acknowledged message is owed to every subscriber of its
	// channel. Wait for them, for at most the drain time.
	acked := func(pub, ch int) uint64 { return pubs[pub].replied[ch].Load() }
	expected := make([]uint64, cfg.channels)
	for ch := range expected {
		for pub := range pubs {
			expected[ch] += acked(pub, ch)
		}
	}
	deadline := time.Now().Add(cfg.drain)
	for _, s := range subs {
	wait:
		for s.recv.Load() < expected[s.ch] && time.Now().Before(deadline) {
			select {
			case <-s.done: // disconnected: it will get no more
				break wait
			case <-time.After(time.Millisecond):
			}
		}
	}
	prog.end()
	res.Server, res.Tool = srv.finish(), tool.finish()
	res.Machine = mach.finish(append(append([]int{}, res.Server.PIDs...), res.Tool.PIDs...))
	closing.Store(true)
	for _, s := range subs {
		s.close()
	}
	for _, s := range subs {
		<-s.done
	}

	var lastAt int64
	var reads uint64
	for _, s := range subs {
		reads += s.reads()
		res.Loss.Add(s.result(acked))
		res.Expected += expected[s.ch]
		res.Deliveries += s.recv.Load()
		lastAt = max(lastAt, s.lastAt)
		if s.err != nil && len(res.Failures) < 3 {
			res.Failures = append(res.Failures, fmt.Sprintf("subscriber %d: %v", s.idx, s.err))
		}
	}
	lastAck := addPublishers(res, pubs)
	res.Subscribers = total
	if reads > 0 {
		res.DeliveriesPerRead = float64(res.Deliveries) / float64(reads)
	}
	res.Elapsed = time.Duration(max(lastAt, lastAck) - start.UnixNano())
	if res.Elapsed > 0 {
		res.PublishRate = float64(res.Published) / time.Duration(lastAck-start.UnixNano()).Seconds()
		res.DeliveryRate = float64(res.Deliveries) / res.Elapsed.Seconds()
	}
	s, a := hist.merged().Summary(), ackHist.merged().Summary()
	res.Latency, res.AckLatency = &s, &a
	if win != nil {
		res.MaxLag = max(maxLag.Load(), win.lag())
	}
	res.finish()
	return res, nil
}

// connectSubscribers opens and subscribes every subscriber, cfg.dialers at
// a time, spread over the nodes, and starts their readers.
func connectSubscribers(ctx context.Context, cfg *fanoutConfig, subs []*subscriber, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.setup)
	defer cancel()
	client := newHTTPClient()
	next := make(chan *subscriber)
	var connected atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range max(1, cfg.dialers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				if err := connectOne(ctx, cfg, s, names[s.ch], client); err != nil {
					once.Do(func() {
						firstErr = fmt.Errorf("subscriber %d: %w", s.idx, err)
						cancel()
					})
					continue
				}
				connected.Add(1)
			}
		}()
	}
	prog := startProgress(cfg.log, cfg.progress, func(el time.Duration) string {
		return fmt.Sprintf("[%s] %s  %d/%d subscribers connected", cfg.name, el, connected.Load(), len(subs))
	})
	for _, s := range subs {
		select {
		case next <- s:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	prog.end()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connect subscribers: %d of %d within %s: %w", connected.Load(), len(subs), cfg.setup, err)
	}
	cfg.logf("[%s] %d subscribers connected", cfg.name, len(subs))
	return nil
}

func connectOne(ctx context.Context, cfg *fanoutConfig, s *subscriber, channel string, client *http.Client) error {
	if cfg.transport == "ws" {
		ws, err := dialWSSubscriber(ctx, s, cfg.wsURLs[s.idx%len(cfg.wsURLs)], channel, client)
		if err != nil {
			return err
		}
		go ws.readLoop()
		return nil
	}
	rs, err := dialRESPSubscriber(ctx, s, cfg.addrs[s.idx%len(cfg.addrs)], channel, cfg.heraldSub)
	if err != nil {
		return err
	}
	go rs.readLoop()
	return nil
}
