package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
)

// waitReady waits until node i's /readyz answers 200.
func (c *cluster3) waitReady(t *testing.T, i int) {
	t.Helper()
	waitFor(t, 60*time.Second, "node "+c.resp[i]+" ready", func() bool {
		resp, err := http.Get("http://" + c.http[i] + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// acked is a publish the cluster acknowledged.
type acked struct {
	epoch, seq int64
	payload    string
}

// rollPublisher publishes with HERALD.PUBLISH through one node at a time
// until stop is closed or it has published max messages; it moves to the
// next node when a publish fails. Only acknowledged publishes are recorded:
// a failed one may or may not have been committed.
func rollPublisher(ctx context.Context, id int, addrs []string, channel string, max int, stop <-chan struct{}, tick time.Duration) (out []acked, failures int) {
	node := id % len(addrs)
	newClient := func() *redis.Client {
		// No retries: a retried publish whose first attempt was committed
		// would be published twice.
		return redis.NewClient(&redis.Options{Addr: addrs[node], MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 10 * time.Second, PoolSize: 1})
	}
	rdb := newClient()
	defer func() { rdb.Close() }()
	t := time.NewTicker(tick)
	defer t.Stop()
	for i := 0; i < max; i++ {
		select {
		case <-stop:
			return out, failures
		case <-ctx.Done():
			return out, failures
		case <-t.C:
		}
		payload := fmt.Sprintf("p%d-%d", id, i)
		res, err := rdb.Do(ctx, "HERALD.PUBLISH", channel, payload).Slice()
		if err != nil || len(res) != 3 {
			failures++
			rdb.Close()
			node = (node + 1) % len(addrs)
			rdb = newClient()
			continue
		}
		out = append(out, acked{epoch: res[1].(int64), seq: res[0].(int64), payload: payload})
	}
	return out, failures
}

// rollSubscriber is a WebSocket subscriber that resumes from its last
// position on another node whenever its connection ends.
type rollSubscriber struct {
	id    int
	addrs []string // HTTP addresses
	ch    string

	mu       sync.Mutex
	epoch    int64
	seq      int64
	payloads map[int64]string
	resumes  int
	err      error // first violation seen
}

type wsEvent struct {
	Type      string `json:"type"`
	Channel   string `json:"channel"`
	Epoch     int64  `json:"epoch"`
	Seq       int64  `json:"seq"`
	Data      string `json:"data"`
	Recovered *bool  `json:"recovered"`
	From      int64  `json:"from"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

func (s *rollSubscriber) position() (epoch, seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, s.seq
}

func (s *rollSubscriber) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// run connects, subscribes and reads until ctx ends, moving to the next
// node and resuming each time the connection ends.
func (s *rollSubscriber) run(ctx context.Context, subscribed chan<- struct{}) {
	node := s.id % len(s.addrs)
	first := true
	for ctx.Err() == nil {
		err := s.session(ctx, s.addrs[node], func() {
			if first {
				first = false
				close(subscribed)
			}
		})
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.resumes++
		s.mu.Unlock()
		_ = err // the node went away: resume on the next one
		node = (node + 1) % len(s.addrs)
		select {
		case <-time.After(50 * time.Millisecond): // pacing between attempts, not a condition
		case <-ctx.Done():
		}
	}
}

// session is one connection: subscribe from the last position, then check
// and record each message until the connection ends.
func (s *rollSubscriber) session(ctx context.Context, addr string, onSubscribed func()) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	c, _, err := websocket.Dial(dctx, "ws://"+addr+"/ws", nil)
	cancel()
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 24)
	epoch, seq := s.position()
	req := map[string]any{"op": "subscribe", "channel": s.ch, "since": seq}
	if epoch != 0 {
		req["epoch"] = epoch
	}
	b, _ := json.Marshal(req)
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		return err
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var ev wsEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				s.fail(fmt.Errorf("subscriber %d: bad event %q: %v", s.id, line, err))
				continue
			}
			switch ev.Type {
			case "subscribed":
				onSubscribed()
			case "resume":
				if ev.Recovered == nil || !*ev.Recovered {
					s.fail(fmt.Errorf("subscriber %d: resume not recovered on %s: %s", s.id, addr, line))
				}
			case "message":
				s.mu.Lock()
				switch {
				case s.epoch != 0 && ev.Epoch != s.epoch:
					s.failLocked(fmt.Errorf("subscriber %d: epoch changed from %d to %d", s.id, s.epoch, ev.Epoch))
				case ev.Seq != s.seq+1:
					s.failLocked(fmt.Errorf("subscriber %d on %s: got seq %d after %d (gap or duplicate)", s.id, addr, ev.Seq, s.seq))
				}
				s.epoch, s.seq = ev.Epoch, ev.Seq
				s.payloads[ev.Seq] = ev.Data
				s.mu.Unlock()
			case "error":
				s.fail(fmt.Errorf("subscriber %d: error event %s", s.id, line))
			}
		}
	}
}

// failLocked is fail with s.mu held.
func (s *rollSubscriber) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
}

// TestRollingRestart restarts each node of a three-node cluster in turn
// with SIGTERM, followers first and the leader last, while publishers
// publish through every node and WebSocket subscribers on every node
// resume on another node whenever theirs stops. Every acknowledged
// message reaches every subscriber exactly once, in order; the leader
// hands over its leadership before it stops.
func TestRollingRestart(t *testing.T) {
	c := startCluster3(t, "--retain", "*=1000000", "--log-level", "debug")
	for i := range 3 {
		c.waitReady(t, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const channel = "orders"

	// Subscribers first, from the start of the channel.
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	var subs []*rollSubscriber
	var subWG sync.WaitGroup
	for i := range 3 {
		s := &rollSubscriber{id: i, addrs: c.http, ch: channel, payloads: map[int64]string{}}
		subs = append(subs, s)
		ready := make(chan struct{})
		subWG.Add(1)
		go func() {
			defer subWG.Done()
			s.run(subCtx, ready)
		}()
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			t.Fatalf("subscriber %d never subscribed", i)
		}
	}

	// Publishers through every node, about 100 messages a second each.
	stopPub := make(chan struct{})
	const publishers, maxPerPublisher = 3, 20000
	results := make([][]acked, publishers)
	failures := make([]int, publishers)
	var pubWG sync.WaitGroup
	for i := range publishers {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			results[i], failures[i] = rollPublisher(ctx, i, c.resp, channel, maxPerPublisher, stopPub, 10*time.Millisecond)
		}()
	}
	waitFor(t, 30*time.Second, "publishing under way", func() bool {
		_, seq := subs[0].position()
		return seq > 0
	})

	// Restart followers first, then the leader.
	leader := c.leader(t)
	order := []int{(leader + 1) % 3, (leader + 2) % 3, leader}
	for _, i := range order {
		wasLeader := c.leader(t) == i
		before := strings.Count(c.procs[i].logs(), "leadership transferred")
		c.procs[i].cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.procs[i].done:
		case <-time.After(30 * time.Second):
			t.Fatalf("node %d did not exit within 30s of SIGTERM", i)
		}
		if !c.procs[i].state.Success() {
			t.Fatalf("node %d exited with %v", i, c.procs[i].err)
		}
		if wasLeader && strings.Count(c.procs[i].logs(), "leadership transferred") == before {
			t.Errorf("node %d led but did not hand over leadership before stopping:\n%s", i, c.procs[i].logs())
		}
		c.procs[i].start()
		for j := range 3 {
			c.waitReady(t, j)
		}
	}

	// Publish a little more on the restarted cluster, then stop.
	var mark int64
	for _, s := range subs {
		_, seq := s.position()
		mark = max(mark, seq)
	}
	waitFor(t, 30*time.Second, "publishes after the last restart", func() bool {
		for _, s := range subs {
			if _, seq := s.position(); seq < mark+50 {
				return false
			}
		}
		return true
	})
	close(stopPub)
	pubWG.Wait()

	var all []acked
	for i, r := range results {
		t.Logf("publisher %d: %d acknowledged, %d failed", i, len(r), failures[i])
		all = append(all, r...)
	}
	if len(all) < 200 {
		t.Fatalf("only %d publishes acknowledged", len(all))
	}
	var last int64
	epoch := all[0].epoch
	for _, a := range all {
		last = max(last, a.seq)
		if a.epoch != epoch {
			t.Fatalf("acknowledged epochs differ: %d and %d", epoch, a.epoch)
		}
	}
	// Every subscriber reaches the last acknowledged sequence number.
	for _, s := range subs {
		waitFor(t, 60*time.Second, fmt.Sprintf("subscriber %d to reach seq %d", s.id, last), func() bool {
			_, seq := s.position()
			return seq >= last
		})
	}
	stopSubs()
	subWG.Wait()
	for _, s := range subs {
		s.mu.Lock()
		if s.err != nil {
			t.Error(s.err)
		}
		t.Logf("subscriber %d: %d messages, %d reconnections", s.id, len(s.payloads), s.resumes)
		if s.resumes == 0 {
			t.Errorf("subscriber %d never had to resume: its node was not restarted?", s.id)
		}
		for _, a := range all {
			if got, ok := s.payloads[a.seq]; !ok || got != a.payload {
				t.Errorf("subscriber %d: seq %d = %q (received %v), acknowledged as %q", s.id, a.seq, got, ok, a.payload)
			}
		}
		if s.epoch != epoch {
			t.Errorf("subscriber %d ended in epoch %d, want %d", s.id, s.epoch, epoch)
		}
		s.mu.Unlock()
	}
	if t.Failed() {
		return
	}
	// Each payload at most once in the stream (an unacknowledged publish
	// may be there, once).
	for _, s := range subs {
		seen := map[string]int64{}
		for seq, p := range s.payloads {
			if other, dup := seen[p]; dup {
				t.Errorf("subscriber %d: payload %q at seq %d and %d", s.id, p, other, seq)
			}
			seen[p] = seq
		}
	}
}
