package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-broker/herald/internal/syncio"
	"github.com/herald-broker/herald/internal/testcert"
	"github.com/redis/go-redis/v9"
)

func TestSecurityFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert-file", "c.pem"}, "--tls-cert-file and --tls-key-file go together"},
		{[]string{"--tls-cert-file", "c", "--tls-key-file", "k", "--tls-auth-clients", "yes"}, "--tls-auth-clients needs --tls-ca-cert-file"},
		{[]string{"--tls-auth-clients", "maybe"}, `--tls-auth-clients "maybe": want no, optional or yes`},
		{[]string{"--tls-ca-cert-file", "ca"}, "--tls-ca-cert-file needs --tls-cert-file and --tls-key-file"},
		{[]string{"--jwt-secret", "a", "--jwt-secret-file", "f"}, "--jwt-secret and --jwt-secret-file exclude each other"},
		{[]string{"--max-request-rate", "-1"}, "limits must be positive (0 for no limit where allowed)"},
	} {
		_, err := parseConfig(tc.args, func(string) string { return "" }, io.Discard)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
	c, err := parseConfig(nil, func(k string) string {
		return map[string]string{"HERALD_MAX_CHANNEL_LEN": "77", "HERALD_MAX_REQUEST_RATE": "12.5", "HERALD_ACL_FILE": "/x"}[k]
	}, io.Discard)
	if err != nil || c.security.maxChannelLen != 77 || c.security.maxRequestRate != 12.5 || c.security.aclFile != "/x" {
		t.Fatalf("environment: %+v, %v", c, err)
	}
}

// TestSecurityEndToEnd runs herald with TLS on every port, an ACL file and
// a token secret, and uses it as users would: redis-cli --tls, go-redis
// with TLS and a user, curl-like HTTPS, and a WebSocket over wss with a
// token.
func TestSecurityEndToEnd(t *testing.T) {
	ca := testcert.NewCA(t, "herald test CA")
	caFile, certFile, keyFile := ca.Files(t, ca.Issue(t, "herald"))
	dir := t.TempDir()
	aclFile := filepath.Join(dir, "users.acl")
	secretFile := filepath.Join(dir, "jwt.secret")
	os.WriteFile(aclFile, []byte("user alice on >wonderland &room:* +@all\n"), 0o600)
	os.WriteFile(secretFile, []byte("a-secret-for-browser-tokens-1234\n"), 0o600)
	respAddr, httpAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(heraldBin, "--resp-addr", respAddr, "--http-addr", httpAddr, "--raft-addr", freeAddr(t),
		"--data-dir", filepath.Join(dir, "data"), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--acl-file", aclFile, "--jwt-secret-file", secretFile)
	var logMu sync.Mutex
	var logBuf strings.Builder
	log := &syncio.LockedWriter{Mu: &logMu, W: &logBuf}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			logMu.Lock()
			t.Logf("herald log:\n%s", logBuf.String())
			logMu.Unlock()
		}
	})

	host, port, _ := net.SplitHostPort(respAddr)
	tlsCLI := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, redisCLI(t), append([]string{"-h", host, "-p", port, "--tls", "--cacert", caFile,
			"--user", "alice", "--pass", "wonderland", "--no-auth-warning"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	waitFor(t, 30*time.Second, "herald to answer PING over TLS", func() bool {
		out, err := tlsCLI("PING")
		return err == nil && out == "PONG"
	})
	if out, _ := tlsCLI("PUBLISH", "lobby", "x"); !strings.Contains(out, "NOPERM User alice has no permissions to access the 'lobby' channel") {
		t.Fatalf("redis-cli --tls PUBLISH lobby: %q", out)
	}
	// Without TLS the server gets garbage and the client no reply.
	if out, err := cli(t, respAddr, "PING"); err == nil && out == "PONG" {
		t.Fatal("plain-text PING answered on the TLS port")
	}

	tlsClient := &tls.Config{RootCAs: ca.Pool()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: respAddr, Username: "alice", Password: "wonderland", TLSConfig: tlsClient, MaxRetries: -1})
	defer rdb.Close()

	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsClient}}
	res, err := httpc.Get("https://" + httpAddr + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /healthz over HTTPS: %v %v", err, res)
	}
	res.Body.Close()
	res, err = httpc.Get("https://" + httpAddr + "/poll?channel=room:1&timeout=0s")
	if err != nil || res.StatusCode != 401 {
		t.Fatalf("GET /poll without a token: %v %v, want 401", err, res)
	}
	res.Body.Close()

	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"channels": []string{"room:*"}, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte("a-secret-for-browser-tokens-1234"))
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(ctx, "wss://"+httpAddr+"/ws?channel=room:1&token="+token, &websocket.DialOptions{HTTPClient: httpc})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	defer ws.CloseNow()
	// The subscription's confirmation and resume event (in one frame or
	// two: the protocol lets the server batch events as it likes), then
	// the message.
	readUntil(t, ctx, ws, `"type":"resume"`)
	if n, err := rdb.Publish(ctx, "room:1", "over tls").Result(); err != nil || n != 1 {
		t.Fatalf("go-redis PUBLISH over TLS: %d, %v", n, err)
	}
	readUntil(t, ctx, ws, `"data":"over tls"`)
}

// readUntil reads WebSocket frames until one holds want, failing after a
// few frames without it.
func readUntil(t *testing.T, ctx context.Context, ws *websocket.Conn, want string) {
	t.Helper()
	var seen []string
	for range 5 {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v (read %q)", want, err, seen)
		}
		if strings.Contains(string(data), want) {
			return
		}
		seen = append(seen, string(data))
	}
	t.Fatalf("no %s in %q", want, seen)
}
