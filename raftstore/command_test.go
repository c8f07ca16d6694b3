package raftstore

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
)

func TestCommandRoundTrip(t *testing.T) {
	msgs := []broker.Publish{
		{Namespace: broker.Global, Channel: "room:1", Payload: []byte("hello")},
		{Namespace: broker.Shard, Channel: "", Payload: nil},
		{Namespace: broker.Global, Channel: "bin\x00\xff", Payload: bytes.Repeat([]byte{0, 1, 0xff}, 1000)},
	}
	policy := Policy{
		Rules:   []Rule{{Pattern: "chat:*", MaxCount: 500, MaxAge: 24 * time.Hour}, {Pattern: "*", MaxCount: 0, MaxBytes: 10 << 20}},
		IdleTTL: time.Hour,
	}
	tests := []struct {
		name string
		data []byte
		want command
	}{
		{"publish", encodePublish(msgs), command{typ: cmdPublish, msgs: msgs}},
		{"publish none", encodePublish(nil), command{typ: cmdPublish, msgs: []broker.Publish{}}},
		{"delete", encodeDelete(broker.Shard, "gone"), command{typ: cmdDelete, msgs: []broker.Publish{{Namespace: broker.Shard, Channel: "gone"}}}},
		{"tick", encodeTick(), command{typ: cmdTick}},
		{"policy", encodePolicy(policy), command{typ: cmdPolicy, policy: policy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := stamp(tt.data, 1_700_000_000_123); err != nil {
				t.Fatal(err)
			}
			got, err := decodeCommand(tt.data)
			if err != nil {
				t.Fatal(err)
			}
			tt.want.time = 1_700_000_000_123
			normalise(got)
			normalise(&tt.want)
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("decoded %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

// normalise makes empty payloads comparable: nil and empty are the same
// message.
func normalise(c *command) {
	for i := range c.msgs {
		if len(c.msgs[i].Payload) == 0 {
			c.msgs[i].Payload = nil
		}
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	valid := encodePublish([]broker.Publish{{Channel: "a", Payload: []byte("b")}})
	tests := map[string][]byte{
		"empty":           nil,
		"short header":    valid[:headerLen-1],
		"bad version":     append([]byte{9}, valid[1:]...),
		"unknown type":    append([]byte{commandVersion, 99}, valid[2:]...),
		"truncated":       valid[:len(valid)-1],
		"trailing bytes":  append(append([]byte(nil), valid...), 0),
		"huge count":      append(appendHeader(nil, cmdPublish, 0), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"bad namespace":   append(appendHeader(nil, cmdDelete, 0), 7, 1, 'a'),
		"string too long": append(appendHeader(nil, cmdDelete, 0), 0, 5, 'a'),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeCommand(data); !errors.Is(err, errCorrupt) {
				t.Fatalf("decodeCommand: %v, want errCorrupt", err)
			}
		})
	}
}

// FuzzDecodeCommand: any input decodes or fails with errCorrupt, never
// panics; whatever decodes re-encodes to the same bytes.
func FuzzDecodeCommand(f *testing.F) {
	f.Add(encodePublish([]broker.Publish{{Channel: "a", Payload: []byte("b")}, {Namespace: broker.Shard, Channel: "c"}}))
	f.Add(encodeDelete(broker.Global, "x"))
	f.Add(encodeTick())
	f.Add(encodePolicy(DefaultPolicy()))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCommand(data)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not wrap errCorrupt", err)
			}
			return
		}
		var again []byte
		switch c.typ {
		case cmdPublish:
			again = encodePublish(c.msgs)
		case cmdDelete:
			again = encodeDelete(c.msgs[0].Namespace, c.msgs[0].Channel)
		case cmdTick:
			again = encodeTick()
		case cmdPolicy:
			again = encodePolicy(c.policy)
		}
		if err := stamp(again, c.time); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, data) {
			// Varints have one canonical form when written by
			// binary.AppendUvarint; a non-canonical input may decode.
			// Then decoding the re-encoding must give the same command.
			c2, err := decodeCommand(again)
			if err != nil {
				t.Fatalf("re-encoding does not decode: %v", err)
			}
			normalise(c)
			normalise(c2)
			if !reflect.DeepEqual(c, c2) {
				t.Fatalf("round trip changed the command:\n%+v\n%+v", c, c2)
			}
		}
	})
}

// FuzzApplyResult: the forward reply codec never panics and round-trips.
func FuzzApplyResult(f *testing.F) {
	f.Add(encodeApplyResult(&applyResult{receipts: []broker.Receipt{{Epoch: 5, Seq: 7, Receivers: 2}}}))
	f.Add(encodeApplyResult(&applyResult{existed: true}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeApplyResult(data)
		if err != nil {
			return
		}
		r2, err := decodeApplyResult(encodeApplyResult(r))
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v -> %+v (%v)", r, r2, err)
		}
	})
}

func TestParseRule(t *testing.T) {
	tests := []struct {
		in   string
		want Rule
		err  bool
	}{
		{in: "chat:*=500,24h", want: Rule{Pattern: "chat:*", MaxCount: 500, MaxAge: 24 * time.Hour}},
		{in: "*=100,1h", want: Rule{Pattern: "*", MaxCount: 100, MaxAge: time.Hour}},
		{in: "presence:*=0", want: Rule{Pattern: "presence:*", MaxCount: 0}},
		{in: "big:*=1000,10mb,7d", want: Rule{Pattern: "big:*", MaxCount: 1000, MaxBytes: 10 << 20, MaxAge: 7 * 24 * time.Hour}},
		{in: "x=5,90m", want: Rule{Pattern: "x", MaxCount: 5, MaxAge: 90 * time.Minute}},
		{in: "x=5,512kb", want: Rule{Pattern: "x", MaxCount: 5, MaxBytes: 512 << 10}},
		{in: "a=b*=3", want: Rule{Pattern: "a=b*", MaxCount: 3}},
		{in: "x=1h", err: true},
		{in: "x=5,5", err: true},
		{in: "x=-1", err: true},
		{in: "=5", err: true},
		{in: "x=", err: true},
		{in: "x", err: true},
		{in: "x=5,fast", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRule(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("ParseRule(%q) = %+v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseRule(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			// String gives a rule that parses back the same.
			back, err := ParseRule(got.String())
			if err != nil || back != got {
				t.Fatalf("ParseRule(%q.String() = %q) = %+v, %v", tt.in, got.String(), back, err)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := map[string]int64{"0": 0, "100": 100, "100b": 100, "1k": 1000, "1kb": 1024, "1KiB": 1024,
		"2m": 2_000_000, "2mb": 2 << 20, "1g": 1_000_000_000, "1GB": 1 << 30, "3MiB": 3 << 20}
	for in, want := range tests {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1tb", "1.5mb"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
}
