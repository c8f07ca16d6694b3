package wsbridge

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-broker/herald/broker"
)

// TokenConfig makes browsers present a JWT on /ws, /sse, /poll and POST
// /publish: in the "token" query parameter (the browser's WebSocket and
// EventSource APIs cannot set headers) or an "Authorization: Bearer"
// header. A token's "channels" claim lists the Redis globs it may subscribe
// to and its "publish" claim those it may publish to; its "exp" claim, if
// present, is honoured on live connections.
type TokenConfig struct {
	// HMACSecret verifies HS256, HS384 and HS512 tokens.
	HMACSecret []byte
	// PublicKeys verify RS*, PS* (RSA), ES* (ECDSA) and EdDSA (Ed25519)
	// tokens; LoadPublicKeys reads them from PEM files.
	PublicKeys []crypto.PublicKey
	// Issuer and Audience, if set, must match the token's "iss" and "aud".
	Issuer, Audience string
	// RequireExpiry refuses tokens without "exp". Default false.
	RequireExpiry bool
	// Leeway tolerates clock skew on "exp", "nbf" and "iat". Default 0.
	Leeway time.Duration
}

// claims is a Herald token's payload.
type claims struct {
	jwt.RegisteredClaims
	// Channels are the globs the bearer may subscribe to.
	Channels []string `json:"channels"`
	// Publish are the globs the bearer may publish to (where the server
	// lets browsers publish).
	Publish []string `json:"publish"`
}

// grant is what a request may do. A nil *grant is anonymous access, when
// no TokenConfig is set: every channel, subject to the server's other
// settings.
type grant struct {
	subscribe, publish []string
	expires            time.Time // zero: never
}

// canSubscribe reports whether g covers a channel or, with pattern, a
// pattern subscription. A pattern is covered only by the same pattern
// (Redis's ACL rule): "room:*" in the token does not grant "room:1*".
func (g *grant) canSubscribe(name string, pattern bool) bool {
	if g == nil {
		return true
	}
	if pattern {
		return slices.Contains(g.subscribe, name)
	}
	return matchAny(g.subscribe, name)
}

// canPublish reports whether g covers publishing to channel.
func (g *grant) canPublish(channel string) bool {
	return g == nil || matchAny(g.publish, channel)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if broker.Match(p, name) {
			return true
		}
	}
	return false
}

// tokenAuth verifies tokens against a TokenConfig.
type tokenAuth struct {
	parser *jwt.Parser
	keys   jwt.Keyfunc
}

func newTokenAuth(cfg *TokenConfig) (*tokenAuth, error) {
	var methods []string
	var keys []jwt.VerificationKey
	if len(cfg.HMACSecret) > 0 {
		methods = append(methods, "HS256", "HS384", "HS512")
		keys = append(keys, cfg.HMACSecret)
	}
	for _, k := range cfg.PublicKeys {
		switch k.(type) {
		case *rsa.PublicKey:
			methods = append(methods, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
		case *ecdsa.PublicKey:
			methods = append(methods, "ES256", "ES384", "ES512")
		case ed25519.PublicKey:
			methods = append(methods, "EdDSA")
		default:
			return nil, fmt.Errorf("unsupported public key type %T", k)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("token auth needs an HMAC secret or a public key")
	}
	slices.Sort(methods)
	methods = slices.Compact(methods)
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(cfg.Leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.RequireExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	set := jwt.VerificationKeySet{Keys: keys}
	return &tokenAuth{
		parser: jwt.NewParser(opts...),
		keys:   func(*jwt.Token) (any, error) { return set, nil },
	}, nil
}

// verify checks a token and returns what it grants.
func (a *tokenAuth) verify(token string) (*grant, error) {
	var c claims
	if _, err := a.parser.ParseWithClaims(token, &c, a.keys); err != nil {
		return nil, err
	}
	g := &grant{subscribe: c.Channels, publish: c.Publish}
	if c.ExpiresAt != nil {
		g.expires = c.ExpiresAt.Time
	}
	return g, nil
}

// errNoToken means a request carried no token where one is required.
var errNoToken = errors.New("a token is required: ?token=JWT or Authorization: Bearer JWT")

// authorize returns what a request may do: nil (anything) without token
// auth, or the grant of its token. On error it has written a 401.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (*grant, bool) {
	if s.tokens == nil {
		return nil, true
	}
	token := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); token == "" && len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		token = strings.TrimSpace(h[7:])
	}
	if token == "" {
		s.unauthorized(w, r, errNoToken)
		return nil, false
	}
	g, err := s.tokens.verify(token)
	if err != nil {
		s.unauthorized(w, r, err)
		return nil, false
	}
	return g, true
}

// unauthorized writes a 401 with RFC 6750's challenge.
func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, err error) {
	s.cfg.Logger.Info("token refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
	code := "invalid_token"
	if errors.Is(err, errNoToken) {
		code = "invalid_request"
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="herald", error=%q, error_description=%q`, code, err.Error()))
	if strings.HasPrefix(r.URL.Path, "/publish/") {
		writeJSONError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	http.Error(w, "unauthorized: "+err.Error(), http.StatusUnauthorized)
}

// LoadPublicKeys reads the public keys in a PEM file: "PUBLIC KEY" (PKIX:
// RSA, ECDSA, Ed25519), "RSA PUBLIC KEY" (PKCS #1) or "CERTIFICATE" blocks,
// any number of them.
func LoadPublicKeys(path string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public keys: %w", err)
	}
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var k crypto.PublicKey
		switch block.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				k = cert.PublicKey
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: parse %s: %w", path, block.Type, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM public key or certificate found", path)
	}
	return keys, nil
}

// Validate reports whether c can verify tokens.
func (c *TokenConfig) Validate() error {
	_, err := newTokenAuth(c)
	return err
}
