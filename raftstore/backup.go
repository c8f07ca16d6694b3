package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// A backup is a snapshot stream (see snapshot.go): the channel state at one
// applied index, with a CRC-32C. Backup writes one from a running node;
// Restore turns one into the Raft snapshot of an empty data directory, from
// which a node starts as if it had installed it from a leader.
//
// A restored state starts new epochs. The cluster the backup came from may
// have gone on after it, numbering other messages with the sequence numbers
// that follow the backup's; a restored channel that went on numbering in
// the same epoch would give a (channel, epoch, sequence) two payloads. So
// Restore places its snapshot restoreIndexGap entries after the backup's
// index, past any index the old cluster can have reached, and gives every
// channel that index as its epoch: a subscriber resuming from the old
// cluster is told its epoch is gone, as after any other loss of history.

// restoreIndexGap is how far past a backup's index its restore starts.
const restoreIndexGap = 1 << 32

// Backup writes a consistent copy of this node's channel state (every
// channel's sequence, epoch and retained history, and the retention policy
// in force) to w, and returns the log index it reflects. It writes a
// checkpoint and reads a Pebble snapshot of it: the node keeps serving
// meanwhile.
func (s *Store) Backup(w io.Writer) (uint64, error) {
	s.fsm.mu.Lock()
	s.fsm.checkpoint()
	snap := s.db.NewSnapshot()
	s.fsm.mu.Unlock()
	defer snap.Close()
	v, closer, err := snap.Get(fsmAppliedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, errors.New("backup: this node has applied nothing yet")
	}
	if err != nil {
		return 0, fmt.Errorf("backup: read applied index: %w", err)
	}
	if len(v) != 16 {
		closer.Close()
		return 0, errors.New("backup: corrupt applied index")
	}
	fs := &fsmSnapshot{snap: snap, applied: binary.BigEndian.Uint64(v), lastTs: int64(binary.BigEndian.Uint64(v[8:]))}
	closer.Close()
	if err := fs.write(w); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	return fs.applied, nil
}

// RestoreConfig says which node a restored data directory belongs to.
type RestoreConfig struct {
	// DataDir is the data directory to create. It must not hold a node's
	// state already. Required.
	DataDir string
	// NodeID and RaftAddr are the node's, as it will be started. Defaults
	// as for Config.
	NodeID   string
	RaftAddr string
	// Peers is the cluster the node starts in: every member that will be
	// started from this same backup. Default: this node alone (others
	// then join it empty, with --join, and receive its state).
	Peers []Peer
	// Logger receives the snapshot store's logs. Default: discard.
	Logger *slog.Logger
}

// Restore reads a backup from r, checks it, and writes it into the empty
// data directory cfg.DataDir as a Raft snapshot whose configuration is
// cfg.Peers (or the node alone). A node opened on the directory loads the
// state from it and continues the log after the backup's index. It returns
// that index.
func Restore(cfg RestoreConfig, r io.Reader) (uint64, error) {
	if cfg.DataDir == "" {
		return 0, errors.New("restore: no data directory")
	}
	if cfg.NodeID == "" {
		cfg.NodeID = DefaultNodeID
	}
	if cfg.RaftAddr == "" {
		cfg.RaftAddr = DefaultRaftAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, sub := range []string{"pebble", "snapshots"} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, sub)); err == nil {
			return 0, fmt.Errorf("restore: %s already holds a node's state (%s): restore into an empty directory", cfg.DataDir, sub)
		}
	}
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(cfg.RaftAddr), Suffrage: raft.Voter}}}
	if len(cfg.Peers) > 0 {
		conf.Servers = nil
		self := false
		for _, p := range cfg.Peers {
			conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
			self = self || p.ID == cfg.NodeID
		}
		if !self {
			return 0, fmt.Errorf("restore: node id %q is not among the peers", cfg.NodeID)
		}
	}

	br := bufio.NewReaderSize(r, 256<<10)
	var hdr [24]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, fmt.Errorf("restore: read header: %w", err)
	}
	if string(hdr[:8]) != string(snapshotMagic) {
		return 0, errors.New("restore: not a Herald backup")
	}
	applied := binary.BigEndian.Uint64(hdr[8:])
	if applied == 0 {
		return 0, errors.New("restore: backup of an empty state")
	}
	if applied > math.MaxUint64-restoreIndexGap {
		return 0, errors.New("restore: backup index out of range")
	}
	index := applied + restoreIndexGap

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, newHCLogger(cfg.Logger, "raft"))
	if err != nil {
		return 0, fmt.Errorf("restore: open snapshot store: %w", err)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.RaftAddr))
	defer trans.Close()
	// The term is unknown and does not matter: the restored node starts a
	// new history, whose log begins after this snapshot.
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, conf, index, trans)
	if err != nil {
		return 0, fmt.Errorf("restore: create snapshot: %w", err)
	}
	if err := copyRenewed(sink, hdr[:], index, br); err != nil {
		sink.Cancel()
		os.RemoveAll(filepath.Join(cfg.DataDir, "snapshots"))
		return 0, fmt.Errorf("restore: %w", err)
	}
	if err := sink.Close(); err != nil {
		return 0, fmt.Errorf("restore: write snapshot: %w", err)
	}
	return index, nil
}

// copyRenewed copies a snapshot stream, whose header has been read, to w
// as the state at log index index, every channel in a new epoch (index);
// it checks the input's records, its checksum and that nothing follows it.
func copyRenewed(w io.Writer, hdr []byte, index uint64, r *bufio.Reader) error {
	in := crc32.New(crcTable)
	in.Write(hdr)
	cr := &crcReader{r: r, crc: in}
	out := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, out), 256<<10)
	newHdr := append([]byte(nil), hdr...)
	binary.BigEndian.PutUint64(newHdr[8:], index)
	bw.Write(newHdr)
	for {
		key, val, end, err := readRecord(cr)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		if end {
			break
		}
		if _, rest, err := parseChannelKey(key); err == nil && len(rest) == 1 && rest[0] == chanMeta {
			m, err := decodeMeta(val)
			if err != nil {
				return fmt.Errorf("channel %q: %w", key, err)
			}
			m.epoch = index
			val = m.encode()
		}
		writeRecord(bw, key, val)
	}
	var sum [4]byte
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return fmt.Errorf("read checksum: %w", err)
	}
	if binary.BigEndian.Uint32(sum[:]) != in.Sum32() {
		return errors.New("checksum mismatch: the backup is damaged")
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return errors.New("data after the end of the backup")
	}
	bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return err
	}
	binary.BigEndian.PutUint32(sum[:], out.Sum32())
	_, err := w.Write(sum[:])
	return err
}
