package wsbridge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/raftstore/raftstoretest"
	"github.com/herald-broker/herald/resp"
	"github.com/herald-broker/herald/wsbridge"
)

// ioTimeout bounds every wait in these tests. It guards against a hang and
// is never what a test asserts: a healthy run waits milliseconds.
const ioTimeout = 30 * time.Second

// node is one Herald node as these tests run it: a broker on a real
// single-node (or cluster member) Raft-on-Pebble store, and a wsbridge
// server on a random loopback port.
type node struct {
	b     *broker.Broker
	store *raftstore.Store
	srv   *wsbridge.Server
	url   string // http://127.0.0.1:port
}

// startNode starts a single-node Herald: broker, store and HTTP server.
// cfg.Ready defaults to the store's readiness.
func startNode(t testing.TB, bcfg broker.Config, rcfg raftstore.Config, cfg wsbridge.Config) *node {
	t.Helper()
	b := broker.New(bcfg)
	st := raftstoretest.Open(t, b, rcfg)
	return serveNode(t, b, st, cfg)
}

// startCluster starts an n-node cluster, each node with its own broker and
// HTTP server.
func startCluster(t testing.TB, n int, bcfg broker.Config, rcfg raftstore.Config, cfg wsbridge.Config) []*node {
	t.Helper()
	c := raftstoretest.OpenCluster(t, n, bcfg, rcfg)
	nodes := make([]*node, n)
	for i := range n {
		nodes[i] = serveNode(t, c.Brokers[i], c.Stores[i], cfg)
	}
	return nodes
}

func serveNode(t testing.TB, b *broker.Broker, st *raftstore.Store, cfg wsbridge.Config) *node {
	t.Helper()
	return serveNodeOn(t, b, st, cfg, nil)
}

// serveNodeOn serves the node's HTTP side on a listener that wrap (if not
// nil) wraps.
func serveNodeOn(t testing.TB, b *broker.Broker, st *raftstore.Store, cfg wsbridge.Config, wrap func(net.Listener) net.Listener) *node {
	t.Helper()
	if cfg.Ready == nil {
		cfg.Ready = st.Ready
	}
	srv := wsbridge.New(b, cfg)
	hs := httptest.NewUnstartedServer(srv.Handler())
	if wrap != nil {
		hs.Listener = wrap(hs.Listener)
	}
	hs.Start()
	t.Cleanup(hs.Close)
	// Runs before hs.Close: ends SSE streams and long-polls, which
	// hs.Close would otherwise wait for.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &node{b: b, store: st, srv: srv, url: hs.URL}
}

// wsURL is the node's WebSocket endpoint, with an optional query string.
func (n *node) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(n.url, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// publish publishes one message through the node's broker and returns its
// receipt.
func (n *node) publish(t testing.TB, channel string, payload []byte) broker.Receipt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	rs, err := n.b.Publish(ctx, []broker.Publish{{Channel: channel, Payload: payload}})
	if err != nil {
		t.Fatalf("publish to %q: %v", channel, err)
	}
	return rs[0]
}

// publishRange publishes "m<i>" for i in [from, to] to channel, one publish
// each, so that on a fresh channel message i has sequence number i. It
// returns the channel's epoch.
func (n *node) publishRange(t testing.TB, channel string, from, to int) uint64 {
	t.Helper()
	var epoch uint64
	for i := from; i <= to; i++ {
		r := n.publish(t, channel, fmt.Appendf(nil, "m%d", i))
		if r.Seq != uint64(i) {
			t.Fatalf("publish m%d to %q got seq %d", i, channel, r.Seq)
		}
		epoch = r.Epoch
	}
	return epoch
}

// history reads channel's retained history on this node.
func (n *node) history(t testing.TB, channel string) broker.History {
	t.Helper()
	h, err := n.b.Log().History(broker.Global, channel, broker.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fillTrimmed publishes "m<seq>" to channel until it has at least min
// messages and its retained history is exactly keep messages long (the
// retention policy is proposed by the leader after it is elected, so the
// first publishes may come before it is in force). It returns the history.
func (n *node) fillTrimmed(t testing.TB, channel string, min, keep int) broker.History {
	t.Helper()
	for i := 1; i <= min+200; i++ {
		n.publish(t, channel, fmt.Appendf(nil, "m%d", i))
		if i < min {
			continue
		}
		if h := n.history(t, channel); h.Last-h.First+1 == uint64(keep) && len(h.Messages) == keep {
			return h
		}
	}
	t.Fatalf("channel %q: history never trimmed to %d messages: %+v", channel, keep, n.history(t, channel))
	return broker.History{}
}

// waitFor polls cond until it holds, failing after ioTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // poll interval, not synchronization
	}
}

// startRESP serves the Redis protocol for b on a random loopback port and
// returns its address.
func startRESP(t testing.TB, b *broker.Broker) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := resp.New(b, resp.Config{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil && !errors.Is(err, resp.ErrServerClosed) {
			t.Errorf("resp server: %v", err)
		}
	})
	return ln.Addr().String()
}

// redisCLI runs the real redis-cli against addr with args, feeding it
// stdin, and returns its output without the final newline.
func redisCLI(t testing.TB, addr string, stdin []byte, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not found: install redis-tools (make deps)")
	}
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"-h", host, "-p", port}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("redis-cli %q: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	return strings.TrimSuffix(stdout.String(), "\n")
}

// event is one server event, decoded strictly: a field the protocol does
// not have fails the test.
type event struct {
	Type      string          `json:"type"`
	ID        json.RawMessage `json:"id"`
	Channel   string          `json:"channel"`
	Pattern   string          `json:"pattern"`
	Recovered *bool           `json:"recovered"`
	Epoch     uint64          `json:"epoch"`
	Seq       uint64          `json:"seq"`
	From      uint64          `json:"from"`
	Last      uint64          `json:"last"`
	Time      int64           `json:"time"`
	Data      string          `json:"data"`
	Base64    bool            `json:"base64"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`

	raw string
}

func decodeEvent(line []byte) (event, error) {
	var e event
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return e, fmt.Errorf("event %q: %w", line, err)
	}
	if d.More() {
		return e, fmt.Errorf("event %q: more than one JSON value on the line", line)
	}
	e.raw = string(line)
	return e, nil
}

// payload returns the message's payload, base64-decoded if need be.
func (e event) payload(t testing.TB) []byte {
	t.Helper()
	if !e.Base64 {
		return []byte(e.Data)
	}
	p, err := base64.StdEncoding.DecodeString(e.Data)
	if err != nil {
		t.Fatalf("event %s: %v", e.raw, err)
	}
	return p
}

// wsClient is a real coder/websocket client speaking Herald's JSON
// protocol: it splits each frame into events on '\n'.
type wsClient struct {
	t     testing.TB
	conn  *websocket.Conn
	queue []event
}

// dialWS connects to a node's WebSocket endpoint and fails the test if the
// handshake fails.
func dialWS(t testing.TB, url string, opts *websocket.DialOptions) *wsClient {
	t.Helper()
	c, err := tryDialWS(t, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// tryDialWS connects and returns the handshake's error, with the HTTP
// status in it when the server refused.
func tryDialWS(t testing.TB, url string, opts *websocket.DialOptions) (*wsClient, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conn, res, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		if res != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, res.StatusCode)
		}
		return nil, err
	}
	conn.SetReadLimit(-1) // the server batches events into large frames
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: t, conn: conn}, nil
}

// send writes v as one JSON text frame.
func (c *wsClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(websocket.MessageText, b)
}

func (c *wsClient) sendRaw(typ websocket.MessageType, b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, typ, b); err != nil {
		c.t.Fatalf("write %.100q: %v", b, err)
	}
}

