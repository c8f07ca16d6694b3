package resp

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
)

// infoSection writes one INFO section's lines.
type infoSection struct {
	name string
	fill func(s *Server, w *strings.Builder)
}

var infoSections = []infoSection{
	{"server", (*Server).infoServer},
	{"clients", (*Server).infoClients},
	{"memory", (*Server).infoMemory},
	{"persistence", (*Server).infoPersistence},
	{"stats", (*Server).infoStats},
	{"replication", (*Server).infoReplication},
	{"cluster", (*Server).infoCluster},
	{"keyspace", func(*Server, *strings.Builder) {}},
	{"herald", (*Server).infoHerald},
	{"metrics", (*Server).infoMetrics},
}

// cmdInfo implements INFO [section ...]: no argument, "default", "all" and
// "everything" select every section; unknown sections are skipped, as in
// Redis.
func cmdInfo(c *conn, args [][]byte) error {
	want := map[string]bool{}
	all := len(args) == 1
	for _, a := range args[1:] {
		switch s := lower(a); s {
		case "default", "all", "everything":
			all = true
		default:
			want[s] = true
		}
	}
	var b strings.Builder
	for _, sec := range infoSections {
		if !all && !want[sec.name] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(sec.name[:1]) + sec.name[1:] + "\r\n")
		sec.fill(c.srv, &b)
	}
	c.rep.verbatim(b.String())
	return nil
}

func field(w *strings.Builder, name string, value any) {
	fmt.Fprintf(w, "%s:%v\r\n", name, value)
}

func (s *Server) infoServer(w *strings.Builder) {
	up := time.Since(s.started)
	exe, _ := os.Executable()
	field(w, "redis_version", RedisVersion)
	field(w, "redis_mode", "standalone")
	field(w, "herald_version", s.cfg.Version)
	field(w, "os", runtime.GOOS+" "+runtime.GOARCH)
	field(w, "arch_bits", strconv.IntSize)
	field(w, "go_version", runtime.Version())
	field(w, "process_id", os.Getpid())
	field(w, "server_time_usec", time.Now().UnixMicro())
	field(w, "uptime_in_seconds", int64(up.Seconds()))
	field(w, "uptime_in_days", int64(up.Hours()/24))
	field(w, "executable", exe)
}

func (s *Server) infoClients(w *strings.Builder) {
	pubsub := 0
	for _, c := range s.connections() {
		if c.subscribed() {
			pubsub++
		}
	}
	field(w, "connected_clients", s.NumConns())
	field(w, "maxclients", s.cfg.MaxClients)
	field(w, "blocked_clients", 0)
	field(w, "pubsub_clients", pubsub)
}

func (s *Server) infoMemory(w *strings.Builder) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	field(w, "used_memory", m.HeapAlloc)
	field(w, "used_memory_human", humanBytes(m.HeapAlloc))
	field(w, "used_memory_rss", m.Sys)
	field(w, "used_memory_rss_human", humanBytes(m.Sys))
	field(w, "mem_allocator", "go")
}

func (s *Server) infoPersistence(w *strings.Builder) {
	// Clients such as ioredis wait while loading:1; Herald is ready to
	// serve as soon as it accepts connections.
	field(w, "loading", 0)
	field(w, "rdb_changes_since_last_save", 0)
	field(w, "aof_enabled", 0)
}

func (s *Server) infoStats(w *strings.Builder) {
	st := s.broker.Stats()
	field(w, "total_connections_received", s.accepted.Load())
	field(w, "total_commands_processed", s.commands.Load())
	field(w, "rejected_connections", s.rejected.Load())
	field(w, "pubsub_channels", st.Channels)
	field(w, "pubsub_patterns", st.Patterns)
	field(w, "pubsubshard_channels", st.ShardChannels)
	field(w, "client_output_buffer_limit_disconnections", st.SlowDisconnect)
	field(w, "total_messages_published", st.Published)
	field(w, "total_messages_delivered", st.Delivered)
}

func (s *Server) infoReplication(w *strings.Builder) {
	field(w, "role", "master")
	field(w, "connected_slaves", 0)
}

func (s *Server) infoCluster(w *strings.Builder) {
	// Redis Cluster is not enabled: Herald's own cluster is Raft, shown
	// in the Herald section.
	field(w, "cluster_enabled", 0)
}

