package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/resp"
	"github.com/herald-broker/herald/wsbridge"
)

// config is everything the flags and environment set.
type config struct {
	respAddr    string
	httpAddr    string
	dataDir     string
	requirePass string

	nodeID          string
	raftAddr        string
	peers           []raftstore.Peer
	join            string
	retain          []raftstore.Rule
	idleTTL         time.Duration
	commitTimeout   time.Duration
	electionTimeout time.Duration
	snapInterval    time.Duration
	snapThreshold   uint64
	trailingLogs    uint64

	maxClients      int
	maxPayload      size
	protoMaxBulkLen size
	queryBufLimit   size
	outboxHard      size
	outboxSoft      size
	outboxSoftFor   time.Duration
	outboxMaxFrames int

	allowedOrigins      []string
	allowAnyOrigin      bool
	allowBrowserPublish bool
	maxSubscriptions    int
	pingInterval        time.Duration
	pollTimeout         time.Duration

	logLevel  string
	logFormat string
	version   bool
	pprofAddr string

	configFiles []string // --config, in order

	security securityConfig // security.go
}

// flagGroups orders --help; every flag belongs to one group.
var flagGroups = []struct {
	title string
	names []string
}{
	{"Configuration", []string{"config"}},
	{"Listening", []string{"resp-addr", "http-addr", "requirepass"}},
	{"Browsers (HTTP)", []string{"allowed-origins", "allow-any-origin", "allow-browser-publish", "max-subscriptions", "ws-ping-interval", "poll-timeout"}},
	{"Storage and cluster", []string{"data-dir", "node-id", "raft-addr", "peers", "join", "commit-timeout", "raft-election-timeout",
		"snapshot-interval", "snapshot-threshold", "trailing-logs"}},
	{"Retention", []string{"retain", "channel-idle-ttl"}},
	{"Limits", []string{"max-clients", "max-payload", "proto-max-bulk-len", "client-query-buffer-limit",
		"outbox-hard-limit", "outbox-soft-limit", "outbox-soft-duration", "outbox-max-messages"}},
	{"Security", securityFlags},
	{"Logging", []string{"log-level", "log-format", "version"}},
	{"Debugging", []string{"pprof-addr"}},
}

