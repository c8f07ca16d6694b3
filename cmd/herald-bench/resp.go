package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// respValue is one parsed RESP2/RESP3 value. Strings point into the
// reader's buffer and are valid until the next call to next.
type respValue struct {
	typ   byte // '+', '-', ':', '$', '*', '>', '%', '_', '#', ','
	str   []byte
	num   int64
	null  bool
	elems []respValue
}

// isArray reports whether v is an array or a push.
func (v *respValue) isArray() bool { return v.typ == '*' || v.typ == '>' || v.typ == '%' }

// String renders v for error messages.
func (v *respValue) String() string {
	switch {
	case v.null:
		return "(nil)"
	case v.isArray():
		var b bytes.Buffer
		b.WriteByte('[')
		for i := range v.elems {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(v.elems[i].String())
		}
		b.WriteByte(']')
		return b.String()
	case v.typ == ':':
		return strconv.FormatInt(v.num, 10)
	case v.typ == '-':
		return "-" + string(v.str)
	}
	return strconv.Quote(string(v.str))
}

// respReader reads RESP values from a connection with its own buffer: no
// allocation per value on the hot path (top-level arrays reuse one slice of
// elements; nested arrays, which only replies to HERALD.* carry, allocate).
// It records when each read returned, the receipt time of the values it
// completed. Not safe for concurrent use.
type respReader struct {
	rd     io.Reader
	buf    []byte
	r, w   int
	readAt int64 // time.Now().UnixNano() when the last read returned
	top    respValue
	bytes  uint64 // read so far
	reads  uint64 // reads that returned data
}

// maxRESPBuffer bounds a reader's buffer: a larger value is a protocol
// error here.
const maxRESPBuffer = 64 << 20

var errRESPProtocol = errors.New("resp protocol error")

func newRESPReader(rd io.Reader, size int) *respReader {
	return &respReader{rd: rd, buf: make([]byte, size)}
}

// next returns the next value. It is valid until the next call.
func (r *respReader) next() (*respValue, error) {
	for {
		if r.w > r.r {
			r.top.elems = r.top.elems[:0]
			n, err := parseRESP(r.buf[r.r:r.w], &r.top, true)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				r.r += n
				return &r.top, nil
			}
		}
		if err := r.fill(); err != nil {
			return nil, err
		}
	}
}

// buffered reports whether a complete or partial value is already in the
// buffer.
func (r *respReader) buffered() int { return r.w - r.r }

func (r *respReader) fill() error {
	if r.r > 0 {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	if r.w == len(r.buf) {
		if len(r.buf) >= maxRESPBuffer {
			return fmt.Errorf("%w: value larger than %d bytes", errRESPProtocol, maxRESPBuffer)
		}
		nb := make([]byte, 2*len(r.buf))
		copy(nb, r.buf[:r.w])
		r.buf = nb
	}
	n, err := r.rd.Read(r.buf[r.w:])
	if n > 0 {
		r.readAt = time.Now().UnixNano()
		r.w += n
		r.bytes += uint64(n)
		r.reads++
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// parseRESP parses one value from b into v. It returns the bytes used, or
// 0 when b holds only part of a value. reuse lets v keep its elements'
// backing array (top-level values only).
func parseRESP(b []byte, v *respValue, reuse bool) (int, error) {
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return 0, nil
	}
	if nl < 2 || b[nl-1] != '\r' {
		return 0, fmt.Errorf("%w: line without CRLF: %q", errRESPProtocol, truncate(b[:nl], 40))
	}
	v.typ, v.null, v.str, v.num = b[0], false, nil, 0
	line := b[1 : nl-1]
	used := nl + 1
	switch v.typ {
	case '+', '-', ',', '#':
		v.str = line
		return used, nil
	case '_':
		v.null = true
		return used, nil
	case ':':
		n, ok := parseInt(line)
		if !ok {
			return 0, fmt.Errorf("%w: bad integer %q", errRESPProtocol, truncate(line, 40))
		}
		v.num = n
		return used, nil
	case '$':
		n, ok := parseInt(line)
		if !ok {
			return 0, fmt.Errorf("%w: bad bulk length %q", errRESPProtocol, truncate(line, 40))
		}
		if n < 0 {
			v.null = true
			return used, nil
		}
		end := used + int(n)
		if len(b) < end+2 {
			return 0, nil
		}
		v.str = b[used:end]
		return end + 2, nil
	case '*', '>', '%':
		n, ok := parseInt(line)
		if !ok {
			return 0, fmt.Errorf("%w: bad array length %q", errRESPProtocol, truncate(line, 40))
		}
		if n < 0 {
			v.null = true
			return used, nil
		}
		if v.typ == '%' {
			n *= 2
		}
		if reuse && cap(v.elems) >= int(n) {
			v.elems = v.elems[:n]
		} else {
			v.elems = make([]respValue, n)
		}
		for i := range v.elems {
			k, err := parseRESP(b[used:], &v.elems[i], false)
			if err != nil || k == 0 {
				return 0, err
			}
			used += k
		}
		return used, nil
	}
	return 0, fmt.Errorf("%w: unexpected type byte %q", errRESPProtocol, v.typ)
}

func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// appendCommand appends a RESP multibulk command.
func appendCommand(dst []byte, args ...string) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, '\r', '\n')
	for _, a := range args {
		dst = appendBulk(dst, a)
	}
	return dst
}

func appendBulk[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// dialCheck connects to addr for a few commands outside the load (checks,
// counters): the connection, and every command on it, must be done within
// limit.
func dialCheck(ctx context.Context, addr string, limit time.Duration) (net.Conn, *respReader, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	dl, _ := ctx.Deadline() // the earlier of limit and ctx's own
	conn.SetDeadline(dl)
	return conn, newRESPReader(conn, 64<<10), nil
}

// roundTrip sends one command and reads its reply: for setup and checks,
// not the hot path.
func roundTrip(rw io.Writer, rd *respReader, args ...string) (*respValue, error) {
	if _, err := rw.Write(appendCommand(nil, args...)); err != nil {
		return nil, err
	}
	v, err := rd.next()
	if err != nil {
		return nil, err
	}
	if v.typ == '-' {
		return v, fmt.Errorf("%s: %s", args[0], v.str)
	}
	return v, nil
}
