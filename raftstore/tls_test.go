package raftstore

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/herald-broker/herald/internal/testcert"
)

// TestClusterTLS runs a three-node cluster over mutual TLS: publishes on a
// follower are forwarded and replicated; a connection without a certificate
// from the cluster's CA, plain or TLS, gets nothing from the Raft port.
func TestClusterTLS(t *testing.T) {
	ca := testcert.NewCA(t, "herald cluster CA")
	cfg := PeerTLSConfig(ca.Issue(t, "node").TLS, ca.Pool())
	c := newTestCluster(t, 3, Config{TLS: cfg})
	f := c.nodes[c.follower()]
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		r, err := publish(ctx, f, "room", "m"+strconv.Itoa(i))
		if err != nil {
			t.Fatalf("publish %d on a follower: %v", i, err)
		}
		if r.Seq != uint64(i) {
			t.Fatalf("publish %d: seq %d", i, r.Seq)
		}
	}
	c.waitConverged()

	addr := c.nodes[c.leader()].addr
	// Plain TCP: the server expects a TLS handshake; a forward request
	// gets no answer and the connection is closed.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte{streamForward, 0, 0, 0, 0})
	nc.SetReadDeadline(time.Now().Add(2 * routeTimeout))
	if n, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a plain connection got %d bytes from the raft port", n)
	}

	// TLS with a certificate from another CA, and TLS without a
	// certificate: the handshake fails.
	other := testcert.NewCA(t, "someone else's CA")
	for name, certs := range map[string][]tls.Certificate{
		"foreign CA":     {other.Issue(t, "intruder").TLS},
		"no certificate": nil,
	} {
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), Certificates: certs})
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			tc.Write([]byte{streamForward})
			tc.SetReadDeadline(time.Now().Add(2 * routeTimeout))
			_, err = tc.Read(make([]byte, 1))
			tc.Close()
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	// A node dialing a peer checks the peer's certificate too: a CA that
	// did not sign the peer's certificate makes the dial fail.
	if _, err := dialStream(ctx, nil, addr, streamForward, time.Second, PeerTLSConfig(other.Issue(t, "x").TLS, other.Pool())); err == nil {
		t.Error("dial with another CA succeeded")
	}
}
