package resp_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/raftstore/raftstoretest"
	"github.com/herald-broker/herald/resp"
)

// testServer is a Herald node for tests: broker, single-node store and RESP
// server on a random loopback port.
type testServer struct {
	addr   string
	broker *broker.Broker
	store  *raftstore.Store
	srv    *resp.Server
}

func startServer(t testing.TB, bcfg broker.Config, rcfg resp.Config) *testServer {
	t.Helper()
	b := broker.New(bcfg)
	st := raftstoretest.Open(t, b, raftstore.Config{})
	srv := resp.New(b, rcfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &testServer{addr: ln.Addr().String(), broker: b, store: st, srv: srv}
}

// rawConn is a RESP connection driven byte by byte.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// readLine reads one CRLF-terminated line, without the CRLF.
func (c *rawConn) readLine() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\r\n")
}

func TestSmokePublishSubscribe(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{})
	sub := dialRaw(t, s.addr)
	sub.send("SUBSCRIBE news\r\n")
	for _, want := range []string{"*3", "$9", "subscribe", "$4", "news", ":1"} {
		if got := sub.readLine(); got != want {
			t.Fatalf("subscribe reply: got %q, want %q", got, want)
		}
	}
	pub := dialRaw(t, s.addr)
	pub.send("PUBLISH news hello\r\n")
	if got := pub.readLine(); got != ":1" {
		t.Fatalf("publish reply: got %q, want :1", got)
	}
	for _, want := range []string{"*3", "$7", "message", "$4", "news", "$5", "hello"} {
		if got := sub.readLine(); got != want {
			t.Fatalf("message: got %q, want %q", got, want)
		}
	}
}
