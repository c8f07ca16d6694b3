package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
)

// TestHostileInput runs one Herald in this process and throws malformed and
// oversized input at every endpoint at once (RESP, /ws, /sse, /poll,
// /publish) while well-behaved clients publish and receive. Properties: no
// crash; every message the good publisher had acknowledged reaches every
// good subscriber, in order, exactly once; the heap stays bounded during
// the attack and returns near its starting size after it.
func TestHostileInput(t *testing.T) {
	respAddr, httpAddr := freeAddr(t), freeAddr(t)
	cfg, err := parseConfig([]string{"--resp-addr", respAddr, "--http-addr", httpAddr, "--raft-addr", freeAddr(t),
		"--data-dir", t.TempDir(), "--max-payload", "64kb", "--max-channel-len", "256", "--max-subscriptions", "50",
		"--outbox-hard-limit", "1mb", "--outbox-soft-limit", "512kb", "--client-query-buffer-limit", "2mb"},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, slog.New(slog.DiscardHandler), new(slog.LevelVar)) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("herald did not stop")
		}
	})
	tctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitFor(t, 30*time.Second, "herald to serve", func() bool {
		rdb := redis.NewClient(&redis.Options{Addr: respAddr, MaxRetries: -1})
		defer rdb.Close()
		return rdb.Ping(tctx).Err() == nil
	})

	// Good subscribers: two over RESP, one over WebSocket.
	const messages = 300
	var good []*redis.PubSub
	for range 2 {
		rdb := redis.NewClient(&redis.Options{Addr: respAddr, MaxRetries: -1})
		defer rdb.Close()
		ps := rdb.Subscribe(tctx, "good")
		if _, err := ps.Receive(tctx); err != nil {
			t.Fatal(err)
		}
		defer ps.Close()
		good = append(good, ps)
	}
	ws, _, err := websocket.Dial(tctx, "ws://"+httpAddr+"/ws?channel=good", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1)
	// Subscribed once its resume event arrives: it gets every publish
	// from then on.
	readUntil(t, tctx, ws, `"type":"resume"`)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// The attack, until the good publisher is done.
	var done atomic.Bool
	var attackers sync.WaitGroup
	var peak atomic.Uint64
	attacks := hostileAttacks(respAddr, httpAddr)
	rounds := make([]atomic.Int64, len(attacks))
	for i, attack := range attacks {
		attackers.Add(1)
		go func() {
			defer attackers.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for round := 0; round < 100000 && !done.Load(); round++ {
				attack(tctx, r)
				rounds[i].Add(1)
			}
		}()
	}
	attackers.Add(1)
	go func() {
		defer attackers.Done()
		var m runtime.MemStats
		for !done.Load() {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			time.Sleep(50 * time.Millisecond) // sampling interval, not synchronization
		}
	}()

	// The good publisher, one message at a time, each acknowledged.
	pub := redis.NewClient(&redis.Options{Addr: respAddr, MaxRetries: -1})
	defer pub.Close()
	receivers := make(chan error, 3)
	for _, ps := range good {
		go func() { receivers <- receiveRESP(tctx, ps, messages) }()
	}
	go func() { receivers <- receiveWS(tctx, ws, messages) }()
	for i := 1; i <= messages; i++ {
		if err := pub.Publish(tctx, "good", "m"+strconv.Itoa(i)).Err(); err != nil {
			done.Store(true)
			t.Fatalf("good publish %d: %v", i, err)
		}
	}
	for range 3 {
		if err := <-receivers; err != nil {
			done.Store(true)
			t.Fatal(err)
		}
	}
	done.Store(true)
	attackers.Wait()

	// Still serving, and memory back near where it started.
	if err := pub.Ping(tctx).Err(); err != nil {
		t.Fatalf("PING after the attack: %v", err)
	}
	var after runtime.MemStats
	const slack = 64 << 20
	waitFor(t, 30*time.Second, "the heap to shrink back after the attack", func() bool {
		runtime.GC()
		runtime.ReadMemStats(&after)
		return after.HeapInuse < before.HeapInuse+slack
	})
	counts := make([]int64, len(rounds))
	for i := range rounds {
		counts[i] = rounds[i].Load()
		if counts[i] == 0 {
			t.Errorf("attack %d never completed a round while the good clients ran", i)
		}
	}
	t.Logf("attack rounds %v; heap in use: %d MiB before, peak %d MiB during, %d MiB after the attack",
		counts, before.HeapInuse>>20, peak.Load()>>20, after.HeapInuse>>20)
	if p := peak.Load(); p > before.HeapInuse+256<<20 {
		t.Fatalf("heap peaked at %d MiB during the attack (started at %d MiB)", p>>20, before.HeapInuse>>20)
	}
}

// receiveRESP checks a RESP subscriber receives m1..mN in order.
func receiveRESP(ctx context.Context, ps *redis.PubSub, n int) error {
	for i := 1; i <= n; i++ {
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("RESP subscriber, waiting for m%d: %w", i, err)
		}
		if msg.Payload != "m"+strconv.Itoa(i) {
			return fmt.Errorf("RESP subscriber: got %q, want m%d", msg.Payload, i)
		}
	}
	return nil
}

