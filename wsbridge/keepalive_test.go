package wsbridge

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/internal/tcppair"
)

// wsFrame builds a server frame (unmasked unless masked) with n payload
// bytes.
func wsFrame(opcode byte, n int, masked bool) []byte {
	b := []byte{0x80 | opcode, 0}
	switch {
	case n < 126:
		b[1] = byte(n)
	case n < 1<<16:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b[1] |= 0x80
		b = append(b, 1, 2, 3, 4)
	}
	for i := range n {
		b = append(b, byte(i))
	}
	return b
}

// splitFrames parses a stream of frames into whole frames.
func splitFrames(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		var f frameCursor
		k := f.next(b)
		if !f.between() {
			return out, fmt.Errorf("stream ends inside a frame: % x", b)
		}
		out = append(out, b[:k])
		b = b[k:]
	}
	return out, nil
}

// framedStream writes through a frameWriter over real TCP, and returns the
// frames the peer received, once done returns.
type framedStream struct {
	t    testing.TB
	w    *frameWriter
	conn net.Conn
	got  chan []byte
}

func newFramedStream(t testing.TB) *framedStream {
	server, client := tcppair.New(t)
	s := &framedStream{t: t, w: &frameWriter{conn: server, raw: broker.RawConn(server)}, conn: server, got: make(chan []byte, 1)}
	go func() {
		b, _ := io.ReadAll(client)
		s.got <- b
	}()
	return s
}

// frames waits for every owed ping to go out, ends the stream and returns
// the frames the peer received.
func (s *framedStream) frames() [][]byte {
	s.t.Helper()
	s.w.mu.Lock()
	pending := s.w.ping
	s.w.mu.Unlock()
	if pending {
		s.t.Fatal("a ping still waits for a frame to end, after whole frames")
	}
	waitOwedSent(s.t, s.w)
	s.conn.Close()
	frames, err := splitFrames(<-s.got)
	if err != nil {
		s.t.Fatal(err)
	}
	return frames
}

// waitOwedSent waits until no part of a ping is owed: the socket took it.
func waitOwedSent(t testing.TB, w *frameWriter) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		owed := len(w.owed)
		w.mu.Unlock()
		if owed == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an owed ping was never sent")
		}
		time.Sleep(time.Millisecond) // poll interval, not synchronization
	}
}

func isPing(f []byte) bool { return bytes.Equal(f, pingFrame[:]) }

// TestFrameWriterPing: a ping goes out between frames, never inside one:
// at once when the stream is between frames, after the frame in progress
// otherwise, into the held message when the writer gathers one; and a
// ping while another waits is not sent twice.
func TestFrameWriterPing(t *testing.T) {
	text := wsFrame(0x1, 300, false) // a two-byte length
	t.Run("between", func(t *testing.T) {
		s := newFramedStream(t)
		s.w.Write(text)
		s.w.sendPing()
		s.w.Write(text)
		got := s.frames()
		if len(got) != 3 || !isPing(got[1]) || !bytes.Equal(got[0], text) || !bytes.Equal(got[2], text) {
			t.Fatalf("frames % x", got)
		}
	})
	t.Run("inside", func(t *testing.T) {
		s := newFramedStream(t)
		s.w.Write(text[:1])
		s.w.sendPing() // inside the header
		s.w.sendPing() // one waits already
		s.w.Write(text[1:3])
		s.w.sendPing()
		s.w.Write(text[3:200])
		s.w.Write(text[200:])
		got := s.frames()
		if len(got) != 2 || !bytes.Equal(got[0], text) || !isPing(got[1]) {
			t.Fatalf("frames % x", got)
		}
	})
	t.Run("held", func(t *testing.T) {
		s := newFramedStream(t)
		s.w.hold()
		s.w.Write(text[:100])
		s.w.sendPing() // waits for the frame's end, in the message
		s.w.Write(text[100:])
		s.w.sendPing() // between frames: into the message
		if _, err := s.w.release(func() {}); err != nil {
			t.Fatal(err)
		}
		s.w.sendPing() // not held: to the socket
		got := s.frames()
		if len(got) != 4 || !bytes.Equal(got[0], text) || !isPing(got[1]) || !isPing(got[2]) || !isPing(got[3]) {
			t.Fatalf("frames % x", got)
		}
	})
}

// TestFrameWriterOwedPing: a ping the socket has no room for goes out
// once it has, between frames, with or without a write after it.
func TestFrameWriterOwedPing(t *testing.T) {
	for _, writeAfter := range []bool{false, true} {
		t.Run(fmt.Sprintf("write after: %v", writeAfter), func(t *testing.T) {
			server, client := tcppair.New(t)
			server.(*net.TCPConn).SetWriteBuffer(4096)
			w := &frameWriter{conn: server, raw: broker.RawConn(server)}
			small := wsFrame(0x1, 100, false)
			// Fill the socket with whole frames, the peer not reading.
			// They bypass w: its cursor rightly sees the stream
			// between frames.
			for tries := 0; ; tries++ {
				if tries == 100_000 {
					t.Fatal("the socket never filled")
				}
				n := broker.WriteNow(w.raw, small)
				if n == 0 {
					break
				}
				for n < len(small) {
					// Room for part of the frame: make room for
					// the rest, and go on filling.
					io.ReadFull(client, make([]byte, 4096))
					n += broker.WriteNow(w.raw, small[n:])
				}
			}
			w.sendPing()
			w.mu.Lock()
			owed := len(w.owed)
			w.mu.Unlock()
			if owed != len(pingFrame) {
				t.Fatalf("%d bytes of the ping owed, want %d", owed, len(pingFrame))
			}
			text := wsFrame(0x1, 5, false)
			wrote := make(chan error, 1)
			if writeAfter {
				go func() {
					_, err := w.Write(text)
					wrote <- err
				}()
			}
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(client)
				got <- b
			}()
			waitOwedSent(t, w)
			if writeAfter {
				if err := <-wrote; err != nil {
					t.Fatal(err)
				}
			}
			server.Close()
			b := <-got
			// The peer read some frames while the socket filled:
			// what is left starts inside one of them. Find the
			// ping, at a frame's end, from the end of the stream.
			want := append([]byte{}, pingFrame[:]...)
			if writeAfter {
				want = append(want, text...)
			}
			if !bytes.HasSuffix(b, want) {
				t.Fatalf("stream ends % x, want % x", b[max(0, len(b)-20):], want)
			}
			rest := b[:len(b)-len(want)]
			if len(rest) < len(small) || !bytes.Equal(rest[len(rest)-len(small):], small) {
				t.Fatal("the ping is not after a whole frame")
			}
		})
	}
}

