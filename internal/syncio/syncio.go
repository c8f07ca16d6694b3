// Package syncio has an io.Writer for tests that log from several
// goroutines (or a child process's stdout and stderr) into one buffer and
// read that buffer while it is written.
package syncio

import (
	"io"
	"sync"
)

// LockedWriter writes to W holding Mu, which the reader of W holds too.
type LockedWriter struct {
	Mu *sync.Mutex
	W  io.Writer
}

// Write implements io.Writer.
func (l *LockedWriter) Write(p []byte) (int, error) {
	l.Mu.Lock()
	defer l.Mu.Unlock()
	return l.W.Write(p)
}
