//go:build !unix

package broker

import "syscall"

// WriteNow writes nothing where there is no non-blocking write: the
// caller writes everything through the connection.
func WriteNow(syscall.RawConn, []byte) int { return 0 }
