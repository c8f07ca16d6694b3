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

	security securityConfig // security.go
}

// flagGroups orders --help; every flag belongs to one group.
var flagGroups = []struct {
	title string
	names []string
}{
	{"Listening", []string{"resp-addr", "http-addr", "requirepass"}},
	{"Browsers (HTTP)", []string{"allowed-origins", "allow-any-origin", "allow-browser-publish", "max-subscriptions", "ws-ping-interval", "poll-timeout"}},
	{"Storage and cluster", []string{"data-dir", "node-id", "raft-addr", "peers", "join", "commit-timeout", "raft-election-timeout"}},
	{"Retention", []string{"retain", "channel-idle-ttl"}},
	{"Limits", []string{"max-clients", "max-payload", "proto-max-bulk-len", "client-query-buffer-limit",
		"outbox-hard-limit", "outbox-soft-limit", "outbox-soft-duration", "outbox-max-messages"}},
	{"Security", securityFlags},
	{"Logging", []string{"log-level", "log-format", "version"}},
}

func newFlagSet(c *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.respAddr, "resp-addr", "127.0.0.1:6379", "address for Redis clients (RESP2/RESP3); loopback unless you choose otherwise")
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "address for HTTP: WebSocket, SSE, long-poll, POST /publish, the demo page, health checks")
	fs.StringVar(&c.requirePass, "requirepass", "", "password clients must AUTH with (Redis's requirepass); empty: none")
	fs.Func("allowed-origins", "browser `origins` besides Herald's own host that may connect: comma-separated host patterns\n(example.com, *.example.com) or scheme://host (default: own host only)", func(v string) error {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.allowedOrigins = append(c.allowedOrigins, o)
			}
		}
		return nil
	})
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
	addSecurityFlags(fs, &c.security)
	fs.Usage = func() { usage(fs, out) }
	return fs
}

// parseConfig reads the environment (HERALD_RESP_ADDR for --resp-addr, and
// so on) and then the arguments, which win.
func parseConfig(args []string, env func(string) string, out io.Writer) (*config, error) {
	c := &config{}
	fs := newFlagSet(c, out)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "HERALD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := env(name); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if c.join != "" && len(c.peers) > 0 {
		return nil, errors.New("--join and --peers exclude each other: bootstrap with --peers, or join an existing cluster")
	}
	if err := c.security.check(); err != nil {
		return nil, err
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

With no flags Herald is a single-node broker: RESP on 127.0.0.1:6379, data in
./herald-data. Every flag can also be set in the environment: --resp-addr as
HERALD_RESP_ADDR, --max-payload as HERALD_MAX_PAYLOAD, and so on; flags win.

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
