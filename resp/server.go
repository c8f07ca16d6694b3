package resp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-broker/herald/broker"
)

// Defaults for Config.
const (
	DefaultMaxClients      = 10000
	DefaultProtoMaxBulkLen = 8 << 20
	DefaultMaxQueryBuffer  = 64 << 20
	DefaultWriteTimeout    = 30 * time.Second
)

// Config configures a Server. The zero value of each field means its
// default.
type Config struct {
	// RequirePass, if set, is the password of the default user: clients
	// must AUTH (or HELLO AUTH) before other commands. Default: none.
	RequirePass string
	// ACL, if set, holds the users (LoadACLFile); RequirePass, if also
	// set, replaces the default user's passwords. Default: the default
	// user alone, with every command and channel.
	ACL *ACL
	// MaxClients is how many connections may be open at once; one more is
	// refused with "ERR max number of clients reached". Default 10000.
	MaxClients int
	// MaxClientsPerIP is how many connections one IP address may have open
	// at once; one more is refused with "ERR max number of clients from
	// this IP reached". Default 0: no limit.
	MaxClientsPerIP int
	// MaxRequestRate is how many commands per second one connection may
	// send, on average (a token bucket holding one second's worth);
	// commands beyond it are refused, not run, with "ERR max request rate
	// exceeded". Default 0: no limit.
	MaxRequestRate float64
	// ProtoMaxBulkLen is the largest bulk string a client may send; a larger
	// length closes the connection with "Protocol error: invalid bulk
	// length". Default 8 MiB.
	ProtoMaxBulkLen int
	// MaxQueryBuffer is the largest single command, in bytes; a client
	// sending a larger one is disconnected. Default 64 MiB.
	MaxQueryBuffer int
	// WriteTimeout bounds each write to a client; a client that accepts no
	// data for this long is disconnected. Default 30s.
	WriteTimeout time.Duration
	// WriteSlots is how many subscribers' connections write at once; the
	// others wait their turn, in the order their messages arrived. A
	// connection whose client is not reading waits for its socket without
	// a slot. Default GOMAXPROCS: see "Connections" in
	// docs/architecture.md.
	WriteSlots int
	// Cluster, if set, serves the HERALD.CLUSTER commands.
	Cluster Cluster
	// Version is Herald's version, shown by INFO and HELLO.
	Version string
	// LogLevel, if set, is the level CONFIG SET loglevel changes (and
	// CONFIG GET loglevel shows). Default: loglevel is not settable.
	LogLevel *slog.LevelVar
	// Backup, if set, serves HERALD.BACKUP: it returns a consistent copy
	// of the node's state. Default: HERALD.BACKUP answers an error.
	Backup func(ctx context.Context) (Backup, error)
	// InfoFields, if set, gives the lines of INFO's metrics section, name
	// and value (the numbers /metrics exports). Default: an empty section.
	InfoFields func() [][2]string
	// Logger receives the server's logs. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.ProtoMaxBulkLen <= 0 {
		c.ProtoMaxBulkLen = DefaultProtoMaxBulkLen
	}
	if c.MaxQueryBuffer <= 0 {
		c.MaxQueryBuffer = DefaultMaxQueryBuffer
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.WriteSlots <= 0 {
		c.WriteSlots = runtime.GOMAXPROCS(0)
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server serves the Redis protocol: each connection becomes a broker client.
type Server struct {
	cfg     Config
	acl     *ACL
	broker  *broker.Broker
	started time.Time

	mu        sync.Mutex
	conns     map[uint64]*conn
	perIP     map[string]int // open connections by remote IP
	listeners map[net.Listener]struct{}
	closing   bool
	wg        sync.WaitGroup // one per connection

	slots broker.WriteSlots

	accepted atomic.Uint64 // total_connections_received
	rejected atomic.Uint64 // rejected_connections
	commands atomic.Uint64 // total_commands_processed
	errors   atomic.Uint64 // total_error_replies
}

// New returns a server for b.
func New(b *broker.Broker, cfg Config) *Server {
	cfg = cfg.withDefaults()
	acl := cfg.ACL
	if acl == nil {
		acl = newACL(cfg.RequirePass)
	} else if cfg.RequirePass != "" {
		acl.SetDefaultPassword(cfg.RequirePass)
	}
	return &Server{
		cfg:       cfg,
		acl:       acl,
		broker:    b,
		started:   time.Now(),
		conns:     make(map[uint64]*conn),
		perIP:     make(map[string]int),
		listeners: make(map[net.Listener]struct{}),
		slots:     broker.NewWriteSlots(cfg.WriteSlots),
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("resp: server closed")

// Serve accepts connections on ln until Shutdown, and returns
// ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAcceptError(err) {
				// Out of file descriptors and the like: back off, as
				// net/http does, instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.cfg.Logger.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.accepted.Add(1)
		if !s.admit(nc) {
			continue
		}
	}
}

// admit registers a new connection and starts serving it, or refuses it
// when the server is full or closing.
func (s *Server) admit(nc net.Conn) bool {
	ip := remoteIP(nc)
	s.mu.Lock()
	refusal := ""
	switch {
	case s.closing:
	case len(s.conns) >= s.cfg.MaxClients:
		refusal = "-ERR max number of clients reached\r\n"
	case s.cfg.MaxClientsPerIP > 0 && s.perIP[ip] >= s.cfg.MaxClientsPerIP:
		refusal = "-ERR max number of clients from this IP reached\r\n"
	}
	if s.closing || refusal != "" {
		s.mu.Unlock()
		s.rejected.Add(1)
		if refusal != "" {
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write([]byte(refusal))
		}
		nc.Close()
		return false
	}
	c := newConn(s, nc)
	c.ip = ip
	s.conns[c.id] = c
	s.perIP[ip]++
	s.wg.Add(1)
	s.mu.Unlock()
	go c.serve()
	return true
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c.id)
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting connections, lets every connection finish the
// command it is running and write what is queued for it, closes them, and
// waits until they are gone or ctx ends, when it closes the rest at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.closeGracefully()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			c.nc.Close()
		}
		<-done
		return ctx.Err()
	}
}

// connections returns the open connections, by id.
func (s *Server) connections() []*conn {
	s.mu.Lock()
	out := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// NumConns returns the number of open connections.
func (s *Server) NumConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// remoteIP returns the IP address of a connection's peer (its whole remote
// address when that has no port).
func remoteIP(nc net.Conn) string {
	addr := nc.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

func isTemporaryAcceptError(err error) bool {
	type temporary interface{ Temporary() bool }
	var t temporary
	return errors.As(err, &t) && t.Temporary()
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections int    // open connections
	Accepted    uint64 // connections accepted since start (total_connections_received)
	Rejected    uint64 // connections refused: max clients (rejected_connections)
	Commands    uint64 // commands run (total_commands_processed)
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{Connections: s.NumConns(), Accepted: s.accepted.Load(), Rejected: s.rejected.Load(), Commands: s.commands.Load()}
}
