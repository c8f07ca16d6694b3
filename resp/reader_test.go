package resp

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/redcon"
)

// readerRun reads every command from src through a guard and a cmdReader,
// as a connection does, and returns them with the error that ends the input.
func readerRun(src io.Reader) ([]string, error) {
	var cmds []string
	err := readEach(testCmdReader(src), func(args [][]byte) { cmds = append(cmds, quoteArgs(args)) })
	return cmds, err
}

// testCmdReader reads src through a guard with generous limits.
func testCmdReader(src io.Reader) *cmdReader {
	return newCmdReader(newGuard(src, 1<<20, 1<<30, func() bool { return true }))
}

// readEach calls f with each command rd reads, as a connection's reader
// loop does, and returns the error that ends the input.
func readEach(rd *cmdReader, f func(args [][]byte)) error {
	for {
		args, err := rd.next()
		if err == nil && args == nil {
			if err = rd.fill(); err == nil {
				continue
			}
		}
		if err != nil {
			return err
		}
		f(args)
	}
}

// redconRun does the same with redcon's Reader, which the cmdReader
// replaced.
func redconRun(src io.Reader) ([]string, error) {
	rd := redcon.NewReader(newGuard(src, 1<<20, 1<<30, func() bool { return true }))
	var cmds []string
	for {
		batch, err := rd.ReadCommands()
		if err != nil {
			return cmds, err
		}
		for _, c := range batch {
			cmds = append(cmds, quoteArgs(c.Args))
		}
	}
}

func quoteArgs(args [][]byte) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteString(strings.ReplaceAll(string(a), "|", "||"))
		b.WriteString(" |")
	}
	return b.String()
}

// sameAsRedcon fails t unless the cmdReader finds the commands redcon's
// Reader finds in the same input, and ends as it does. Where redcon fails
// a read, it drops the commands it parsed earlier in that read; the
// cmdReader runs them, as Redis does, so redcon's commands need only be a
// prefix of its own then. And the cmdReader parses a command only once the
// guard has seen it end, as Redis waits for a header's CR: where redcon
// fails on a command that never ends ("*\n", then nothing), it sees the
// end of the input, or the guard's own error.
func sameAsRedcon(t *testing.T, in []byte, chunks []int) {
	t.Helper()
	want, wantErr := redconRun(bytes.NewReader(in))
	got, gotErr := readerRun(&chunkReader{data: in, sizes: chunks})
	switch {
	case wantErr == io.EOF && gotErr != io.EOF,
		wantErr != io.EOF && gotErr != wantErr && gotErr != io.EOF && !strings.HasPrefix(errText(gotErr), "Protocol error: "):
		t.Fatalf("input %.200q, chunks %v: error %v, redcon's %v", in, chunks, gotErr, wantErr)
	}
	if wantErr == io.EOF && len(got) != len(want) || len(got) < len(want) {
		t.Fatalf("input %.200q, chunks %v: %d commands, redcon's %d", in, chunks, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("input %.200q, chunks %v: command %d is %.200q, redcon's %.200q", in, chunks, i, got[i], want[i])
		}
	}
}

func TestCmdReaderMatchesRedcon(t *testing.T) {
	var pipeline strings.Builder
	for i := range 500 {
		pipeline.WriteString(mbulk("PUBLISH", "room:"+strings.Repeat("x", i%50), strings.Repeat("p", i*7%300)))
	}
	inputs := map[string]string{
		"pipeline over many buffers": pipeline.String(),
		"inline and multibulk mixed": "PING\r\n" + mbulk("ECHO", "a") + "ECHO \"b c\" 'd'\n" + mbulk("ECHO", ""),
		"blank lines":                "\r\n   \r\n\n" + "PING\r\n" + "  \r\n",
		"a bulk of 1 MiB":            mbulk("ECHO", strings.Repeat("z", 1<<20)) + "PING\r\n",
		"many arguments":             mbulk(append([]string{"SUBSCRIBE"}, strings.Split(strings.Repeat("c,", 1000), ",")...)...),
		"unbalanced quotes":          "PING\r\nECHO \"abc\r\nPING\r\n",
		"bad bulk terminator":        mbulk("PING") + "*1\r\n$4\r\nPINGxx\r\n" + mbulk("PING"),
		"expected dollar":            "*2\r\n$4\r\nECHO\r\nfoo\r\n",
		"incomplete at the end":      mbulk("PING") + "*2\r\n$4\r\nECHO\r\n$5\r\nab",
		"an inline line without end": "PING\r\nECHO abc",
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			for _, chunks := range [][]int{nil, {1}, {7, 4096, 3}, {4095}, {65536}} {
				sameAsRedcon(t, []byte(in), chunks)
			}
		})
	}
}