// receiveWS checks a WebSocket subscriber receives m1..mN in order.
func receiveWS(ctx context.Context, ws *websocket.Conn, n int) error {
	next := 1
	for next <= n {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("WebSocket subscriber, waiting for m%d: %w", next, err)
		}
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			var e struct{ Type, Data string }
			if err := json.Unmarshal(line, &e); err != nil {
				return fmt.Errorf("WebSocket subscriber: %q: %w", line, err)
			}
			if e.Type != "message" {
				continue
			}
			if e.Data != "m"+strconv.Itoa(next) {
				return fmt.Errorf("WebSocket subscriber: got %q, want m%d", e.Data, next)
			}
			next++
		}
	}
	return nil
}

// hostileAttacks returns one function per kind of abuse; each call is one
// bounded round of it, on connections of its own.
func hostileAttacks(respAddr, httpAddr string) []func(ctx context.Context, r *rand.Rand) {
	raw := func(ctx context.Context, addr string, input []byte, readReply bool) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(input)
		if readReply {
			bufio.NewReader(c).ReadString('\n')
		}
	}
	garbage := func(r *rand.Rand, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}
	get := func(ctx context.Context, url string, header http.Header, body io.Reader, method string) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, url, body)
		if err != nil {
			return
		}
		for k, v := range header {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
	}
	resp, base := respAddr, "http://"+httpAddr
	return []func(context.Context, *rand.Rand){
		// RESP: random bytes, and framing errors Redis closes on.
		func(ctx context.Context, r *rand.Rand) { raw(ctx, resp, garbage(r, 1+r.IntN(4096)), true) },
		func(ctx context.Context, r *rand.Rand) {
			inputs := []string{"*99999999999\r\n", "*1\r\n$999999999999\r\n", "*2\r\n$4\r\nECHO\r\n$5\r\nab", "ECHO \"unbalanced\r\n",
				"*1\r\n" + strings.Repeat("$", 70000), strings.Repeat("A", 70000), "*-5\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}
			raw(ctx, resp, []byte(inputs[r.IntN(len(inputs))]), true)
		},
		// RESP: oversized payloads, long channels, a pipeline of mixed
		// good and bad commands.
		func(ctx context.Context, r *rand.Rand) {
			big := strings.Repeat("x", 65*1024+r.IntN(1000))
			raw(ctx, resp, fmt.Appendf(nil, "*3\r\n$7\r\nPUBLISH\r\n$3\r\nbad\r\n$%d\r\n%s\r\n*3\r\n$7\r\nPUBLISH\r\n$300\r\n%s\r\n$1\r\nx\r\n",
				len(big), big, strings.Repeat("c", 300)), true)
		},
		// RESP: a slow consumer that subscribes to the good channel and
		// never reads: its outbox limit closes it.
		func(ctx context.Context, r *rand.Rand) {
			d := net.Dialer{Timeout: 5 * time.Second}
			c, err := d.DialContext(ctx, "tcp", resp)
			if err != nil {
				return
			}
			c.Write([]byte("SUBSCRIBE good bad\r\n"))
			time.Sleep(200 * time.Millisecond) // how long it stays without reading
			c.Close()
		},
		// RESP: a big command that hits the query buffer limit.
		func(ctx context.Context, r *rand.Rand) {
			raw(ctx, resp, []byte("*2\r\n$4\r\nECHO\r\n$3000000\r\n"+strings.Repeat("y", 3<<20/4)), true)
		},
		// WebSocket: malformed requests, binary frames, oversized
		// frames, too many subscriptions, long names.
		func(ctx context.Context, r *rand.Rand) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws", nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			frames := [][]byte{garbage(r, 1+r.IntN(512)), []byte(`{"op":"subscribe","channel":"` + strings.Repeat("n", 300) + `"}`),
				[]byte(`{"op":"subscribe","pattern":"*","since":-1}`), []byte(`{"op":"publish","channel":"good","data":"forged"}`),
				[]byte(`{"op":"subscribe","channel":"good","since":0,"epoch":18446744073709551615}`)}
			for i := range 60 {
				frames = append(frames, []byte(`{"op":"subscribe","channel":"s`+strconv.Itoa(i)+`"}`))
			}
			for _, fr := range frames {
				if c.Write(ctx, websocket.MessageText, fr) != nil {
					return
				}
			}
			c.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3})
			c.Write(ctx, websocket.MessageText, bytes.Repeat([]byte("z"), 200<<10))
		},
		// SSE and long-poll: bad queries, hostile Last-Event-IDs, big
		// timeouts, many channels.
		func(ctx context.Context, r *rand.Rand) {
			queries := []string{"channel=", "since=1", "channel=a&since=-1", "channel=a&timeout=-1s", "channel=a&timeout=100h",
				"channel=" + strings.Repeat("q", 300), strings.Repeat("channel=a&", 100), "channel=a&epoch=x", "channel=%zz"}
			q := queries[r.IntN(len(queries))]
			get(ctx, base+"/poll?timeout=10ms&"+q, nil, nil, "GET")
			get(ctx, base+"/sse?"+q, http.Header{"Last-Event-Id": {string(garbage(r, 20))}}, nil, "GET")
		},
		// POST /publish: oversized bodies, browser origins, odd paths.
		func(ctx context.Context, r *rand.Rand) {
			get(ctx, base+"/publish/bad", nil, bytes.NewReader(make([]byte, 65*1024)), "POST")
			get(ctx, base+"/publish/good", http.Header{"Origin": {"http://evil.example"}}, strings.NewReader("forged"), "POST")
			get(ctx, base+"/publish/"+strings.Repeat("p", 300), nil, strings.NewReader("x"), "POST")
			get(ctx, base+"/publish/", nil, strings.NewReader("x"), "POST")
		},
	}
}
