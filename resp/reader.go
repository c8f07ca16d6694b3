package resp

import (
	"bytes"
	"io"

	"github.com/tidwall/redcon"
)

// Sizes of a connection's input buffer.
const (
	readBufSize    = 4 << 10  // to start with, and after a large command
	readBufKeepMax = 64 << 10 // the most kept once the input is drained
)

// cmdReader splits a connection's input into commands, in place: a
// command's arguments point into the input buffer and stay valid only until
// the next fill. (redcon's Reader copies every command and allocates each
// argument list, a third of everything a busy publisher allocated.) The
// framing is redcon's: ReadNextCommand for multibulk commands, Parse for an
// inline one. Limits are the guard's, in front of the reader.
type cmdReader struct {
	r          io.Reader
	buf        []byte
	start, end int      // the unparsed input is buf[start:end]
	args       [][]byte // reused for each multibulk command's arguments
	err        error    // a read error that came with data, returned once that data is used
}

func newCmdReader(r io.Reader) *cmdReader {
	return &cmdReader{r: r, buf: make([]byte, readBufSize)}
}

// next returns the next complete command in what has been read, or nil
// arguments if there is none yet: fill reads more.
func (r *cmdReader) next() ([][]byte, error) {
	for r.start < r.end {
		in := r.buf[r.start:r.end]
		if in[0] == '*' {
			complete, args, _, rest, err := redcon.ReadNextCommand(in, r.args)
			if err != nil {
				return nil, err
			}
			if !complete {
				return nil, nil
			}
			r.args = args[:0]
			r.start = r.end - len(rest)
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
	switch {
	case r.start == r.end:
		r.start, r.end = 0, 0
		if len(r.buf) > readBufKeepMax {
			r.buf = make([]byte, readBufSize)
		}
	case r.end == len(r.buf):
		// An incomplete command at the end of the buffer: move it to
		// the front, into a buffer twice the size if it fills half.
		// The guard bounds a command, and so the buffer.
		pending := r.end - r.start
		buf := r.buf
		if 2*pending > len(buf) {
			buf = make([]byte, 2*len(buf))
		}
		copy(buf, r.buf[r.start:r.end])
		r.buf, r.start, r.end = buf, 0, pending
	}
	n, err := r.r.Read(r.buf[r.end:])
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
