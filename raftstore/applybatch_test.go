package raftstore

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestApplyBatchSemantics checks that sorting and collapsing a checkpoint's
// writes leaves the database as applying them one by one would, and that
// reads in the middle of a checkpoint's batch see the writes before them.
func TestApplyBatchSemantics(t *testing.T) {
	db, err := openPebble(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k := func(s string) []byte { return []byte{prefixFSM, 'k', s[0]} }
	for _, s := range []string{"a", "b", "c"} {
		if err := db.Set(k(s), []byte("old"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	w := newApplyBatch(db)
	w.set(k("z"), []byte("1"))
	w.delete(k("a"))           // existed: must go
	w.set(k("b"), []byte("x")) // existed: set then deleted
	w.delete(k("b"))
	w.delete(k("c")) // existed: deleted then set again
	w.set(k("c"), []byte("new"))
	w.set(k("d"), []byte("gone")) // created and deleted in the batch
	w.delete(k("d"))
	w.set(k("e"), []byte("1")) // created, overwritten
	w.set(k("e"), []byte("2"))

	// A read in the middle sees the writes so far...
	if v, closer, err := w.reader().Get(k("c")); err != nil || string(v) != "new" {
		t.Fatalf("read in batch: %q %v", v, err)
	} else {
		closer.Close()
	}
	// ...and writes after it are seen too.
	w.set(k("f"), []byte("after read"))
	if v, closer, err := w.reader().Get(k("f")); err != nil || string(v) != "after read" {
		t.Fatalf("read after read: %q %v", v, err)
	} else {
		closer.Close()
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "", "b": "", "c": "new", "d": "", "e": "2", "f": "after read", "z": "1"}
	for s, v := range want {
		got, closer, err := db.Get(k(s))
		switch {
		case v == "" && !errors.Is(err, pebble.ErrNotFound):
			t.Errorf("%s: %q, %v; want deleted", s, got, err)
		case v != "" && (err != nil || string(got) != v):
			t.Errorf("%s: %q, %v; want %q", s, got, err, v)
		}
		if err == nil {
			closer.Close()
		}
	}
	// The batch is reusable: nothing of the first apply is left in it.
	w.set(k("g"), []byte("1"))
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	if _, closer, err := db.Get(k("c")); err != nil {
		t.Fatalf("c after second commit: %v", err)
	} else {
		closer.Close()
	}
}
