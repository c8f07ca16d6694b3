package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/herald-broker/herald/broker"
)

// A command is the Data of one Raft log entry. Its layout is
//
//	version  1 byte (commandVersion)
//	type     1 byte
//	time     8 bytes, big endian: Unix milliseconds, stamped by the leader
//	body     depends on type
//
// The time sits at a fixed offset so that a leader can stamp an entry a
// follower forwarded without decoding it.
const (
	commandVersion byte = 1
	headerLen           = 10
)

type commandType byte

const (
	// cmdPublish appends messages to channels.
	//	count uvarint, count × (namespace byte, channel string, payload string)
	cmdPublish commandType = 1
	// cmdDelete drops a channel's history and sequence.
	//	namespace byte, channel string
	cmdDelete commandType = 2
	// cmdTick carries only the time: it lets the FSM expire retained
	// messages and forget idle channels when nothing is published.
	cmdTick commandType = 3
	// cmdPolicy replaces the retention policy.
	//	idle-ttl uvarint (ms), rules uvarint,
	//	rules × (pattern string, count uvarint, bytes uvarint, age uvarint ms)
	cmdPolicy commandType = 4
)

// A string in a command is a uvarint length and the bytes.

// maxDecodeLen bounds any length read from a command, so that a corrupt entry
// fails to decode instead of asking for a huge allocation.
const maxDecodeLen = 1 << 30

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("corrupt command")

// command is a decoded log entry.
type command struct {
	typ    commandType
	time   int64            // Unix milliseconds
	msgs   []broker.Publish // cmdPublish; cmdDelete uses msgs[0] without payload
	policy Policy           // cmdPolicy
}

func appendHeader(dst []byte, t commandType, ms int64) []byte {
	dst = append(dst, commandVersion, byte(t))
	return binary.BigEndian.AppendUint64(dst, uint64(ms))
}

func appendString(dst []byte, s []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// encodePublish encodes a cmdPublish entry. Its time is left zero for the
// leader to stamp.
func encodePublish(msgs []broker.Publish) []byte {
	n := headerLen + 10
	for i := range msgs {
		n += 1 + len(msgs[i].Channel) + len(msgs[i].Payload) + 10
	}
	b := make([]byte, 0, n)
	b = appendHeader(b, cmdPublish, 0)
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for i := range msgs {
		b = append(b, byte(msgs[i].Namespace))
		b = appendString(b, []byte(msgs[i].Channel))
		b = appendString(b, msgs[i].Payload)
	}
	return b
}

// encodeDelete encodes a cmdDelete entry.
func encodeDelete(ns broker.Namespace, channel string) []byte {
	b := appendHeader(nil, cmdDelete, 0)
	b = append(b, byte(ns))
	return appendString(b, []byte(channel))
}

// encodeTick encodes a cmdTick entry.
func encodeTick() []byte { return appendHeader(nil, cmdTick, 0) }

// encodePolicy encodes a cmdPolicy entry.
func encodePolicy(p Policy) []byte {
	b := appendHeader(nil, cmdPolicy, 0)
	b = binary.AppendUvarint(b, uint64(p.IdleTTL.Milliseconds()))
	b = binary.AppendUvarint(b, uint64(len(p.Rules)))
	for _, r := range p.Rules {
		b = appendString(b, []byte(r.Pattern))
		b = binary.AppendUvarint(b, uint64(r.MaxCount))
		b = binary.AppendUvarint(b, uint64(r.MaxBytes))
		b = binary.AppendUvarint(b, uint64(r.MaxAge.Milliseconds()))
	}
	return b
}

// stamp sets the leader time of an encoded command.
func stamp(data []byte, ms int64) error {
	if len(data) < headerLen || data[0] != commandVersion {
		return fmt.Errorf("stamp: %w: bad header", errCorrupt)
	}
	binary.BigEndian.PutUint64(data[2:headerLen], uint64(ms))
	return nil
}

// decodeCommand decodes an entry. Payloads alias data, which the caller must
// not reuse while the command is in use.
func decodeCommand(data []byte) (*command, error) {
	d := decoder{b: data}
	if len(data) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes", errCorrupt, len(data))
	}
	if data[0] != commandVersion {
		return nil, fmt.Errorf("%w: version %d", errCorrupt, data[0])
	}
	c := &command{typ: commandType(data[1]), time: int64(binary.BigEndian.Uint64(data[2:headerLen]))}
	d.b = data[headerLen:]
	switch c.typ {
	case cmdPublish:
		n := d.uvarint()
		if n > uint64(len(d.b)) { // each message takes at least one byte
			return nil, fmt.Errorf("%w: %d messages in %d bytes", errCorrupt, n, len(d.b))
		}
		c.msgs = make([]broker.Publish, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			ns := d.namespace()
			ch := string(d.bytes())
			c.msgs = append(c.msgs, broker.Publish{Namespace: ns, Channel: ch, Payload: d.bytes()})
		}
	case cmdDelete:
		ns := d.namespace()
		c.msgs = []broker.Publish{{Namespace: ns, Channel: string(d.bytes())}}
	case cmdTick:
	case cmdPolicy:
		c.policy.IdleTTL = d.millis()
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			return nil, fmt.Errorf("%w: %d rules in %d bytes", errCorrupt, n, len(d.b))
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			r := Rule{Pattern: string(d.bytes())}
			r.MaxCount = d.int()
			r.MaxBytes = int64(d.int())
			r.MaxAge = d.millis()
			c.policy.Rules = append(c.policy.Rules, r)
		}
	default:
		return nil, fmt.Errorf("%w: type %d", errCorrupt, c.typ)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	return c, nil
}

// decoder reads a command body; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v := d.uvarint()
	if v > math.MaxInt32 {
		d.fail("integer (out of range)")
		return 0
	}
	return int(v)
}

func (d *decoder) millis() time.Duration {
	v := d.uvarint()
	if v > uint64(math.MaxInt64/int64(time.Millisecond)) {
		d.fail("duration (out of range)")
		return 0
	}
	return time.Duration(v) * time.Millisecond
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > maxDecodeLen || n > uint64(len(d.b)) {
		d.fail("string")
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) namespace() broker.Namespace {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("namespace")
		return 0
	}
	ns := broker.Namespace(d.b[0])
	d.b = d.b[1:]
	if ns != broker.Global && ns != broker.Shard {
		d.err = fmt.Errorf("%w: namespace %d", errCorrupt, ns)
	}
	return ns
}