func (s *Server) infoHerald(w *strings.Builder) {
	if s.cfg.Cluster == nil {
		return
	}
	st := s.cfg.Cluster.Status()
	field(w, "node_id", st.NodeID)
	field(w, "raft_state", st.State)
	field(w, "raft_leader_id", st.LeaderID)
	field(w, "raft_term", st.Term)
	field(w, "raft_commit_index", st.CommitIndex)
	field(w, "raft_applied_index", st.AppliedIndex)
	field(w, "raft_last_log_index", st.LastLogIndex)
	field(w, "raft_nodes", len(st.Nodes))
}

// infoMetrics writes the fields Config.InfoFields gives: the numbers
// /metrics exports.
func (s *Server) infoMetrics(w *strings.Builder) {
	if s.cfg.InfoFields == nil {
		return
	}
	for _, kv := range s.cfg.InfoFields() {
		field(w, kv[0], kv[1])
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f%c", float64(n)/float64(div), "KMGTPE"[exp])
}

// configValues returns the parameters CONFIG GET reports: those clients and
// tools ask about (redis-benchmark reads save and appendonly), with Herald's
// values where it has one.
func (s *Server) configValues() [][2]string {
	o := s.broker.Config().Outbox
	return [][2]string{
		{"appendonly", "no"},
		{"client-output-buffer-limit", fmt.Sprintf("normal 0 0 0 slave 0 0 0 pubsub %d %d %d",
			o.HardBytes, o.SoftBytes, int(o.SoftDuration.Seconds()))},
		{"databases", "16"},
		{"loglevel", s.logLevel()},
		{"maxclients", strconv.Itoa(s.cfg.MaxClients)},
		{"proto-max-bulk-len", strconv.Itoa(s.cfg.ProtoMaxBulkLen)},
		{"client-query-buffer-limit", strconv.Itoa(s.cfg.MaxQueryBuffer)},
		{"save", ""},
		{"timeout", "0"},
	}
}

func (s *Server) logLevel() string {
	if s.cfg.LogLevel == nil {
		return "notice"
	}
	return logLevelName(s.cfg.LogLevel.Level())
}

func cmdConfigGet(c *conn, args [][]byte) error {
	var out [][2]string
	for _, kv := range c.srv.configValues() {
		for _, p := range args[2:] {
			if broker.Match(strings.ToLower(string(p)), kv[0]) {
				out = append(out, kv)
				break
			}
		}
	}
	c.rep.mapHeader(len(out))
	for _, kv := range out {
		c.rep.bulkString(kv[0])
		c.rep.bulkString(kv[1])
	}
	return nil
}

// cmdConfigSet implements CONFIG SET for the one parameter that changes at
// run time, loglevel; everything else is set by flags, environment and
// config file. As in Redis, the pairs are checked before any is applied.
func cmdConfigSet(c *conn, args [][]byte) error {
	if len(args)%2 != 0 {
		c.rep.err(fmt.Sprintf("ERR Unknown option or number of arguments for CONFIG SET - '%s'", args[2]))
		return nil
	}
	var level slog.Level
	for i := 2; i < len(args); i += 2 {
		name := lower(args[i])
		if name != "loglevel" || c.srv.cfg.LogLevel == nil {
			c.rep.err(fmt.Sprintf("ERR Unknown option or number of arguments for CONFIG SET - '%s'", args[i]))
			return nil
		}
		l, ok := parseLogLevel(string(args[i+1]))
		if !ok {
			c.rep.err(fmt.Sprintf("ERR CONFIG SET failed (possibly related to argument '%s') - argument(s) must be one of the following: debug, verbose, notice, warning, nothing", name))
			return nil
		}
		level = l
	}
	old := c.srv.cfg.LogLevel.Level()
	c.srv.cfg.LogLevel.Set(level)
	c.srv.cfg.Logger.Warn("log level changed", "client", c.id, "remote", c.addr, "from", logLevelName(old), "to", logLevelName(level))
	c.rep.ok()
	return nil
}

func cmdConfigResetStat(c *conn, args [][]byte) error {
	c.rep.ok()
	return nil
}

func cmdConfigHelp(c *conn, args [][]byte) error {
	writeHelp(&c.rep, "CONFIG",
		"GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
		"SET <directive> <value>", "    Set loglevel (debug, verbose, notice, warning, nothing); the rest is set by flags, environment and file.",
		"RESETSTAT", "    Accepted for compatibility.")
	return nil
}

func cmdTime(c *conn, args [][]byte) error {
	now := time.Now()
	c.rep.array(2)
	c.rep.bulkString(strconv.FormatInt(now.Unix(), 10))
	c.rep.bulkString(strconv.FormatInt(int64(now.Nanosecond()/1000), 10))
	return nil
}

func cmdClusterDisabled(c *conn, args [][]byte) error {
	c.rep.err("ERR This instance has cluster support disabled")
	return nil
}
