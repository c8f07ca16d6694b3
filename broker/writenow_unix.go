//go:build unix

package broker

import "syscall"

// WriteNow writes as much of b as the socket under raw takes without
// waiting, and returns how much that was. Outbox writers use it to send
// first without blocking, and to wait for the socket (under a deadline)
// only for what is left.
func WriteNow(raw syscall.RawConn, b []byte) int {
	n := 0
	raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		return true // done: never wait for the socket here
	})
	return n
}
