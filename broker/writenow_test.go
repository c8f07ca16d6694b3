//go:build unix

package broker_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/internal/tcppair"
)

// TestWriteNow: WriteNow writes what the socket takes without waiting and
// says how much; the rest, written the blocking way after it, arrives in
// order. A write with room in the socket goes through whole.
func TestWriteNow(t *testing.T) {
	server, client := tcppair.New(t)
	raw := broker.RawConn(server)
	if raw == nil {
		t.Fatal("no descriptor under a TCP connection")
	}

	small := []byte("hello")
	if n := broker.WriteNow(raw, small); n != len(small) {
		t.Fatalf("WriteNow of %d bytes with room in the socket wrote %d", len(small), n)
	}
	got := make([]byte, len(small))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("read %q, %v; want %q", got, err, small)
	}

	// 64 MiB: more than the client's socket and the server's take while
	// the client does not read (a few MiB on loopback).
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	n := broker.WriteNow(raw, big)
	if n == 0 || n == len(big) {
		t.Fatalf("WriteNow of %d bytes to a client not reading wrote %d: want part of it", len(big), n)
	}
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(client, int64(len(big))))
		read <- b
	}()
	if _, err := server.Write(big[n:]); err != nil {
		t.Fatal(err)
	}
	if b := <-read; !bytes.Equal(b, big) {
		t.Fatalf("read %d bytes, not the %d written", len(b), len(big))
	}
}
