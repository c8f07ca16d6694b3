// Command herald runs the Herald broker: RESP for Redis clients, HTTP for
// health checks and browsers, Raft on Pebble for durability. See --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/resp"
	"github.com/herald-broker/herald/wsbridge"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// shutdownGrace is how long connections get to finish on SIGINT/SIGTERM.
const shutdownGrace = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "backup":
			return runBackup(args[1:], env, stdout, stderr)
		case "restore":
			return runRestore(args[1:], env, stderr)
		}
	}
	cfg, err := parseConfig(args, env, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "herald:", err)
		return 2
	}
	if cfg.version {
		fmt.Fprintln(stdout, "herald", version)
		return 0
	}
	logger, level, err := newLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "herald:", err)
		return 2
	}
	if err := serve(ctx, cfg, logger, level); err != nil {
		logger.Error("herald stopped", "err", err)
		return 1
	}
	return 0
}

// serve wires the broker, the store and the servers together, and runs
// them until ctx ends. level is the logger's level, which CONFIG SET
// loglevel changes.
func serve(ctx context.Context, cfg *config, logger *slog.Logger, level *slog.LevelVar) error {
	m := newMetrics()
	sec := &cfg.security
	acl, err := sec.acl(cfg.requirePass)
	if err != nil {
		return err
	}
	tokens, err := sec.tokens()
	if err != nil {
		return err
	}
	tlsCfg, err := sec.tlsConfigs()
	if err != nil {
		return err
	}
	if tlsCfg.resp != nil && tlsCfg.raft == nil {
		logger.Warn("Raft traffic is not encrypted: give --tls-ca-cert-file for mutual TLS between nodes")
	}
	b := broker.New(broker.Config{
		MaxPayload:    int(cfg.maxPayload),
		MaxChannelLen: sec.maxChannelLen,
		Outbox: broker.OutboxLimits{
			HardBytes:    int(cfg.outboxHard),
			SoftBytes:    int(cfg.outboxSoft),
			SoftDuration: cfg.outboxSoftFor,
			MaxFrames:    cfg.outboxMaxFrames,
		},
		Logger: logger,
	})
	policy := raftstore.DefaultPolicy()
	if len(cfg.retain) > 0 {
		policy.Rules = cfg.retain
	}
	policy.IdleTTL = cfg.idleTTL
	store, err := raftstore.Open(raftstore.Config{
		DataDir:           cfg.dataDir,
		NodeID:            cfg.nodeID,
		RaftAddr:          cfg.raftAddr,
		Peers:             cfg.peers,
		Join:              cfg.join,
		Retention:         &policy,
		CommitTimeout:     cfg.commitTimeout,
		ElectionTimeout:   cfg.electionTimeout,
		SnapshotInterval:  cfg.snapInterval,
		SnapshotThreshold: cfg.snapThreshold,
		TrailingLogs:      cfg.trailingLogs,
		ObserveCommit:     m.observeCommit,
		ObserveApply:      m.observeApply,
		ObserveCheckpoint: m.observeCheckpoint,
		ObserveLogSync:    m.observeLogSync,
		TLS:               tlsCfg.raft,
		Logger:            logger,
	}, b)
	if err != nil {
		return err
	}
	defer store.Close()
	b.SetLog(store)

	respLn, err := listen(cfg.respAddr, tlsCfg.resp)
	if err != nil {
		return fmt.Errorf("listen for RESP: %w", err)
	}
	rs := resp.New(b, resp.Config{
		RequirePass:     cfg.requirePass,
		ACL:             acl,
		MaxClients:      cfg.maxClients,
		MaxClientsPerIP: sec.maxClientsPerIP,
		MaxRequestRate:  sec.maxRequestRate,
		ProtoMaxBulkLen: int(cfg.protoMaxBulkLen),
		MaxQueryBuffer:  int(cfg.queryBufLimit),
		Cluster:         clusterAdapter{store},
		Version:         version,
		LogLevel:        level,
		InfoFields:      m.infoFields,
		Backup: func(ctx context.Context) (resp.Backup, error) {
			return backupToFile(store, cfg.dataDir)
		},
		Logger: logger.With("server", "resp"),
	})
	httpLn, err := listen(cfg.httpAddr, tlsCfg.http)
	if err != nil {
		respLn.Close()
		return fmt.Errorf("listen for HTTP: %w", err)
	}
	hs := wsbridge.New(b, wsbridge.Config{
		Ready:               store.Ready,
		AllowedOrigins:      cfg.allowedOrigins,
		AllowAnyOrigin:      cfg.allowAnyOrigin,
		AllowBrowserPublish: cfg.allowBrowserPublish,
		MaxSubscriptions:    cfg.maxSubscriptions,
		Tokens:              tokens,
		MaxConnections:      sec.maxHTTPConns,
		MaxConnectionsPerIP: sec.maxClientsPerIP,
		MaxRequestRate:      sec.maxRequestRate,
		PingInterval:        cfg.pingInterval,
		PollTimeout:         cfg.pollTimeout,
		Metrics:             m.handler(),
		Logger:              logger.With("server", "http"),
	})
	m.broker, m.resp, m.http, m.store = b, rs, hs, store

	errc := make(chan error, 3)
	go func() { errc <- rs.Serve(respLn) }()
	go func() { errc <- hs.Serve(httpLn) }()
	if cfg.pprofAddr != "" {
		pprofLn, err := net.Listen("tcp", cfg.pprofAddr)
		if err != nil {
			return fmt.Errorf("listen for pprof: %w", err)
		}
		ps := &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
		defer ps.Close()
		go func() { errc <- ps.Serve(pprofLn) }()
		logger.Info("profiler listening", "addr", pprofLn.Addr().String())
	}
	logger.Info("herald ready", "version", version, "resp", respLn.Addr().String(), "http", httpLn.Addr().String(),
		"raft", store.Addr(), "node", cfg.nodeID, "data_dir", cfg.dataDir)

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err = <-errc:
		logger.Error("server failed", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	rs.Shutdown(sctx)
	hs.Shutdown(sctx)
	if cerr := store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// pprofHandler serves net/http/pprof's endpoints, on their own mux so they
// are never reachable through the public HTTP address.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// newLogger returns the process's logger and its level, which can change at
// run time (CONFIG SET loglevel).
func newLogger(cfg *config, w io.Writer) (*slog.Logger, *slog.LevelVar, error) {
	level := &slog.LevelVar{}
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", cfg.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), level, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), level, nil
	}
	return nil, nil, fmt.Errorf("--log-format %q: want text or json", cfg.logFormat)
}

// clusterAdapter shows the store to the RESP server's HERALD.CLUSTER
// commands.
type clusterAdapter struct{ s *raftstore.Store }

func (a clusterAdapter) Status() resp.ClusterStatus {
	st := a.s.Status()
	out := resp.ClusterStatus{
		NodeID: st.NodeID, State: st.State, LeaderID: st.LeaderID, LeaderAddr: st.LeaderAddr,
		Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastLogIndex: st.LastLogIndex,
	}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, resp.ClusterNode{ID: n.ID, Addr: n.Addr, Suffrage: n.Suffrage})
	}
	return out
}

func (a clusterAdapter) AddNode(ctx context.Context, id, addr string, voter bool) error {
	return a.s.AddNode(ctx, id, addr, voter)
}

func (a clusterAdapter) RemoveNode(ctx context.Context, id string) error {
	return a.s.RemoveNode(ctx, id)
}
