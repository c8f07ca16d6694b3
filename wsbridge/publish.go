package wsbridge

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/herald-broker/herald/broker"
)

// servePublish publishes the request body to a channel: POST
// /publish/{channel}. It answers {"channel":..,"epoch":..,"seq":..,
// "receivers":..}. It is meant for backends without a Redis client; a
// request from a browser (one with an Origin header) is accepted only when
// Config.AllowBrowserPublish is set and the origin is allowed.
func (s *Server) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" && !(s.cfg.AllowBrowserPublish && s.allowCORS(w, r)) {
		writeJSONError(w, http.StatusForbidden, "forbidden", "publishing from a browser is disabled on this server")
		return
	}
	// The channel is the rest of the path as sent, unescaped.
	channel, err := url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), "/publish/"))
	if err != nil || channel == "" {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "POST /publish/{channel}: the channel is missing")
		return
	}
	g, ok := s.authorize(w, r)
	if !ok {
		return
	}
	if !g.canPublish(channel) {
		writeJSONError(w, http.StatusForbidden, "forbidden", "the token does not grant publishing to "+strconv.Quote(channel))
		return
	}
	limit := int64(s.broker.Config().MaxPayload)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "too_large", "payload larger than "+strconv.FormatInt(limit, 10)+" bytes")
		return
	}
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	}
	rs, err := s.broker.Publish(r.Context(), []broker.Publish{{Channel: channel, Payload: body}})
	if err != nil {
		status := http.StatusInternalServerError
		switch errorCode(err) {
		case "unavailable", "timeout":
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		case "too_large":
			status = http.StatusRequestEntityTooLarge
		case "bad_request":
			status = http.StatusBadRequest
		}
		writeJSONError(w, status, errorCode(err), err.Error())
		return
	}
	b := []byte(`{"channel":`)
	b = appendJSONString(b, channel)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendUint(b, rs[0].Epoch, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, rs[0].Seq, 10)
	b = append(b, `,"receivers":`...)
	b = strconv.AppendInt(b, int64(rs[0].Receivers), 10)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// servePublishPreflight answers a browser's CORS preflight for POST
// /publish, when browsers may publish.
func (s *Server) servePublishPreflight(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.AllowBrowserPublish || !s.allowCORS(w, r) {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	w.Header().Set("Access-Control-Allow-Methods", "POST")
	w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// errorCode names an error for clients: unavailable (no quorum), timeout
// (not confirmed: may or may not be committed), too_large, internal.
func errorCode(err error) string {
	switch {
	case errors.Is(err, broker.ErrNoQuorum):
		return "unavailable"
	case errors.Is(err, broker.ErrTimeout):
		return "timeout"
	case errors.Is(err, broker.ErrPayloadTooLarge):
		return "too_large"
	case errors.Is(err, broker.ErrChannelTooLong):
		return "bad_request"
	}
	return "internal"
}

func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	b := []byte(`{"error":`)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// allowCORS decides whether a request's origin may use this server from a
// browser: no Origin header (not a cross-origin browser request), the
// server's own host, or an origin matching Config.AllowedOrigins (as for
// WebSocket). An allowed cross-origin request gets the CORS headers that
// let the page read the response.
func (s *Server) allowCORS(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if !s.originAllowed(origin, r.Host) {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	w.Header().Add("Vary", "Origin")
	return true
}

// originAllowed mirrors coder/websocket's origin check, so WebSocket, SSE,
// long-poll and publish accept the same origins: the request's own host,
// any origin with AllowAnyOrigin, or a host (or scheme://host) matching one
// of the patterns with path.Match, case-insensitively.
func (s *Server) originAllowed(origin, host string) bool {
	if s.cfg.AllowAnyOrigin {
		return true
	}
	scheme, originHost, ok := strings.Cut(origin, "://")
	if !ok {
		return false
	}
	if strings.EqualFold(originHost, host) {
		return true
	}
	for _, p := range s.cfg.AllowedOrigins {
		target := originHost
		if strings.Contains(p, "://") {
			target = scheme + "://" + originHost
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}
