package wsbridge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/herald-broker/herald/broker"
)

// Defaults for Config.
const (
	DefaultPingInterval     = 25 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultKeepAlive        = 15 * time.Second
	DefaultPollTimeout      = 25 * time.Second
	DefaultMaxPollEvents    = 1000
	DefaultMaxSubscriptions = 1000
	DefaultMaxConnections   = 10000
)

// Config configures a Server. The zero value of each field means its
// default.
type Config struct {
	// Ready reports whether this node can serve: nil when it has a leader
	// and has applied what is committed. Default: always ready.
	Ready func() error
	// AllowedOrigins lists the browser origins, besides the server's own
	// host, that may connect: host patterns ("example.com",
	// "*.example.com") or, with a scheme, "https://app.example.com",
	// matched with path.Match. Default: the server's own host only, which
	// is also coder/websocket's default.
	AllowedOrigins []string
	// AllowAnyOrigin accepts every origin. Default false: a page on any
	// site could otherwise subscribe on its visitors' behalf.
	AllowAnyOrigin bool
	// AllowBrowserPublish lets browsers publish: the WebSocket "publish" op
	// and POST /publish from an allowed origin. Default false: browsers
	// only subscribe; backends publish over RESP or POST /publish (which
	// they send without an Origin header).
	AllowBrowserPublish bool
	// MaxSubscriptions is how many channels and patterns one connection
	// may subscribe to. Default 1000.
	MaxSubscriptions int
	// Tokens, if set, makes /ws, /sse, /poll and POST /publish require a
	// JWT (see TokenConfig). Default nil: anonymous access.
	Tokens *TokenConfig
	// MaxConnections is how many WebSocket, SSE and long-poll connections
	// may be open at once; one more is refused with 503. Default 10000.
	MaxConnections int
	// MaxConnectionsPerIP is how many of them one IP address may have open;
	// one more is refused with 429. Default 0: no limit.
	MaxConnectionsPerIP int
	// MaxRequestRate is how many requests per second a WebSocket
	// connection may send, on average (a token bucket holding one second's
	// worth); a connection over it is closed with 4004. Default 0: no
	// limit.
	MaxRequestRate float64
	// PingInterval is how often a WebSocket peer is pinged; one that does
	// not answer within PongTimeout is disconnected. Defaults 25s, 10s.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// WriteTimeout bounds each write to a client. Default 10s.
	WriteTimeout time.Duration
	// WriteSlots is how many WebSocket connections send at once; the
	// others wait their turn, in the order their messages arrived. A
	// connection whose client is not reading waits for its socket without
	// a slot. Default GOMAXPROCS: see "Connections" in docs/architecture.md.
	WriteSlots int
	// KeepAlive is how often an idle SSE stream gets a comment, so proxies
	// keep it open. Default 15s.
	KeepAlive time.Duration
	// PollTimeout is the longest a long-poll waits. Default 25s.
	PollTimeout time.Duration
	// MaxPollEvents caps the events one long-poll returns. Default 1000.
	MaxPollEvents int
	// Metrics, if set, is served at GET /metrics (Prometheus's text
	// format, from a handler the caller builds). Default: no /metrics.
	Metrics http.Handler
	// Logger receives the server's logs. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Ready == nil {
		c.Ready = func() error { return nil }
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.WriteSlots <= 0 {
		c.WriteSlots = runtime.GOMAXPROCS(0)
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.PollTimeout <= 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	if c.MaxPollEvents <= 0 {
		c.MaxPollEvents = DefaultMaxPollEvents
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server is Herald's HTTP side: WebSocket, Server-Sent Events, long-poll
// and publish for browsers and backends, the browser client and demo page,
// and health checks.
type Server struct {
	cfg     Config
	broker  *broker.Broker
	http    *http.Server
	baseCtx context.Context // WebSocket connections; canceled after Shutdown
	cancel  context.CancelFunc
	// streamCtx ends SSE streams and long-polls at the start of Shutdown.
	streamCtx  context.Context
	endStreams context.CancelFunc

	// Open connections by transport, for Stats.
	numWS, numSSE, numPoll atomic.Int64
	tokens                 *tokenAuth        // nil: anonymous access
	slots                  broker.WriteSlots // Config.WriteSlots

	mu      sync.Mutex
	open    int            // WebSocket, SSE and long-poll connections
	perIP   map[string]int // the same, by remote IP
	ws      map[*wsConn]struct{}
	closing bool          // Shutdown has begun
	wsGone  chan struct{} // closed when closing and no WebSocket connection is left
}

// New returns a server for b. It panics if cfg.Tokens is invalid: check it
// first with TokenConfig.Validate.
func New(b *broker.Broker, cfg Config) *Server {
	s := &Server{cfg: cfg.withDefaults(), broker: b, ws: map[*wsConn]struct{}{}, perIP: map[string]int{}, wsGone: make(chan struct{})}
	s.slots = broker.NewWriteSlots(s.cfg.WriteSlots)
	if cfg.Tokens != nil {
		var err error
		if s.tokens, err = newTokenAuth(cfg.Tokens); err != nil {
			panic("wsbridge: " + err.Error())
		}
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.streamCtx, s.endStreams = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("GET /sse", s.serveSSE)
	mux.HandleFunc("GET /poll", s.servePoll)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	mux.Handle("GET /", staticHandler())
	s.http = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Publish is routed before ServeMux cleans the path: empty,
			// "." and ".." segments are part of a channel name, and
			// ServeMux's redirect to the cleaned path would make a
			// client that follows it publish to another channel.
			if strings.HasPrefix(r.URL.Path, "/publish/") {
				switch r.Method {
				case http.MethodPost:
					s.servePublish(w, r)
					return
				case http.MethodOptions:
					s.servePublishPreflight(w, r)
					return
				}
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the server's HTTP handler, for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve serves HTTP on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests, closes WebSocket connections with
// 1001 (going away), after what is queued for them, and ends SSE streams,
// and waits for requests in progress and close handshakes until ctx ends.
// Clients reconnect elsewhere and resume.
func (s *Server) Shutdown(ctx context.Context) error {
	s.endStreams()
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		for c := range s.ws {
			c.closeWith(websocket.StatusGoingAway, "server shutting down")
		}
		s.noteWSGoneLocked()
	}
	s.mu.Unlock()
	err := s.http.Shutdown(ctx)
	select {
	case <-s.wsGone:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
		// Connections still open are cut: their readers wait
		// without a context that ends.
		s.mu.Lock()
		for c := range s.ws {
			c.c.CloseNow()
		}
		s.mu.Unlock()
	}
	s.cancel()
	return err
}

func (s *Server) track(c *wsConn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.ws[c] = struct{}{}
		if s.closing {
			c.closeWith(websocket.StatusGoingAway, "server shutting down")
		}
		return
	}
	delete(s.ws, c)
	if s.closing {
		s.noteWSGoneLocked()
	}
}

// noteWSGoneLocked closes wsGone once no WebSocket connection is left.
func (s *Server) noteWSGoneLocked() {
	select {
	case <-s.wsGone:
	default:
		if len(s.ws) == 0 {
			close(s.wsGone)
		}
	}
}

// streamContext returns a context for an SSE stream or long-poll: it ends
// with the request or at Shutdown.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.streamCtx, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// readLimit is the largest frame a WebSocket client may send: a publish of
// the largest payload, base64-encoded, with room for the JSON around it.
func (s *Server) readLimit() int64 {
	return int64(s.broker.Config().MaxPayload)*4/3 + 4096
}

// healthz answers 200 while the process serves at all.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// readyz answers 200 when this node has a leader and has applied what is
// committed, 503 with the reason otherwise.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.cfg.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(err.Error() + "\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

// Stats counts the open connections by transport.
type Stats struct {
	WebSocket int64 // WebSocket connections
	SSE       int64 // Server-Sent Events streams
	LongPoll  int64 // long-polls waiting
}

// Stats returns the number of open connections by transport.
func (s *Server) Stats() Stats {
	return Stats{WebSocket: s.numWS.Load(), SSE: s.numSSE.Load(), LongPoll: s.numPoll.Load()}
}
