package raftstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
	"github.com/herald-broker/herald/broker"
)

// Peer is a member of a statically bootstrapped cluster.
type Peer struct {
	ID   string
	Addr string
}

// Defaults for Config.
const (
	DefaultNodeID           = "n1"
	DefaultRaftAddr         = "127.0.0.1:16379"
	DefaultCommitTimeout    = 5 * time.Second
	DefaultElectionTimeout  = time.Second
	DefaultMaxBatchMessages = 4096
	DefaultMaxBatchBytes    = 4 << 20
	DefaultMaxInflight      = 16
	DefaultTickInterval     = time.Second
	DefaultCheckpoint       = 250 * time.Millisecond

	// hashicorp/raft's defaults, named so that flags can show them.
	DefaultSnapshotInterval  = 120 * time.Second
	DefaultSnapshotThreshold = 8192
	DefaultTrailingLogs      = 10240
)

// Config configures a Store. The zero value of each field means its
// default.
type Config struct {
	// DataDir holds the Pebble database and Raft snapshots. Required.
	DataDir string
	// NodeID names this node in the cluster. Default "n1".
	NodeID string
	// RaftAddr is the address Raft and node-to-node calls listen on and
	// the address other nodes reach this one at. Default 127.0.0.1:16379.
	RaftAddr string
	// Listener, if set, is used instead of listening on RaftAddr (tests
	// listen on port 0 first); RaftAddr is then its address.
	Listener net.Listener
	// TLS, if set, secures Raft and node-to-node traffic with mutual TLS:
	// build it with PeerTLSConfig. Every node must use the same CA; a
	// connection without a certificate from it is refused. Default: plain
	// TCP.
	TLS *tls.Config
	// Peers bootstraps a new cluster with these members (this node among
	// them). With no Peers and no Join, a new node bootstraps a cluster of
	// its own. Ignored once the node has state.
	Peers []Peer
	// Join, if set, is the Raft address of a member: a new node asks it to
	// be added instead of bootstrapping.
	Join string
	// Retention is the retention policy this node proposes when leader.
	// Default DefaultPolicy().
	Retention *Policy
	// CommitTimeout bounds how long a publish waits to be committed and
	// applied, including waiting for a leader. Default 5s.
	CommitTimeout time.Duration
	// ElectionTimeout is Raft's heartbeat and election timeout; the leader
	// lease is half of it. Default 1s.
	ElectionTimeout time.Duration
	// SnapshotThreshold, SnapshotInterval and TrailingLogs tune Raft's
	// snapshots and log truncation: every SnapshotInterval to twice that
	// (staggered at random), Raft takes a snapshot if at least
	// SnapshotThreshold entries came since the last one, and then drops
	// the log but its last TrailingLogs entries. Defaults: hashicorp/raft's
	// (DefaultSnapshotThreshold, DefaultSnapshotInterval,
	// DefaultTrailingLogs).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// MaxBatchMessages and MaxBatchBytes bound one log entry. Defaults
	// 4096 messages, 4 MiB.
	MaxBatchMessages int
	MaxBatchBytes    int
	// MaxInflight is how many entries the proposer keeps in flight.
	// Default 16.
	MaxInflight int
	// TickInterval is how often the leader checks for expired history when
	// nothing is published. Default 1s.
	TickInterval time.Duration
	// CheckpointInterval is how often the state machine writes the state
	// it has applied to Pebble. Between checkpoints the newest state is in
	// memory and in the Raft log, from which a restarted node applies it
	// again; a message published and trimmed between two checkpoints is
	// never written to Pebble. Default 250ms.
	CheckpointInterval time.Duration
	// LeaderPoll is how often a node waiting for a leader looks again, on
	// top of Raft's leader notifications. Default 50ms.
	LeaderPoll time.Duration
	// ObserveCommit, if set, is called after each proposed entry of
	// publishes is committed and applied (on the leader, or forwarded to
	// it), with how long that took and how many messages it held. It runs
	// on the proposer's goroutines and must not block. Default: none.
	ObserveCommit func(d time.Duration, messages int)
	// ObserveCheckpoint, if set, is called after each checkpoint of the
	// state machine is written, with how long that took and how many
	// channels it wrote. It runs on Raft's FSM goroutine (or the one
	// taking a backup) and must not block. Default: none.
	ObserveCheckpoint func(d time.Duration, channels int)
	// ObserveApply, if set, is called after each batch of committed
	// entries is applied to the state and fanned out on this node, with how
	// long that took and how many entries the batch held. It runs on
	// Raft's FSM goroutine and must not block. Default: none.
	ObserveApply func(d time.Duration, entries int)
	// ObserveLogSync, if set, is called after each batch of entries is
	// stored in this node's Raft log and synced to disk (the leader's own
	// appends and a follower's alike), with how long that took and how
	// many entries the batch held. The leader counts its copy, and a
	// follower acknowledges, only after it. It runs on Raft's goroutines
	// and must not block. Default: none.
	ObserveLogSync func(d time.Duration, entries int)
	// Logger receives the store's and Raft's logs. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.NodeID == "" {
		c.NodeID = DefaultNodeID
	}
	if c.RaftAddr == "" {
		c.RaftAddr = DefaultRaftAddr
	}
	if c.Retention == nil {
		p := DefaultPolicy()
		c.Retention = &p
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.ElectionTimeout <= 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.MaxBatchMessages <= 0 {
		c.MaxBatchMessages = DefaultMaxBatchMessages
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.TickInterval <= 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = DefaultCheckpoint
	}
	if c.LeaderPoll <= 0 {
		c.LeaderPoll = 50 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Store is Herald's replicated channel log: it implements broker.Log on
// hashicorp/raft, with the Raft log, Raft's stable store and the channel
// state in one Pebble database. Every node applies the committed log in
// order and delivers each message to its own broker.
type Store struct {
	cfg    Config
	logger *slog.Logger

	db        *pebble.DB
	logs      *logStore
	snaps     *raft.FileSnapshotStore
	mux       *mux
	transport *raft.NetworkTransport
	raft      *raft.Raft
	fsm       *fsm
	fwd       *fwdClient

	queue      chan *request
	raftUp     chan struct{} // closed once raft is set: forward calls wait for it
	leaderWait notifier
	observer   *raft.Observer
	stop       chan struct{}
	ctx        context.Context // ends at Close
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error

	// The leader's commit index as Ready last learned it.
	readyMu     sync.Mutex
	readyAt     time.Time
	readyCommit uint64
	readyErr    error
}

var _ broker.Log = (*Store)(nil)

// Open opens (or creates) the store in cfg.DataDir, starts Raft, and joins
// or bootstraps the cluster as configured. Messages committed from then on
// are delivered to b. Open does not wait for a leader: publishes wait for
// one, up to CommitTimeout.
func Open(cfg Config, b *broker.Broker) (*Store, error) {
	cfg = cfg.withDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("raftstore: no data directory")
	}
	s := &Store{
		cfg:    cfg,
		logger: cfg.Logger.With("node", cfg.NodeID),
		queue:  make(chan *request, 1024),
		raftUp: make(chan struct{}),
		stop:   make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.open(b); err != nil {
		s.cancel()
		s.closeResources()
		return nil, err
	}
	s.wg.Add(2)
	go s.runProposer()
	go s.runLeaderDuties()
	return s, nil
}

func (s *Store) open(b *broker.Broker) error {
	cfg := s.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	var err error
	if s.db, err = openPebble(filepath.Join(cfg.DataDir, "pebble"), s.logger.With("module", "pebble")); err != nil {
		return err
	}
	if s.logs, err = newLogStore(s.db); err != nil {
		return err
	}
	s.logs.observe = cfg.ObserveLogSync
	hclogger := newHCLogger(s.logger, "raft")
	if s.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, hclogger); err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	if s.fsm, err = newFSM(s.db, b, s.logger); err != nil {
		return err
	}
	s.fsm.observe = cfg.ObserveApply
	s.fsm.checkpointEvery = cfg.CheckpointInterval
	s.fsm.observeCheckpoint = cfg.ObserveCheckpoint

	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.RaftAddr); err != nil {
			return fmt.Errorf("listen for raft on %s: %w", cfg.RaftAddr, err)
		}
	}
	s.listen(ln)
	s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  raftLayer{s.mux},
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hclogger,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hclogger
	rc.HeartbeatTimeout = cfg.ElectionTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.ElectionTimeout / 2
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.NoLegacyTelemetry = true
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}

	if err := s.bootstrap(rc); err != nil {
		return err
	}
	if s.raft, err = raft.NewRaft(rc, s.fsm, s.logs, s.logs, s.snaps, s.transport); err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	obs := make(chan raft.Observation, 16)
	s.observer = raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(s.observer)
	close(s.raftUp)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-obs:
				s.leaderWait.notify()
			case <-s.stop:
				return
			}
		}
	}()
	if cfg.Join != "" {
		s.wg.Add(1)
		go s.join()
	}
	return nil
}