// next returns the next event.
func (c *wsClient) next() event {
	c.t.Helper()
	for len(c.queue) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		typ, data, err := c.conn.Read(ctx)
		cancel()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if typ != websocket.MessageText {
			c.t.Fatalf("got a %v frame; the server sends text only", typ)
		}
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			e, err := decodeEvent(line)
			if err != nil {
				c.t.Fatalf("frame %.300q: %v", data, err)
			}
			c.queue = append(c.queue, e)
		}
	}
	e := c.queue[0]
	c.queue = c.queue[1:]
	return e
}

// expect returns the next event, failing unless it is of type typ.
func (c *wsClient) expect(typ string) event {
	c.t.Helper()
	e := c.next()
	if e.Type != typ {
		c.t.Fatalf("got %s, want a %q event", e.raw, typ)
	}
	return e
}

// subscribe subscribes to channel (with since and epoch if since is not
// nil) and checks the confirmation.
func (c *wsClient) subscribe(channel string, since *uint64, epoch uint64) {
	c.t.Helper()
	req := map[string]any{"id": 1, "op": "subscribe", "channel": channel}
	if since != nil {
		req["since"] = *since
		if epoch != 0 {
			req["epoch"] = epoch
		}
	}
	c.send(req)
	e := c.expect("subscribed")
	if e.Channel != channel || string(e.ID) != "1" {
		c.t.Fatalf("confirmation %s, want channel %q and id 1", e.raw, channel)
	}
	if since == nil {
		// A live subscription says where its stream starts.
		c.expectStart(channel)
	}
}

// expectStart checks the next event is the resume that starts a live
// subscription: recovered, from right after last.
func (c *wsClient) expectStart(channel string) {
	c.t.Helper()
	e := c.expect("resume")
	if e.Channel != channel || e.Recovered == nil || !*e.Recovered || e.From != e.Last+1 {
		c.t.Fatalf("got %s, want the start of a live subscription to %q", e.raw, channel)
	}
}

// expectResume checks the next event is a resume of channel.
func (c *wsClient) expectResume(channel string, recovered bool, epoch, from, last uint64) {
	c.t.Helper()
	e := c.expect("resume")
	if e.Channel != channel || e.Recovered == nil || *e.Recovered != recovered || e.Epoch != epoch || e.From != from || e.Last != last {
		c.t.Fatalf("got %s, want resume of %q recovered %v epoch %d from %d last %d", e.raw, channel, recovered, epoch, from, last)
	}
}

// expectMessages checks the next events are the messages "m<seq>" of
// channel for seq in [from, to], in order.
func (c *wsClient) expectMessages(channel string, epoch, from, to uint64) {
	c.t.Helper()
	for seq := from; seq <= to; seq++ {
		e := c.expect("message")
		if e.Channel != channel || e.Epoch != epoch || e.Seq != seq || e.Data != "m"+strconv.FormatUint(seq, 10) || e.Base64 || e.Pattern != "" {
			c.t.Fatalf("got %s, want message m%d of %q (epoch %d, seq %d)", e.raw, seq, channel, epoch, seq)
		}
		if e.Time <= 0 {
			c.t.Fatalf("message without a time: %s", e.raw)
		}
	}
}

// barrier sends a ping and checks that the next event is its pong: every
// event queued before the ping (such as a duplicate delivery of a message
// already published) would come first.
func (c *wsClient) barrier() {
	c.t.Helper()
	c.send(map[string]any{"id": "barrier", "op": "ping"})
	if e := c.next(); e.Type != "pong" || string(e.ID) != `"barrier"` {
		c.t.Fatalf("got %s, want the pong and nothing before it", e.raw)
	}
}

// closeStatus reads until the connection fails and returns the close
// status the server sent (-1 if none).
func (c *wsClient) closeStatus() websocket.StatusCode {
	c.t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		_, _, err := c.conn.Read(ctx)
		cancel()
		if err != nil {
			if websocket.CloseStatus(err) == -1 {
				c.t.Logf("connection ended without a close frame: %v", err)
			}
			return websocket.CloseStatus(err)
		}
	}
	c.t.Fatal("the server did not close the connection")
	return 0
}

func ptr[T any](v T) *T { return &v }

// TestWSRedisCLIPublish: a message published with the real redis-cli over
// RESP reaches a WebSocket subscriber with its sequence number and epoch.
func TestWSRedisCLIPublish(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	addr := startRESP(t, n.b)
	c := dialWS(t, n.wsURL(""), nil)
	c.subscribe("news", nil, 0)

	if got := redisCLI(t, addr, nil, "PUBLISH", "news", "hello from redis-cli"); got != "1" {
		t.Fatalf("PUBLISH replied %q, want 1 receiver", got)
	}
	info, err := n.b.Log().Info(broker.Global, "news")
	if err != nil || info.Epoch == 0 || info.LastSeq != 1 {
		t.Fatalf("channel info %+v, %v", info, err)
	}
	e := c.expect("message")
	if e.Channel != "news" || e.Seq != 1 || e.Epoch != info.Epoch || e.Data != "hello from redis-cli" || e.Time != info.LastPublish {
		t.Fatalf("got %s, want news #1 in epoch %d at %d", e.raw, info.Epoch, info.LastPublish)
	}

	// HERALD.PUBLISH answers with the position the subscriber sees.
	got := redisCLI(t, addr, nil, "HERALD.PUBLISH", "news", "second")
	if want := fmt.Sprintf("2\n%d\n1", info.Epoch); got != want {
		t.Fatalf("HERALD.PUBLISH replied %q, want %q", got, want)
	}
	e = c.expect("message")
	if e.Seq != 2 || e.Epoch != info.Epoch || e.Data != "second" {
		t.Fatalf("got %s, want news #2", e.raw)
	}
	c.barrier()
}

// TestWSResume is the resume scenario: a client that disconnects and comes
// back with the last position it saw gets a resume event with recovered
// true, exactly the messages it missed, in order, then live ones.
func TestWSResume(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	addr := startRESP(t, n.b)
	publishers := []struct {
		name    string
		publish func(t *testing.T, channel string, from, to int)
	}{
		{"broker", func(t *testing.T, channel string, from, to int) { n.publishRange(t, channel, from, to) }},
		{"redis-cli", func(t *testing.T, channel string, from, to int) {
			// One redis-cli reading commands from stdin, one per line.
			var cmds bytes.Buffer
			for i := from; i <= to; i++ {
				fmt.Fprintf(&cmds, "PUBLISH %s m%d\n", channel, i)
			}
			out := redisCLI(t, addr, cmds.Bytes())
			if lines := strings.Split(out, "\n"); len(lines) != to-from+1 {
				t.Fatalf("redis-cli printed %q, want one reply per PUBLISH", out)
			}
		}},
	}
	for _, p := range publishers {
		t.Run(p.name, func(t *testing.T) {
			ch := "resume:" + p.name
			c := dialWS(t, n.wsURL(""), nil)
			c.subscribe(ch, nil, 0)
			p.publish(t, ch, 1, 5)
			epoch := n.history(t, ch).Epoch
			c.expectMessages(ch, epoch, 1, 5)
			c.conn.Close(websocket.StatusNormalClosure, "")

			p.publish(t, ch, 6, 55)

			c = dialWS(t, n.wsURL(""), nil)
			c.subscribe(ch, ptr[uint64](5), epoch)
			c.expectResume(ch, true, epoch, 6, 55)
			c.expectMessages(ch, epoch, 6, 55)
			p.publish(t, ch, 56, 58)
			c.expectMessages(ch, epoch, 56, 58)
			c.barrier()
		})
	}
}

