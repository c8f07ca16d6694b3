package resp

import (
	"strconv"

	"github.com/tidwall/redcon"
)

// reply builds RESP replies for one protocol version. redcon's Append
// functions write RESP2; the RESP3 types it lacks (map, push, null, set,
// verbatim string) are written here.
type reply struct {
	b     []byte
	proto int // 2 or 3
}

func (r *reply) ok()                 { r.b = redcon.AppendOK(r.b) }
func (r *reply) status(s string)     { r.b = redcon.AppendString(r.b, s) }
func (r *reply) int(n int64)         { r.b = redcon.AppendInt(r.b, n) }
func (r *reply) bulk(p []byte)       { r.b = redcon.AppendBulk(r.b, p) }
func (r *reply) bulkString(s string) { r.b = redcon.AppendBulkString(r.b, s) }
func (r *reply) array(n int)         { r.b = redcon.AppendArray(r.b, n) }

// err writes an error reply; msg starts with its code ("ERR ...",
// "WRONGPASS ...").
func (r *reply) err(msg string) { r.b = appendError(r.b, msg) }

// null writes a null bulk string (RESP2 $-1, RESP3 _).
func (r *reply) null() {
	if r.proto == 3 {
		r.b = append(r.b, "_\r\n"...)
		return
	}
	r.b = append(r.b, "$-1\r\n"...)
}

// nullArray writes a null array (RESP2 *-1, RESP3 _).
func (r *reply) nullArray() {
	if r.proto == 3 {
		r.b = append(r.b, "_\r\n"...)
		return
	}
	r.b = append(r.b, "*-1\r\n"...)
}

// mapHeader starts a map of n pairs: a RESP3 map, or a flat array of 2n
// elements in RESP2, as Redis does.
func (r *reply) mapHeader(n int) {
	if r.proto == 3 {
		r.b = appendHeader(r.b, '%', n)
		return
	}
	r.array(2 * n)
}

// setHeader starts a set of n elements (an array in RESP2).
func (r *reply) setHeader(n int) {
	if r.proto == 3 {
		r.b = appendHeader(r.b, '~', n)
		return
	}
	r.array(n)
}

// pushHeader starts an out-of-band push of n elements (an array in RESP2).
func (r *reply) pushHeader(n int) { r.b = appendPushHeader(r.b, r.proto, n) }

// verbatim writes a verbatim text string (RESP3) or a bulk string (RESP2).
func (r *reply) verbatim(s string) {
	if r.proto == 3 {
		r.b = appendHeader(r.b, '=', len(s)+4)
		r.b = append(r.b, "txt:"...)
		r.b = append(r.b, s...)
		r.b = append(r.b, "\r\n"...)
		return
	}
	r.bulkString(s)
}

// nullableBulk writes s, or null when s is empty.
func (r *reply) nullableBulk(s string) {
	if s == "" {
		r.null()
		return
	}
	r.bulkString(s)
}

func appendHeader(b []byte, kind byte, n int) []byte {
	b = append(b, kind)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

func appendPushHeader(b []byte, proto, n int) []byte {
	if proto == 3 {
		return appendHeader(b, '>', n)
	}
	return appendHeader(b, '*', n)
}

// appendError writes an error reply, replacing line breaks so a message can
// never break the framing.
func appendError(b []byte, msg string) []byte {
	b = append(b, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, '\r', '\n')
}
