package raftstore

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"strings"
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

// TestClusterTLSRefusesStrangers: a peer whose certificate is from the
// cluster's CA but not valid for any member's address is not a member: the
// Raft port carries no Raft traffic for it and answers no forward call but
// a request to join.
func TestClusterTLSRefusesStrangers(t *testing.T) {
	ca := testcert.NewCA(t, "herald cluster CA")
	c := newTestCluster(t, 3, Config{TLS: PeerTLSConfig(ca.Issue(t, "node").TLS, ca.Pool())})
	c.waitConverged()
	addr := c.nodes[c.leader()].addr
	ctx := context.Background()
	stranger := PeerTLSConfig(ca.IssueFor(t, "stranger", []net.IP{net.ParseIP("127.0.0.99")}, nil).TLS, ca.Pool())
	member := PeerTLSConfig(ca.Issue(t, "another node").TLS, ca.Pool())

	// Raft traffic: the connection is closed, not left waiting.
	nc, err := dialStream(ctx, nil, addr, streamRaft, time.Second, stranger)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = nc.Read(make([]byte, 1))
	nc.Close()
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("a stranger's Raft connection: %v, want it closed", err)
	}

	// Forward calls: refused, but for a request to join (here a
	// malformed one, refused for what it is, not for who sent it).
	fc := newFwdClient(nil, time.Second, stranger)
	defer fc.close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := fc.call(cctx, addr, fwdCommit, nil); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("a stranger's forward call: %v, want refused as not a member", err)
	}
	if _, err := fc.call(cctx, addr, fwdJoin, nil); err == nil || !strings.Contains(err.Error(), "malformed join") {
		t.Fatalf("a stranger's join request: %v, want it read (and refused as malformed)", err)
	}
	// A certificate valid for a member's address is a member's.
	mc := newFwdClient(nil, time.Second, member)
	defer mc.close()
	if _, err := mc.call(cctx, addr, fwdCommit, nil); err != nil {
		t.Fatalf("a member's forward call: %v", err)
	}
}
