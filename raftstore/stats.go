package raftstore

import (
	"io/fs"
	"path/filepath"
)

// DiskUsage is how much room a node's data takes, from Pebble's metrics
// and the snapshot directory.
type DiskUsage struct {
	// PebbleBytes is the Pebble database on disk: tables, WAL, manifest.
	PebbleBytes uint64
	// TableBytes is the live sstables; WALBytes the live write-ahead log;
	// MemTableBytes the memtables in memory.
	TableBytes    uint64
	WALBytes      uint64
	MemTableBytes uint64
	// LogBytes and StateBytes estimate the sstable bytes of the Raft log
	// and of the channel state (what is in memtables is not counted).
	LogBytes   uint64
	StateBytes uint64
	// SnapshotBytes is the Raft snapshots kept on disk.
	SnapshotBytes uint64
	// ReadAmp is Pebble's read amplification (sublevels in L0 plus
	// non-empty levels): a rising value means compactions lag behind.
	ReadAmp int
}

// DiskUsage returns the space the node's data takes. It walks the snapshot
// directory, so it is meant for metric scrapes, not hot paths.
func (s *Store) DiskUsage() DiskUsage {
	m := s.db.Metrics()
	u := DiskUsage{
		PebbleBytes:   m.DiskSpaceUsage(),
		TableBytes:    m.Table.Local.LiveSize,
		WALBytes:      m.WAL.PhysicalSize,
		MemTableBytes: m.MemTable.Size,
		ReadAmp:       m.ReadAmp(),
	}
	for _, p := range []struct {
		prefix byte
		into   *uint64
	}{{prefixLog, &u.LogBytes}, {prefixFSM, &u.StateBytes}} {
		lower := []byte{p.prefix}
		if n, err := s.db.EstimateDiskUsage(lower, prefixUpperBound(lower)); err == nil {
			*p.into = n
		}
	}
	filepath.WalkDir(filepath.Join(s.cfg.DataDir, "snapshots"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				u.SnapshotBytes += uint64(info.Size())
			}
		}
		return nil
	})
	return u
}
