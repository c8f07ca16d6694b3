package resp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tidwall/redcon"
)

// chunkReader returns its data a few bytes per Read, the sizes taken in turn
// from sizes (each at least 1), as a TCP connection may.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n = max(1, r.sizes[r.i%len(r.sizes)])
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// guardRun passes in through a guard reading from src and returns the bytes
// it lets through and the error that ends the stream (io.EOF if none). The
// reader's buffer sizes cycle through bufSizes.
func guardRun(src io.Reader, maxBulk, maxQuery int64, bufSizes []int) ([]byte, error) {
	g := newGuard(src, maxBulk, maxQuery, func() bool { return true })
	var out []byte
	for i := 0; ; i++ {
		size := 4096
		if len(bufSizes) > 0 {
			size = max(1, bufSizes[i%len(bufSizes)])
		}
		buf := make([]byte, size)
		n, err := g.Read(buf)
		if n < 0 || n > size {
			panic("guard: bad count")
		}
		out = append(out, buf[:n]...)
		if err != nil {
			// The error is sticky: a second Read returns it again.
			if n2, err2 := g.Read(buf); n2 != 0 || err2 != err {
				return out, errors.New("error not sticky")
			}
			return out, err
		}
		if n == 0 && i > 1<<22 {
			return out, errors.New("no progress")
		}
	}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestGuard(t *testing.T) {
	const (
		mbulk  = "Protocol error: invalid multibulk length"
		bulk   = "Protocol error: invalid bulk length"
		eof    = "EOF"
		qbuf   = "query buffer limit exceeded"
		big    = 1 << 30
		inline = 64 * 1024
	)
	tests := []struct {
		name     string
		in       string
		maxBulk  int64
		maxQuery int64
		passed   int // bytes let through; -1: all
		err      string
	}{
		{name: "complete multibulk", in: "*1\r\n$4\r\nPING\r\n", passed: -1, err: eof},
		{name: "pipelined", in: "*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", passed: -1, err: eof},
		{name: "inline", in: "PING\r\nECHO \"a b\"\n", passed: -1, err: eof},
		{name: "partial command", in: "*2\r\n$4\r\nECHO\r\n$10\r\nabc", passed: -1, err: eof},
		{name: "bulk body is not parsed", in: "*2\r\n$4\r\nECHO\r\n$9\r\n*\r\n$\r\n*-1\r\n", passed: -1, err: eof},
		{name: "count not a number", in: "PING\r\n*abc\r\nPING\r\n", passed: len("PING\r\n*abc"), err: mbulk},
		{name: "count over int max", in: "*2147483648\r\n", passed: len("*2147483648"), err: mbulk},
		{name: "count with many digits", in: "*" + strings.Repeat("9", 30) + "\r\n", passed: 31, err: mbulk},
		{name: "count empty", in: "*\r\n", passed: 1, err: mbulk},
		{name: "bulk length negative", in: "*1\r\n$-5\r\n", passed: len("*1\r\n$-5"), err: bulk},
		{name: "bulk length over max", in: "*1\r\n$11\r\n", maxBulk: 10, passed: len("*1\r\n$11"), err: bulk},
		{name: "bulk length at max", in: "*1\r\n$10\r\n0123456789\r\n", maxBulk: 10, passed: -1, err: eof},
		{name: "bulk length not a number", in: "*1\r\n$1x\r\n", passed: len("*1\r\n$1x"), err: bulk},
		// Redis's string2ll rejects an empty number; redcon reads it as 0
		// and would wait for the bulk's CRLF forever.
		{name: "bulk length empty", in: "*1\r\n$\r\n", passed: len("*1\r\n$"), err: bulk},
		{name: "missing dollar", in: "*1\r\nX\r\n", passed: len("*1\r\n"), err: "Protocol error: expected '$', got 'X'"},
		// Redis writes the offending byte as it is (%c).
		{name: "missing dollar binary", in: "*1\r\n\xff\r\n", passed: len("*1\r\n"), err: "Protocol error: expected '$', got '\xff'"},
		{name: "count line too long", in: "*" + strings.Repeat("1", inline+10), passed: 1 + inline, err: "Protocol error: too big mbulk count string"},
		{name: "bulk line too long", in: "*1\r\n$" + strings.Repeat("1", inline+10), passed: 5 + inline, err: "Protocol error: too big bulk count string"},
		{name: "inline at limit", in: strings.Repeat("a", inline) + "\n", passed: -1, err: eof},
		{name: "inline too long", in: strings.Repeat("a", inline+10), passed: inline, err: "Protocol error: too big inline request"},
		{name: "query limit inline", in: "PING\r\n" + strings.Repeat("a", 40) + "\n", maxQuery: 32, passed: 6 + 32, err: qbuf},
		{name: "query limit headers", in: "*5\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n", maxQuery: 40, passed: 40, err: qbuf},
		{name: "query limit resets per command", in: strings.Repeat("*1\r\n$10\r\n0123456789\r\n", 10), maxQuery: 30, passed: -1, err: eof},
		// A command's last bulk counts towards the limit too.
		{name: "query limit last bulk", in: "*1\r\n$40\r\n" + strings.Repeat("x", 40) + "\r\n", maxQuery: 32, passed: 32, err: qbuf},
	}
	chunkings := []struct {
		name       string
		src, bufsz []int
	}{
		{"one read", nil, nil},
		{"bytes", []int{1}, nil},
		{"small buffers", nil, []int{1, 2, 3}},
		{"odd chunks", []int{3, 7, 1, 13}, []int{5, 64, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			maxBulk, maxQuery := tc.maxBulk, tc.maxQuery
			if maxBulk == 0 {
				maxBulk = big
			}
			if maxQuery == 0 {
				maxQuery = big
			}
			want := tc.in
			if tc.passed >= 0 {
				want = tc.in[:tc.passed]
			}
			for _, ch := range chunkings {
				got, err := guardRun(&chunkReader{data: []byte(tc.in), sizes: ch.src}, maxBulk, maxQuery, ch.bufsz)
				if string(got) != want || errText(err) != tc.err {
					t.Errorf("%s: passed %d bytes (%.40q...), err %q; want %d bytes, err %q",
						ch.name, len(got), got, errText(err), len(want), tc.err)
				}
			}
		})
	}
}

// TestGuardPassesUnderlyingError: an error from the connection (not EOF)
// reaches the reader after the bytes before it.
func TestGuardPassesUnderlyingError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("PING\r\n"), errReader{boom})
	got, err := guardRun(r, 1<<20, 1<<20, nil)
	if string(got) != "PING\r\n" || err != boom {
		t.Fatalf("got %q, %v", got, err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// FuzzGuard: how the input is cut into reads, and the reader's buffer
// sizes, change nothing: the guard lets the same bytes through and stops
// with the same error as when the input arrives in one read.
func FuzzGuard(f *testing.F) {
	for _, s := range guardSeeds() {
		f.Add([]byte(s), []byte{1}, []byte{3, 200})
	}
	f.Fuzz(func(t *testing.T, in, chunks, bufs []byte) {
		const maxBulk, maxQuery = 64, 256
		toInts := func(b []byte) []int {
			var out []int
			for _, c := range b {
				out = append(out, int(c))
			}
			return out
		}
		want, wantErr := guardRun(bytes.NewReader(in), maxBulk, maxQuery, []int{len(in) + 1})
		got, gotErr := guardRun(&chunkReader{data: in, sizes: toInts(chunks)}, maxBulk, maxQuery, toInts(bufs))
		if !bytes.Equal(got, want) || errText(gotErr) != errText(wantErr) {
			t.Fatalf("in one read: %d bytes, %v; in chunks %v, buffers %v: %d bytes, %v",
				len(want), wantErr, chunks, bufs, len(got), gotErr)
		}
	})
}

// FuzzGuardLimits: whatever the input, no command that redcon parses from
// the bytes the guard lets through is over the limits: no more than
// maxQuery bytes, no bulk longer than maxBulk, no inline line longer than
// 64 KiB.
func FuzzGuardLimits(f *testing.F) {
	// The last seed (four 60-byte bulks, 272 bytes) is over maxQuery
	// only through its last bulk: the fuzzer did not reach it in 1.2M
	// executions, so it is given.
	for _, s := range guardSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxBulk, maxQuery = 64, 256
		passed, _ := guardRun(bytes.NewReader(in), maxBulk, maxQuery, nil)
		rd := redcon.NewReader(bytes.NewReader(passed))
		off := 0 // where the next command starts in passed
		for i := 0; i < 1<<16; i++ {
			cmd, err := rd.ReadCommand()
			if err != nil {
				return
			}
			// Skip the blank inline lines redcon ignores.
			for off < len(passed) && passed[off] != '*' {
				nl := bytes.IndexByte(passed[off:], '\n')
				if nl < 0 || strings.Trim(strings.TrimSuffix(string(passed[off:off+nl]), "\r"), " ") != "" {
					break
				}
				off += nl + 1
			}
			var size int
			if bytes.HasPrefix(passed[off:], cmd.Raw) {
				size = len(cmd.Raw) // multibulk: Raw is the input
				for _, a := range cmd.Args {
					if len(a) > maxBulk {
						t.Fatalf("command %d: a bulk of %d bytes passed (max %d)", i, len(a), maxBulk)
					}
				}
			} else {
				nl := bytes.IndexByte(passed[off:], '\n')
				if nl < 0 {
					t.Fatalf("command %d: cannot find it in the input", i)
				}
				size = nl + 1
				if nl > 64*1024 {
					t.Fatalf("command %d: an inline line of %d bytes passed", i, nl)
				}
			}
			if size > maxQuery {
				t.Fatalf("command %d: %d bytes passed (max %d): %.80q", i, size, maxQuery, passed[off:off+size])
			}
			off += size
		}
	})
}

func guardSeeds() []string {
	return []string{
		"PING\r\n", "*1\r\n$4\r\nPING\r\n", "*2\r\n$4\r\nECHO\r\n$64\r\n" + strings.Repeat("x", 64) + "\r\n",
		"*3\r\n$7\r\nPUBLISH\r\n$1\r\na\r\n$60\r\n" + strings.Repeat("y", 60) + "\r\n",
		"ECHO \"a b\"\r\n", "*abc\r\n", "*-1\r\n", "*0\r\n", "*1\r\n$-5\r\n", "*1\r\n$65\r\n", "*1\r\nX",
		"*1\r\n$\r\n", "*1\r\n$4\rxPING\r\n", strings.Repeat("a", 300) + "\n", "\r\n\r\n   \r\nPING\r\n",
		"*4\r\n" + strings.Repeat("$60\r\n"+strings.Repeat("z", 60)+"\r\n", 4),
	}
}
