package raftstore

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// applyBatch collects the writes of one FSM checkpoint and commits them to
// Pebble in one batch, sorted by key.
//
// The order matters for speed: Pebble inserts a batch into its memtable (a
// skiplist) in batch order, and an insert just after the previous one is
// nearly free while a random one walks the whole list. Checkpoints of many
// channels interleave their keys; sorted, each channel's new messages, its
// trimmed ones and the metas come out as runs. Writes to one key keep
// their order, so the result is the same as applying
// them as they came.
//
// Reads during an apply (rare: refilling a channel's cache of its oldest
// messages, the expiry pass) go through reader, an indexed batch built on
// first use that sees every write so far.
type applyBatch struct {
	db  *pebble.DB
	ops []batchOp
	idx *pebble.Batch // nil until a read needs it
}

type batchOp struct {
	key, value []byte
	order      int // position in the batch: ties in the sort keep it
	del        bool
}

func newApplyBatch(db *pebble.DB) *applyBatch { return &applyBatch{db: db} }

// set writes k = v. The batch keeps k and v: the caller must not change
// them.
func (w *applyBatch) set(k, v []byte) { w.add(batchOp{key: k, value: v}) }

// delete deletes k.
func (w *applyBatch) delete(k []byte) { w.add(batchOp{key: k, del: true}) }

func (w *applyBatch) add(op batchOp) {
	op.order = len(w.ops)
	w.ops = append(w.ops, op)
	if w.idx != nil {
		writeOp(w.idx, op)
	}
}

// empty reports whether the batch holds no writes.
func (w *applyBatch) empty() bool { return len(w.ops) == 0 }

// reset drops the batch's writes.
func (w *applyBatch) reset() {
	if w.idx != nil {
		w.idx.Close()
		w.idx = nil
	}
	clear(w.ops)
	w.ops = w.ops[:0]
}

// reader returns a view of the database with this batch's writes applied.
func (w *applyBatch) reader() pebble.Reader {
	if w.idx == nil {
		w.idx = w.db.NewIndexedBatch()
		for _, op := range w.ops {
			writeOp(w.idx, op)
		}
	}
	return w.idx
}

// commit writes the batch to Pebble without syncing, and releases it.
func (w *applyBatch) commit() error {
	slices.SortFunc(w.ops, func(a, b batchOp) int {
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		return a.order - b.order
	})
	size := 0
	for _, op := range w.ops {
		size += len(op.key) + len(op.value) + 8
	}
	b := w.db.NewBatchWithSize(size)
	defer b.Close()
	for i := 0; i < len(w.ops); {
		// Of the writes to one key only the last counts.
		j := i + 1
		for j < len(w.ops) && bytes.Equal(w.ops[j].key, w.ops[i].key) {
			j++
		}
		writeOp(b, w.ops[j-1])
		i = j
	}
	w.reset()
	return b.Commit(pebble.NoSync)
}

func writeOp(b *pebble.Batch, op batchOp) {
	var err error
	if op.del {
		err = b.Delete(op.key, nil)
	} else {
		err = b.Set(op.key, op.value, nil)
	}
	if err != nil {
		panic(fmt.Sprintf("raftstore: batch write: %v", err))
	}
}
