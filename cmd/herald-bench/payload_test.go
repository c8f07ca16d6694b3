package main

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"unicode/utf8"
)

func TestPayloadRoundTrip(t *testing.T) {
	cases := []struct {
		size    int
		pub     uint32
		counter uint64
		sent    int64
	}{
		{MinPayloadSize, 0, 0, 0},
		{64, 7, 12345, 1_700_000_000_123_456_789},
		{1024, math.MaxUint32, math.MaxUint64, math.MaxInt64},
	}
	for _, c := range cases {
		p, err := newPayload(c.size)
		if err != nil {
			t.Fatal(err)
		}
		encodePayload(p, c.pub, c.counter, c.sent)
		if len(p) != c.size {
			t.Fatalf("size %d, want %d", len(p), c.size)
		}
		// Printable ASCII: it crosses Herald's JSON events as a plain string.
		if !utf8.Valid(p) || bytes.ContainsAny(p, "\"\\\n\r") {
			t.Fatalf("payload %q is not plain text", p)
		}
		pub, counter, sent, err := decodePayload(p)
		if err != nil || pub != c.pub || counter != c.counter || sent != c.sent {
			t.Fatalf("decode(%q) = %d %d %d %v, want %d %d %d", p, pub, counter, sent, err, c.pub, c.counter, c.sent)
		}
	}
}

func TestPayloadErrors(t *testing.T) {
	if _, err := newPayload(MinPayloadSize - 1); err == nil {
		t.Fatal("a payload too small for its header was accepted")
	}
	p, _ := newPayload(64)
	encodePayload(p, 1, 2, 3)
	for name, bad := range map[string][]byte{
		"empty":       nil,
		"short":       p[:MinPayloadSize-1],
		"wrong magic": append([]byte("xx"), p[2:]...),
		"not hex":     append(append(append([]byte{}, p[:5]...), 'z'), p[6:]...),
	} {
		if _, _, _, err := decodePayload(bad); !errors.Is(err, errNotBenchPayload) {
			t.Errorf("%s: err %v, want errNotBenchPayload", name, err)
		}
	}
}

func FuzzDecodePayload(f *testing.F) {
	p, _ := newPayload(64)
	encodePayload(p, 3, 99, 123456)
	f.Add(p)
	f.Add([]byte("hb"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, counter, sent, err := decodePayload(b)
		if err != nil {
			return
		}
		q := make([]byte, payloadHeader)
		encodePayload(q, pub, counter, sent)
		if !bytes.EqualFold(q, b[:payloadHeader]) {
			t.Fatalf("decode(%q) does not encode back: %q", b, q)
		}
	})
}
