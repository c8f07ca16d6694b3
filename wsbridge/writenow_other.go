//go:build !unix

package wsbridge

import "syscall"

// writeNow writes nothing where there is no non-blocking write: the caller
// writes everything through the connection.
func writeNow(syscall.RawConn, []byte) int { return 0 }