func newFlagSet(c *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.respAddr, "resp-addr", "127.0.0.1:6379", "address for Redis clients (RESP2/RESP3); loopback unless you choose otherwise")
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "address for HTTP: WebSocket, SSE, long-poll, POST /publish, the demo page, health checks")
	fs.StringVar(&c.requirePass, "requirepass", "", "password clients must AUTH with (Redis's requirepass); empty: none")
	fs.Func("allowed-origins", "browser `origins` besides Herald's own host that may connect: comma-separated host patterns\n(example.com, *.example.com) or scheme://host (default: own host only)", appendList(&c.allowedOrigins))
	fs.BoolVar(&c.allowAnyOrigin, "allow-any-origin", false, "accept browsers from every origin (any site could subscribe on its visitors' behalf)")
	fs.BoolVar(&c.allowBrowserPublish, "allow-browser-publish", false, "let browsers publish (WebSocket publish op, POST /publish from an allowed origin)")
	fs.IntVar(&c.maxSubscriptions, "max-subscriptions", wsbridge.DefaultMaxSubscriptions, "most channels and patterns one WebSocket, SSE or long-poll connection may subscribe to")
	fs.DurationVar(&c.pingInterval, "ws-ping-interval", wsbridge.DefaultPingInterval, "how often WebSocket peers are pinged (a peer silent for 10s after a ping is dropped)")
	fs.DurationVar(&c.pollTimeout, "poll-timeout", wsbridge.DefaultPollTimeout, "longest a long-poll request waits for a message")
	fs.StringVar(&c.dataDir, "data-dir", "./herald-data", "directory for the Pebble database and Raft snapshots")
	fs.StringVar(&c.nodeID, "node-id", raftstore.DefaultNodeID, "this node's id in the cluster")
	fs.StringVar(&c.raftAddr, "raft-addr", raftstore.DefaultRaftAddr, "address for Raft and node-to-node traffic, as other nodes reach it")
	fs.Func("peers", "static bootstrap of a new cluster: `id=addr,id=addr,...` (this node among them)", func(v string) error {
		peers, err := parsePeers(v)
		c.peers = peers
		return err
	})
	fs.StringVar(&c.join, "join", "", "raft `address` of a cluster member to join through, instead of bootstrapping")
	fs.DurationVar(&c.commitTimeout, "commit-timeout", raftstore.DefaultCommitTimeout, "how long a publish may wait for a leader and a commit before it fails")
	fs.DurationVar(&c.electionTimeout, "raft-election-timeout", raftstore.DefaultElectionTimeout, "Raft heartbeat and election timeout (leader lease is half)")
	fs.DurationVar(&c.snapInterval, "snapshot-interval", raftstore.DefaultSnapshotInterval, "how often (staggered up to twice this) Raft checks whether to snapshot and drop its log (at least 5ms)")
	fs.Uint64Var(&c.snapThreshold, "snapshot-threshold", raftstore.DefaultSnapshotThreshold, "log entries since the last snapshot that make a check take one (at least 1)")
	fs.Uint64Var(&c.trailingLogs, "trailing-logs", raftstore.DefaultTrailingLogs, "log entries kept after a snapshot, for followers that fall behind (at least 1)")
	fs.Func("retain", "retention `rule` PATTERN=COUNT[,SIZE][,AGE], first match wins, repeatable (default \"*=100,1h\")\ne.g. --retain 'chat:*=500,24h' --retain 'presence:*=0' --retain '*=100,10MB,1h'", func(v string) error {
		r, err := raftstore.ParseRule(v)
		c.retain = append(c.retain, r)
		return err
	})
	fs.DurationVar(&c.idleTTL, "channel-idle-ttl", raftstore.DefaultIdleTTL, "forget a channel that retains nothing this long after its last publish (0: never)")
	fs.IntVar(&c.maxClients, "max-clients", resp.DefaultMaxClients, "most RESP connections open at once")
	c.maxPayload = broker.DefaultMaxPayload
	fs.Var(&c.maxPayload, "max-payload", "largest message payload, a `size` (1048576, 1mb, 64kb; 1kb = 1024, 1k = 1000)")
	c.protoMaxBulkLen = resp.DefaultProtoMaxBulkLen
	fs.Var(&c.protoMaxBulkLen, "proto-max-bulk-len", "largest RESP bulk string a client may send, a `size`")
	c.queryBufLimit = resp.DefaultMaxQueryBuffer
	fs.Var(&c.queryBufLimit, "client-query-buffer-limit", "largest single RESP command, a `size`")
	c.outboxHard = broker.DefaultOutboxHardBytes
	fs.Var(&c.outboxHard, "outbox-hard-limit", "disconnect a subscriber with more than this `size` queued")
	c.outboxSoft = broker.DefaultOutboxSoftBytes
	fs.Var(&c.outboxSoft, "outbox-soft-limit", "disconnect a subscriber with more than this `size` queued for outbox-soft-duration")
	fs.DurationVar(&c.outboxSoftFor, "outbox-soft-duration", broker.DefaultOutboxSoftDuration, "how long a subscriber may stay over outbox-soft-limit")
	fs.IntVar(&c.outboxMaxFrames, "outbox-max-messages", broker.DefaultOutboxMaxFrames, "disconnect a subscriber with more than this many messages queued")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "serve Go's profiler (/debug/pprof/) on this `address`; empty: off. Keep it on loopback")
	fs.Func("config", "read settings from this `file` (redis.conf style: a flag name and its value per line); repeatable,\nlater files override earlier ones; the environment and flags override files", appendList(&c.configFiles))
	addSecurityFlags(fs, &c.security)
	fs.Usage = func() { usage(fs, out) }
	return fs
}

