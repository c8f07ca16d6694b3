package wsbridge

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"

	"github.com/herald-broker/herald/broker"
)

// Buffers of a WebSocket connection. net/http hands a hijacked connection
// over with 4 KiB read and write buffers, which a connection keeps for its
// whole life: they were most of an idle subscriber's memory. A subscriber
// reads little (small JSON requests; larger frames are read straight into
// their destination), so its read buffer is small. Its write buffer is
// tiny, and under it a frameWriter gathers each frame the writer sends in a
// buffer borrowed for the write, and sends it with one system call.
const (
	wsReadBufferSize  = 256
	wsWriteBufferSize = 16 // bufio's smallest
)

// smallBuffers is the ResponseWriter a WebSocket handshake hijacks: its
// connection comes with the buffers above instead of net/http's. It keeps
// the connection, whose write deadline the writer sets, and the
// frameWriter under the write buffer.
type smallBuffers struct {
	http.ResponseWriter
	conn net.Conn
	fw   *frameWriter
}

// frameWriter is what a WebSocket connection's write buffer writes to.
// Between hold and release (the writer sending a message) it gathers the
// bytes in a pooled buffer and release sends them in one write; otherwise
// (pings, pongs, close frames, which coder/websocket writes itself) bytes
// go straight to the connection.
type frameWriter struct {
	conn net.Conn
	raw  syscall.RawConn // conn's descriptor; nil if it has none (TLS)
	mu   sync.Mutex
	held bool
	buf  *[]byte // while held
}

var frameBufs = sync.Pool{New: func() any { return new([]byte) }}

// Write implements io.Writer.
func (w *frameWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.held {
		return w.conn.Write(p)
	}
	*w.buf = append(*w.buf, p...)
	return len(p), nil
}

// hold starts gathering writes.
func (w *frameWriter) hold() {
	w.mu.Lock()
	w.held = true
	w.buf = frameBufs.Get().(*[]byte)
	w.mu.Unlock()
}

// release sends what was gathered since hold, and stops gathering. It
// sends what the socket takes at once; if that is not all, it calls wait,
// then sends the rest under the connection's write deadline, and reports
// that it waited.
func (w *frameWriter) release(wait func()) (waited bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if b := *w.buf; len(b) > 0 {
		n := 0
		if w.raw != nil {
			n = broker.WriteNow(w.raw, b)
		}
		if waited = n < len(b); waited {
			wait()
			_, err = w.conn.Write(b[n:])
		}
	}
	if cap(*w.buf) <= 64<<10 { // a large message's buffer is not kept
		*w.buf = (*w.buf)[:0]
		frameBufs.Put(w.buf)
	}
	w.buf, w.held = nil, false
	return waited, err
}

// Hijack implements http.Hijacker.
func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = conn
	// Bytes the client sent after its request (a first frame, sent
	// without waiting for the handshake's answer) are in net/http's
	// buffer: they go first into the new one.
	n := brw.Reader.Buffered()
	pending, _ := brw.Reader.Peek(n)
	pending = bytes.Clone(pending)
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(pending), conn), max(wsReadBufferSize, n))
	if n > 0 {
		r.Peek(n) // cannot fail: pending holds n bytes
	}
	// net/http flushed the handshake's response before handing over the
	// connection: its write buffer is empty.
	w.fw = &frameWriter{conn: conn, raw: broker.RawConn(conn)}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(w.fw, wsWriteBufferSize)), nil
}