// listen takes node-to-node connections on ln. Raft streams queue until
// Raft starts taking them.
func (s *Store) listen(ln net.Listener) {
	s.cfg.RaftAddr = ln.Addr().String()
	s.fwd = newFwdClient(sourceIP(ln.Addr()), s.cfg.ElectionTimeout, s.cfg.TLS)
	s.mux = newMux(ln, s.serveForwardConn, s.cfg.TLS, s.knownPeer, s.logger)
}

// serveForwardConn serves forward calls on c once Raft has started. Peers
// call as soon as the port is open, and a node restarting after a crash is
// often called at once: its peers may still take it for the leader. Opening
// Raft (reading the log, restoring a snapshot) takes a while; until it is
// done, calls wait, bounded by the caller's timeout. A peer that is not a
// member of the cluster (see knownPeer) may only ask to join it.
func (s *Store) serveForwardConn(c net.Conn, member bool) {
	select {
	case <-s.raftUp:
	case <-s.ctx.Done():
		c.Close()
		return
	}
	h := s.handleForward
	if !member {
		h = func(ctx context.Context, typ byte, payload []byte) ([]byte, error) {
			if typ != fwdJoin {
				return nil, errNotMember
			}
			return s.handleForward(ctx, typ, payload)
		}
	}
	serveForward(s.ctx, c, h)
}

