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
// the connection, whose write deadline the writer sets, the liveConn over
// it that the library reads through, the read buffer, and the frameWriter
// under the write buffer.
type smallBuffers struct {
	http.ResponseWriter
	conn net.Conn
	live *liveConn
	br   *bufio.Reader
	fw   *frameWriter
	// socket is the descriptor under conn if conn is a plain socket,
	// which holds no bytes of its own above the kernel's: the reader
	// waits on it (awaitFrame). nil otherwise (TLS, a wrapper).
	socket syscall.RawConn
	// early is how many bytes the client sent after its request,
	// without waiting for the handshake's answer.
	early int
}

// frameWriter is what a WebSocket connection's write buffer writes to.
// Between hold and release (the writer sending a message) it gathers the
// bytes in a pooled buffer and release sends them in one write; otherwise
// (pongs and close frames, which coder/websocket writes itself) bytes go
// straight to the connection. It follows where frames end, to put Herald's
// pings between them (sendPing).
type frameWriter struct {
	conn net.Conn
	raw  syscall.RawConn // conn's descriptor; nil if it has none (TLS)
	mu   sync.Mutex
	held bool
	buf  *[]byte // while held
	at   frameCursor
	ping bool   // a ping waits for the frame in progress to end
	owed []byte // the rest of a ping the socket did not take: it goes first
}

var frameBufs = sync.Pool{New: func() any { return new([]byte) }}

// Write implements io.Writer.
func (w *frameWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.held && len(w.owed) > 0 {
		if _, err := w.conn.Write(w.owed); err != nil {
			return 0, err
		}
		w.owed = nil
	}
	n := 0
	for n < len(p) {
		k := w.at.next(p[n:])
		if err := w.put(p[n : n+k]); err != nil {
			return n, err
		}
		n += k
		if w.ping && w.at.between() {
			w.ping = false
			if err := w.put(pingFrame[:]); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// put gathers p if held, and writes it otherwise.
func (w *frameWriter) put(p []byte) error {
	if w.held {
		*w.buf = append(*w.buf, p...)
		return nil
	}
	_, err := w.conn.Write(p)
	return err
}

// hold starts gathering writes.
func (w *frameWriter) hold() {
	w.mu.Lock()
	w.held = true
	w.buf = frameBufs.Get().(*[]byte)
	*w.buf = append(*w.buf, w.owed...)
	w.owed = nil
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

// sendPing puts a ping into the outgoing stream: now if it is between
// frames, or else right after the frame in progress. It does not wait for
// the socket: what the socket does not take at once goes before the next
// bytes written, or when the socket has room, whichever comes first. A
// ping whose predecessor is not out yet is not sent.
func (w *frameWriter) sendPing() {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.ping || len(w.owed) > 0:
	case !w.at.between():
		w.ping = true
	case w.held:
		*w.buf = append(*w.buf, pingFrame[:]...)
	case w.raw == nil || !shallowWaits:
		w.conn.Write(pingFrame[:]) // an error shows on the next read or write
	default:
		if n := broker.WriteNow(w.raw, pingFrame[:]); n < len(pingFrame) {
			w.owed = pingFrame[n:]
			go w.sendOwed()
		}
	}
}

// sendOwed sends the rest of a ping once the socket has room, unless a
// write sent it first. It ends when the connection does: the ping then
// goes unanswered.
func (w *frameWriter) sendOwed() {
	for waitWritable(w.raw) == nil {
		w.mu.Lock()
		n := 0
		if len(w.owed) > 0 {
			// Nothing else was written since the ping (a write
			// sends the owed bytes first): a socket with room that
			// takes none of them has failed.
			n = broker.WriteNow(w.raw, w.owed)
			w.owed = w.owed[n:]
		}
		done := len(w.owed) == 0 || n == 0
		w.mu.Unlock()
		if done {
			return
		}
	}
}

// restoreEarly brings the bytes the client sent early back into br.
// coder/websocket's Accept moves what br holds into a reader under it,
// where the reader's wait (awaitFrame), which looks at br and then the
// socket, would not see them.
func (w *smallBuffers) restoreEarly() {
	if w.early > 0 {
		w.br.Peek(w.early) // cannot wait: the bytes are in memory
	}
}

// Hijack implements http.Hijacker.
func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = conn
	w.live = &liveConn{Conn: conn}
	// Bytes the client sent after its request (a first frame, sent
	// without waiting for the handshake's answer) are in net/http's
	// buffer: they go first into the new one.
	n := brw.Reader.Buffered()
	pending, _ := brw.Reader.Peek(n)
	pending = bytes.Clone(pending)
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(pending), w.live), max(wsReadBufferSize, n))
	w.br, w.early = r, n
	if n > 0 {
		r.Peek(n) // cannot fail: pending holds n bytes
	}
	// net/http flushed the handshake's response before handing over the
	// connection: its write buffer is empty.
	w.fw = &frameWriter{conn: conn, raw: broker.RawConn(conn)}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		w.socket = w.fw.raw
	}
	return w.live, bufio.NewReadWriter(r, bufio.NewWriterSize(w.fw, wsWriteBufferSize)), nil
}
