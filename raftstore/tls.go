package raftstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"time"
)

// PeerTLSConfig returns the mutual TLS configuration of a node: it presents
// cert to its peers, both when it dials and when it is dialed, and accepts
// only peers whose certificate the cluster's CA signed. A node's
// certificate must name the host of its Raft address (a DNS name or an IP
// address in its subject alternative names) and allow both server and
// client authentication.
func PeerTLSConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// tlsHandshake runs the client side of a peer connection's handshake,
// verifying the peer's certificate against addr's host, within timeout.
func tlsHandshake(ctx context.Context, c net.Conn, addr string, timeout time.Duration, cfg *tls.Config) (net.Conn, error) {
	cfg = cfg.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}