// TestWSResumeWhilePublishing: a publisher keeps publishing while the
// client disconnects and resumes again and again; across every switch from
// history to live, each sequence number arrives exactly once, in order.
func TestWSResumeWhilePublishing(t *testing.T) {
	const total, reconnectEvery = 600, 70
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	const ch = "busy"
	ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
	defer cancel()

	// Flow control: the publisher stays at most `ahead` messages ahead of
	// the client, within retention (100 by default), so that the
	// client's position is always in history however the machine
	// schedules the two; within that, they run freely.
	const ahead = 80
	credits := make(chan struct{}, ahead)
	for range ahead {
		credits <- struct{}{}
	}
	pubErr := make(chan error, 1)
	go func() {
		// Batches of 1 to 4 messages: some log entries carry several.
		next := 1
		for next <= total {
			var batch []broker.Publish
			for k := 0; k <= next%4 && next <= total; k++ {
				select {
				case <-credits:
				case <-ctx.Done():
					pubErr <- ctx.Err()
					return
				}
				batch = append(batch, broker.Publish{Channel: ch, Payload: fmt.Appendf(nil, "m%d", next)})
				next++
			}
			if _, err := n.b.Publish(ctx, batch); err != nil {
				pubErr <- err
				return
			}
		}
		pubErr <- nil
	}()

	var last, epoch uint64
	for connections := 0; last < total; connections++ {
		if connections > total/reconnectEvery+1 {
			t.Fatalf("%d connections and only at %d of %d", connections, last, total)
		}
		c := dialWS(t, n.wsURL(""), nil)
		c.subscribe(ch, &last, epoch)
		r := c.expect("resume")
		if !*r.Recovered || r.From != last+1 || (epoch != 0 && r.Epoch != epoch) {
			t.Fatalf("after seq %d: %s", last, r.raw)
		}
		for got := 0; got < reconnectEvery && last < total; got++ {
			e := c.expect("message")
			if epoch == 0 {
				epoch = e.Epoch
			}
			if e.Seq != last+1 || e.Epoch != epoch || e.Data != "m"+strconv.FormatUint(e.Seq, 10) {
				t.Fatalf("after seq %d (epoch %d), got %s", last, epoch, e.raw)
			}
			last = e.Seq
			credits <- struct{}{}
		}
		if last == total {
			if err := <-pubErr; err != nil {
				t.Fatal(err)
			}
			c.barrier() // nothing after the last message
		}
		c.conn.Close(websocket.StatusNormalClosure, "")
	}
}

// TestWSResumeGap: when history no longer reaches back to the client's
// position, or the epoch differs, the resume says recovered false and where
// the stream continues from, and what is retained follows.
func TestWSResumeGap(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{Retention: &raftstore.Policy{Rules: []raftstore.Rule{{Pattern: "*", MaxCount: 10}}}}, wsbridge.Config{})
	tests := []struct {
		name      string
		since     func(h broker.History) uint64
		epoch     func(h broker.History) uint64
		recovered bool
		from      func(h broker.History) uint64
	}{
		{"before history", func(h broker.History) uint64 { return 3 }, func(h broker.History) uint64 { return h.Epoch }, false, func(h broker.History) uint64 { return h.First }},
		{"just before history", func(h broker.History) uint64 { return h.First - 2 }, func(h broker.History) uint64 { return h.Epoch }, false, func(h broker.History) uint64 { return h.First }},
		{"first retained", func(h broker.History) uint64 { return h.First - 1 }, func(h broker.History) uint64 { return h.Epoch }, true, func(h broker.History) uint64 { return h.First }},
		{"inside history", func(h broker.History) uint64 { return h.Last - 3 }, func(h broker.History) uint64 { return h.Epoch }, true, func(h broker.History) uint64 { return h.Last - 2 }},
		{"wrong epoch", func(h broker.History) uint64 { return h.Last - 3 }, func(h broker.History) uint64 { return h.Epoch + 1 }, false, func(h broker.History) uint64 { return h.First }},
		{"beyond last", func(h broker.History) uint64 { return h.Last + 5 }, func(h broker.History) uint64 { return h.Epoch }, false, func(h broker.History) uint64 { return h.First }},
		{"no epoch", func(h broker.History) uint64 { return 1 }, func(h broker.History) uint64 { return 0 }, false, func(h broker.History) uint64 { return h.First }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := "gap:" + tt.name
			h := n.fillTrimmed(t, ch, 30, 10)
			c := dialWS(t, n.wsURL(""), nil)
			c.subscribe(ch, ptr(tt.since(h)), tt.epoch(h))
			from := tt.from(h)
			c.expectResume(ch, tt.recovered, h.Epoch, from, h.Last)
			c.expectMessages(ch, h.Epoch, from, h.Last)
			n.publish(t, ch, fmt.Appendf(nil, "m%d", h.Last+1))
			c.expectMessages(ch, h.Epoch, h.Last+1, h.Last+1)
			c.barrier()
		})
	}
}