// TestCmdReaderBuffer: a command larger than the buffer grows it, an
// incomplete command at the end moves to the front (without growing the
// buffer while it fills at most half), and once a large command is
// drained the buffer is back to readBufSize, with nothing left pointing
// into the large one.
func TestCmdReaderBuffer(t *testing.T) {
	small := mbulk("PUBLISH", "c", strings.Repeat("s", 1000)) // 1,025 bytes
	big := mbulk("ECHO", strings.Repeat("b", 200<<10))
	in := strings.Repeat(small, 10) + big + "PING\r\n"
	rd := testCmdReader(&chunkReader{data: []byte(in), sizes: []int{1500}})
	var sizes []int
	var cmds int
	err := readEach(rd, func(args [][]byte) {
		cmds++
		sizes = append(sizes, len(rd.buf))
		if cmds == 10 && len(rd.buf) != readBufSize {
			t.Fatalf("after 10 commands of 1,025 bytes in reads of 1,500: buffer %d bytes, want %d", len(rd.buf), readBufSize)
		}
		if cmds == 11 && (len(args) != 2 || len(args[1]) != 200<<10 || len(rd.buf) < len(big)) {
			t.Fatalf("the 200 KiB command: %d arguments, buffer %d bytes", len(args), len(rd.buf))
		}
	})
	if err != io.EOF {
		t.Fatal(err)
	}
	if cmds != 12 {
		t.Fatalf("%d commands, want 12", cmds)
	}
	if len(rd.buf) != readBufSize {
		t.Fatalf("buffer %d bytes after the large command drained, want %d (sizes %v)", len(rd.buf), readBufSize, sizes)
	}
	// Nor does the argument list hold on to the large buffer.
	for i, a := range rd.args[:cap(rd.args)] {
		if a != nil {
			t.Fatalf("argument list entry %d still points into a buffer (%d bytes)", i, len(a))
		}
	}
}

// TestCmdReaderParsesCompleteCommands: a command is parsed once the guard
// has seen its end, not at each read that brings part of it. A command of
// 2,000 arguments (22 KB) read a byte at a time is parsed once, not 22,000
// times, each from its first byte; and its list of arguments is not kept.
func TestCmdReaderParsesCompleteCommands(t *testing.T) {
	big := mbulk(append([]string{"ECHO"}, strings.Split(strings.Repeat("abcde,", 2000), ",")[:1999]...)...)
	in := mbulk("PING") + big + mbulk("PING")
	rd := testCmdReader(&chunkReader{data: []byte(in), sizes: []int{1}})
	var sizes []int
	if err := readEach(rd, func(args [][]byte) { sizes = append(sizes, len(args)) }); err != io.EOF {
		t.Fatal(err)
	}
	if fmt.Sprint(sizes) != "[1 2000 1]" {
		t.Fatalf("commands of %v arguments, want [1 2000 1]", sizes)
	}
	if cap(rd.args) > argsKeepMax {
		t.Fatalf("argument list of %d kept after the command of 2,000 arguments, want at most %d", cap(rd.args), argsKeepMax)
	}
	if rd.parses != 3 {
		t.Fatalf("%d parses for 3 commands read a byte at a time, want 3", rd.parses)
	}
}

// FuzzCmdReader: on any input, cut into reads anyhow, the cmdReader finds
// the commands redcon's Reader finds, and fails with its error.
func FuzzCmdReader(f *testing.F) {
	for _, s := range guardSeeds() {
		f.Add([]byte(s), []byte{1})
	}
	f.Add([]byte("PING\r\nECHO \"abc\r\n"), []byte{3})
	f.Add([]byte(mbulk("ECHO", strings.Repeat("x", 5000))+"\r\n\r\nPING\r\n"), []byte{200, 1})
	f.Fuzz(func(t *testing.T, in, chunks []byte) {
		sizes := make([]int, len(chunks))
		for i, c := range chunks {
			sizes[i] = int(c) * 17 // up to 4,335: some reads fill the buffer
		}
		sameAsRedcon(t, in, sizes)
	})
}

func mbulk(args ...string) string {
	var b strings.Builder
	b.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	return b.String()
}
