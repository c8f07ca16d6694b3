package resp_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
	"github.com/redis/go-redis/v9"
)

// These tests drive Herald with go-redis v9, once per protocol version.

// grForEachProtocol runs f as a subtest for RESP2 and for RESP3.
func grForEachProtocol(t *testing.T, f func(t *testing.T, proto int)) {
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) { f(t, proto) })
	}
}

// newGoRedis returns a go-redis client of addr speaking proto, closed when
// the test ends. opts, if given, adjust its options.
//
// It never retries: go-redis resends a whole pipeline after a read timeout,
// and a PUBLISH sent twice is delivered twice, which a test would take for
// Herald's duplicate. Its timeouts are generous, for a loaded machine.
func newGoRedis(t testing.TB, addr string, proto int, opts ...func(*redis.Options)) *redis.Client {
	t.Helper()
	o := &redis.Options{Addr: addr, Protocol: proto, MaxRetries: -1,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	for _, f := range opts {
		f(o)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// grContext returns a context that ends with the test or after d.
func grContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// grReceive receives the next reply on ps and fails unless it is a T.
func grReceive[T any](t testing.TB, ctx context.Context, ps *redis.PubSub) T {
	t.Helper()
	v, err := ps.ReceiveTimeout(ctx, 10*time.Second)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	got, ok := v.(T)
	if !ok {
		var want T
		t.Fatalf("receive: got %T %v, want %T", v, v, want)
	}
	return got
}

// grSubscribed waits for ps's confirmation of kind for name. Once it has
// arrived, publishers count the subscription.
func grSubscribed(t testing.TB, ctx context.Context, ps *redis.PubSub, kind, name string, count int) {
	t.Helper()
	got := grReceive[*redis.Subscription](t, ctx, ps)
	if got.Kind != kind || got.Channel != name || got.Count != count {
		t.Fatalf("confirmation: got %s %s %d, want %s %s %d", got.Kind, got.Channel, got.Count, kind, name, count)
	}
}

// grPublish publishes and fails unless the reply is want.
func grPublish(t testing.TB, ctx context.Context, rdb *redis.Client, channel, payload string, want int64) {
	t.Helper()
	n, err := rdb.Publish(ctx, channel, payload).Result()
	if err != nil || n != want {
		t.Fatalf("PUBLISH %s %s: got %d, %v; want %d", channel, payload, n, err, want)
	}
}

// grMessage receives the next message on ps and fails unless it is want.
func grMessage(t testing.TB, ctx context.Context, ps *redis.PubSub, want redis.Message) {
	t.Helper()
	got := grReceive[*redis.Message](t, ctx, ps)
	if got.Channel != want.Channel || got.Pattern != want.Pattern || got.Payload != want.Payload {
		t.Fatalf("message: got %+v, want %+v", *got, want)
	}
}

func TestGoRedisSubscribe(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 30*time.Second)
		s := startServer(t, broker.Config{}, resp.Config{})
		rdb := newGoRedis(t, s.addr, proto)

		ps := rdb.Subscribe(ctx, "news")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "news", 1)
		grPublish(t, ctx, rdb, "news", "hello", 1)
		grPublish(t, ctx, rdb, "other", "nobody", 0)
		grPublish(t, ctx, rdb, "news", "again", 1)
		for _, payload := range []string{"hello", "again"} {
			got, err := ps.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got.Channel != "news" || got.Payload != payload {
				t.Fatalf("ReceiveMessage: got %+v, want news %s", *got, payload)
			}
		}

		if err := ps.Unsubscribe(ctx, "news"); err != nil {
			t.Fatal(err)
		}
		grSubscribed(t, ctx, ps, "unsubscribe", "news", 0)
		grPublish(t, ctx, rdb, "news", "gone", 0)
	})
}

func TestGoRedisPSubscribe(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 30*time.Second)
		s := startServer(t, broker.Config{}, resp.Config{})
		rdb := newGoRedis(t, s.addr, proto)

		ps := rdb.PSubscribe(ctx, "news.*")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "psubscribe", "news.*", 1)
		grPublish(t, ctx, rdb, "weather", "rain", 0)
		grPublish(t, ctx, rdb, "news.sport", "goal", 1)
		grMessage(t, ctx, ps, redis.Message{Pattern: "news.*", Channel: "news.sport", Payload: "goal"})

		// Subscribed to the channel as well, the client counts twice.
		if err := ps.Subscribe(ctx, "news.sport"); err != nil {
			t.Fatal(err)
		}
		grSubscribed(t, ctx, ps, "subscribe", "news.sport", 2)
		grPublish(t, ctx, rdb, "news.sport", "again", 2)
		grMessage(t, ctx, ps, redis.Message{Channel: "news.sport", Payload: "again"})
		grMessage(t, ctx, ps, redis.Message{Pattern: "news.*", Channel: "news.sport", Payload: "again"})
	})
}