// TestWSResumeAcrossCluster: a client subscribed on node A disconnects,
// messages are published on node B, and it resumes on node C: every
// message it missed, in order, then live ones from anywhere.
func TestWSResumeAcrossCluster(t *testing.T) {
	nodes := startCluster(t, 3, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	a, b, c := nodes[0], nodes[1], nodes[2]
	const ch = "cluster"

	ca := dialWS(t, a.wsURL(""), nil)
	ca.subscribe(ch, nil, 0)
	epoch := b.publishRange(t, ch, 1, 5)
	ca.expectMessages(ch, epoch, 1, 5)
	ca.conn.Close(websocket.StatusNormalClosure, "")

	b.publishRange(t, ch, 6, 55)

	cc := dialWS(t, c.wsURL(""), nil)
	cc.subscribe(ch, ptr[uint64](5), epoch)
	r := cc.expect("resume")
	// Node C may not have applied the last of B's publishes yet: those
	// then arrive live, after the replay.
	if !*r.Recovered || r.Epoch != epoch || r.From != 6 || r.Last < 5 {
		t.Fatalf("resume on node C: %s", r.raw)
	}
	cc.expectMessages(ch, epoch, 6, 55)
	a.publishRange(t, ch, 56, 57)
	cc.expectMessages(ch, epoch, 56, 57)
}

// TestWSResumeOnLaggingFollower: a client that saw a message on the leader
// resumes at once on a follower, which may not have applied that message
// yet. The resume must still be complete (recovered true, continuing right
// after the client's position), not a false gap that replays from the
// start of history.
func TestWSResumeOnLaggingFollower(t *testing.T) {
	nodes := startCluster(t, 3, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	var leader, follower *node
	waitFor(t, "a leader", func() bool {
		for i, n := range nodes {
			if n.store.IsLeader() {
				leader, follower = n, nodes[(i+1)%len(nodes)]
				return true
			}
		}
		return false
	})
	cl := dialWS(t, leader.wsURL(""), nil)
	for i := range 20 {
		ch := fmt.Sprintf("lag:%d", i)
		cl.subscribe(ch, nil, 0)
		epoch := leader.publishRange(t, ch, 1, 1)
		cl.expectMessages(ch, epoch, 1, 1)

		cf := dialWS(t, follower.wsURL(""), nil)
		cf.subscribe(ch, ptr[uint64](1), epoch)
		r := cf.expect("resume")
		if !*r.Recovered || r.Epoch != epoch || r.From != 2 {
			t.Fatalf("round %d: the client saw %s #1 on the leader; resuming after it on a follower got %s", i, ch, r.raw)
		}
		leader.publishRange(t, ch, 2, 2)
		cf.expectMessages(ch, epoch, 2, 2)
		cl.expectMessages(ch, epoch, 2, 2)
		cf.conn.Close(websocket.StatusNormalClosure, "")
	}
}

// TestWSSimpleMode: GET /ws?channel=a&channel=b&since=N subscribes without
// a request; since and epoch pair with the channels in order.
func TestWSSimpleMode(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	ea := n.publishRange(t, "sa", 1, 5)
	eb := n.publishRange(t, "sb", 1, 5)

	t.Run("since pairs with the first channel", func(t *testing.T) {
		c := dialWS(t, n.wsURL("channel=sa&channel=sb&since=2"), nil)
		if e := c.expect("subscribed"); e.Channel != "sa" || e.ID != nil {
			t.Fatalf("got %s", e.raw)
		}
		c.expectResume("sa", true, ea, 3, 5)
		c.expectMessages("sa", ea, 3, 5)
		if e := c.expect("subscribed"); e.Channel != "sb" {
			t.Fatalf("got %s", e.raw)
		}
		// sb is live only: its history is not replayed, its position
		// is given.
		c.expectResume("sb", true, eb, 6, 5)
		n.publishRange(t, "sb", 6, 6)
		c.expectMessages("sb", eb, 6, 6)
		n.publishRange(t, "sa", 6, 6)
		c.expectMessages("sa", ea, 6, 6)
		c.barrier()
	})
	t.Run("empty since skips a channel", func(t *testing.T) {
		c := dialWS(t, n.wsURL(fmt.Sprintf("channel=sa&channel=sb&since=&since=4&epoch=&epoch=%d", eb)), nil)
		if e := c.expect("subscribed"); e.Channel != "sa" {
			t.Fatalf("got %s", e.raw)
		}
		c.expectStart("sa")
		if e := c.expect("subscribed"); e.Channel != "sb" {
			t.Fatalf("got %s", e.raw)
		}
		c.expectResume("sb", true, eb, 5, 6)
		c.expectMessages("sb", eb, 5, 6)
		c.barrier()
	})
	t.Run("epoch of another stream", func(t *testing.T) {
		c := dialWS(t, n.wsURL(fmt.Sprintf("channel=sa&since=4&epoch=%d", ea+1)), nil)
		c.expect("subscribed")
		c.expectResume("sa", false, ea, 1, 6)
		c.expectMessages("sa", ea, 1, 6)
	})
	for _, bad := range []string{
		"channel=sa&since=1&since=2",
		"channel=sa&epoch=1&epoch=2",
		"channel=sa&since=x",
		"channel=sa&since=-1",
		"channel=sa&since=1&epoch=e",
		"channel=",
		"channel=sa&channel=",
	} {
		t.Run("refused "+bad, func(t *testing.T) {
			_, err := tryDialWS(t, n.wsURL(bad), nil)
			if err == nil || !strings.Contains(err.Error(), "HTTP 400") {
				t.Fatalf("dial ?%s: %v, want HTTP 400", bad, err)
			}
		})
	}
}

// TestWSPattern: a pattern subscription receives the messages of every
// matching channel, with the pattern named.
func TestWSPattern(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	c := dialWS(t, n.wsURL(""), nil)
	c.send(map[string]any{"id": 9, "op": "subscribe", "pattern": "room:*"})
	if e := c.expect("subscribed"); e.Pattern != "room:*" || e.Channel != "" || string(e.ID) != "9" {
		t.Fatalf("got %s", e.raw)
	}
	r1 := n.publish(t, "room:1", []byte("hi"))
	n.publish(t, "lobby", []byte("not for a room"))
	r2 := n.publish(t, "room:2", []byte("yo"))
	for _, want := range []struct {
		channel, data string
		r             broker.Receipt
	}{{"room:1", "hi", r1}, {"room:2", "yo", r2}} {
		e := c.expect("message")
		if e.Pattern != "room:*" || e.Channel != want.channel || e.Data != want.data || e.Seq != want.r.Seq || e.Epoch != want.r.Epoch {
			t.Fatalf("got %s, want %s %q at %d/%d via room:*", e.raw, want.channel, want.data, want.r.Epoch, want.r.Seq)
		}
	}
	c.barrier()

	c.send(map[string]any{"op": "unsubscribe", "pattern": "room:*"})
	if e := c.expect("unsubscribed"); e.Pattern != "room:*" {
		t.Fatalf("got %s", e.raw)
	}
	n.publish(t, "room:3", []byte("gone"))
	c.barrier()
}

// TestWSBinaryPayload: payloads that are not UTF-8 arrive base64-encoded
// with "base64":true and decode to the very bytes published, whichever way
// they were published; UTF-8 text arrives as a JSON string.
func TestWSBinaryPayload(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{AllowBrowserPublish: true})
	addr := startRESP(t, n.b)
	binary := []byte{0xff, 0xfe, 0x00, '\n', 0x80, 'a', 0xc3, 0x28, 0xed, 0xa0, 0x80}
	random := make([]byte, 4096)
	rand.Read(random)
	random[0] = 0xff // certainly not UTF-8

	tests := []struct {
		name    string
		payload []byte
		publish func(t *testing.T, ch string, p []byte)
	}{
		{"broker", binary, func(t *testing.T, ch string, p []byte) { n.publish(t, ch, p) }},
		{"broker random", random, func(t *testing.T, ch string, p []byte) { n.publish(t, ch, p) }},
		{"redis-cli", binary, func(t *testing.T, ch string, p []byte) {
			// -x: the last argument is stdin, byte for byte.
			if got := redisCLI(t, addr, p, "-x", "PUBLISH", ch); got != "1" {
				t.Fatalf("PUBLISH replied %q", got)
			}
		}},
		{"websocket", binary, func(t *testing.T, ch string, p []byte) {
			pub := dialWS(t, n.wsURL(""), nil)
			pub.send(map[string]any{"id": 5, "op": "publish", "channel": ch, "data": base64.StdEncoding.EncodeToString(p), "base64": true})
			if e := pub.expect("published"); e.Channel != ch || e.Seq != 1 || e.Epoch == 0 || string(e.ID) != "5" {
				t.Fatalf("got %s", e.raw)
			}
		}},
		{"utf-8 text", []byte("héllo \u2028 \"q\" \\ \n\t\x01 </script> 😀"), func(t *testing.T, ch string, p []byte) { n.publish(t, ch, p) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := "bin:" + tt.name
			c := dialWS(t, n.wsURL(""), nil)
			c.subscribe(ch, nil, 0)
			tt.publish(t, ch, tt.payload)
			e := c.expect("message")
			if e.Base64 == utf8.Valid(tt.payload) {
				t.Fatalf("base64 %v for a payload whose UTF-8 validity is %v: %.200s", e.Base64, utf8.Valid(tt.payload), e.raw)
			}
			if got := e.payload(t); !bytes.Equal(got, tt.payload) {
				t.Fatalf("payload %q, want %q", got, tt.payload)
			}
			if h := n.history(t, ch); len(h.Messages) != 1 || !bytes.Equal(h.Messages[0].Payload, tt.payload) {
				t.Fatalf("retained %+v, want the payload", h)
			}
		})
	}
}

// TestWSPublishOp: the publish op is refused with "forbidden" unless
// AllowBrowserPublish; then it publishes and answers with the position.
func TestWSPublishOp(t *testing.T) {
	t.Run("forbidden by default", func(t *testing.T) {
		n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
		c := dialWS(t, n.wsURL(""), nil)
		c.send(map[string]any{"id": 3, "op": "publish", "channel": "p", "data": "x"})
		if e := c.expect("error"); e.Code != "forbidden" || string(e.ID) != "3" || e.Message == "" {
			t.Fatalf("got %s", e.raw)
		}
		if info, err := n.b.Log().Info(broker.Global, "p"); err != nil || info.Epoch != 0 {
			t.Fatalf("channel p: %+v, %v; want nothing published", info, err)
		}
		c.barrier() // the connection stays open
	})
	t.Run("allowed", func(t *testing.T) {
		n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{AllowBrowserPublish: true})
		sub := dialWS(t, n.wsURL(""), nil)
		sub.subscribe("p", nil, 0)
		c := dialWS(t, n.wsURL(""), nil)
		for i := 1; i <= 3; i++ {
			c.send(map[string]any{"id": i, "op": "publish", "channel": "p", "data": fmt.Sprintf("m%d", i)})
			e := c.expect("published")
			if e.Channel != "p" || e.Seq != uint64(i) || e.Epoch == 0 || string(e.ID) != strconv.Itoa(i) {
				t.Fatalf("got %s", e.raw)
			}
		}
		sub.expectMessages("p", n.history(t, "p").Epoch, 1, 3)
		for _, tt := range []struct {
			req  map[string]any
			code string
		}{
			{map[string]any{"id": 4, "op": "publish", "data": "x"}, "bad_request"},
			{map[string]any{"id": 4, "op": "publish", "channel": "p", "data": "!!", "base64": true}, "bad_request"},
			{map[string]any{"id": 4, "op": "subscribe"}, "bad_request"},
			{map[string]any{"id": 4, "op": "subscribe", "channel": "a", "pattern": "b"}, "bad_request"},
			{map[string]any{"id": 4, "op": "unsubscribe"}, "bad_request"},
			{map[string]any{"id": 4, "op": "frobnicate"}, "bad_request"},
		} {
			c.send(tt.req)
			if e := c.expect("error"); e.Code != tt.code || string(e.ID) != "4" {
				t.Fatalf("%v: got %s, want code %s", tt.req, e.raw, tt.code)
			}
		}
		c.barrier()
	})
}

