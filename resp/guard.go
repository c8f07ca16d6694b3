package resp

import (
	"errors"
	"io"
)

// Redis's fixed protocol limits.
const (
	maxMultibulkCount = 1024 * 1024 // more arguments than this: "invalid multibulk length"
	maxInlineSize     = 64 * 1024   // PROTO_INLINE_MAX_SIZE: longest inline command or header line
	maxUnauthCount    = 10          // arguments of a command before AUTH
	maxUnauthBulk     = 16 * 1024   // bulk length before AUTH
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
//
// Before a client has authenticated, Redis allows at most 10 arguments of at
// most 16 KiB per command. So that AUTH takes effect for the very next
// command, as in Redis, guard passes an unauthenticated client's input on
// one command at a time, holding back the rest until the reader asks again.
type guard struct {
	r           io.Reader
	maxBulk     int64       // largest bulk length (proto-max-bulk-len)
	maxQueryBuf int64       // largest single command, in bytes
	authed      func() bool // whether the client has authenticated
	held        []byte      // input read but not yet passed on
	heldErr     error       // the read error that came with held, returned after it
	ended       bool        // the last byte stepped over ended a command

	state    guardState
	lineLen  int   // bytes of the current header or inline line
	num      int64 // number being parsed from a header line
	numOK    bool  // the header line so far is a valid number, as string2ll reads one
	neg      bool
	digits   int    // digits of the number so far
	bulks    int64  // bulks left in the current multibulk
	skip     int64  // bytes of the current bulk (with its CRLF) left
	cmdBytes int64  // bytes of the current command so far
	ends     uint64 // commands ended in the bytes passed on so far
	err      error  // violation found; returned once the bytes before it are passed on
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

func newGuard(r io.Reader, maxBulk, maxQueryBuf int64, authed func() bool) *guard {
	return &guard{r: r, maxBulk: maxBulk, maxQueryBuf: maxQueryBuf, authed: authed}
}

// Read implements io.Reader.
func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	var n int
	var err error
	if len(g.held) > 0 {
		n = copy(p, g.held)
		g.held = g.held[n:]
		if len(g.held) == 0 {
			err, g.heldErr = g.heldErr, nil
		}
	} else {
		n, err = g.r.Read(p)
	}
	for i := 0; i < n; i++ {
		g.ended = false
		if verr := g.step(p, &i, n); verr != nil {
			g.err = verr
			if i == 0 {
				return 0, verr
			}
			return i, nil
		}
		if g.ended && i+1 < n && !g.authed() {
			// Hold the rest until this command has run: it may be AUTH.
			g.held = append(append([]byte(nil), p[i+1:n]...), g.held...)
			if err != nil {
				g.heldErr = err
			}
			return i + 1, nil
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
		if g.cmdBytes+take > g.maxQueryBuf {
			// The command's last bulk counts too: stop at the first
			// byte over the limit.
			*i += int(g.maxQueryBuf - g.cmdBytes)
			return errQueryBufferLimit
		}
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
			// The byte as it is, as Redis's %c writes it (string(c)
			// would encode it as a rune).
			return &protocolError{"expected '$', got '" + string([]byte{c}) + "'"}
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
	g.digits = 0
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
		if g.digits > 0 && g.num == 0 {
			g.numOK = false // a leading zero: string2ll takes "0" only alone
		}
		g.digits++
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
	if g.digits == 0 || g.lineLen >= 21 || (g.neg && g.num == 0) {
		g.numOK = false // not a number for string2ll: "", "-", "-0", too long
	}
	if g.state == gCountLine {
		if !g.numOK || g.neg || g.num <= 0 || g.num > maxMultibulkCount {
			return &protocolError{"invalid multibulk length"}
		}
		if g.num > maxUnauthCount && !g.authed() {
			return &protocolError{"unauthenticated multibulk length"}
		}
		g.bulks = g.num
		g.skip = 0
		g.state = gLineEnd
		return nil
	}
	if !g.numOK || g.neg || g.num > g.maxBulk {
		return &protocolError{"invalid bulk length"}
	}
	if g.num > maxUnauthBulk && !g.authed() {
		return &protocolError{"unauthenticated bulk length"}
	}
	g.skip = g.num + 2
	g.state = gLineEnd
	return nil
}

func (g *guard) endCommand() {
	g.state = gStart
	g.cmdBytes = 0
	g.ended = true
	g.ends++
}
