package resp_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
	"github.com/redis/go-redis/v9"
)

// The slow-consumer guarantee: a subscriber that stops reading never slows a
// publisher or another subscriber, costs the server no more memory than its
// outbox limit, and is disconnected once it passes that limit.

// slowConn is a raw subscriber that stops reading once subscribed.
type slowConn struct {
	nc *net.TCPConn
	br *bufio.Reader
}

// slowDial connects a client with a small receive buffer, names it,
// sends it the commands in setup and reads the replies want. From then on it
// reads nothing until drain.
//
// Whatever the client's buffer, the server's send buffer on loopback grows
// to tcp_wmem's maximum (4 MiB on Linux by default) while the client does
// not read, so the tests push several times that much. A receive buffer much
// smaller than the loopback MSS (64 KiB) would make draining crawl: the
// window then opens a few KiB at a time.
func slowDial(t *testing.T, addr, name string, setup string, want ...string) *slowConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nc := c.(*net.TCPConn)
	if err := nc.SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	s := &slowConn{nc: nc, br: bufio.NewReader(nc)}
	if _, err := nc.Write([]byte("CLIENT SETNAME " + name + "\r\n" + setup)); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, w := range append([]string{"+OK"}, want...) {
		line, err := s.br.ReadString('\n')
		if err != nil || strings.TrimSuffix(line, "\r\n") != w {
			t.Fatalf("%s setup: got %q, %v; want %q", name, line, err, w)
		}
	}
	return s
}

// drain reads everything the server sends until it closes the connection,
// and fails the test if it does not within 30 seconds.
func (s *slowConn) drain(t *testing.T) []byte {
	t.Helper()
	s.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(s.br)
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, syscall.ECONNRESET):
		return got
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the server did not close the stalled connection (read %d bytes)", len(got))
	default:
		t.Fatalf("read: %v", err)
	}
	return nil
}

var slowOmemField = regexp.MustCompile(` omem=(\d+) `)

// slowClientOmem returns the bytes queued for the client named name, as CLIENT
// LIST reports them, and false if no such client is connected.
func slowClientOmem(ctx context.Context, rdb *redis.Client, name string) (int, bool, error) {
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		return 0, false, err
	}
	for line := range strings.Lines(list) {
		if !strings.Contains(line, " name="+name+" ") {
			continue
		}
		m := slowOmemField.FindStringSubmatch(line)
		if m == nil {
			return 0, false, fmt.Errorf("no omem in %q", line)
		}
		n, err := strconv.Atoi(m[1])
		return n, true, err
	}
	return 0, false, nil
}

// slowMustOmem is slowClientOmem for the test goroutine.
func slowMustOmem(t *testing.T, ctx context.Context, rdb *redis.Client, name string) (int, bool) {
	t.Helper()
	n, ok, err := slowClientOmem(ctx, rdb, name)
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	return n, ok
}

