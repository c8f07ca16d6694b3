package resp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
)

// TestLimitChannelLength: a channel name of exactly the limit is accepted,
// one byte more is refused, in every command that names channels, and the
// connection stays.
func TestLimitChannelLength(t *testing.T) {
	const limit = 64
	s := startServer(t, broker.Config{MaxChannelLen: limit}, resp.Config{})
	at, over := strings.Repeat("c", limit), strings.Repeat("c", limit+1)
	tooLong := fmt.Sprintf("-ERR channel name too long: %d bytes, limit %d", limit+1, limit)
	c := dialRaw(t, s.addr)
	for _, tc := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"PUBLISH", at, "x"}, ":0"},
		{[]string{"PUBLISH", over, "x"}, tooLong},
		{[]string{"HERALD.PUBLISH", over, "x"}, tooLong},
		{[]string{"HERALD.HISTORY", over}, tooLong},
		{[]string{"SUBSCRIBE", "ok", over}, tooLong},
		{[]string{"PSUBSCRIBE", over}, tooLong},
		{[]string{"SUBSCRIBE", at}, "*3"},
		{[]string{"PING"}, "*2"}, // still connected, in subscribed mode
	} {
		c.send(mb(tc.cmd...))
		got := c.readLine()
		if got != tc.want {
			t.Fatalf("%s: got %q, want %q", tc.cmd[0], got, tc.want)
		}
		drainReply(c, got)
	}
}

// TestLimitPayloadInPipeline: a payload over the limit fails alone; the
// publishes around it in the same pipeline succeed.
func TestLimitPayloadInPipeline(t *testing.T) {
	const limit = 100
	s := startServer(t, broker.Config{MaxPayload: limit}, resp.Config{})
	c := dialRaw(t, s.addr)
	c.send(mb("PUBLISH", "a", strings.Repeat("p", limit)) + mb("PUBLISH", "a", strings.Repeat("p", limit+1)) + mb("PUBLISH", "a", "x"))
	for _, want := range []string{":0", fmt.Sprintf("-ERR payload too large: %d bytes, limit %d", limit+1, limit), ":0"} {
		if got := c.readLine(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// TestLimitClientsPerIP: the limit's worth of connections from one IP are
// served; one more is refused with an error and closed; closing one makes
// room again.
func TestLimitClientsPerIP(t *testing.T) {
	const limit = 3
	s := startServer(t, broker.Config{}, resp.Config{MaxClientsPerIP: limit})
	var conns []*rawConn
	for range limit {
		c := dialRaw(t, s.addr)
		c.send("PING\r\n")
		if got := c.readLine(); got != "+PONG" {
			t.Fatalf("connection within the limit: %q", got)
		}
		conns = append(conns, c)
	}
	extra := dialRaw(t, s.addr)
	if got := extra.readLine(); got != "-ERR max number of clients from this IP reached" {
		t.Fatalf("connection over the limit: %q", got)
	}
	conns[0].nc.Close()
	waitForCond(t, 10*time.Second, "the closed connection to be gone", func() bool { return s.srv.NumConns() == limit-1 })
	again := dialRaw(t, s.addr)
	again.send("PING\r\n")
	if got := again.readLine(); got != "+PONG" {
		t.Fatalf("connection after one closed: %q", got)
	}
	// The others were never affected.
	for _, c := range conns[1:] {
		c.send("PING\r\n")
		if got := c.readLine(); got != "+PONG" {
			t.Fatalf("existing connection: %q", got)
		}
	}
}

// TestLimitRequestRate: a burst of exactly the rate (one second's worth) is
// served; the next command at once is refused, not run, and the connection
// stays. Other connections have their own budget.
func TestLimitRequestRate(t *testing.T) {
	const rate = 20
	s := startServer(t, broker.Config{}, resp.Config{MaxRequestRate: rate})
	sub := dialRaw(t, s.addr)
	sub.send("SUBSCRIBE r\r\n")
	drainReply(sub, sub.readLine())
	c := dialRaw(t, s.addr)
	// rate+1 publishes in one write: the bucket cannot refill enough in
	// the microseconds they take to run for the last to pass.
	c.send(strings.Repeat(mb("PUBLISH", "r", "m"), rate+1))
	for i := range rate {
		if got := c.readLine(); got != ":1" {
			t.Fatalf("publish %d within the burst: %q", i+1, got)
		}
	}
	if got := c.readLine(); got != "-ERR max request rate exceeded" {
		t.Fatalf("publish over the rate: %q", got)
	}
	// Exactly rate messages were delivered: the refused one was not run.
	for range rate {
		if got := sub.readLine(); got != "*3" {
			t.Fatalf("subscriber: %q", got)
		}
		sub.readLine()
		sub.readLine()
		sub.readLine()
		sub.readLine()
		sub.readLine()
		sub.readLine()
	}
	sub.send("PING\r\n")
	if got := sub.readLine(); got != "*2" {
		t.Fatalf("subscriber got %q after the %d messages: the refused publish was delivered?", got, rate)
	}
	drainReply(sub, "*2")
	// Another connection is not limited by this one.
	other := dialRaw(t, s.addr)
	other.send("PING\r\n")
	if got := other.readLine(); got != "+PONG" {
		t.Fatalf("other connection: %q", got)
	}
}