// TestWSUnsubscribe: after "unsubscribed", nothing more of the channel
// arrives; other subscriptions go on.
func TestWSUnsubscribe(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	c := dialWS(t, n.wsURL(""), nil)
	c.subscribe("u1", nil, 0)
	c.subscribe("u2", nil, 0)
	e1 := n.publishRange(t, "u1", 1, 1)
	c.expectMessages("u1", e1, 1, 1)

	c.send(map[string]any{"id": 2, "op": "unsubscribe", "channel": "u1"})
	if e := c.expect("unsubscribed"); e.Channel != "u1" || string(e.ID) != "2" {
		t.Fatalf("got %s", e.raw)
	}
	n.publishRange(t, "u1", 2, 2)
	e2 := n.publishRange(t, "u2", 1, 1)
	// u2's message was published after u1's: had u1's been delivered, it
	// would come first.
	c.expectMessages("u2", e2, 1, 1)
	c.barrier()

	// Unsubscribing from what one is not subscribed to is answered too.
	c.send(map[string]any{"id": 3, "op": "unsubscribe", "channel": "never"})
	if e := c.expect("unsubscribed"); e.Channel != "never" {
		t.Fatalf("got %s", e.raw)
	}
	waitFor(t, "the broker to drop u1's subscription", func() bool { return n.b.NumSub(broker.Global, "u1") == 0 })
}

// TestWSPing: ping is answered with pong, echoing the request's id
// whatever JSON value it is.
func TestWSPing(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	c := dialWS(t, n.wsURL(""), nil)
	for _, id := range []string{`1`, `-7.5e3`, `"abc"`, `"\u2028<\"q\">"`, `{"k":[1,2,{"x":null}]}`, `null`, `true`} {
		c.sendRaw(websocket.MessageText, []byte(`{"op":"ping","id":`+id+`}`))
		if e := c.expect("pong"); string(e.ID) != id {
			t.Fatalf("id %s: got %s", id, e.raw)
		}
	}
	c.send(map[string]any{"op": "ping"})
	if e := c.expect("pong"); e.ID != nil || e.raw != `{"type":"pong"}` {
		t.Fatalf("got %s, want a bare pong", e.raw)
	}
}

// TestWSRequestIDWithWhitespace: a request id is any JSON value, and JSON
// allows line breaks between its tokens. The server echoes the id in its
// reply, and replies are framed one JSON object per line: the echoed id
// must not break that framing.
func TestWSRequestIDWithWhitespace(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	c := dialWS(t, n.wsURL(""), nil)
	c.sendRaw(websocket.MessageText, []byte("{\"op\":\"ping\",\"id\":{\"a\":\n1,\r\n \"b\":[2,\n3]}}"))
	e := c.next() // fails if a line of the frame is not a JSON object
	var id, want any
	json.Unmarshal(e.ID, &id)
	json.Unmarshal([]byte(`{"a":1,"b":[2,3]}`), &want)
	if e.Type != "pong" || fmt.Sprint(id) != fmt.Sprint(want) {
		t.Fatalf("got %s", e.raw)
	}
	c.barrier()
}

// TestWSProtocolErrors: what closes a connection, and with which code.
func TestWSProtocolErrors(t *testing.T) {
	n := startNode(t, broker.Config{MaxPayload: 1024}, raftstore.Config{}, wsbridge.Config{MaxSubscriptions: 3, AllowBrowserPublish: true})
	// readLimit: the largest payload, base64-encoded, plus room for JSON.
	const limit = 1024*4/3 + 4096
	maxPublish, err := json.Marshal(map[string]any{"op": "publish", "channel": "big", "data": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 1024)), "base64": true})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		typ   websocket.MessageType
		frame []byte
		want  websocket.StatusCode
	}{
		{"malformed JSON", websocket.MessageText, []byte(`{"op":`), wsbridge.CloseBadRequest},
		{"not an object", websocket.MessageText, []byte(`[1,2,3]`), wsbridge.CloseBadRequest},
		{"a string", websocket.MessageText, []byte(`"ping"`), wsbridge.CloseBadRequest},
		{"trailing data", websocket.MessageText, []byte(`{"op":"ping"} {"op":"ping"}`), wsbridge.CloseBadRequest},
		{"wrong field type", websocket.MessageText, []byte(`{"op":"subscribe","channel":5}`), wsbridge.CloseBadRequest},
		{"negative since", websocket.MessageText, []byte(`{"op":"subscribe","channel":"c","since":-1}`), wsbridge.CloseBadRequest},
		{"empty frame", websocket.MessageText, nil, wsbridge.CloseBadRequest},
		{"binary frame", websocket.MessageBinary, []byte(`{"op":"ping"}`), websocket.StatusUnsupportedData},
		{"frame over the read limit", websocket.MessageText, bytes.Repeat([]byte(" "), limit+1), websocket.StatusMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialWS(t, n.wsURL(""), nil)
			c.barrier()
			c.sendRaw(tt.typ, tt.frame)
			if got := c.closeStatus(); got != tt.want {
				t.Fatalf("closed with %v, want %v", got, tt.want)
			}
			// The server is unaffected.
			dialWS(t, n.wsURL(""), nil).barrier()
		})
	}

	t.Run("largest publish fits the read limit", func(t *testing.T) {
		c := dialWS(t, n.wsURL(""), nil)
		c.sendRaw(websocket.MessageText, maxPublish)
		if e := c.expect("published"); e.Channel != "big" {
			t.Fatalf("got %s", e.raw)
		}
		// A frame of exactly the limit is read.
		pad := strings.Repeat("x", limit-len(`{"op":"ping","id":""}`))
		c.sendRaw(websocket.MessageText, []byte(`{"op":"ping","id":"`+pad+`"}`))
		if e := c.expect("pong"); string(e.ID) != `"`+pad+`"` {
			t.Fatalf("got %.100s", e.raw)
		}
	})

	t.Run("subscriptions up to the limit", func(t *testing.T) {
		c := dialWS(t, n.wsURL(""), nil)
		c.subscribe("s1", nil, 0)
		c.subscribe("s2", nil, 0)
		c.send(map[string]any{"id": 1, "op": "subscribe", "pattern": "s*"})
		c.expect("subscribed")
		// Subscribing again to what one has (a confirmation, nothing
		// more), or after unsubscribing, does not count twice.
		c.send(map[string]any{"id": 1, "op": "subscribe", "channel": "s1"})
		c.expect("subscribed")
		c.send(map[string]any{"op": "unsubscribe", "channel": "s2"})
		c.expect("unsubscribed")
		c.subscribe("s3", ptr[uint64](0), 0)
		c.expectResume("s3", true, 0, 1, 0)
		c.barrier()
		c.send(map[string]any{"id": 1, "op": "subscribe", "channel": "s4"})
		if got := c.closeStatus(); got != wsbridge.CloseTooManySubscriptions {
			t.Fatalf("closed with %v, want %v", got, wsbridge.CloseTooManySubscriptions)
		}
	})
	t.Run("pipelined subscriptions over the limit", func(t *testing.T) {
		c := dialWS(t, n.wsURL(""), nil)
		for i := range 4 {
			c.send(map[string]any{"op": "subscribe", "channel": fmt.Sprintf("p%d", i)})
		}
		if got := c.closeStatus(); got != wsbridge.CloseTooManySubscriptions {
			t.Fatalf("closed with %v, want %v", got, wsbridge.CloseTooManySubscriptions)
		}
	})
	t.Run("simple mode over the limit", func(t *testing.T) {
		c := dialWS(t, n.wsURL("channel=q1&channel=q2&channel=q3&channel=q4"), nil)
		for _, ch := range []string{"q1", "q2", "q3"} {
			if e := c.expect("subscribed"); e.Channel != ch {
				t.Fatalf("got %s", e.raw)
			}
			c.expectStart(ch)
		}
		if got := c.closeStatus(); got != wsbridge.CloseTooManySubscriptions {
			t.Fatalf("closed with %v, want %v", got, wsbridge.CloseTooManySubscriptions)
		}
	})
}

