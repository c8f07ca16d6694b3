package wsbridge

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"

	"github.com/herald-broker/herald/broker"
)

// jsonFormat encodes deliveries as the JSON events of Herald's browser
// protocol, one object per event:
//
//	{"type":"message","channel":"room:1","epoch":5,"seq":42,"time":1700000000123,"data":"hello"}
//	{"type":"message","pattern":"room:*","channel":"room:2",...}
//	{"type":"resume","channel":"room:1","recovered":false,"epoch":5,"from":40,"last":45}
//
// A payload that is not valid UTF-8 is sent base64-encoded, with
// "base64":true. WebSocket and long-poll share this format; SSE wraps it.
type jsonFormat struct{}

// AppendMessage implements broker.Format.
func (jsonFormat) AppendMessage(dst []byte, k broker.Kind, name string, m *broker.Message) []byte {
	return appendMessageJSON(dst, k, name, m)
}

// AppendResume implements broker.Format.
func (jsonFormat) AppendResume(dst []byte, channel string, r broker.Resume) []byte {
	return appendResumeJSON(dst, channel, r)
}

func appendMessageJSON(dst []byte, k broker.Kind, name string, m *broker.Message) []byte {
	dst = append(dst, `{"type":"message",`...)
	if k == broker.KindPattern {
		dst = append(dst, `"pattern":`...)
		dst = appendJSONString(dst, name)
		dst = append(dst, ',')
	}
	dst = append(dst, `"channel":`...)
	dst = appendJSONString(dst, m.Channel)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, m.Epoch, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = append(dst, `,"time":`...)
	dst = strconv.AppendInt(dst, m.Time, 10)
	dst = appendData(dst, m.Payload)
	return append(dst, '}')
}

func appendResumeJSON(dst []byte, channel string, r broker.Resume) []byte {
	dst = append(dst, `{"type":"resume","channel":`...)
	dst = appendJSONString(dst, channel)
	dst = append(dst, `,"recovered":`...)
	dst = strconv.AppendBool(dst, r.Recovered)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, r.Epoch, 10)
	dst = append(dst, `,"from":`...)
	dst = strconv.AppendUint(dst, r.From, 10)
	dst = append(dst, `,"last":`...)
	dst = strconv.AppendUint(dst, r.Last, 10)
	return append(dst, '}')
}

// appendData appends `,"data":...` for a payload: a JSON string when the
// payload is UTF-8 text, base64 with "base64":true otherwise.
func appendData(dst, payload []byte) []byte {
	if utf8.Valid(payload) {
		dst = append(dst, `,"data":`...)
		return appendJSONString(dst, string(payload))
	}
	dst = append(dst, `,"base64":true,"data":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, payload)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, as encoding/json would
// (without HTML escaping): invalid UTF-8 becomes U+FFFD, and U+2028 and
// U+2029 are escaped so the result is also valid JavaScript.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// sseFormat encodes deliveries for Server-Sent Events. Each frame starts with
// a line for the connection's writer (never sent): the channel, epoch and
// sequence number, from which the writer builds the event's id: the position
// of every channel of the stream, so the browser's Last-Event-ID resumes
// them all. The rest is the event:
//
//	<channel-escaped> <epoch> <seq>\n
//	event: message\ndata: {json as for WebSocket}\n\n
//
// Resume frames have no position line's seq (0) and are sent as "event:
// resume".
type sseFormat struct{}

// AppendMessage implements broker.Format.
func (sseFormat) AppendMessage(dst []byte, k broker.Kind, name string, m *broker.Message) []byte {
	dst = appendPositionLine(dst, m.Channel, m.Epoch, m.Seq)
	dst = append(dst, "event: message\ndata: "...)
	dst = appendMessageJSON(dst, k, name, m)
	return append(dst, '\n', '\n')
}

// AppendResume implements broker.Format. A resume that continues from a
// position also moves the stream's id to just before it.
func (sseFormat) AppendResume(dst []byte, channel string, r broker.Resume) []byte {
	seq := uint64(0)
	if r.From > 0 {
		seq = r.From - 1
	}
	dst = appendPositionLine(dst, channel, r.Epoch, seq)
	dst = append(dst, "event: resume\ndata: "...)
	dst = appendResumeJSON(dst, channel, r)
	return append(dst, '\n', '\n')
}

func appendPositionLine(dst []byte, channel string, epoch, seq uint64) []byte {
	dst = append(dst, escapeIDPart(channel)...)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, epoch, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, '\n')
}
