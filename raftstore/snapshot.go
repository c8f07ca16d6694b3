package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// A snapshot stream is
//
//	magic   8 bytes "HRLDSNP1"
//	applied 8 bytes, big endian: the log index the state reflects
//	lastTs  8 bytes, big endian: the leader time of that entry
//	records uvarint key length (> 0), key, uvarint value length, value
//	end     uvarint 0, then CRC-32C (4 bytes, big endian) of all before it
//
// The records are every FSM key except the applied index, in key order.
var snapshotMagic = []byte("HRLDSNP1")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// restoreBatchBytes is how much a restore writes per Pebble batch.
const restoreBatchBytes = 4 << 20

// Snapshot implements raft.FSM. It first writes a checkpoint and makes it
// durable, since Raft may drop the log up to this snapshot's index, and
// then pins a Pebble snapshot for Persist to stream from.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checkpoint()
	if err := f.db.LogData(nil, pebble.Sync); err != nil {
		return nil, fmt.Errorf("sync state before snapshot: %w", err)
	}
	return &fsmSnapshot{snap: f.db.NewSnapshot(), applied: f.applied, lastTs: f.lastTs}, nil
}

type fsmSnapshot struct {
	snap    *pebble.Snapshot
	applied uint64
	lastTs  int64
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	var hdr [24]byte
	copy(hdr[:8], snapshotMagic)
	binary.BigEndian.PutUint64(hdr[8:], s.applied)
	binary.BigEndian.PutUint64(hdr[16:], uint64(s.lastTs))
	bw.Write(hdr[:])
	lower := []byte{prefixFSM}
	it, err := s.snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixUpperBound(lower)})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		if string(it.Key()) == string(fsmAppliedKey) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		writeRecord(bw, it.Key(), v)
	}
	if err := it.Close(); err != nil {
		return err
	}
	bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	_, err = w.Write(sum[:])
	return err
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() { s.snap.Close() }

// Restore implements raft.FSM. If this node's state already reflects the
// snapshot's index (a restart: the state is persistent), the snapshot is
// skipped. Otherwise the state is replaced: it is deleted, the records are
// written, and the applied index is written last, once the checksum has
// been verified, so an interrupted restore leaves no index that claims a
// state it does not have.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	crc := crc32.New(crcTable)
	br := bufio.NewReaderSize(rc, 256<<10)
	r := &crcReader{r: br, crc: crc}
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("restore snapshot: read header: %w", err)
	}
	if string(hdr[:8]) != string(snapshotMagic) {
		return fmt.Errorf("restore snapshot: not a Herald snapshot")
	}
	applied := binary.BigEndian.Uint64(hdr[8:])
	lastTs := int64(binary.BigEndian.Uint64(hdr[16:]))
	if applied <= f.applied {
		f.logger.Info("state already at or past snapshot; skipping restore", "snapshot_index", applied, "applied_index", f.applied)
		return nil
	}
	f.logger.Info("restoring state from snapshot", "snapshot_index", applied, "applied_index", f.applied)
	lower := []byte{prefixFSM}
	if err := f.db.DeleteRange(lower, prefixUpperBound(lower), pebble.NoSync); err != nil {
		return fmt.Errorf("restore snapshot: clear state: %w", err)
	}
	b := f.db.NewBatch()
	defer func() { b.Close() }()
	for {
		key, val, end, err := readRecord(r)
		if err != nil {
			return fmt.Errorf("restore snapshot: %w", err)
		}
		if end {
			break
		}
		if err := b.Set(key, val, nil); err != nil {
			return err
		}
		if b.Len() >= restoreBatchBytes {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("restore snapshot: %w", err)
			}
			b.Close()
			b = f.db.NewBatch()
		}
	}
	want := crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return fmt.Errorf("restore snapshot: read checksum: %w", err)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return errors.New("restore snapshot: checksum mismatch")
	}
	var v [16]byte
	binary.BigEndian.PutUint64(v[:8], applied)
	binary.BigEndian.PutUint64(v[8:], uint64(lastTs))
	if err := b.Set(fsmAppliedKey, v[:], nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if err := f.load(); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	return nil
}

// writeRecord writes one record of a snapshot stream.
func writeRecord(w *bufio.Writer, key, val []byte) {
	var n [binary.MaxVarintLen64]byte
	w.Write(n[:binary.PutUvarint(n[:], uint64(len(key)))])
	w.Write(key)
	w.Write(n[:binary.PutUvarint(n[:], uint64(len(val)))])
	w.Write(val)
}

// readRecord reads one record of a snapshot stream, a key of the state and
// its value, or its end marker (end).
func readRecord(r *crcReader) (key, val []byte, end bool, err error) {
	klen, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, false, fmt.Errorf("truncated: %w", err)
	}
	if klen == 0 {
		return nil, nil, true, nil
	}
	if key, err = readN(r, klen); err != nil {
		return nil, nil, false, fmt.Errorf("truncated: %w", err)
	}
	vlen, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, false, fmt.Errorf("truncated: %w", err)
	}
	if val, err = readN(r, vlen); err != nil {
		return nil, nil, false, fmt.Errorf("truncated: %w", err)
	}
	if key[0] != prefixFSM {
		return nil, nil, false, fmt.Errorf("key outside the state: %q", key)
	}
	return key, val, false, nil
}

func readN(r io.Reader, n uint64) ([]byte, error) {
	if n > maxDecodeLen {
		return nil, fmt.Errorf("record of %d bytes", n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

// crcReader checksums what is read through it.
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.crc.Write([]byte{b})
	}
	return b, err
}