// slowMessageFrame returns the RESP2 frame that delivers payload published to
// channel to a SUBSCRIBE subscriber.
func slowMessageFrame(channel, payload string) string {
	return fmt.Sprintf("*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(channel), channel, len(payload), payload)
}

// slowPayload returns message i's payload: its index, padded to size bytes.
func slowPayload(i, size int) string {
	p := fmt.Sprintf("%08d", i)
	return p + strings.Repeat(".", size-len(p))
}

func TestSlowConsumerDisconnected(t *testing.T) {
	const (
		hard     = 256 << 10
		messages = 4_000
		size     = 4 << 10 // 16 MiB in all: 64 times the limit, 4 times what the kernel can hold
		// The publisher pipelines a batch at a time and waits until the
		// fast subscribers have it before the next, so that they never
		// fall half their limit behind, even under -race.
		batch = 32
	)
	ctx := grContext(t, 2*time.Minute)
	s := startServer(t, broker.Config{Outbox: broker.OutboxLimits{
		HardBytes: hard, SoftBytes: 128 << 10, SoftDuration: time.Hour,
	}}, resp.Config{})

	stalled := slowDial(t, s.addr, "stalled", "SUBSCRIBE slow\r\n", "*3", "$9", "subscribe", "$4", "slow", ":1")

	// Two subscribers that keep up, one per protocol version.
	var fast []<-chan *redis.Message
	for _, proto := range []int{2, 3} {
		ps := newGoRedis(t, s.addr, proto).Subscribe(ctx, "slow")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "slow", 1)
		fast = append(fast, ps.Channel(redis.WithChannelSize(2*batch)))
	}

	// While the publisher runs, watch the stalled client's queue. It is
	// read under the outbox's lock, so an outbox that went over its limit
	// without failing would show it.
	admin := newGoRedis(t, s.addr, 2)
	stop := make(chan struct{})
	stopWatching := sync.OnceFunc(func() { close(stop) })
	defer stopWatching()
	type watch struct {
		max, samples int
		err          error
	}
	watched := make(chan watch, 1)
	go func() {
		var w watch
		defer func() { watched <- w }()
		for range 1_000_000 {
			select {
			case <-stop:
				return
			default:
			}
			n, ok, err := slowClientOmem(ctx, admin, "stalled")
			if err != nil {
				w.err = err
				return
			}
			if ok {
				w.max, w.samples = max(w.max, n), w.samples+1
			}
		}
	}()

	pub := newGoRedis(t, s.addr, 2)
	pubCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	last := int64(3)
	for lo := 0; lo < messages; lo += batch {
		hi := min(lo+batch, messages)
		cmds, err := pub.Pipelined(pubCtx, func(p redis.Pipeliner) error {
			for i := lo; i < hi; i++ {
				p.Publish(pubCtx, "slow", slowPayload(i, size))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("publisher, messages %d to %d: %v (a subscriber that does not read must never block a publisher)", lo, hi, err)
		}
		// Each reply counts the stalled client until it is gone, then not.
		for i, c := range cmds {
			n := c.(*redis.IntCmd).Val()
			if (n != 3 && n != 2) || n > last {
				t.Fatalf("PUBLISH %d: got %d receivers after %d: want 3 until the stalled client goes, then 2", lo+i, n, last)
			}
			last = n
		}
		for sub, ch := range fast {
			for i := lo; i < hi; i++ {
				select {
				case m := <-ch:
					if m.Payload != slowPayload(i, size) {
						t.Fatalf("fast subscriber %d, message %d: got %.8q...: lost, duplicated or out of order", sub, i, m.Payload)
					}
				case <-ctx.Done():
					t.Fatalf("fast subscriber %d: message %d not received", sub, i)
				}
			}
		}
	}
	stopWatching()

	w := <-watched
	if w.err != nil {
		t.Fatalf("CLIENT LIST: %v", w.err)
	}
	if n, ok := slowMustOmem(t, ctx, admin, "stalled"); ok {
		w.max, w.samples = max(w.max, n), w.samples+1
	}
	t.Logf("stalled client's omem: max %d bytes over %d samples", w.max, w.samples)
	if w.max > hard {
		t.Errorf("stalled client's omem reached %d bytes, over the hard limit of %d", w.max, hard)
	}

	if got := s.broker.Stats().SlowDisconnect; got != 1 {
		t.Errorf("broker.Stats().SlowDisconnect = %d, want 1", got)
	}
	info, err := admin.Info(ctx, "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "client_output_buffer_limit_disconnections:1\r\n") {
		t.Errorf("INFO stats lacks client_output_buffer_limit_disconnections:1:\n%s", info)
	}

	// Reading now, the stalled client gets what was on its way, in order,
	// and then the end of the connection: not every message.
	got := stalled.drain(t)
	n := 0
	for rest := got; len(rest) > 0; n++ {
		f := slowMessageFrame("slow", slowPayload(n, size))
		if !bytes.HasPrefix(rest, []byte(f)) {
			if len(rest) < len(f) && bytes.HasPrefix([]byte(f), rest) {
				break // cut off mid-frame by the close
			}
			t.Fatalf("stalled client: message %d is not next in what it read: %.60q", n, rest)
		}
		rest = rest[len(f):]
	}
	t.Logf("stalled client read %d of %d messages before the server closed it", n, messages)
	if n >= messages {
		t.Fatalf("stalled client read all %d messages: it was never disconnected", n)
	}
}

// TestSlowConsumerClosedWhileNotReading checks that a client is disconnected
// when it passes its outbox limit, not when it next reads: one that stopped
// reading for good (a hung process, a dead peer behind a NAT) must not stay
// subscribed, counted by PUBLISH and PUBSUB NUMSUB, until the write timeout.
func TestSlowConsumerClosedWhileNotReading(t *testing.T) {
	ctx := grContext(t, time.Minute)
	s := startServer(t, broker.Config{Outbox: broker.OutboxLimits{
		HardBytes: 64 << 10, SoftBytes: 64 << 10, SoftDuration: time.Hour,
	}}, resp.Config{WriteTimeout: time.Hour})
	slowDial(t, s.addr, "stalled", "SUBSCRIBE slow\r\n", "*3", "$9", "subscribe", "$4", "slow", ":1")

	rdb := newGoRedis(t, s.addr, 2)
	for i := 0; s.broker.Stats().SlowDisconnect == 0; i++ {
		if i == 4_000 { // 16 MiB: far more than the kernel's buffers hold
			t.Fatal("the stalled client never passed its outbox limit")
		}
		if _, err := rdb.Publish(ctx, "slow", slowPayload(i, 4<<10)).Result(); err != nil {
			t.Fatal(err)
		}
	}
	waitForCond(t, 10*time.Second, "the server to drop the stalled client (write timeout: 1h)", func() bool {
		_, listed := slowMustOmem(t, ctx, rdb, "stalled")
		return !listed && s.broker.NumSub(broker.Global, "slow") == 0
	})
	if n, err := rdb.Publish(ctx, "slow", "after").Result(); err != nil || n != 0 {
		t.Fatalf("PUBLISH after the disconnect: got %d, %v; want 0", n, err)
	}
}

// TestStalledSubscribersHoldNoSlot: with a single write slot, subscribers
// that stop reading do not hold it while their writers wait for their
// sockets: a subscriber to the same channel that reads gets every message.
func TestStalledSubscribersHoldNoSlot(t *testing.T) {
	const (
		size   = 4 << 10
		batch  = 32
		queued = 256 << 10 // per stalled client, beyond the kernel's buffers
	)
	ctx := grContext(t, 2*time.Minute)
	// Outboxes large enough that no client is disconnected, and a write
	// timeout longer than the test: only a free slot lets the reading
	// subscriber's writer run.
	s := startServer(t, broker.Config{Outbox: broker.OutboxLimits{
		HardBytes: 256 << 20, SoftBytes: 256 << 20, SoftDuration: time.Hour,
	}}, resp.Config{WriteSlots: 1, WriteTimeout: time.Hour})
	names := []string{"stalled1", "stalled2", "stalled3"}
	for _, name := range names {
		slowDial(t, s.addr, name, "SUBSCRIBE slow\r\n", "*3", "$9", "subscribe", "$4", "slow", ":1")
	}
	ps := newGoRedis(t, s.addr, 2).Subscribe(ctx, "slow")
	defer ps.Close()
	grSubscribed(t, ctx, ps, "subscribe", "slow", 1)
	reader := ps.Channel(redis.WithChannelSize(batch))

	// Publish a batch at a time, each read by the reading subscriber before
	// the next, until every stalled client has queued bytes its socket
	// could not take (bounded: 8,000 messages, 32 MiB), then 4 batches more.
	admin := newGoRedis(t, s.addr, 2)
	stalledQueued := func() bool {
		for _, name := range names {
			if n, ok := slowMustOmem(t, ctx, admin, name); !ok || n < queued {
				return false
			}
		}
		return true
	}
	publishRead := func(lo int) {
		t.Helper()
		_, err := admin.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := lo; i < lo+batch; i++ {
				p.Publish(ctx, "slow", slowPayload(i, size))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("publish %d to %d: %v", lo, lo+batch, err)
		}
		for i := lo; i < lo+batch; i++ {
			select {
			case m := <-reader:
				if m.Payload != slowPayload(i, size) {
					t.Fatalf("reading subscriber, message %d: got %.8q...", i, m.Payload)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("reading subscriber: message %d not received (the stalled clients hold the write slot?)", i)
			}
		}
	}
	next := 0
	for ; !stalledQueued(); next += batch {
		if next >= 8_000 {
			t.Fatalf("published %d messages and the stalled clients' sockets never filled", next)
		}
		publishRead(next)
	}
	t.Logf("the stalled clients' sockets were full after %d messages", next)
	for range 4 {
		publishRead(next)
		next += batch
	}
	if got := s.broker.Stats().SlowDisconnect; got != 0 {
		t.Fatalf("%d slow consumer disconnections, want none", got)
	}
}

// TestSlowConsumerLimitBoundary checks the hard limit to the byte: a client
// with exactly HardBytes queued stays, one more message disconnects it.
//
// The kernel's socket buffers take bytes out of the outbox as long as the
// writer can write, so the client first asks for a reply far larger than
// those buffers (ECHO of 16 MiB; replies are not subject to the limit) and
// reads only its first line, which shows the writer has taken it: the writer
// then stays blocked on that write, and everything queued after it (the
// subscribe confirmation, then the messages) stays in the outbox, where
// CLIENT LIST's omem shows it exactly.
func TestSlowConsumerLimitBoundary(t *testing.T) {
	const k = 8
	confirmation := "*3\r\n$9\r\nsubscribe\r\n$4\r\nedge\r\n:1\r\n"
	frame := len(slowMessageFrame("edge", slowPayload(0, 1000)))
	hard := len(confirmation) + k*frame
	ctx := grContext(t, time.Minute)
	s := startServer(t, broker.Config{Outbox: broker.OutboxLimits{
		HardBytes: hard, SoftBytes: hard, SoftDuration: time.Hour,
	}}, resp.Config{ProtoMaxBulkLen: 32 << 20, WriteTimeout: time.Hour})
	rdb := newGoRedis(t, s.addr, 2)

	filler := strings.Repeat("f", 16<<20)
	stalled := slowDial(t, s.addr, "edge",
		fmt.Sprintf("*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", len(filler), filler), fmt.Sprintf("$%d", len(filler)))
	if _, err := stalled.nc.Write([]byte("SUBSCRIBE edge\r\n")); err != nil {
		t.Fatal(err)
	}
	waitForCond(t, 10*time.Second, "the subscription, with its confirmation queued", func() bool {
		n, ok := slowMustOmem(t, ctx, rdb, "edge")
		return s.broker.NumSub(broker.Global, "edge") == 1 && ok && n == len(confirmation)
	})

	for i := 1; i <= k+1; i++ {
		if n, err := rdb.Publish(ctx, "edge", slowPayload(i, 1000)).Result(); err != nil || n != 1 {
			t.Fatalf("PUBLISH %d: got %d, %v; want 1", i, n, err)
		}
		queued := len(confirmation) + i*frame
		slow := s.broker.Stats().SlowDisconnect
		omem, ok := slowMustOmem(t, ctx, rdb, "edge")
		switch {
		case i <= k && (slow != 0 || !ok || omem != queued):
			t.Fatalf("after %d messages (%d of %d bytes): SlowDisconnect=%d, listed=%v, omem=%d; want 0, true, %d",
				i, queued, hard, slow, ok, omem, queued)
		case i == k+1 && slow != 1:
			t.Fatalf("after %d messages (%d bytes, limit %d): SlowDisconnect=%d, want 1", i, queued, hard, slow)
		}
	}

	// What reaches the client is the rest of the ECHO reply at most: the
	// failed outbox's frames were dropped, not written.
	got := stalled.drain(t)
	want := filler + "\r\n"
	if n := min(len(got), len(want)); string(got[:n]) != want[:n] {
		t.Fatalf("the stalled client did not read the rest of the ECHO reply first")
	}
	if len(got) > len(want) {
		t.Fatalf("after the ECHO reply, the stalled client read %.200q", got[len(want):])
	}
}

// TestSlowConsumerMemoryBounded pushes 50 MiB at a subscriber that never
// reads, with a 1 MiB hard limit, and checks the heap. If the outbox were
// unbounded, all 50 MiB of frames would stay queued for the client (the
// kernel's socket buffers hold a few MiB at most) and reachable until it
// goes, and the heap would grow by at least that much. Bounded, the outbox
// fails at 1 MiB and drops its frames; what remains is the writer's batch in
// flight (at most 1 MiB) and noise.
//
// The messages are handed to Broker.DeliverBatch, as the log hands over committed
// ones, rather than published: Pebble allocates its memtables on the Go heap
// under -race, 64 MiB at a time, and 50 MiB through the log would measure
// when Pebble last rotated one, not the outbox.
func TestSlowConsumerMemoryBounded(t *testing.T) {
	const (
		total   = 50 << 20
		size    = 64 << 10
		maxGrow = 30 << 20
	)
	s := startServer(t, broker.Config{Outbox: broker.OutboxLimits{
		HardBytes: 1 << 20, SoftBytes: 512 << 10, SoftDuration: time.Hour,
	}}, resp.Config{})
	slowDial(t, s.addr, "stalled", "SUBSCRIBE slow\r\n", "*3", "$9", "subscribe", "$4", "slow", ":1")

	before := slowHeapAlloc()
	for i := range total / size {
		// A fresh payload each time, as each committed message is.
		payload := bytes.Repeat([]byte{'m'}, size)
		// It reaches the stalled client until the server has closed it.
		s.broker.DeliverBatch([]*broker.Message{{Channel: "slow", Payload: payload, Epoch: 1, Seq: uint64(i + 1)}}, make([]int, 1))
	}
	after := slowHeapAlloc()
	t.Logf("heap: %.1f MiB before, %.1f MiB after pushing %d MiB", float64(before)/(1<<20), float64(after)/(1<<20), total>>20)
	if after > before && after-before > maxGrow {
		t.Errorf("heap grew by %d MiB pushing %d MiB at a client with a 1 MiB limit", (after-before)>>20, total>>20)
	}
	if got := s.broker.Stats().SlowDisconnect; got != 1 {
		t.Errorf("SlowDisconnect = %d, want 1: the stalled client never passed its limit", got)
	}
}

// slowHeapAlloc returns the bytes of live heap objects after a collection.
func slowHeapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestSubscriberWriteSizes: a subscriber gets every message intact and in
// order whatever the size of its writer's batches: a single small message,
// a pipelined burst of them, and messages on either side of the 64 KiB
// that a write gathers into one buffer (a larger batch is written from its
// frames).
func TestSubscriberWriteSizes(t *testing.T) {
	ctx := grContext(t, time.Minute)
	s := startServer(t, broker.Config{}, resp.Config{})
	var subs []<-chan *redis.Message
	for _, proto := range []int{2, 3} {
		ps := newGoRedis(t, s.addr, proto).Subscribe(ctx, "sizes")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "sizes", 1)
		subs = append(subs, ps.Channel(redis.WithChannelSize(256)))
	}
	var sizes []int
	for range 64 {
		sizes = append(sizes, 100) // a burst: batches of many small frames
	}
	sizes = append(sizes, 64<<10-100, 64<<10, 64<<10+1, 200<<10, 1<<20, 10)
	pub := newGoRedis(t, s.addr, 2)
	_, err := pub.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range sizes {
			p.Publish(ctx, "sizes", slowPayload(i, n))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for sub, ch := range subs {
		for i, n := range sizes {
			select {
			case m := <-ch:
				if m.Payload != slowPayload(i, n) {
					t.Fatalf("subscriber %d, message %d (%d bytes): got %d bytes starting %.8q", sub, i, n, len(m.Payload), m.Payload)
				}
			case <-ctx.Done():
				t.Fatalf("subscriber %d: message %d (%d bytes) not received", sub, i, n)
			}
		}
	}
}
