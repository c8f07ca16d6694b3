package wsbridge

import (
	"net"
	"net/http"
	"strconv"
)

// admit counts a WebSocket, SSE or long-poll connection against
// Config.MaxConnections and Config.MaxConnectionsPerIP. It returns the
// function that releases it, or writes the refusal (503, or 429 for the
// per-IP limit, with Retry-After) and returns false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	ip := r.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	s.mu.Lock()
	switch {
	case s.open >= s.cfg.MaxConnections:
		s.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "max number of connections reached ("+strconv.Itoa(s.cfg.MaxConnections)+")", http.StatusServiceUnavailable)
		return nil, false
	case s.cfg.MaxConnectionsPerIP > 0 && s.perIP[ip] >= s.cfg.MaxConnectionsPerIP:
		s.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "max number of connections from this IP reached ("+strconv.Itoa(s.cfg.MaxConnectionsPerIP)+")", http.StatusTooManyRequests)
		return nil, false
	}
	s.open++
	s.perIP[ip]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.open--
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
		s.mu.Unlock()
	}, true
}

// checkSubs refuses, with 400 or 403, a subscription request whose channels
// are too long or not granted by its token.
func (s *Server) checkSubs(w http.ResponseWriter, g *grant, subs []subRequest) bool {
	for _, sub := range subs {
		if err := s.broker.CheckChannel(sub.channel); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return false
		}
		if !g.canSubscribe(sub.channel, false) {
			http.Error(w, "forbidden: the token does not grant channel "+strconv.Quote(sub.channel), http.StatusForbidden)
			return false
		}
	}
	return true
}

// gate lets a subscribing request (WebSocket, SSE, long-poll) in: its token
// allows it and the channels it asks for, and it fits under the connection
// limits. When ok is false the response has been written. release gives
// the connection's place back.
func (s *Server) gate(w http.ResponseWriter, r *http.Request, subs []subRequest) (g *grant, release func(), ok bool) {
	if g, ok = s.authorize(w, r); !ok || !s.checkSubs(w, g, subs) {
		return nil, nil, false
	}
	if release, ok = s.admit(w, r); !ok {
		return nil, nil, false
	}
	return g, release, true
}