// parseConfig reads the config files (--config, or HERALD_CONFIG), the
// environment (HERALD_RESP_ADDR for --resp-addr, and so on) and the
// arguments. Each setting comes from one place only, the first of: the
// arguments, the environment, the last config file that sets it; so a
// repeatable flag given on the command line replaces the file's values
// rather than adding to them.
func parseConfig(args []string, env func(string) string, out io.Writer) (*config, error) {
	// What the arguments set, found on a scratch flag set.
	scratch := &config{}
	sfs := newFlagSet(scratch, out)
	if err := sfs.Parse(args); err != nil {
		return nil, err
	}
	if sfs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", sfs.Arg(0))
	}
	fromArgs := map[string]bool{}
	sfs.Visit(func(f *flag.Flag) { fromArgs[f.Name] = true })

	c := &config{}
	fs := newFlagSet(c, out)
	type envSetting struct{ name, key, value string }
	var envs []envSetting
	fs.VisitAll(func(f *flag.Flag) {
		key := "HERALD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := env(key); v != "" && !fromArgs[f.Name] {
			envs = append(envs, envSetting{f.Name, key, v})
		}
	})
	files := scratch.configFiles
	if !fromArgs["config"] {
		var ef config
		newFlagSet(&ef, out).Set("config", env("HERALD_CONFIG"))
		files = ef.configFiles
	}
	settings, err := readConfigFiles(files, fs)
	if err != nil {
		return nil, err
	}
	fromEnv := map[string]bool{}
	for _, e := range envs {
		fromEnv[e.name] = true
	}
	for _, s := range settings {
		if fromArgs[s.name] || fromEnv[s.name] {
			continue
		}
		if err := fs.Set(s.name, s.value); err != nil {
			return nil, fmt.Errorf("%s: %s %q: %w", s.where, s.name, s.value, err)
		}
	}
	for _, e := range envs {
		if err := fs.Set(e.name, e.value); err != nil {
			return nil, fmt.Errorf("%s=%q: %w", e.key, e.value, err)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.join != "" && len(c.peers) > 0 {
		return nil, errors.New("--join and --peers exclude each other: bootstrap with --peers, or join an existing cluster")
	}
	if err := c.security.check(); err != nil {
		return nil, err
	}
	switch {
	case c.snapInterval < 5*time.Millisecond: // hashicorp/raft's floor
		return nil, fmt.Errorf("--snapshot-interval %s: want at least 5ms", c.snapInterval)
	case c.snapThreshold < 1:
		return nil, errors.New("--snapshot-threshold 0: want at least 1")
	case c.trailingLogs < 1:
		return nil, errors.New("--trailing-logs 0: want at least 1")
	}
	if int64(c.maxPayload) > int64(c.protoMaxBulkLen) {
		c.protoMaxBulkLen = c.maxPayload
	}
	return c, nil
}

func usage(fs *flag.FlagSet, out io.Writer) {
	fmt.Fprint(out, `Herald: a Redis-compatible pub/sub broker with sequence numbers, retained
history and resume, replicated by Raft.

Usage:
  herald [flags]
  herald backup --addr HOST:PORT --out FILE    copy a running node's state to FILE
  herald restore [flags] FILE                  create a node's data directory from FILE

With no flags Herald is a single-node broker: RESP on 127.0.0.1:6379, data in
./herald-data. Every flag can also be set in the environment: --resp-addr as
HERALD_RESP_ADDR, --max-payload as HERALD_MAX_PAYLOAD, and so on, and in
config files (--config): a line "resp-addr 0.0.0.0:6379". Flags win over the
environment, the environment over files, a later file over an earlier one.

A three-node cluster, one command per node:
  herald --node-id n1 --raft-addr 127.0.0.1:7001 --resp-addr 127.0.0.1:6381 --data-dir n1 \
         --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
`)
	for _, g := range flagGroups {
		fmt.Fprintf(out, "\n%s:\n", g.title)
		for _, name := range g.names {
			f := fs.Lookup(name)
			typ, help := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if typ != "" {
				line += " " + typ
			}
			fmt.Fprintln(out, line)
			for _, l := range strings.Split(help, "\n") {
				fmt.Fprintln(out, "        "+l)
			}
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
				fmt.Fprintf(out, "        (default %s)\n", f.DefValue)
			}
		}
	}
}

func parsePeers(v string) ([]raftstore.Peer, error) {
	var peers []raftstore.Peer
	seen := map[string]bool{}
	for _, p := range strings.Split(v, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("peer %q: want id=host:port", p)
		}
		if seen[id] {
			return nil, fmt.Errorf("peer id %q given twice", id)
		}
		seen[id] = true
		peers = append(peers, raftstore.Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// size is a byte count flag in Redis's units: "1048576", "1mb", "64kb".
type size int64

func (s *size) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *size) Set(v string) error {
	n, err := raftstore.ParseSize(v)
	*s = size(n)
	return err
}

// appendList returns a flag's setter that appends the comma-separated
// items of each value to dst, blanks dropped: the flag can be repeated.
func appendList(dst *[]string) func(string) error {
	return func(v string) error {
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				*dst = append(*dst, item)
			}
		}
		return nil
	}
}
