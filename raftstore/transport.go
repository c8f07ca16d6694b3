package raftstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Every connection to a node's Raft address starts with one byte that says
// what it carries, so Raft and Herald's own node-to-node calls share one
// port (one address to configure, firewall, and cut in a partition test).
const (
	streamRaft    byte = 'R'
	streamForward byte = 'F'
)

// routeTimeout bounds how long a new connection may take to say what it is.
const routeTimeout = 5 * time.Second

// mux accepts connections on the Raft address and routes each by its first
// byte: Raft streams to the raft transport, forward calls to the forward
// server.
type mux struct {
	ln        net.Listener
	raftConns chan net.Conn
	forward   func(c net.Conn, member bool)
	logger    *slog.Logger
	tls       *tls.Config // nil: plain TCP; see PeerTLSConfig
	// known reports whether a TLS peer's certificate is a member's; nil:
	// every peer with a certificate from the CA is.
	known func(*x509.Certificate) bool

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

func newMux(ln net.Listener, forward func(c net.Conn, member bool), tlsCfg *tls.Config, known func(*x509.Certificate) bool, logger *slog.Logger) *mux {
	m := &mux{ln: ln, raftConns: make(chan net.Conn), forward: forward, tls: tlsCfg, known: known, logger: logger, closed: make(chan struct{})}
	m.wg.Add(1)
	go m.serve()
	return m
}

func (m *mux) serve() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			m.logger.Error("raft listener failed", "err", err)
			return
		}
		go m.route(c)
	}
}

func (m *mux) route(c net.Conn) {
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(routeTimeout))
	member := true
	if m.tls != nil {
		// The handshake, within routeTimeout, admits only peers with a
		// certificate from the cluster's CA.
		tc := tls.Server(c, m.tls)
		if err := tc.Handshake(); err != nil {
			m.logger.Warn("refused a connection on the raft port: TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		c = tc
		// And a member of the cluster is one whose certificate is
		// valid for a member's address.
		if certs := tc.ConnectionState().PeerCertificates; m.known != nil && len(certs) > 0 {
			member = m.known(certs[0])
		}
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	switch b[0] {
	case streamRaft:
		if !member {
			m.logger.Warn("refused Raft traffic from a peer that is not a member of the cluster", "remote", c.RemoteAddr().String())
			c.Close()
			return
		}
		select {
		case m.raftConns <- c:
		case <-m.closed:
			c.Close()
		}
	case streamForward:
		m.forward(c, member)
	default:
		m.logger.Warn("closing connection of unknown kind on the raft port", "remote", c.RemoteAddr().String())
		c.Close()
	}
}

func (m *mux) close() {
	m.closeOnce.Do(func() {
		close(m.closed)
		m.ln.Close()
	})
	m.wg.Wait()
}

// raftLayer is the raft.StreamLayer over the mux.
type raftLayer struct{ m *mux }

// Accept implements net.Listener.
func (l raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftConns:
		return c, nil
	case <-l.m.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener. The mux is closed by the Store.
func (l raftLayer) Close() error { return nil }

// Addr implements net.Listener.
func (l raftLayer) Addr() net.Addr { return l.m.ln.Addr() }

// Dial implements raft.StreamLayer.
func (l raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialStream(context.Background(), sourceIP(l.m.ln.Addr()), string(addr), streamRaft, timeout, l.m.tls)
}

// sourceIP returns the IP a node's outgoing node-to-node connections come
// from: the IP its Raft address listens on when that is one address, nil
// (the kernel's choice) when it listens on all of them. On a host with
// several addresses, peers and firewalls then see a node's traffic come
// from the address it is known by; on one machine, nodes on 127.0.0.11,
// 127.0.0.12, ... can be told apart by a fault-injecting proxy.
func sourceIP(a net.Addr) net.IP {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.IP == nil || ta.IP.IsUnspecified() {
		return nil
	}
	return ta.IP
}

// dialStream connects to a node's Raft address from the IP from (nil: any),
// over TLS when tlsCfg is set, and says what the connection carries.
func dialStream(ctx context.Context, from net.IP, addr string, kind byte, timeout time.Duration, tlsCfg *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if from != nil {
		d.LocalAddr = &net.TCPAddr{IP: from}
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		if c, err = tlsHandshake(ctx, c, addr, timeout, tlsCfg); err != nil {
			return nil, err
		}
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// newHCLogger returns an hclog.Logger for hashicorp/raft that writes to l,
// keeping each line's level and fields.
func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.Info,
		JSONFormat: true,
		Output:     hclogWriter{l},
	})
}

// hclogWriter turns hclog's JSON lines into slog records.
type hclogWriter struct{ l *slog.Logger }

func (w hclogWriter) Write(p []byte) (int, error) {
	var rec map[string]any
	if err := json.Unmarshal(p, &rec); err != nil {
		w.l.Info(string(p))
		return len(p), nil
	}
	level := slog.LevelInfo
	switch rec["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := rec["@message"].(string)
	attrs := make([]any, 0, 2*len(rec))
	for k, v := range rec {
		switch k {
		case "@level", "@message", "@timestamp", "@caller":
			continue
		case "@module":
			k = "module"
		}
		attrs = append(attrs, k, v)
	}
	w.l.Log(context.Background(), level, msg, attrs...)
	return len(p), nil
}
