package main

import (
	"errors"
	"fmt"
)

// A payload carries what a receiver needs to check a message and time it,
// as printable ASCII so that it crosses every wire format unchanged (Herald's
// JSON events send any non-UTF-8 payload as base64):
//
//	"hb" publisher(8 hex) counter(16 hex) sent-unix-nanos(16 hex) padding 'x'...
//
// The publisher id and counter identify the message: a publisher numbers the
// messages it sends to each channel 0, 1, 2, ... The send time is
// time.Now().UnixNano() of the sending process (or, at a fixed rate, the time
// the message was scheduled for, so a publisher that falls behind is not
// hidden: coordinated omission); every process of a run is on one machine,
// so the clocks agree.
const (
	payloadMagic  = "hb"
	payloadHeader = len(payloadMagic) + 8 + 16 + 16
	// MinPayloadSize is the smallest --size: the header with no padding.
	MinPayloadSize = payloadHeader
)

// errNotBenchPayload is returned for a payload this tool did not send.
var errNotBenchPayload = errors.New("not a herald-bench payload")

const hexdigits = "0123456789abcdef"

// encodePayload writes a payload of len(dst) bytes into dst, which must be
// at least MinPayloadSize long. The padding is left as it is, so a caller
// can fill a buffer once and re-encode only the header.
func encodePayload(dst []byte, publisher uint32, counter uint64, sentNanos int64) {
	_ = dst[payloadHeader-1]
	dst[0], dst[1] = payloadMagic[0], payloadMagic[1]
	putHex(dst[2:10], uint64(publisher))
	putHex(dst[10:26], counter)
	putHex(dst[26:42], uint64(sentNanos))
}

// newPayload returns a payload buffer of size bytes with its padding filled.
func newPayload(size int) ([]byte, error) {
	if size < MinPayloadSize {
		return nil, fmt.Errorf("payload size %d: at least %d bytes are needed for the publisher, counter and send time", size, MinPayloadSize)
	}
	b := make([]byte, size)
	for i := payloadHeader; i < size; i++ {
		b[i] = 'x'
	}
	return b, nil
}

// decodePayload reads the header of a payload.
func decodePayload(p []byte) (publisher uint32, counter uint64, sentNanos int64, err error) {
	if len(p) < payloadHeader || p[0] != payloadMagic[0] || p[1] != payloadMagic[1] {
		return 0, 0, 0, errNotBenchPayload
	}
	pub, ok1 := getHex(p[2:10])
	cnt, ok2 := getHex(p[10:26])
	ts, ok3 := getHex(p[26:42])
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, errNotBenchPayload
	}
	return uint32(pub), cnt, int64(ts), nil
}

func putHex(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = hexdigits[v&0xf]
		v >>= 4
	}
}

// unhex maps an ASCII byte to its hex value, or 0xff.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := byte(0); i < 10; i++ {
		t['0'+i] = i
	}
	for i := byte(0); i < 6; i++ {
		t['a'+i] = 10 + i
		t['A'+i] = 10 + i
	}
	return t
}()

func getHex(src []byte) (uint64, bool) {
	var v uint64
	for _, c := range src {
		d := unhex[c]
		if d == 0xff {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}
