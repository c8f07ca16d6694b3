package raftstore

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// FuzzDecodeLog feeds decodeLog arbitrary bytes. It must never panic, and
// whatever it accepts must re-encode to a value that decodes to the same
// entry, in copies that share no memory with the input.
func FuzzDecodeLog(f *testing.F) {
	for _, l := range []*raft.Log{
		{},
		testEntry(1),
		testEntry(2),
		{Term: math.MaxUint64, Type: 255, Data: []byte{0}, AppendedAt: time.Unix(-1, 999999999)},
	} {
		enc := encodeLog(nil, l)
		f.Add(enc)
		f.Add(enc[:len(enc)/2])
		f.Add(append(enc, 0))
	}
	f.Add([]byte{})
	f.Add([]byte{logFormatV1})
	f.Add([]byte{2, 0, 0, 0, 0})
	f.Add([]byte{logFormatV1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{logFormatV1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})

	f.Fuzz(func(t *testing.T, b []byte) {
		const index = 42
		orig := bytes.Clone(b)
		var l raft.Log
		if err := decodeLog(index, b, &l); err != nil {
			return
		}
		if l.Index != index {
			t.Fatalf("Index = %d; want %d from the key", l.Index, index)
		}

		// Scribbling over the input, or appending to Data, must not reach
		// the decoded entry.
		for i := range b {
			b[i] ^= 0xff
		}
		_ = append(l.Data, 0xaa)
		var fresh raft.Log
		if err := decodeLog(index, orig, &fresh); err != nil {
			t.Fatalf("second decode of the same input: %v", err)
		}
		if !logsEqual(&l, &fresh) {
			t.Fatalf("decoded entry changed with its input: %+v, then %+v", fresh, l)
		}

		enc := encodeLog(nil, &l)
		var again raft.Log
		if err := decodeLog(index, enc, &again); err != nil {
			t.Fatalf("decode of re-encoded %+v: %v", l, err)
		}
		if !logsEqual(&l, &again) {
			t.Fatalf("re-encoding changed the entry: %+v, then %+v", l, again)
		}
		if enc2 := encodeLog(nil, &again); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %x, then %x", enc, enc2)
		}
	})
}

// FuzzLogRoundTrip encodes entries with fuzzed fields and checks that they
// decode to the same entry.
func FuzzLogRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(1), uint8(raft.LogCommand), []byte("publish"), []byte(nil), false, int64(1_700_000_000), uint32(123456789))
	f.Add(uint64(math.MaxUint64), uint64(math.MaxUint64), uint8(255), []byte{}, []byte{0}, true, int64(0), uint32(0))
	f.Add(uint64(7), uint64(0), uint8(0), []byte(nil), []byte("ext"), false, int64(math.MinInt64), uint32(math.MaxUint32))
	f.Add(uint64(7), uint64(0), uint8(0), []byte(nil), []byte(nil), false, int64(math.MaxInt64), uint32(999999999))
	f.Add(uint64(7), uint64(0), uint8(0), []byte(nil), []byte(nil), false, int64(-62135596800), uint32(0))

	f.Fuzz(func(t *testing.T, index, term uint64, typ uint8, data, ext []byte, zeroTime bool, sec int64, nsec uint32) {
		want := raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
		if !zeroTime {
			want.AppendedAt = time.Unix(sec, int64(nsec%1e9))
		}
		prefix := []byte("prefix")
		enc := encodeLog(bytes.Clone(prefix), &want)
		if !bytes.HasPrefix(enc, prefix) {
			t.Fatalf("encodeLog overwrote dst: %x", enc)
		}
		var got raft.Log
		if err := decodeLog(index, enc[len(prefix):], &got); err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		if !logsEqual(&got, &want) || got.AppendedAt.IsZero() != want.AppendedAt.IsZero() {
			t.Fatalf("round trip: got %+v; want %+v", got, want)
		}
		// Every strict prefix of an encoding without AppendedAt is
		// truncated, and must be rejected rather than misread.
		if want.AppendedAt.IsZero() {
			body := enc[len(prefix):]
			for n := range len(body) {
				var l raft.Log
				if err := decodeLog(index, body[:n], &l); err == nil {
					t.Fatalf("decoded a %d-byte prefix of a %d-byte encoding", n, len(body))
				}
			}
		}
	})
}
