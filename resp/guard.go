package resp

import (
	"errors"
	"io"
)

// Redis's fixed protocol limits.
const (
	maxMultibulkCount = 1024 * 1024 // more arguments than this: "invalid multibulk length"
	maxInlineSize     = 64 * 1024   // PROTO_INLINE_MAX_SIZE: longest inline command or header line
)

// protocolError is a violation of the RESP framing. Its text is Redis's.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "Protocol error: " + e.msg }

// errQueryBufferLimit closes a connection whose single command is larger
// than the query buffer limit. Like Redis, the client gets no reply.
var errQueryBufferLimit = errors.New("query buffer limit exceeded")

// guard sits between a connection and redcon's reader, which buffers
// whatever it is sent until a command is complete: no bound on a bulk
// length, an inline command or a header line. guard follows the RESP framing
// byte by byte as data passes through and stops the stream, with Redis's own
// error text, where Redis would: a multibulk count or bulk length that is
// malformed or too large, a '$' missing, a header or inline line over 64 KiB,
// a command over the query buffer limit. The bytes before the violation are
// passed on, so the complete commands before it still run.
type guard struct {
	r           io.Reader
	maxBulk     int64 // largest bulk length (proto-max-bulk-len)
	maxQueryBuf int64 // largest single command, in bytes

	state    guardState
	lineLen  int   // bytes of the current header or inline line
	num      int64 // number being parsed from a header line
	numOK    bool  // the header line so far is a valid number
	neg      bool
	bulks    int64 // bulks left in the current multibulk
	skip     int64 // bytes of the current bulk (with its CRLF) left
	cmdBytes int64 // bytes of the current command so far
	err      error // violation found; returned once the bytes before it are passed on
}

type guardState uint8

const (
	gStart     guardState = iota // at a command boundary
	gInline                      // in an inline command
	gCountLine                   // after '*': the multibulk count
	gBulkStart                   // expecting '$'
	gBulkLine                    // after '$': the bulk length
	gBulkBody                    // inside a bulk
	gLineEnd                     // a header line ended with CR; expecting LF
)

func newGuard(r io.Reader, maxBulk, maxQueryBuf int64) *guard {
	return &guard{r: r, maxBulk: maxBulk, maxQueryBuf: maxQueryBuf}
}

// Read implements io.Reader.
func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	for i := 0; i < n; i++ {
		if verr := g.step(p, &i, n); verr != nil {
			g.err = verr
			if i == 0 {
				return 0, verr
			}
			return i, nil
		}
	}
	return n, err
}

// step consumes p[*i] (and, inside a bulk body, as many following bytes as
// belong to it, leaving *i on the last one consumed). It returns a
// violation, leaving *i on the offending byte.
func (g *guard) step(p []byte, i *int, n int) error {
	c := p[*i]
	if g.state == gBulkBody {
		take := min(int64(n-*i), g.skip)
		g.skip -= take
		g.cmdBytes += take
		*i += int(take) - 1
		if g.skip == 0 {
			g.bulks--
			if g.bulks == 0 {
				g.endCommand()
			} else {
				g.state = gBulkStart
			}
		}
		return nil
	}
	g.cmdBytes++
	if g.cmdBytes > g.maxQueryBuf {
		return errQueryBufferLimit
	}
	switch g.state {
	case gStart:
		g.lineLen = 0
		if c == '*' {
			g.startNumber(gCountLine)
			return nil
		}
		g.state = gInline
		return g.inline(c)
	case gInline:
		return g.inline(c)
	case gCountLine, gBulkLine:
		if c == '\r' {
			return g.endHeader()
		}
		return g.digit(c)
	case gBulkStart:
		if c != '$' {
			return &protocolError{"expected '$', got '" + string(c) + "'"}
		}
		g.startNumber(gBulkLine)
		return nil
	case gLineEnd:
		// redcon accepts only CRLF after a header and reports anything
		// else itself. Either way the header is complete here.
		if g.skip > 0 {
			g.state = gBulkBody
		} else {
			g.state = gBulkStart
		}
		return nil
	}
	return nil
}

func (g *guard) inline(c byte) error {
	if c == '\n' {
		g.endCommand()
		return nil
	}
	g.lineLen++
	if g.lineLen > maxInlineSize {
		return &protocolError{"too big inline request"}
	}
	return nil
}

func (g *guard) startNumber(s guardState) {
	g.state = s
	g.lineLen = 0
	g.num = 0
	g.numOK = true
	g.neg = false
}

func (g *guard) digit(c byte) error {
	g.lineLen++
	if g.lineLen > maxInlineSize {
		if g.state == gCountLine {
			return &protocolError{"too big mbulk count string"}
		}
		return &protocolError{"too big bulk count string"}
	}
	switch {
	case c == '-' && g.lineLen == 1:
		g.neg = true
	case c >= '0' && c <= '9' && g.numOK:
		g.num = g.num*10 + int64(c-'0')
		if g.num > 1<<40 {
			g.numOK = false // far beyond any limit; stop before it overflows
		}
	default:
		g.numOK = false
	}
	return nil
}

// endHeader checks a complete multibulk count or bulk length.
func (g *guard) endHeader() error {
	if g.state == gCountLine {
		if !g.numOK || g.neg || g.num <= 0 || g.num > maxMultibulkCount {
			return &protocolError{"invalid multibulk length"}
		}
		g.bulks = g.num
		g.skip = 0
		g.state = gLineEnd
		return nil
	}
	if !g.numOK || g.neg || g.num > g.maxBulk {
		return &protocolError{"invalid bulk length"}
	}
	g.skip = g.num + 2
	g.state = gLineEnd
	return nil
}

func (g *guard) endCommand() {
	g.state = gStart
	g.cmdBytes = 0
}
