package resp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/herald-broker/herald/broker"
	"github.com/tidwall/redcon"
)

// BenchmarkEncodeMessage measures encoding one delivery (a 64-byte payload)
// for a subscriber, per kind of subscription and protocol version. The
// broker encodes a message once per format and subscription name, whatever
// the number of subscribers.
func BenchmarkEncodeMessage(b *testing.B) {
	m := &broker.Message{Channel: "room:42", Payload: bytes.Repeat([]byte{'x'}, 64), Epoch: 7, Seq: 123456, Time: 1795320000000}
	for _, c := range []struct {
		name string
		f    *format
		kind broker.Kind
	}{
		{"message/resp2", formatRESP2, broker.KindChannel},
		{"pmessage/resp2", formatRESP2, broker.KindPattern},
		{"hmessage/resp2", formatRESP2, broker.KindSequenced},
		{"message/resp3", formatRESP3, broker.KindChannel},
	} {
		b.Run(c.name, func(b *testing.B) {
			dst := c.f.AppendMessage(nil, c.kind, "room:*", m)
			b.SetBytes(int64(len(dst)))
			b.ReportAllocs()
			for b.Loop() {
				dst = c.f.AppendMessage(dst[:0], c.kind, "room:*", m)
			}
		})
	}
}

// BenchmarkReadPublishes measures reading pipelined PUBLISH commands (64-byte
// payloads, 16 a read) through the framing guard and the command reader, as
// a connection's reader does.
func BenchmarkReadPublishes(b *testing.B) {
	var pipeline []byte
	for range 16 {
		pipeline = redcon.AppendArray(pipeline, 3)
		pipeline = redcon.AppendBulkString(pipeline, "PUBLISH")
		pipeline = redcon.AppendBulkString(pipeline, "room:42")
		pipeline = redcon.AppendBulkString(pipeline, strings.Repeat("x", 64))
	}
	src := &repeatReader{data: pipeline}
	rd := newCmdReader(newGuard(src, 512<<20, 1<<30, func() bool { return true }))
	b.SetBytes(int64(len(pipeline)) / 16)
	b.ReportAllocs()
	for b.Loop() {
		args, err := rd.next()
		for args == nil && err == nil {
			if err = rd.fill(); err == nil {
				args, err = rd.next()
			}
		}
		if err != nil || len(args) != 3 {
			b.Fatal(len(args), err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// repeatReader reads data over and over, as much as each read has room
// for.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}
