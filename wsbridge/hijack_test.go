package wsbridge_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/wsbridge"
)

// TestFirstFrameWithHandshake sends a request frame in the same write as
// the WebSocket handshake, before the server has answered it: the frame
// is in the HTTP server's read buffer when the connection is handed to the
// WebSocket's smaller one, and must not be lost on the way.
func TestFirstFrameWithHandshake(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	host := strings.TrimPrefix(n.url, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))

	handshake := "GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	payload := []byte(`{"op":"ping","id":7}`)
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x81, 0x80 | byte(len(payload))}
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	if _, err := c.Write(append([]byte(handshake), frame...)); err != nil {
		t.Fatal(err)
	}

	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", res.Status)
	}
	// Server frames are unmasked; the pong is short.
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatalf("no reply to the frame sent with the handshake: %v", err)
	}
	if hdr[0] != 0x81 || hdr[1] >= 126 {
		t.Fatalf("frame header % x: want a short text frame", hdr)
	}
	body := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	var reply struct {
		Type string `json:"type"`
		ID   int    `json:"id"`
	}
	if err := json.Unmarshal(body, &reply); err != nil || reply.Type != "pong" || reply.ID != 7 {
		t.Fatalf("reply %s (%v): want a pong with id 7", body, err)
	}
}
