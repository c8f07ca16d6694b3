package main

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// echoServer echoes whatever it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestProxyCuts checks the two ways a cut link behaves: hold stalls bytes
// and delivers them after healing; reset closes the connection.
func TestProxyCuts(t *testing.T) {
	nw := newNetwork(2, slog.New(slog.DiscardHandler))
	defer nw.close()
	// Node 0 dials from 127.0.0.11 to node 1's proxy.
	nodeOf := func(a net.Addr) int {
		if a.(*net.TCPAddr).IP.String() == nodeIP(0) {
			return 0
		}
		return -1
	}
	p, err := startProxy(nw, 1, "127.0.0.1:0", echoServer(t), nodeOf)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(nodeIP(0))}}
		c, err := d.Dial("tcp", p.addr())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	echo := func(c net.Conn, msg string, within time.Duration) error {
		c.SetDeadline(time.Now().Add(within))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		b := make([]byte, len(msg))
		_, err := io.ReadFull(c, b)
		return err
	}

	c := dial()
	defer c.Close()
	if err := echo(c, "up", 5*time.Second); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	nw.partition(modeHold, [][2]int{{0, 1}})
	if err := echo(c, "held", 300*time.Millisecond); err == nil {
		t.Fatal("bytes crossed a held link")
	}
	nw.heal()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "held" {
		t.Fatalf("after healing got %q, %v; want the held bytes", b, err)
	}

	c2 := dial()
	defer c2.Close()
	if err := echo(c2, "up", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	nw.partition(modeReset, [][2]int{{0, 1}})
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(b); err == nil {
		t.Fatal("connection over a reset link still open")
	}
	nw.heal()
}
