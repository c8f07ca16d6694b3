package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Pebble tuning for one database that holds a Raft log, Raft's stable store
// and the FSM state on a small (2-core) machine.
const (
	// pebbleMemTableSize is the steady-state memtable size. Pebble's 4 MB
	// default flushes (and so compacts) a busy Raft log far too often.
	pebbleMemTableSize = 64 << 20

	// pebbleCacheSize is the block cache shared by log and FSM reads.
	pebbleCacheSize = 64 << 20

	// pebbleMinCompactions and pebbleMaxCompactions bound how many
	// compactions run at once: one normally, two when Pebble sees compaction
	// debt or L0 read amplification. Pebble's default is one and one.
	pebbleMinCompactions = 1
	pebbleMaxCompactions = 2
)

// openPebble opens the Pebble database in dir, creating it if it does not
// exist, with options suited to a Raft log plus FSM state. Pebble's own log
// lines go to logger (a nil logger discards them). The caller owns the
// returned database and must Close it.
func openPebble(dir string, logger *slog.Logger) (*pebble.DB, error) {
	return openPebbleFS(dir, vfs.Default, logger)
}

// openPebbleFS is openPebble on the file system fs (tests use one that can
// simulate a power loss).
func openPebbleFS(dir string, fs vfs.FS, logger *slog.Logger) (*pebble.DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cache := pebble.NewCache(pebbleCacheSize)
	// The database takes its own reference; ours is dropped on every path.
	defer cache.Unref()

	pl := &pebbleLogger{log: logger, exit: os.Exit}
	opts := &pebble.Options{
		Cache:              cache,
		MemTableSize:       pebbleMemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		CompactionConcurrencyRange: func() (lower, upper int) {
			return pebbleMinCompactions, pebbleMaxCompactions
		},
		Logger:        pl,
		EventListener: pebbleEvents(pl),
		FS:            fs,
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble %q: %w", dir, err)
	}
	return db, nil
}

// pebbleEvents returns the listener for Pebble's events. Two hold up
// every publish, since each waits for the Raft log's synced write, and are
// logged at Warn: a write to disk taking over 5 s (Pebble's disk health
// check) and writes stalled because flushes or compactions fell behind.
// Flushes, compactions and file changes go to Debug with Pebble's other
// chatter, background errors to Error.
func pebbleEvents(l *pebbleLogger) *pebble.EventListener {
	el := pebble.MakeLoggingEventListener(l)
	el.DiskSlow = func(info pebble.DiskSlowInfo) {
		// Pebble's disk monitor calls this and must not wait for I/O,
		// which writing the log line may do.
		go l.log.Warn("pebble: disk operation slow", "op", info.OpType.String(), "path", info.Path, "bytes", info.WriteSize, "duration", info.Duration)
	}
	var stalled atomic.Pointer[time.Time] // when the current write stall began
	el.WriteStallBegin = func(info pebble.WriteStallBeginInfo) {
		now := time.Now()
		stalled.Store(&now)
		l.log.Warn("pebble: writes stalled", "reason", info.Reason)
	}
	el.WriteStallEnd = func() {
		var d time.Duration
		if began := stalled.Load(); began != nil {
			d = time.Since(*began) // on the monotonic clock
		}
		l.log.Warn("pebble: writes resumed", "stalled", d)
	}
	return &el
}

// pebbleLogger adapts a *slog.Logger to pebble.Logger. Pebble's routine
// chatter (flushes, compactions, WAL recycling) goes to Debug, its errors to
// Error.
type pebbleLogger struct {
	log *slog.Logger
	// exit ends the process after a fatal message; os.Exit outside tests.
	exit func(code int)
}

var _ pebble.Logger = (*pebbleLogger)(nil)

// Infof logs an informational Pebble message at slog's Debug level.
func (l *pebbleLogger) Infof(format string, args ...any) {
	l.logf(slog.LevelDebug, format, args)
}

// Errorf logs a Pebble error at slog's Error level.
func (l *pebbleLogger) Errorf(format string, args ...any) {
	l.logf(slog.LevelError, format, args)
}

// Fatalf logs the message at Error level and exits the process with status 1.
//
// Pebble calls Fatalf on broken invariants (corruption, an impossible
// compaction) and does not expect it to return: the code after many of its
// calls would run on inconsistent state. Its default logger calls
// os.Exit(1), and so does this one. A panic would be the other choice, but
// a recover further up the stack (net/http recovers handler panics) could
// let the process carry on with a broken database.
func (l *pebbleLogger) Fatalf(format string, args ...any) {
	l.logf(slog.LevelError, "fatal: "+format, args)
	l.exit(1)
}

// logf formats one Pebble message, trimming the newline Pebble often
// appends, and logs it at level.
func (l *pebbleLogger) logf(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.log.Log(ctx, level, "pebble: "+msg)
}
