package resp

import (
	"github.com/herald-broker/herald/broker"
	"github.com/tidwall/redcon"
)

// format encodes deliveries as RESP2 arrays or RESP3 pushes. There are two
// values, one per protocol version, so the broker's per-format frame cache
// encodes a message at most twice however many clients receive it.
type format struct{ proto int }

var (
	formatRESP2 = &format{proto: 2}
	formatRESP3 = &format{proto: 3}
)

func formatFor(proto int) *format {
	if proto == 3 {
		return formatRESP3
	}
	return formatRESP2
}

// AppendMessage implements broker.Format:
//
//	message  <channel> <payload>                          (SUBSCRIBE)
//	pmessage <pattern> <channel> <payload>                (PSUBSCRIBE)
//	smessage <channel> <payload>                          (SSUBSCRIBE)
//	hmessage <channel> <epoch> <seq> <time> <payload>     (HERALD.SUBSCRIBE)
func (f *format) AppendMessage(dst []byte, k broker.Kind, name string, m *broker.Message) []byte {
	switch k {
	case broker.KindPattern:
		dst = appendPushHeader(dst, f.proto, 4)
		dst = redcon.AppendBulkString(dst, "pmessage")
		dst = redcon.AppendBulkString(dst, name)
	case broker.KindShard:
		dst = appendPushHeader(dst, f.proto, 3)
		dst = redcon.AppendBulkString(dst, "smessage")
	case broker.KindSequenced:
		dst = appendPushHeader(dst, f.proto, 6)
		dst = redcon.AppendBulkString(dst, "hmessage")
		dst = redcon.AppendBulkString(dst, m.Channel)
		dst = redcon.AppendInt(dst, int64(m.Epoch))
		dst = redcon.AppendInt(dst, int64(m.Seq))
		dst = redcon.AppendInt(dst, m.Time)
		return redcon.AppendBulk(dst, m.Payload)
	default:
		dst = appendPushHeader(dst, f.proto, 3)
		dst = redcon.AppendBulkString(dst, "message")
	}
	dst = redcon.AppendBulkString(dst, m.Channel)
	return redcon.AppendBulk(dst, m.Payload)
}

// AppendResume implements broker.Format:
//
//	hresume <channel> <recovered 0|1> <epoch> <from> <last>
func (f *format) AppendResume(dst []byte, channel string, r broker.Resume) []byte {
	dst = appendPushHeader(dst, f.proto, 6)
	dst = redcon.AppendBulkString(dst, "hresume")
	dst = redcon.AppendBulkString(dst, channel)
	recovered := int64(0)
	if r.Recovered {
		recovered = 1
	}
	dst = redcon.AppendInt(dst, recovered)
	dst = redcon.AppendInt(dst, int64(r.Epoch))
	dst = redcon.AppendInt(dst, int64(r.From))
	return redcon.AppendInt(dst, int64(r.Last))
}