// FuzzFrameWriterPing: whatever the frames, however they are cut into
// writes, held or not, with pings asked for anywhere, the peer receives
// the same frames in order with whole pings between them.
func FuzzFrameWriterPing(f *testing.F) {
	f.Add([]byte{3, 10, 200, 5, 1, 2, 1, 9, 4})
	f.Add([]byte{8, 0, 125, 126, 255, 1, 7, 3, 3, 3, 3, 2, 2})
	f.Add([]byte{1, 254, 0, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, script []byte) {
		next := func() byte {
			if len(script) == 0 {
				return 0
			}
			b := script[0]
			script = script[1:]
			return b
		}
		var frames [][]byte
		var stream []byte
		for range next() % 16 {
			size := int(next())
			switch next() % 8 {
			case 0:
				size += 126 // a two-byte length
			case 1:
				size += 1 << 16 // an eight-byte length
			}
			opcode := []byte{0x1, 0x2, 0x0, 0x8, 0xa}[next()%5]
			fr := wsFrame(opcode, size, next()%4 == 0)
			frames = append(frames, fr)
			stream = append(stream, fr...)
		}
		s := newFramedStream(t)
		pings := 0
		for len(script) > 0 {
			op := next()
			switch op % 4 {
			case 0:
				s.w.sendPing()
				pings++
			case 1:
				if !s.w.held {
					s.w.hold()
				} else if _, err := s.w.release(func() {}); err != nil {
					t.Fatal(err)
				}
			default:
				k := min(len(stream), int(op)*int(next()%64+1))
				if _, err := s.w.Write(stream[:k]); err != nil {
					t.Fatal(err)
				}
				stream = stream[k:]
			}
		}
		if _, err := s.w.Write(stream); err != nil {
			t.Fatal(err)
		}
		if s.w.held {
			if _, err := s.w.release(func() {}); err != nil {
				t.Fatal(err)
			}
		}
		var got [][]byte
		gotPings := 0
		for _, fr := range s.frames() {
			if isPing(fr) {
				gotPings++
				continue
			}
			got = append(got, fr)
		}
		if len(got) != len(frames) {
			t.Fatalf("%d frames besides pings, want %d", len(got), len(frames))
		}
		for i := range got {
			if !bytes.Equal(got[i], frames[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
		if gotPings > pings || pings > 0 && gotPings == 0 {
			t.Fatalf("%d pings received for %d asked", gotPings, pings)
		}
	})
}

// TestTakePong: a whole pong from a client is taken off the stream;
// anything else, or a pong not all there yet, is left.
func TestTakePong(t *testing.T) {
	pong := []byte{0x8a, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	text := []byte{0x81, 0x81, 1, 2, 3, 4, 'x' ^ 1}
	for _, tc := range []struct {
		name  string
		in    []byte
		took  bool
		after []byte
	}{
		{"pong", pong, true, nil},
		{"pong then request", append(append([]byte{}, pong...), text...), true, text},
		{"request", text, false, text},
		{"part of a pong", pong[:5], false, pong[:5]},
		{"unmasked pong", []byte{0x8a, 0x00}, false, []byte{0x8a, 0x00}},
		{"fragment of a pong", []byte{0x0a, 0x80, 1, 2, 3, 4}, false, []byte{0x0a, 0x80, 1, 2, 3, 4}},
		{"pong with a long length", []byte{0x8a, 0xfe, 0, 126}, false, []byte{0x8a, 0xfe, 0, 126}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(bytes.NewReader(tc.in), wsReadBufferSize)
			took, err := takePong(br)
			if err != nil || took != tc.took {
				t.Fatalf("took %v (%v), want %v", took, err, tc.took)
			}
			rest, _ := io.ReadAll(br)
			if !bytes.Equal(rest, tc.after) {
				t.Fatalf("left % x, want % x", rest, tc.after)
			}
		})
	}
	if _, err := takePong(bufio.NewReader(bytes.NewReader(nil))); !errors.Is(err, io.EOF) {
		t.Fatalf("at the end: %v, want EOF", err)
	}
}

// BenchmarkFrameWriterMessage: what a fan-out message costs the frameWriter
// under coder/websocket's 16-byte write buffer: the header and the start of
// the payload in one write, the rest in another, gathered while held (the
// socket write itself is not part of it).
func BenchmarkFrameWriterMessage(b *testing.B) {
	msg := wsFrame(0x1, 20*64, false) // about 20 deliveries of 64 bytes
	w := &frameWriter{}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		w.held = true
		w.buf = frameBufs.Get().(*[]byte)
		w.Write(msg[:16])
		w.Write(msg[16:])
		*w.buf = (*w.buf)[:0]
		frameBufs.Put(w.buf)
		w.buf, w.held = nil, false
	}
	if !w.at.between() {
		b.Fatal("the writer lost track of the frames")
	}
}