// TestWSRepliesBeforeClose: a request that closes the connection (a
// malformed frame, one subscription too many) comes after requests the
// server has answered; those answers reach the client before the close
// frame. A publish that was acknowledged must not look unacknowledged.
func TestWSRepliesBeforeClose(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{AllowBrowserPublish: true, MaxSubscriptions: 1})
	for i := range 10 {
		c := dialWS(t, n.wsURL(""), nil)
		c.send(map[string]any{"id": i, "op": "publish", "channel": "acked", "data": fmt.Sprintf("m%d", i)})
		c.sendRaw(websocket.MessageText, []byte("{not json"))
		e := c.next()
		if e.Type != "published" || string(e.ID) != strconv.Itoa(i) {
			t.Fatalf("round %d: got %s, want the publish's acknowledgement", i, e.raw)
		}
		if got := c.closeStatus(); got != wsbridge.CloseBadRequest {
			t.Fatalf("round %d: closed with %v, want %v", i, got, wsbridge.CloseBadRequest)
		}

		c = dialWS(t, n.wsURL(""), nil)
		c.send(map[string]any{"id": 1, "op": "subscribe", "channel": "one"})
		c.send(map[string]any{"id": 2, "op": "subscribe", "channel": "two"})
		if e := c.next(); e.Type != "subscribed" || e.Channel != "one" {
			t.Fatalf("round %d: got %s, want the first subscription's confirmation", i, e.raw)
		}
		if got := c.closeStatus(); got != wsbridge.CloseTooManySubscriptions {
			t.Fatalf("round %d: closed with %v, want %v", i, got, wsbridge.CloseTooManySubscriptions)
		}
	}
	if h := n.history(t, "acked"); h.Last != 10 {
		t.Fatalf("%d publishes committed, want 10", h.Last)
	}
}

// TestWSSlowConsumer: a browser that stops reading is disconnected with
// 4001 once its outbox passes its limit; a fast one on the same channel gets
// every message, and the publisher is never held up by the slow one.
func TestWSSlowConsumer(t *testing.T) {
	limits := broker.OutboxLimits{HardBytes: 64 << 10, SoftBytes: 32 << 10, SoftDuration: time.Hour}
	// WriteTimeout long: the slow client must be closed for its outbox,
	// not for a write that timed out while it was not reading.
	n := startNode(t, broker.Config{Outbox: limits}, raftstore.Config{}, wsbridge.Config{WriteTimeout: 5 * time.Minute})
	const ch = "firehose"

	slow := dialWS(t, n.wsURL(""), &websocket.DialOptions{HTTPClient: smallReceiveBuffer()})
	slow.subscribe(ch, nil, 0)
	fast := dialWS(t, n.wsURL(""), nil)
	fast.subscribe(ch, nil, 0)

	// The fast client reads on its own goroutine and reports each
	// sequence number; the publisher waits for it before publishing the
	// next, so the fast client never has more than one message queued and
	// cannot be the slow one, however the machine schedules it.
	fastSeq := make(chan uint64)
	fastErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(fastSeq)
		var got uint64
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
			_, data, err := fast.conn.Read(ctx)
			cancel()
			if err != nil {
				fastErr <- fmt.Errorf("after seq %d: %w", got, err)
				return
			}
			for line := range bytes.SplitSeq(data, []byte{'\n'}) {
				e, err := decodeEvent(line)
				if err == nil && (e.Type != "message" || e.Seq != got+1) {
					err = fmt.Errorf("after seq %d got %.100s", got, e.raw)
				}
				if err != nil {
					fastErr <- err
					return
				}
				got = e.Seq
				select {
				case fastSeq <- got:
				case <-stop:
					return
				}
			}
		}
	}()
	waitFast := func(seq uint64) {
		t.Helper()
		select {
		case got, ok := <-fastSeq:
			if !ok {
				t.Fatalf("fast client: %v", <-fastErr)
			}
			if got != seq {
				t.Fatalf("fast client: got %d, want %d", got, seq)
			}
		case <-time.After(ioTimeout):
			t.Fatalf("fast client: no message %d", seq)
		}
	}

	// Publish 8 KiB messages, one at a time, until the slow client has
	// been failed (bounded: 64 MiB at most). The slow client's writes
	// stall once the kernel's buffers are full; then its outbox fills.
	payload := bytes.Repeat([]byte("x"), 8<<10)
	published := 0
	for n.b.Stats().SlowDisconnect == 0 {
		if published == 8192 {
			t.Fatalf("published %d messages and no slow consumer", published)
		}
		r := n.publish(t, ch, payload)
		published++
		waitFast(r.Seq)
	}
	if published < 64<<10/len(payload) {
		t.Fatalf("slow consumer after %d messages, before its outbox could be full", published)
	}
	for range 3 {
		r := n.publish(t, ch, []byte("after"))
		published++
		waitFast(r.Seq)
	}
	if s := n.b.Stats().SlowDisconnect; s != 1 {
		t.Fatalf("%d slow consumer disconnections, want only the slow client's", s)
	}

	// The slow client now reads: what was written before its outbox
	// failed, in order, then the close frame with 4001.
	var last uint64
	deadline := time.Now().Add(ioTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		_, data, err := slow.conn.Read(ctx)
		cancel()
		if err != nil {
			if got := websocket.CloseStatus(err); got != wsbridge.CloseSlowConsumer {
				t.Fatalf("slow client: %v (close status %v), want %v", err, got, wsbridge.CloseSlowConsumer)
			}
			if last >= uint64(published) {
				t.Fatalf("slow client got all %d messages", last)
			}
			return
		}
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			e, err := decodeEvent(line)
			if err != nil || e.Type != "message" || e.Seq != last+1 {
				t.Fatalf("slow client after seq %d: %.100s %v", last, line, err)
			}
			last = e.Seq
		}
	}
	t.Fatal("slow client never closed")
}