func TestGoRedisSSubscribe(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 30*time.Second)
		s := startServer(t, broker.Config{}, resp.Config{})
		rdb := newGoRedis(t, s.addr, proto)

		ps := rdb.SSubscribe(ctx, "orders")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "ssubscribe", "orders", 1)
		// PUBLISH does not reach a shard subscriber.
		grPublish(t, ctx, rdb, "orders", "global", 0)
		n, err := rdb.SPublish(ctx, "orders", "sharded").Result()
		if err != nil || n != 1 {
			t.Fatalf("SPUBLISH: got %d, %v; want 1", n, err)
		}
		grMessage(t, ctx, ps, redis.Message{Channel: "orders", Payload: "sharded"})

		shard, err := rdb.PubSubShardNumSub(ctx, "orders").Result()
		if err != nil || shard["orders"] != 1 {
			t.Fatalf("PUBSUB SHARDNUMSUB: got %v, %v; want orders 1", shard, err)
		}
		global, err := rdb.PubSubNumSub(ctx, "orders").Result()
		if err != nil || global["orders"] != 0 {
			t.Fatalf("PUBSUB NUMSUB: got %v, %v; want orders 0", global, err)
		}
	})
}

func TestGoRedisPubSubIntrospection(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 30*time.Second)
		s := startServer(t, broker.Config{}, resp.Config{})
		rdb := newGoRedis(t, s.addr, proto)

		ps := rdb.Subscribe(ctx, "news", "chat")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "news", 1)
		grSubscribed(t, ctx, ps, "subscribe", "chat", 2)
		pps := rdb.PSubscribe(ctx, "news.*")
		defer pps.Close()
		grSubscribed(t, ctx, pps, "psubscribe", "news.*", 1)

		numsub, err := rdb.PubSubNumSub(ctx, "news", "other").Result()
		if want := map[string]int64{"news": 1, "other": 0}; err != nil || fmt.Sprint(numsub) != fmt.Sprint(want) {
			t.Errorf("PUBSUB NUMSUB: got %v, %v; want %v", numsub, err, want)
		}
		chans, err := rdb.PubSubChannels(ctx, "*").Result()
		if err != nil || strings.Join(chans, " ") != "chat news" {
			t.Errorf("PUBSUB CHANNELS: got %q, %v; want [chat news]", chans, err)
		}
		numpat, err := rdb.PubSubNumPat(ctx).Result()
		if err != nil || numpat != 1 {
			t.Errorf("PUBSUB NUMPAT: got %d, %v; want 1", numpat, err)
		}
	})
}

func TestGoRedisClientName(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 30*time.Second)
		s := startServer(t, broker.Config{}, resp.Config{})

		// Options.ClientName travels in HELLO's SETNAME.
		named := newGoRedis(t, s.addr, proto, func(o *redis.Options) { o.ClientName = "from-hello" })
		if got, err := named.ClientGetName(ctx).Result(); err != nil || got != "from-hello" {
			t.Fatalf("CLIENT GETNAME after HELLO SETNAME: got %q, %v", got, err)
		}

		rdb := newGoRedis(t, s.addr, proto)
		conn := rdb.Conn()
		defer conn.Close()
		if _, err := conn.ClientGetName(ctx).Result(); err != redis.Nil {
			t.Fatalf("CLIENT GETNAME with no name: got err %v, want redis.Nil", err)
		}
		if ok, err := conn.ClientSetName(ctx, "renamed").Result(); err != nil || !ok {
			t.Fatalf("CLIENT SETNAME: got %v, %v", ok, err)
		}
		if got, err := conn.ClientGetName(ctx).Result(); err != nil || got != "renamed" {
			t.Fatalf("CLIENT GETNAME: got %q, %v; want renamed", got, err)
		}
		if _, err := conn.ClientSetName(ctx, "has space").Result(); err == nil || !strings.Contains(err.Error(), "cannot contain spaces") {
			t.Fatalf("CLIENT SETNAME with a space: got err %v", err)
		}
	})
}

