package broker

import (
	"net"
	"syscall"
)

// RawConn returns the descriptor under c for WriteNow, or nil if c has none
// (a TLS connection): its writer then writes the blocking way.
func RawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}