// smallReceiveBuffer returns an HTTP client whose connections have a small
// receive buffer, so that the server's writes to a client that stops
// reading stall soon. It is set before connecting, so that TCP's window is
// negotiated for it.
func smallReceiveBuffer() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
			})
			return errors.Join(err, serr)
		},
	}).DialContext}}
}

// TestWSStalledClientsHoldNoSlot: with a single write slot, clients that
// stop reading do not hold it while their writers wait for their sockets:
// a client on the same channel that reads gets every message.
func TestWSStalledClientsHoldNoSlot(t *testing.T) {
	// Outboxes large enough that no client is disconnected, and a write
	// timeout longer than the test: only a free slot lets the reading
	// client's writer run.
	limits := broker.OutboxLimits{HardBytes: 256 << 20, SoftBytes: 256 << 20, SoftDuration: time.Hour}
	n := startNode(t, broker.Config{Outbox: limits}, raftstore.Config{}, wsbridge.Config{WriteSlots: 1, WriteTimeout: 5 * time.Minute})
	const ch = "firehose"
	const stalled = 3
	for range stalled {
		c := dialWS(t, n.wsURL(""), &websocket.DialOptions{HTTPClient: smallReceiveBuffer()})
		c.subscribe(ch, nil, 0)
	}
	reader := dialWS(t, n.wsURL(""), nil)
	reader.subscribe(ch, nil, 0)

	// Publish 8 KiB messages one at a time, each read by the reading client
	// before the next, until the stalled clients' outboxes hold 512 KiB
	// each on average (bounded: 8192 messages): their sockets are full and
	// their writers wait. Then 16 more.
	payload := bytes.Repeat([]byte("x"), 8<<10)
	publishRead := func() {
		t.Helper()
		r := n.publish(t, ch, payload)
		if e := reader.expect("message"); e.Seq != r.Seq {
			t.Fatalf("reading client got %s, want seq %d", e.raw, r.Seq)
		}
	}
	for published := 0; n.b.Stats().OutboxBytes < stalled*512<<10; published++ {
		if published == 8192 {
			t.Fatalf("published %d messages and the stalled clients' outboxes hold %d bytes", published, n.b.Stats().OutboxBytes)
		}
		publishRead()
	}
	for range 16 {
		publishRead()
	}
	if st := n.b.Stats(); st.SlowDisconnect != 0 || st.Clients != stalled+1 {
		t.Fatalf("%d clients, %d slow consumer disconnections: want all %d connected", st.Clients, st.SlowDisconnect, stalled+1)
	}
}

// TestWSOrigin: browsers on other sites are refused unless allowed.
func TestWSOrigin(t *testing.T) {
	tests := []struct {
		name   string
		cfg    wsbridge.Config
		origin string // "self" for the server's own origin
		ok     bool
	}{
		{"no origin", wsbridge.Config{}, "", true},
		{"own origin", wsbridge.Config{}, "self", true},
		{"foreign by default", wsbridge.Config{}, "http://evil.example", false},
		{"null origin", wsbridge.Config{}, "null", false},
		{"allowed host", wsbridge.Config{AllowedOrigins: []string{"app.example"}}, "https://app.example", true},
		{"allowed host, case", wsbridge.Config{AllowedOrigins: []string{"app.example"}}, "https://APP.example", true},
		{"other host", wsbridge.Config{AllowedOrigins: []string{"app.example"}}, "https://evil.example", false},
		{"suffix is not enough", wsbridge.Config{AllowedOrigins: []string{"app.example"}}, "https://app.example.evil", false},
		{"wildcard", wsbridge.Config{AllowedOrigins: []string{"*.example.com"}}, "https://a.example.com", true},
		{"scheme pattern", wsbridge.Config{AllowedOrigins: []string{"https://*.example.com"}}, "https://a.example.com", true},
		{"scheme pattern, other scheme", wsbridge.Config{AllowedOrigins: []string{"https://*.example.com"}}, "http://a.example.com", false},
		{"any origin", wsbridge.Config{AllowAnyOrigin: true}, "http://evil.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startNode(t, broker.Config{}, raftstore.Config{}, tt.cfg)
			h := http.Header{}
			switch tt.origin {
			case "":
			case "self":
				h.Set("Origin", n.url)
			default:
				h.Set("Origin", tt.origin)
			}
			c, err := tryDialWS(t, n.wsURL(""), &websocket.DialOptions{HTTPHeader: h})
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), "HTTP 403") {
					t.Fatalf("origin %q: %v, want HTTP 403", tt.origin, err)
				}
				if s := n.b.Stats().Clients; s != 0 {
					t.Fatalf("%d broker clients after a refused handshake", s)
				}
				return
			}
			if err != nil {
				t.Fatalf("origin %q: %v", tt.origin, err)
			}
			c.barrier()
		})
	}
}

// startServed serves a node's HTTP side with Server.Serve on a real
// listener, as cmd/herald does, so that Shutdown is the whole story.
func startServed(t *testing.T, cfg wsbridge.Config) (n *node, served <-chan error) {
	t.Helper()
	b := broker.New(broker.Config{})
	st := raftstoretest.Open(t, b, raftstore.Config{})
	srv := wsbridge.New(b, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &node{b: b, store: st, srv: srv, url: "http://" + ln.Addr().String()}, done
}

// TestWSShutdown: Shutdown closes every WebSocket connection with 1001
// (going away), after what was queued for it, so that clients reconnect
// elsewhere and resume; then Serve returns and new connections are
// refused.
func TestWSShutdown(t *testing.T) {
	for round := range 5 {
		n, served := startServed(t, wsbridge.Config{})
		var clients []*wsClient
		for i := range 4 {
			c := dialWS(t, n.wsURL(""), nil)
			c.subscribe(fmt.Sprintf("sd%d", i), nil, 0)
			clients = append(clients, c)
		}
		// Client 0 has messages it has not read yet.
		epoch := n.publishRange(t, "sd0", 1, 100)

		// Shutdown runs while the clients read, as browsers do.
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			shut <- n.srv.Shutdown(ctx)
		}()
		clients[0].expectMessages("sd0", epoch, 1, 100)
		for i, c := range clients {
			if got := c.closeStatus(); got != websocket.StatusGoingAway {
				t.Fatalf("round %d: client %d closed with %v, want %v", round, i, got, websocket.StatusGoingAway)
			}
		}
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if _, err := tryDialWS(t, n.wsURL(""), nil); err == nil {
			t.Fatal("dial after Shutdown succeeded")
		}
	}
}

// rawWS is a WebSocket client written by hand on a TCP connection, for
// behaviour no real client library shows: not answering pings.
type rawWS struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRawWS(t testing.TB, n *node) *rawWS {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(n.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(2 * ioTimeout))
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", strings.TrimPrefix(n.url, "http://"))
	br := bufio.NewReader(nc)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %s %v", res.Status, res.Header)
	}
	return &rawWS{t: t, nc: nc, br: br}
}

// readFrame reads one unmasked server frame.
func (c *rawWS) readFrame() (opcode byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if h[1]&0x80 != 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("unexpected frame header %x, length %d", h, n)
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return h[0] & 0x0f, payload, err
}