func TestGoRedisPubSubPing(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 30*time.Second)
		s := startServer(t, broker.Config{}, resp.Config{})
		rdb := newGoRedis(t, s.addr, proto)

		ps := rdb.Subscribe(ctx, "news")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "news", 1)
		// RESP2 subscribed mode answers [pong, arg]; RESP3 an ordinary reply.
		bare := map[int]string{2: "", 3: "PONG"}[proto]
		for _, tc := range []struct {
			arg  []string
			want string
		}{
			{nil, bare},
			{[]string{"hi"}, "hi"},
		} {
			if err := ps.Ping(ctx, tc.arg...); err != nil {
				t.Fatal(err)
			}
			if got := grReceive[*redis.Pong](t, ctx, ps); got.Payload != tc.want {
				t.Fatalf("PING %v: got %q, want %q", tc.arg, got.Payload, tc.want)
			}
		}
		// The connection still delivers messages after the pings.
		grPublish(t, ctx, rdb, "news", "after ping", 1)
		grMessage(t, ctx, ps, redis.Message{Channel: "news", Payload: "after ping"})
	})
}

// grCollect receives n messages from ch in a goroutine and returns a
// function that waits for them: it returns the payloads, or fails the test
// if ctx ends first.
func grCollect(t *testing.T, ctx context.Context, ch <-chan *redis.Message, n int) func() []string {
	got := make([]string, 0, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(got) < n {
			select {
			case m, ok := <-ch:
				if !ok {
					return
				}
				got = append(got, m.Payload)
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() []string {
		t.Helper()
		<-done
		if len(got) < n {
			t.Fatalf("subscriber received %d of %d messages before %v", len(got), n, context.Cause(ctx))
		}
		return got
	}
}

func TestGoRedisPipelinedPublishOrder(t *testing.T) {
	const n = 10_000
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 2*time.Minute)
		s := startServer(t, broker.Config{}, resp.Config{})
		rdb := newGoRedis(t, s.addr, proto)

		ps := rdb.Subscribe(ctx, "seq")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "seq", 1)
		wait := grCollect(t, ctx, ps.Channel(), n)

		cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range n {
				p.Publish(ctx, "seq", strconv.Itoa(i))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("pipeline: %v", err)
		}
		for i, c := range cmds {
			if got := c.(*redis.IntCmd).Val(); got != 1 {
				t.Fatalf("PUBLISH %d: got %d receivers, want 1", i, got)
			}
		}
		for i, p := range wait() {
			if p != strconv.Itoa(i) {
				t.Fatalf("message %d: got payload %q: messages lost, duplicated or out of order", i, p)
			}
		}
	})
}

func TestGoRedisConcurrentPublishers(t *testing.T) {
	const (
		publishers  = 4
		perPub      = 2_500
		subscribers = 3
	)
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 2*time.Minute)
		s := startServer(t, broker.Config{}, resp.Config{})

		waits := make([]func() []string, subscribers)
		for i := range waits {
			ps := newGoRedis(t, s.addr, proto).Subscribe(ctx, "fan")
			defer ps.Close()
			grSubscribed(t, ctx, ps, "subscribe", "fan", 1)
			waits[i] = grCollect(t, ctx, ps.Channel(), publishers*perPub)
		}

		errs := make(chan error, publishers)
		var wg sync.WaitGroup
		for p := range publishers {
			rdb := newGoRedis(t, s.addr, proto)
			wg.Go(func() {
				cmds, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
					for i := range perPub {
						pipe.Publish(ctx, "fan", fmt.Sprintf("%d:%d", p, i))
					}
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("publisher %d: %w", p, err)
					return
				}
				for i, c := range cmds {
					if got := c.(*redis.IntCmd).Val(); got != subscribers {
						errs <- fmt.Errorf("publisher %d, PUBLISH %d: got %d receivers, want %d", p, i, got, subscribers)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}

		// Each publisher's messages must reach every subscriber once, in
		// the order it sent them; how they interleave is up to the log.
		for sub, wait := range waits {
			next := make([]int, publishers)
			for k, payload := range wait() {
				var p, i int
				if _, err := fmt.Sscanf(payload, "%d:%d", &p, &i); err != nil || p < 0 || p >= publishers {
					t.Fatalf("subscriber %d, message %d: bad payload %q", sub, k, payload)
				}
				if i != next[p] {
					t.Fatalf("subscriber %d, message %d: got publisher %d's message %d, want its message %d", sub, k, p, i, next[p])
				}
				next[p]++
			}
		}
	})
}

// grRecorder keeps a copy of everything written to the connections it
// dials, to see what a client sent.
type grRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *grRecorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &grRecordingConn{Conn: nc, r: r}, nil
}