// knownPeer reports whether a peer's certificate (from the cluster's CA:
// the TLS handshake checked that) is valid for the address of a member of
// the cluster, as the Raft configuration has it. A node that is in no
// cluster yet (waiting to be added through --join) knows no members, and
// takes any peer with a certificate from the CA: the leader adding it.
func (s *Store) knownPeer(cert *x509.Certificate) bool {
	select {
	case <-s.raftUp:
	case <-s.ctx.Done():
		return false
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return true
	}
	for _, srv := range servers {
		host, _, err := net.SplitHostPort(string(srv.Address))
		if err == nil && cert.VerifyHostname(host) == nil {
			return true
		}
	}
	return false
}

// bootstrap writes the initial cluster configuration of a node without
// state: the static peers, or this node alone, unless it is to join.
func (s *Store) bootstrap(rc *raft.Config) error {
	has, err := raft.HasExistingState(s.logs, s.logs, s.snaps)
	if err != nil {
		return fmt.Errorf("check raft state: %w", err)
	}
	if has || s.cfg.Join != "" {
		return nil
	}
	var conf raft.Configuration
	if len(s.cfg.Peers) == 0 {
		conf.Servers = []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(s.cfg.RaftAddr), Suffrage: raft.Voter}}
	} else {
		self := false
		for _, p := range s.cfg.Peers {
			conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
			self = self || p.ID == s.cfg.NodeID
		}
		if !self {
			return fmt.Errorf("node id %q is not among the peers", s.cfg.NodeID)
		}
	}
	s.logger.Info("bootstrapping new cluster", "nodes", len(conf.Servers))
	if err := raft.BootstrapCluster(rc, s.logs, s.logs, s.snaps, s.transport, conf); err != nil {
		return fmt.Errorf("bootstrap cluster: %w", err)
	}
	return nil
}

// join asks the member at cfg.Join to add this node, until it succeeds or
// the store closes.
func (s *Store) join() {
	defer s.wg.Done()
	payload := appendString(nil, []byte(s.cfg.NodeID))
	payload = appendString(payload, []byte(s.cfg.RaftAddr))
	payload = append(payload, 1)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
		_, err := s.fwd.call(ctx, s.cfg.Join, fwdJoin, payload)
		cancel()
		if err == nil {
			s.logger.Info("joined cluster", "via", s.cfg.Join)
			return
		}
		s.logger.Warn("join failed; retrying", "via", s.cfg.Join, "err", err)
		select {
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)):
		case <-s.stop:
			return
		}
	}
}

// runLeaderDuties does what only the leader does: propose the configured
// retention policy when it differs from the one in force, and propose ticks
// so that history expires when nothing is published.
func (s *Store) runLeaderDuties() {
	defer s.wg.Done()
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	leaderCh := s.raft.LeaderCh()
	for {
		select {
		case isLeader := <-leaderCh:
			if ticker != nil {
				ticker.Stop()
				ticker, tick = nil, nil
			}
			if isLeader {
				ticker = time.NewTicker(s.cfg.TickInterval)
				tick = ticker.C
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					s.proposePolicy()
				}()
			}
		case <-tick:
			if s.fsm.nextDeadlineCopy.Load() <= time.Now().UnixMilli() {
				s.proposeTick()
			}
		case <-s.stop:
			return
		}
	}
}

func (s *Store) proposePolicy() {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
	defer cancel()
	// Wait until this leader has applied its predecessors' entries, so the
	// comparison is with the policy in force.
	if err := waitFuture(ctx, s.raft.Barrier(s.cfg.CommitTimeout)); err != nil {
		s.logger.Warn("cannot check retention policy", "err", err)
		return
	}
	if s.fsm.policyCopy.Load().Equal(*s.cfg.Retention) {
		return
	}
	s.logger.Info("proposing retention policy", "policy", s.cfg.Retention.String())
	if _, _, err := s.propose(ctx, encodePolicy(*s.cfg.Retention)); err != nil {
		s.logger.Warn("cannot set retention policy", "err", err)
	}
}

