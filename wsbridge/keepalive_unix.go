//go:build unix

package wsbridge

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// shallowWaits is whether a connection can wait for its socket without
// reading from it or writing to it (waitReadable, waitWritable).
const shallowWaits = true

// waitReadable parks until the socket under rc has bytes to read or has
// ended, without reading any.
func waitReadable(rc syscall.RawConn) error { return waitPoll(rc, unix.POLLIN) }

// waitWritable parks until the socket under rc has room to write.
func waitWritable(rc syscall.RawConn) error { return waitPoll(rc, unix.POLLOUT) }

func waitPoll(rc syscall.RawConn, events int16) error {
	// The runtime's poller is edge-triggered and forgets an edge from
	// before the wait: ready asks the socket first, and the runtime
	// waits for the next edge only if it is not ready.
	ready := func(fd uintptr) bool {
		fds := [1]unix.PollFd{{Fd: int32(fd), Events: events}}
		for {
			n, err := unix.Poll(fds[:], 0)
			if err != unix.EINTR {
				return n > 0 || err != nil
			}
		}
	}
	if events == unix.POLLIN {
		return rc.Read(ready)
	}
	return rc.Write(ready)
}
