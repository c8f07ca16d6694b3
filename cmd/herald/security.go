package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/resp"
	"github.com/herald-broker/herald/wsbridge"
)

// securityConfig is what the Security flags set: users, tokens, TLS and
// the limits that protect Herald from hostile or broken peers.
type securityConfig struct {
	aclFile string

	jwtSecret     string
	jwtSecretFile string
	jwtPublicKeys string
	jwtIssuer     string
	jwtAudience   string
	jwtRequireExp bool

	tlsCert        string
	tlsKey         string
	tlsCA          string
	tlsAuthClients string

	maxChannelLen   int
	maxClientsPerIP int
	maxHTTPConns    int
	maxRequestRate  float64
}

// securityFlags is the Security group of --help.
var securityFlags = []string{
	"acl-file",
	"jwt-secret", "jwt-secret-file", "jwt-public-keys", "jwt-issuer", "jwt-audience", "jwt-require-exp",
	"tls-cert-file", "tls-key-file", "tls-ca-cert-file", "tls-auth-clients",
	"max-channel-len", "max-clients-per-ip", "max-http-connections", "max-request-rate",
}

func addSecurityFlags(fs *flag.FlagSet, c *securityConfig) {
	fs.StringVar(&c.aclFile, "acl-file", "", "Redis-style ACL `file` of users (user NAME on >PASS &PATTERN +@all ...); see docs/operations.md")
	fs.StringVar(&c.jwtSecret, "jwt-secret", "", "HMAC `secret` for browser tokens (HS256/384/512); prefer --jwt-secret-file or HERALD_JWT_SECRET")
	fs.StringVar(&c.jwtSecretFile, "jwt-secret-file", "", "`file` holding the HMAC secret for browser tokens (trailing newline ignored)")
	fs.StringVar(&c.jwtPublicKeys, "jwt-public-keys", "", "PEM `file` of RSA, ECDSA or Ed25519 public keys or certificates for browser tokens")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "required \"iss\" of browser tokens (default: not checked)")
	fs.StringVar(&c.jwtAudience, "jwt-audience", "", "required \"aud\" of browser tokens (default: not checked)")
	fs.BoolVar(&c.jwtRequireExp, "jwt-require-exp", false, "refuse browser tokens without \"exp\"")
	fs.StringVar(&c.tlsCert, "tls-cert-file", "", "PEM certificate `file`: TLS on the RESP, HTTP and Raft ports (with --tls-key-file)")
	fs.StringVar(&c.tlsKey, "tls-key-file", "", "PEM private key `file` of --tls-cert-file")
	fs.StringVar(&c.tlsCA, "tls-ca-cert-file", "", "PEM CA `file`: Raft peers must present a certificate it signed (mutual TLS);\nalso verifies RESP client certificates (--tls-auth-clients)")
	fs.StringVar(&c.tlsAuthClients, "tls-auth-clients", "no", "RESP client certificates: no, optional (verified if sent) or yes (required)")
	fs.IntVar(&c.maxChannelLen, "max-channel-len", broker.DefaultMaxChannelLen, "longest channel name or pattern, in bytes, on every endpoint")
	fs.IntVar(&c.maxClientsPerIP, "max-clients-per-ip", 0, "most RESP connections, and most WebSocket/SSE/long-poll connections, from one IP (0: no limit)")
	fs.IntVar(&c.maxHTTPConns, "max-http-connections", wsbridge.DefaultMaxConnections, "most WebSocket, SSE and long-poll connections open at once")
	fs.Float64Var(&c.maxRequestRate, "max-request-rate", 0, "most commands (RESP) or requests (WebSocket) per second per connection,\nas a token bucket of one second's worth (0: no limit)")
}

// check validates the Security flags together.
func (c *securityConfig) check() error {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	switch c.tlsAuthClients {
	case "no", "optional", "yes":
	default:
		return fmt.Errorf("--tls-auth-clients %q: want no, optional or yes", c.tlsAuthClients)
	}
	if c.tlsAuthClients != "no" && c.tlsCA == "" {
		return errors.New("--tls-auth-clients needs --tls-ca-cert-file")
	}
	if c.tlsCA != "" && c.tlsCert == "" {
		return errors.New("--tls-ca-cert-file needs --tls-cert-file and --tls-key-file")
	}
	if c.jwtSecret != "" && c.jwtSecretFile != "" {
		return errors.New("--jwt-secret and --jwt-secret-file exclude each other")
	}
	if c.maxRequestRate < 0 || c.maxClientsPerIP < 0 || c.maxChannelLen < 1 || c.maxHTTPConns < 1 {
		return errors.New("limits must be positive (0 for no limit where allowed)")
	}
	return nil
}

// acl loads --acl-file, or returns nil without one.
func (c *securityConfig) acl(requirePass string) (*resp.ACL, error) {
	if c.aclFile == "" {
		return nil, nil
	}
	a, err := resp.LoadACLFile(c.aclFile)
	if err != nil {
		return nil, err
	}
	if requirePass != "" && a.DefinesDefault() {
		return nil, errors.New("--requirepass and a 'user default' line in --acl-file exclude each other: set the default user's password in the file")
	}
	return a, nil
}

// tokens returns the browsers' token configuration, or nil for anonymous
// access.
func (c *securityConfig) tokens() (*wsbridge.TokenConfig, error) {
	secret := c.jwtSecret
	if c.jwtSecretFile != "" {
		b, err := os.ReadFile(c.jwtSecretFile)
		if err != nil {
			return nil, fmt.Errorf("--jwt-secret-file: %w", err)
		}
		secret = strings.TrimRight(string(b), "\r\n")
		if secret == "" {
			return nil, fmt.Errorf("--jwt-secret-file %s is empty", c.jwtSecretFile)
		}
	}
	if secret == "" && c.jwtPublicKeys == "" {
		return nil, nil
	}
	tc := &wsbridge.TokenConfig{Issuer: c.jwtIssuer, Audience: c.jwtAudience, RequireExpiry: c.jwtRequireExp,
		Leeway: 5 * time.Second}
	if secret != "" {
		tc.HMACSecret = []byte(secret)
	}
	if c.jwtPublicKeys != "" {
		keys, err := wsbridge.LoadPublicKeys(c.jwtPublicKeys)
		if err != nil {
			return nil, err
		}
		tc.PublicKeys = keys
	}
	return tc, tc.Validate()
}

// tlsConfigs holds the TLS configuration of each listener; nil fields mean
// plain TCP.
type tlsConfigs struct {
	resp, http, raft *tls.Config
}

func (c *securityConfig) tlsConfigs() (tlsConfigs, error) {
	var out tlsConfigs
	if c.tlsCert == "" {
		return out, nil
	}
	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return out, fmt.Errorf("load TLS certificate: %w", err)
	}
	base := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	out.http = base.Clone()
	out.resp = base.Clone()
	if c.tlsCA == "" {
		return out, nil
	}
	pem, err := os.ReadFile(c.tlsCA)
	if err != nil {
		return out, fmt.Errorf("read --tls-ca-cert-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return out, fmt.Errorf("--tls-ca-cert-file %s: no PEM certificate", c.tlsCA)
	}
	out.raft = raftstore.PeerTLSConfig(cert, pool)
	out.resp.ClientCAs = pool
	switch c.tlsAuthClients {
	case "yes":
		out.resp.ClientAuth = tls.RequireAndVerifyClientCert
	case "optional":
		out.resp.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return out, nil
}

// listen listens on addr, with TLS when cfg is set.
func listen(addr string, cfg *tls.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || cfg == nil {
		return ln, err
	}
	return tls.NewListener(ln, cfg), nil
}
