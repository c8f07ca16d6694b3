package resp

import (
	"bytes"
	"io"

	"github.com/tidwall/redcon"
)

// Sizes of a connection's input buffer, and of its list of a command's
// arguments.
const (
	readBufSize    = 4 << 10  // to start with, and after a large command
	readBufKeepMax = 64 << 10 // the most kept once the input is drained
	argsKeepMax    = 1024     // arguments whose list is kept for the next command
)

// cmdReader splits a connection's input into commands, in place: a
// command's arguments point into the input buffer and stay valid only until
// the next fill. (redcon's Reader copies every command and allocates each
// argument list, a third of everything a busy publisher allocated.) The
// framing is redcon's: ReadNextCommand for multibulk commands, Parse for an
// inline one. Limits are the guard's, in front of the reader.
//
// It parses only once the guard has seen a command end in what it passed
// on. Parsing starts over at the command's first byte, so parsing a large
// command at each of its reads would cost its length once per read: a
// client trickling a million arguments kept both cores of a test machine
// busy.
type cmdReader struct {
	g          *guard
	buf        []byte
	start, end int      // the unparsed input is buf[start:end]
	args       [][]byte // reused for each multibulk command's arguments
	taken      uint64   // commands (and blank lines) next has taken, as the guard counts them
	parses     uint64   // times next parsed a multibulk command, complete or not
	err        error    // a read error that came with data, returned once that data is used
}

func newCmdReader(g *guard) *cmdReader {
	return &cmdReader{g: g, buf: make([]byte, readBufSize)}
}

// next returns the next complete command in what has been read, or nil
// arguments if there is none yet: fill reads more.
func (r *cmdReader) next() ([][]byte, error) {
	for r.start < r.end && r.g.ends > r.taken {
		in := r.buf[r.start:r.end]
		if in[0] == '*' {
			r.parses++
			complete, args, _, rest, err := redcon.ReadNextCommand(in, r.args)
			if err != nil {
				return nil, err
			}
			if !complete {
				return nil, nil
			}
			r.args = args[:0]
			r.start = r.end - len(rest)
			r.taken++
			if len(args) == 0 {
				// "*0": the guard refuses it before it gets here, and
				// so did redcon's Reader.
				return nil, &protocolError{"invalid multibulk length"}
			}
			return args, nil
		}
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			return nil, nil
		}
		line := in[:i+1]
		r.start += len(line)
		r.taken++
		if blank(line) {
			continue // as in Redis, an empty line is no command
		}
		cmd, err := redcon.Parse(line)
		if err != nil {
			return nil, err
		}
		return cmd.Args, nil
	}
	return nil, nil
}

// blank reports whether an inline command's line, with its line end,
// holds no argument: spaces only, as redcon splits a line.
func blank(line []byte) bool {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	return len(bytes.Trim(line, " ")) == 0
}

// fill reads more input. The arguments next returned before it are no
// longer valid after it.
func (r *cmdReader) fill() error {
	if r.err != nil {
		return r.err
	}
	// The list keeps pointing into the buffer past its length: a long
	// one goes, and a kept one lets go of a buffer about to be replaced.
	if cap(r.args) > argsKeepMax {
		r.args = nil
	}
	switch {
	case r.start == r.end:
		r.start, r.end = 0, 0
		if len(r.buf) > readBufKeepMax {
			clear(r.args[:cap(r.args)])
			r.buf = make([]byte, readBufSize)
		}
	case r.end == len(r.buf):
		// An incomplete command at the end of the buffer: move it to
		// the front, into a buffer twice the size if it fills half.
		// The guard bounds a command, and so the buffer.
		pending := r.end - r.start
		buf := r.buf
		if 2*pending > len(buf) {
			clear(r.args[:cap(r.args)])
			buf = make([]byte, 2*len(buf))
		}
		copy(buf, r.buf[r.start:r.end])
		r.buf, r.start, r.end = buf, 0, pending
	}
	n, err := r.g.Read(r.buf[r.end:])
	r.end += n
	if n > 0 {
		r.err = err
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}
