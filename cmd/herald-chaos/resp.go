package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// value is one RESP2 reply: a simple string, error, integer, bulk string
// (nil for a null bulk) or array.
type value struct {
	kind  byte // '+', '-', ':', '$', '*'
	str   string
	num   int64
	null  bool
	elems []value
}

// errorReply is a RESP error reply: the server answered, and said no.
type errorReply string

func (e errorReply) Error() string { return string(e) }

// respConn is a minimal RESP2 client connection: the harness needs exact
// control over timeouts and no retries, which client libraries add.
type respConn struct {
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func dialRESP(addr string, timeout time.Duration) (*respConn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &respConn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriter(nc)}, nil
}

func (c *respConn) Close() error { return c.nc.Close() }

// send writes one command without waiting for its reply.
func (c *respConn) send(args ...string) error {
	fmt.Fprintf(c.bw, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.bw, "$%d\r\n%s\r\n", len(a), a)
	}
	return c.bw.Flush()
}

// do sends a command and reads its reply within timeout. An error reply is
// returned as an errorReply.
func (c *respConn) do(timeout time.Duration, args ...string) (value, error) {
	c.nc.SetDeadline(time.Now().Add(timeout))
	defer c.nc.SetDeadline(time.Time{})
	if err := c.send(args...); err != nil {
		return value{}, err
	}
	v, err := c.read()
	if err == nil && v.kind == '-' {
		return v, errorReply(v.str)
	}
	return v, err
}

// read reads one reply.
func (c *respConn) read() (value, error) {
	line, err := c.br.ReadString('\n')
	if err != nil {
		return value{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return value{}, fmt.Errorf("malformed reply line %q", line)
	}
	v := value{kind: line[0]}
	body := line[1 : len(line)-2]
	switch v.kind {
	case '+', '-':
		v.str = body
	case ':':
		if v.num, err = strconv.ParseInt(body, 10, 64); err != nil {
			return v, fmt.Errorf("malformed integer %q: %w", body, err)
		}
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return v, fmt.Errorf("malformed bulk length %q: %w", body, err)
		}
		if n < 0 {
			v.null = true
			return v, nil
		}
		b := make([]byte, n+2)
		if _, err := readFull(c.br, b); err != nil {
			return v, err
		}
		v.str = string(b[:n])
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return v, fmt.Errorf("malformed array length %q: %w", body, err)
		}
		if n < 0 {
			v.null = true
			return v, nil
		}
		v.elems = make([]value, n)
		for i := range n {
			if v.elems[i], err = c.read(); err != nil {
				return v, err
			}
		}
	default:
		return v, fmt.Errorf("unexpected reply type %q", v.kind)
	}
	return v, nil
}

func readFull(br *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := br.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// fields turns a map reply sent as a RESP2 flat array (key, value, ...)
// into a map.
func fields(v value) (map[string]value, error) {
	if v.kind != '*' || len(v.elems)%2 != 0 {
		return nil, errors.New("reply is not a map")
	}
	m := make(map[string]value, len(v.elems)/2)
	for i := 0; i < len(v.elems); i += 2 {
		m[v.elems[i].str] = v.elems[i+1]
	}
	return m, nil
}
