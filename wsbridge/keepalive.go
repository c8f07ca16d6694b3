package wsbridge

import (
	"bufio"
	"encoding/binary"
	"net"
	"sync/atomic"
	"time"
)

// Keeping WebSocket connections alive costs an idle one nothing between
// pings. Herald pings a peer itself rather than with coder/websocket's
// Ping, which allocates two timed contexts, a hook and a channel per ping
// and keeps a goroutine waiting for the pong:
//   - the ping is two constant bytes that the frameWriter puts into the
//     outgoing stream between two frames (it follows where frames end);
//   - the answer is any byte from the peer after it, which liveConn notes
//     under the library;
//   - an idle reader waits for its socket outside the library's Read, with a
//     shallow stack, and takes the peer's pongs off the stream itself
//     (takePong), so that a ping round does not leave it deep in Read.

// epoch is where monotime counts from.
var epoch = time.Now()

// monotime is the time since the process started, on the monotonic clock,
// in nanoseconds: always above zero.
func monotime() int64 { return int64(time.Since(epoch)) + 1 }

// pingFrame is the server's ping: final, opcode 9, unmasked, no payload.
var pingFrame = [2]byte{0x89, 0x00}

// liveConn is the connection under a WebSocket: it notes when bytes last
// came from the peer.
type liveConn struct {
	net.Conn
	lastRead atomic.Int64 // monotime; 0: never
}

// Read implements net.Conn.
func (c *liveConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(monotime())
	}
	return n, err
}

// frameCursor follows the frames of a WebSocket byte stream, to tell where
// each ends.
type frameCursor struct {
	hdr  [14]byte // the header of the frame in progress, as far as it came
	n    int      // bytes of hdr seen
	left uint64   // payload bytes of the frame in progress still to come
}

// between reports whether the stream is between two frames.
func (f *frameCursor) between() bool { return f.n == 0 && f.left == 0 }

// next follows p up to the end of the frame in progress, or to the end of
// p if the frame goes on past it, and returns how much of p that was.
func (f *frameCursor) next(p []byte) int {
	i := 0
	for i < len(p) {
		if f.left > 0 {
			k := min(f.left, uint64(len(p)-i))
			f.left -= k
			i += int(k)
			if f.left == 0 {
				return i
			}
			continue
		}
		f.hdr[f.n] = p[i]
		f.n++
		i++
		if f.n < 2 {
			continue
		}
		need, size := 2, uint64(f.hdr[1]&0x7f)
		switch size {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4 // a masking key
		}
		if f.n < need {
			continue
		}
		switch size {
		case 126:
			size = uint64(binary.BigEndian.Uint16(f.hdr[2:]))
		case 127:
			size = binary.BigEndian.Uint64(f.hdr[2:])
		}
		f.n, f.left = 0, size
		if size == 0 {
			return i
		}
	}
	return i
}

// takePong takes a pong frame off the head of br if one is there whole,
// and reports whether it did. It reads from the connection only if br is
// empty, so the caller makes sure the connection has bytes or has ended.
// A frame that is not a well-formed pong from a client (final, masked, at
// most 125 bytes) is left for coder/websocket, which answers it or rejects
// it.
func takePong(br *bufio.Reader) (bool, error) {
	if _, err := br.Peek(1); err != nil {
		return false, err
	}
	b, _ := br.Peek(br.Buffered())
	if len(b) < 2 || b[0] != 0x8a || b[1]&0x80 == 0 || b[1]&0x7f > 125 {
		return false, nil
	}
	size := 2 + 4 + int(b[1]&0x7f)
	if len(b) < size {
		return false, nil
	}
	br.Discard(size)
	return true, nil
}