func (s *Store) proposeTick() {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
	defer cancel()
	if _, err := s.applyAsLeader(ctx, encodeTick()); err != nil && !errors.Is(err, errNotLeader) {
		s.logger.Warn("tick failed", "err", err)
	}
}

// Publish implements broker.Log. Concurrent calls are committed together.
func (s *Store) Publish(ctx context.Context, msgs []broker.Publish) ([]broker.Receipt, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	select {
	case <-s.stop:
		return nil, broker.ErrClosed
	default:
	}
	r := &request{msgs: msgs, done: make(chan struct{})}
	for i := range msgs {
		r.bytes += len(msgs[i].Channel) + len(msgs[i].Payload)
	}
	select {
	case s.queue <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.stop:
		return nil, broker.ErrClosed
	}
	select {
	case <-r.done:
		return r.receipts, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.stop:
		// Not acknowledged; if it was being committed, it may still be.
		return nil, broker.ErrClosed
	}
}

// Delete implements broker.Log.
func (s *Store) Delete(ctx context.Context, ns broker.Namespace, channel string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	res, _, err := s.propose(ctx, encodeDelete(ns, channel))
	if err != nil {
		return false, err
	}
	return res.existed, nil
}

// Sync implements broker.Log: it learns from the leader an index covering
// every write acknowledged so far and waits until this node has applied it.
func (s *Store) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	for {
		leaderAddr, leaderID := s.leader()
		var idx uint64
		var err error
		switch {
		case leaderID == raft.ServerID(s.cfg.NodeID) && s.raft.State() == raft.Leader:
			idx, err = s.leaderReadIndex(ctx)
		case leaderAddr != "":
			var res []byte
			if res, err = s.callLeader(ctx, string(leaderAddr), fwdReadIndex, nil); err == nil {
				var n int
				if idx, n = binary.Uvarint(res); n <= 0 {
					err = errors.New("malformed read index")
				}
			}
		default:
			err = errNotLeader
		}
		if err == nil {
			return s.fsm.waitApplied(ctx, idx)
		}
		if !errors.Is(err, errNotLeader) {
			return err
		}
		if err := s.waitLeaderChange(ctx, leaderAddr); err != nil {
			return err
		}
	}
}

// AppliedIndex returns the index of the last entry this node applied.
func (s *Store) AppliedIndex() uint64 { return s.fsm.appliedIndex.Load() }

// WaitApplied waits until this node has applied index.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	return s.fsm.waitApplied(ctx, index)
}

// leader returns the leader this node knows of, with the address the
// cluster configuration has for it: the address members were given to reach
// it (--peers, --join, HERALD.CLUSTER ADD). Raft's own idea of the leader's
// address is the address the leader listens on, which is the wrong one to
// dial when it listens on all interfaces (0.0.0.0) or is reached through a
// proxy or a NAT. Empty when no leader is known.
func (s *Store) leader() (raft.ServerAddress, raft.ServerID) {
	addr, id := s.raft.LeaderWithID()
	if id == "" {
		return addr, id
	}
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if srv.ID == id {
			return srv.Address, id
		}
	}
	return addr, id
}

// Addr returns the address Raft listens on.
func (s *Store) Addr() string { return s.cfg.RaftAddr }

// Close stops the node: it hands leadership to another voter if it has it,
// fails queued publishes, shuts Raft down and closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.raft != nil && s.raft.State() == raft.Leader && s.otherVoters() > 0 {
			// Bounded by Raft: the successor must catch up within an
			// election timeout, and the transfer then fails.
			s.logger.Info("handing over leadership before stopping")
			if err := s.raft.LeadershipTransfer().Error(); err != nil {
				s.logger.Warn("leadership transfer failed", "err", err)
			} else {
				s.logger.Info("leadership transferred")
			}
		}
		close(s.stop)
		s.cancel()
		if s.raft != nil {
			s.raft.DeregisterObserver(s.observer)
			if err := s.raft.Shutdown().Error(); err != nil {
				s.closeErr = err
			}
		}
		s.wg.Wait()
		if s.fsm != nil && s.raft != nil {
			// Raft has stopped applying: leave nothing for the next
			// start to apply again.
			s.fsm.checkpointNow()
		}
		for {
			select {
			case r := <-s.queue:
				finish([]*request{r}, nil, broker.ErrClosed)
				continue
			default:
			}
			break
		}
		if err := s.closeResources(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

func (s *Store) closeResources() error {
	if s.transport != nil {
		s.transport.Close()
	}
	if s.mux != nil {
		s.mux.close()
	}
	if s.fwd != nil {
		s.fwd.close()
	}
	if s.db != nil {
		return s.db.Close()
	}
	return nil
}

func (s *Store) otherVoters() int {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter && srv.ID != raft.ServerID(s.cfg.NodeID) {
			n++
		}
	}
	return n
}
