package main

import (
	"bytes"
	"io"
	"slices"
	"testing"
	"testing/iotest"
)

func TestRESPReader(t *testing.T) {
	stream := "+OK\r\n-ERR boom\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n" +
		">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$1\r\nx\r\n*3\r\n:1\r\n:2\r\n*1\r\n:3\r\n%1\r\n+k\r\n:9\r\n"
	want := []string{`"OK"`, `-ERR boom`, `42`, `"hello"`, `(nil)`, `["message" "ch" "abc"]`,
		`["pmessage" "*" "ch" "x"]`, `[1 2 [3]]`, `["k" 9]`}
	// One byte per read: every value is completed across reads.
	for name, rd := range map[string]io.Reader{
		"whole":       bytes.NewReader([]byte(stream)),
		"byte a read": iotest.OneByteReader(bytes.NewReader([]byte(stream))),
	} {
		t.Run(name, func(t *testing.T) {
			r := newRESPReader(rd, 8) // smaller than a value: the buffer grows
			for i, w := range want {
				v, err := r.next()
				if err != nil {
					t.Fatalf("value %d: %v", i, err)
				}
				if got := v.String(); got != w {
					t.Fatalf("value %d = %s, want %s", i, got, w)
				}
			}
			if _, err := r.next(); err != io.EOF {
				t.Fatalf("after the last value: %v, want EOF", err)
			}
		})
	}
}

func TestRESPReaderErrors(t *testing.T) {
	for _, in := range []string{"?x\r\n", ":12a\r\n", "$x\r\n", "*-x\r\n", "+no cr\n"} {
		r := newRESPReader(bytes.NewReader([]byte(in)), 64)
		if _, err := r.next(); err == nil || err == io.EOF {
			t.Errorf("%q: err %v, want a protocol error", in, err)
		}
	}
}

// FuzzParseRESP feeds a value split in two, as reads split it.
func FuzzParseRESP(f *testing.F) {
	f.Add([]byte("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n"), 5)
	f.Add([]byte(":1\r\n"), 1)
	f.Add([]byte("*2\r\n*1\r\n:1\r\n$-1\r\n"), 7)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		var whole respValue
		n, err := parseRESP(b, &whole, false)
		if err != nil || n == 0 {
			return
		}
		want := whole.String()
		if split < 0 {
			split = -split
		}
		split %= n + 1
		r := newRESPReader(io.MultiReader(bytes.NewReader(b[:split]), bytes.NewReader(b[split:n])), 4)
		v, err := r.next()
		if err != nil {
			t.Fatalf("split at %d: %v", split, err)
		}
		if got := v.String(); got != want {
			t.Fatalf("split at %d: %s, whole: %s", split, got, want)
		}
	})
}

func TestParseEvent(t *testing.T) {
	cases := []struct {
		in   string
		want wsEvent
	}{
		{`{"type":"message","channel":"room:1","epoch":5,"seq":42,"time":1700000000123,"data":"hello"}`,
			wsEvent{typ: []byte("message"), channel: []byte("room:1"), data: []byte("hello"), epoch: 5, seq: 42}},
		{`{"type":"resume","channel":"c","recovered":true,"epoch":5,"from":42,"last":45}`,
			wsEvent{typ: []byte("resume"), channel: []byte("c"), epoch: 5, from: 42}},
		{`{"type":"message","pattern":"r*","channel":"r1","epoch":1,"seq":1,"time":2,"base64":true,"data":"aGk="}`,
			wsEvent{typ: []byte("message"), channel: []byte("r1"), data: []byte("aGk="), epoch: 1, seq: 1, base64: true}},
		{` { "type" : "subscribed" , "id" : {"a":[1,"}"]}, "channel" : "a\"b\u00e9" } `,
			wsEvent{typ: []byte("subscribed"), channel: []byte("a\"bé")}},
		{`{"type":"error","id":null,"code":"bad_request","message":"unknown op"}`,
			wsEvent{typ: []byte("error"), message: []byte("unknown op")}},
		{`{}`, wsEvent{}},
	}
	for _, c := range cases {
		var ev wsEvent
		if err := parseEvent([]byte(c.in), &ev); err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if !bytes.Equal(ev.typ, c.want.typ) || !bytes.Equal(ev.channel, c.want.channel) || !bytes.Equal(ev.data, c.want.data) ||
			!bytes.Equal(ev.message, c.want.message) || ev.epoch != c.want.epoch || ev.seq != c.want.seq || ev.from != c.want.from || ev.base64 != c.want.base64 {
			t.Errorf("%s:\n got %+v\nwant %+v", c.in, ev, c.want)
		}
	}
	for _, bad := range []string{``, `[]`, `{"type"}`, `{"type":"x"`, `{"a":tru}`, `{"a":"x}`, `{"a":1 "b":2}`} {
		var ev wsEvent
		if err := parseEvent([]byte(bad), &ev); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte(`{"type":"message","channel":"c","epoch":5,"seq":42,"data":"x"}`))
	f.Add([]byte(`{"a":{"b":["}",1]},"type":"resume"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev wsEvent
		parseEvent(b, &ev) // must not panic or loop
	})
}

func TestChannelsOf(t *testing.T) {
	for _, c := range []struct {
		i, n, channels int
		want           []int
	}{
		{0, 4, 2, []int{0}},
		{3, 4, 2, []int{1}},
		{1, 3, 3, []int{1}},
		{0, 2, 5, []int{0, 2, 4}},
		{1, 2, 5, []int{1, 3}},
	} {
		if got := channelsOf(c.i, c.n, c.channels); !slices.Equal(got, c.want) {
			t.Errorf("channelsOf(%d, %d, %d) = %v, want %v", c.i, c.n, c.channels, got, c.want)
		}
	}
}
