package raftstore

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/herald-broker/herald/internal/syncio"
)

func TestPebbleLogger(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	exitCode := -1
	l := &pebbleLogger{log: slog.New(h), exit: func(code int) { exitCode = code }}

	l.Infof("[JOB %d] flushed\n", 3)
	l.Errorf("background error: %s", "disk full")
	l.Fatalf("corruption in %s", "000123.sst")
	want := `level=DEBUG msg="pebble: [JOB 3] flushed"
level=ERROR msg="pebble: background error: disk full"
level=ERROR msg="pebble: fatal: corruption in 000123.sst"
`
	if buf.String() != want {
		t.Errorf("logged:\n%s\nwant:\n%s", buf.String(), want)
	}
	if exitCode != 1 {
		t.Errorf("Fatalf exited with %d; want 1", exitCode)
	}
}

// TestPebbleEvents opens a real Pebble and checks where its events are
// logged: a flush at Debug, a write stall and a slow disk at Warn, a
// background error at Error.
func TestPebbleEvents(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	h := slog.NewTextHandler(&syncio.LockedWriter{Mu: &mu, W: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug})
	logged := func(level, text string) bool {
		mu.Lock()
		defer mu.Unlock()
		for line := range strings.Lines(buf.String()) {
			if strings.Contains(line, "level="+level+" ") && strings.Contains(line, text) {
				return true
			}
		}
		return false
	}

	db, err := openPebble(t.TempDir(), slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Set([]byte("k"), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if !logged("DEBUG", "flushed 1 memtable") {
		t.Errorf("no flush logged at Debug:\n%s", buf.String())
	}

	// Pebble calls these itself only when the disk or its compactions fall
	// behind: call the database's own listener.
	el := pebbleEvents(&pebbleLogger{log: slog.New(h), exit: func(int) {}})
	el.WriteStallBegin(pebble.WriteStallBeginInfo{Reason: "memtable count limit reached"})
	el.WriteStallEnd()
	el.BackgroundError(errors.New("disk full"))
	el.DiskSlow(pebble.DiskSlowInfo{Path: "000042.log", OpType: vfs.OpTypeSync, Duration: 6 * time.Second})
	for _, want := range []struct{ level, text string }{
		{"WARN", `msg="pebble: writes stalled" reason="memtable count limit reached"`},
		{"WARN", `msg="pebble: writes resumed" stalled=`},
		{"ERROR", "background error: disk full"},
	} {
		if !logged(want.level, want.text) {
			t.Errorf("no %s line with %s:\n%s", want.level, want.text, buf.String())
		}
	}
	// Logged from a goroutine of its own.
	waitFor(t, 5*time.Second, "the slow disk's warning", func() bool {
		return logged("WARN", `msg="pebble: disk operation slow" op=sync path=000042.log bytes=0 duration=6s`)
	})
}
