package wsbridge

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// Buffer sizes of a WebSocket connection. net/http hands a hijacked
// connection over with 4 KiB read and write buffers, which a connection
// keeps for its whole life: most of an idle subscriber's memory. A
// subscriber reads little (small JSON requests; larger frames are read
// straight into their destination), and the writer sends each batch of
// events as one frame, so smaller buffers cost at most one more write
// system call for a large batch.
const (
	wsReadBufferSize  = 512
	wsWriteBufferSize = 2048
)

// smallBuffers is the ResponseWriter a WebSocket handshake hijacks: its
// connection comes with wsReadBufferSize and wsWriteBufferSize buffers
// instead of net/http's. It keeps the connection, whose write deadline
// the writer sets.
type smallBuffers struct {
	http.ResponseWriter
	conn net.Conn
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
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(conn, wsWriteBufferSize)), nil
}
