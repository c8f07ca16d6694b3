//go:build !unix

package wsbridge

import (
	"errors"
	"syscall"
)

// shallowWaits is whether a connection can wait for its socket without
// reading from it or writing to it: not here. Readers wait inside
// coder/websocket's Read, and pings that the socket cannot take at once
// are written the blocking way.
const shallowWaits = false

func waitReadable(syscall.RawConn) error { return errors.ErrUnsupported }

func waitWritable(syscall.RawConn) error { return errors.ErrUnsupported }