// writeFrame writes one masked client frame.
func (c *rawWS) writeFrame(opcode byte, payload []byte) {
	c.t.Helper()
	if len(payload) > 125 {
		c.t.Fatal("rawWS writes small frames only")
	}
	frame := []byte{0x80 | opcode, 0x80 | byte(len(payload)), 1, 2, 3, 4}
	for i, b := range payload {
		frame = append(frame, b^frame[2+i%4])
	}
	if _, err := c.nc.Write(frame); err != nil {
		c.t.Fatal(err)
	}
}

// answerPings reads n frames, each a ping, and answers each with a pong.
func (c *rawWS) answerPings(n int) {
	c.t.Helper()
	for i := range n {
		op, p, err := c.readFrame()
		if err != nil || op != 0x9 {
			c.t.Fatalf("after %d pings: opcode %#x (%v), want a ping", i, op, err)
		}
		c.writeFrame(0xA, p)
	}
}

// expectReply reads frames up to the text frame want, answering the
// server's pings on the way if answer is set and skipping them otherwise.
func (c *rawWS) expectReply(want string, answer bool) {
	c.t.Helper()
	for {
		op, p, err := c.readFrame()
		if err != nil {
			c.t.Fatal(err)
		}
		if op == 0x9 {
			if answer {
				c.writeFrame(0xA, p)
			}
			continue
		}
		if op != 0x1 || string(p) != want {
			c.t.Fatalf("opcode %#x %q, want %s", op, p, want)
		}
		return
	}
}

// TestWSIdleReader: between requests, a connection's reader waits for its
// socket outside coder/websocket's Read, whose stack is twice the size of
// the wait's, and it still does after answering pings: the server takes
// the pongs off the stream itself. The reader's stack is a third of an
// idle connection's memory.
func TestWSIdleReader(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{PingInterval: 20 * time.Millisecond, PongTimeout: ioTimeout})
	const conns = 3
	for range conns {
		c := dialRawWS(t, n)
		c.answerPings(3)
		c.writeFrame(0x1, []byte(`{"op":"ping","id":1}`))
		c.expectReply(`{"type":"pong","id":1}`, true)
		c.answerPings(1) // the last frame the server reads is a pong
	}
	var deep, shallow int
	waitFor(t, "every reader to wait outside the library", func() bool {
		deep, shallow = 0, 0
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
			if !bytes.Contains(g, []byte("wsbridge.(*wsConn).read(")) {
				continue
			}
			switch {
			case bytes.Contains(g, []byte("websocket.(*Conn).Read(")):
				deep++
			case bytes.Contains(g, []byte("wsbridge.(*wsConn).awaitFrame(")):
				shallow++
			}
		}
		return deep == 0 && shallow == conns
	})
}

// TestWSServerPing: the server pings every PingInterval; a peer that
// answers stays, one that does not is disconnected after PongTimeout. On
// a plain socket the server waits for frames on the socket and takes pongs
// off the stream itself; on a connection that is not one (TLS, or a
// listener's wrapper, as here) coder/websocket reads them, and pings are
// written the blocking way: the peer sees no difference.
func TestWSServerPing(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped %v", wrapped), func(t *testing.T) {
			var wrap func(net.Listener) net.Listener
			if wrapped {
				wrap = func(ln net.Listener) net.Listener { return wrappingListener{ln} }
			}
			b := broker.New(broker.Config{})
			st := raftstoretest.Open(t, b, raftstore.Config{})
			n := serveNodeOn(t, b, st, wsbridge.Config{PingInterval: 20 * time.Millisecond, PongTimeout: 200 * time.Millisecond}, wrap)
			testServerPing(t, n)
		})
	}
}

// wrappingListener hands out its connections wrapped: the server sees a
// net.Conn that is not a socket.
type wrappingListener struct{ net.Listener }

type wrappedConn struct{ net.Conn }

func (l wrappingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrappedConn{c}, nil
}

func testServerPing(t *testing.T, n *node) {

	t.Run("answered", func(t *testing.T) {
		c := dialRawWS(t, n)
		c.answerPings(5)
		c.writeFrame(0x1, []byte(`{"op":"ping","id":1}`))
		c.expectReply(`{"type":"pong","id":1}`, true)
	})

	t.Run("any frame answers", func(t *testing.T) {
		// A request answers a ping as well as a pong does.
		c := dialRawWS(t, n)
		for id := 1; id <= 5; id++ {
			if op, _, err := c.readFrame(); err != nil || op != 0x9 {
				t.Fatalf("opcode %#x (%v), want a ping", op, err)
			}
			c.writeFrame(0x1, fmt.Appendf(nil, `{"op":"ping","id":%d}`, id))
			c.expectReply(fmt.Sprintf(`{"type":"pong","id":%d}`, id), false)
		}
	})

	t.Run("client pings and pongs", func(t *testing.T) {
		// A pong nobody asked for is allowed, and taken off the
		// stream; a ping from the client gets its pong.
		c := dialRawWS(t, n)
		c.writeFrame(0xA, []byte("unasked"))
		c.writeFrame(0x9, []byte("abc"))
		c.writeFrame(0x1, []byte(`{"op":"ping","id":1}`))
		for gotPong, gotReply := false, false; !gotPong || !gotReply; {
			op, p, err := c.readFrame()
			switch {
			case err != nil:
				t.Fatal(err)
			case op == 0x9:
				c.writeFrame(0xA, p)
			case op == 0xA && string(p) == "abc":
				gotPong = true
			case op == 0x1 && string(p) == `{"type":"pong","id":1}`:
				gotReply = true
			default:
				t.Fatalf("opcode %#x %q", op, p)
			}
		}
	})

	t.Run("unanswered", func(t *testing.T) {
		waitFor(t, "no clients", func() bool { return n.b.Stats().Clients == 0 })
		c := dialRawWS(t, n)
		waitFor(t, "the connection to be a broker client", func() bool { return n.b.Stats().Clients == 1 })
		// The client neither reads nor answers: the server gives up.
		waitFor(t, "the server to drop the client", func() bool { return n.b.Stats().Clients == 0 })
		pings := 0
		for {
			op, _, err := c.readFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("after %d pings: %v, want EOF", pings, err)
			}
			if op != 0x9 {
				t.Fatalf("opcode %#x, want only pings", op)
			}
			pings++
		}
		if pings == 0 {
			t.Fatal("closed without a ping")
		}
	})
}

// TestWSConcurrentClients: many clients subscribing and resuming at once on
// one channel all get the same stream.
func TestWSConcurrentClients(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	const ch, clients, total = "many", 8, 40
	epoch := n.publishRange(t, ch, 1, total/2)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		since := uint64(i * 2)
		c := dialWS(t, n.wsURL(""), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := json.Marshal(map[string]any{"op": "subscribe", "channel": ch, "since": since, "epoch": epoch})
			ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
			defer cancel()
			if err := c.conn.Write(ctx, websocket.MessageText, req); err != nil {
				errs <- err
				return
			}
			last := since
			for last < total {
				_, data, err := c.conn.Read(ctx)
				if err != nil {
					errs <- err
					return
				}
				for line := range bytes.SplitSeq(data, []byte{'\n'}) {
					e, err := decodeEvent(line)
					if err != nil {
						errs <- err
						return
					}
					switch {
					case e.Type == "subscribed", e.Type == "resume" && *e.Recovered && e.From == since+1:
					case e.Type == "message" && e.Seq == last+1 && e.Data == "m"+strconv.FormatUint(e.Seq, 10):
						last = e.Seq
					default:
						errs <- fmt.Errorf("client since %d, after %d: %s", since, last, e.raw)
						return
					}
				}
			}
		}()
	}
	n.publishRange(t, ch, total/2+1, total)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