func (r *grRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

type grRecordingConn struct {
	net.Conn
	r *grRecorder
}

func (c *grRecordingConn) Write(p []byte) (int, error) {
	c.r.mu.Lock()
	c.r.buf.Write(p)
	c.r.mu.Unlock()
	return c.Conn.Write(p)
}

// TestGoRedisHandshake checks the commands go-redis sends on connect: HELLO,
// CLIENT SETINFO and, with RESP3, CLIENT MAINT_NOTIFICATIONS, which Herald
// refuses and go-redis must then do without.
func TestGoRedisHandshake(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		ctx := grContext(t, 30*time.Second)
		s := startServer(t, broker.Config{}, resp.Config{})
		var sent grRecorder
		rdb := newGoRedis(t, s.addr, proto, func(o *redis.Options) { o.Dialer = sent.dial })

		if got, err := rdb.Ping(ctx).Result(); err != nil || got != "PONG" {
			t.Fatalf("PING: got %q, %v", got, err)
		}
		wantSent := []string{
			fmt.Sprintf("$5\r\nhello\r\n$1\r\n%d\r\n", proto),
			"$7\r\nsetinfo\r\n$8\r\nLIB-NAME\r\n",
			"$7\r\nsetinfo\r\n$7\r\nLIB-VER\r\n",
		}
		if proto == 3 {
			wantSent = append(wantSent, "$19\r\nmaint_notifications\r\n")
		}
		for _, w := range wantSent {
			if !strings.Contains(strings.ToLower(sent.String()), strings.ToLower(w)) {
				t.Errorf("go-redis did not send %q; sent %q", w, sent.String())
			}
		}

		info, err := rdb.ClientInfo(ctx).Result()
		if err != nil {
			t.Fatalf("CLIENT INFO: %v", err)
		}
		if info.Resp != proto || !strings.HasPrefix(info.LibName, "go-redis(") || info.LibVer != redis.Version() {
			t.Errorf("CLIENT INFO: resp=%d lib-name=%s lib-ver=%s; want resp=%d lib-name=go-redis(...) lib-ver=%s",
				info.Resp, info.LibName, info.LibVer, proto, redis.Version())
		}

		// A subscribed connection runs any command in RESP3; RESP2 allows
		// only the subscription commands, PING, QUIT and RESET.
		ps := rdb.Subscribe(ctx, "hs")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "hs", 1)
		if err := ps.ClientSetName(ctx, "subscribed"); err != nil {
			t.Fatal(err)
		}
		switch proto {
		case 2:
			_, err := ps.ReceiveTimeout(ctx, 10*time.Second)
			if err == nil || !strings.Contains(err.Error(), "Can't execute 'client|setname'") {
				t.Fatalf("CLIENT SETNAME while subscribed in RESP2: got err %v", err)
			}
		case 3:
			if got := grReceive[*redis.Pong](t, ctx, ps); got.Payload != "OK" {
				t.Fatalf("CLIENT SETNAME while subscribed in RESP3: got %q, want OK", got.Payload)
			}
			list, err := rdb.ClientList(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if !grLineContains(list, " name=subscribed ", " flags=P ") {
				t.Fatalf("CLIENT LIST has no subscribed client named subscribed:\n%s", list)
			}
		}
		grPublish(t, ctx, rdb, "hs", "still subscribed", 1)
		grMessage(t, ctx, ps, redis.Message{Channel: "hs", Payload: "still subscribed"})
	})
}

// grLineContains reports whether one line of text contains all of parts.
func grLineContains(text string, parts ...string) bool {
	for line := range strings.Lines(text) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

func TestGoRedisRequirePass(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		s := startServer(t, broker.Config{}, resp.Config{RequirePass: "s3cret"})
		for _, tc := range []struct {
			name     string
			password string
			wantErr  string // "" for success
		}{
			{"none", "", "NOAUTH"},
			{"wrong", "nope", "WRONGPASS"},
			{"right", "s3cret", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := grContext(t, 30*time.Second)
				rdb := newGoRedis(t, s.addr, proto, func(o *redis.Options) {
					o.Password = tc.password
				})
				_, err := rdb.Ping(ctx).Result()
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("PING: got err %v, want %s", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("PING: %v", err)
				}
				// The subscriber's own connection authenticates too.
				ps := rdb.Subscribe(ctx, "secret")
				defer ps.Close()
				grSubscribed(t, ctx, ps, "subscribe", "secret", 1)
				grPublish(t, ctx, rdb, "secret", "x", 1)
				grMessage(t, ctx, ps, redis.Message{Channel: "secret", Payload: "x"})
			})
		}
	})
}
