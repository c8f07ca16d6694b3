package wsbridge_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/wsbridge"
)

var testSecret = []byte("herald-test-secret-of-32-bytes!!")

// mintToken signs a Herald token with the given channels, publish patterns
// and expiry (zero: none).
func mintToken(t testing.TB, method jwt.SigningMethod, key any, channels, publish []string, exp time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "user-1", "channels": channels}
	if publish != nil {
		claims["publish"] = publish
	}
	if !exp.IsZero() {
		claims["exp"] = exp.Unix()
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// httpGet returns a GET's status and, for an error status, its body (a
// successful SSE response is a stream: its body is not read).
func httpGet(t testing.TB, u string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode == 200 {
		return 200, ""
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestTokenHandshake: tokens are checked on /ws, /sse and /poll, from the
// query or an Authorization header; a channel the token does not grant is
// refused with 403 before the stream starts.
func TestTokenHandshake(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{
		Tokens: &wsbridge.TokenConfig{HMACSecret: testSecret}})
	good := mintToken(t, jwt.SigningMethodHS256, testSecret, []string{"room:*"}, nil, time.Now().Add(time.Hour))
	expired := mintToken(t, jwt.SigningMethodHS256, testSecret, []string{"room:*"}, nil, time.Now().Add(-time.Minute))
	forged := mintToken(t, jwt.SigningMethodHS256, []byte("another secret, not the server's"), []string{"*"}, nil, time.Time{})
	none := mintToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, []string{"*"}, nil, time.Time{})
	for _, tc := range []struct {
		name   string
		query  string
		header string
		want   int
	}{
		{"no token", "", "", 401},
		{"garbage token", "token=not.a.jwt", "", 401},
		{"forged", "token=" + forged, "", 401},
		{"alg none", "token=" + none, "", 401},
		{"expired", "token=" + expired, "", 401},
		{"channel not granted", "token=" + good + "&channel=lobby", "", 403},
		{"query token", "token=" + good + "&channel=room:1", "", 0},
		{"bearer header", "channel=room:1", "Bearer " + good, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("Authorization", tc.header)
			}
			for _, path := range []string{"/sse", "/poll"} {
				q := tc.query
				if path == "/poll" {
					q += "&timeout=0s"
				}
				if !strings.Contains(q, "channel=") {
					q += "&channel=room:1"
				}
				code, body := httpGet(t, n.url+path+"?"+q, h)
				want := tc.want
				if want == 0 {
					want = 200
				}
				if code != want {
					t.Errorf("%s: HTTP %d (%s), want %d", path, code, strings.TrimSpace(body), want)
				}
			}
			_, err := tryDialWS(t, n.wsURL(tc.query), &websocket.DialOptions{HTTPHeader: h})
			switch {
			case tc.want == 0 && err != nil:
				t.Errorf("/ws: %v", err)
			case tc.want != 0 && (err == nil || !strings.Contains(err.Error(), "HTTP "+strconv.Itoa(tc.want))):
				t.Errorf("/ws: %v, want HTTP %d", err, tc.want)
			}
		})
	}
}

// TestTokenChannels: over WebSocket, subscribing outside the token's
// channels gets a forbidden error and the connection stays; a pattern must
// be literally one the token lists.
func TestTokenChannels(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{
		Tokens: &wsbridge.TokenConfig{HMACSecret: testSecret}, AllowBrowserPublish: true})
	tok := mintToken(t, jwt.SigningMethodHS256, testSecret, []string{"room:*"}, []string{"room:1"}, time.Time{})
	c := dialWS(t, n.wsURL("token="+tok), nil)
	for _, req := range []map[string]any{
		{"op": "subscribe", "channel": "lobby"},
		{"op": "subscribe", "pattern": "room:1*"},
		{"op": "publish", "channel": "room:2", "data": "x"},
	} {
		c.send(req)
		if e := c.expect("error"); e.Code != "forbidden" {
			t.Fatalf("%v: got %s, want forbidden", req, e.raw)
		}
	}
	c.subscribe("room:2", nil, 0)
	c.send(map[string]any{"op": "subscribe", "pattern": "room:*"})
	c.expect("subscribed")
	c.send(map[string]any{"op": "publish", "channel": "room:1", "data": "hi"})
	// The delivery and the publish's reply may come in either order.
	got := map[string]bool{}
	for range 2 {
		e := c.next()
		got[e.Type] = true
		if e.Type == "message" && (e.Pattern != "room:*" || e.Data != "hi") {
			t.Fatalf("got %s", e.raw)
		}
	}
	if !got["published"] || !got["message"] {
		t.Fatalf("got %v, want a published reply and the message", got)
	}
	c.barrier()
}

// TestTokenExpiryLive: a WebSocket connection is closed with 4003 when its
// token expires, an SSE stream ends, and other connections go on.
func TestTokenExpiryLive(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{
		Tokens: &wsbridge.TokenConfig{HMACSecret: testSecret}})
	// JWT expiry has one-second resolution: the token expires within
	// two seconds.
	short := mintToken(t, jwt.SigningMethodHS256, testSecret, []string{"*"}, nil, time.Now().Add(2*time.Second))
	long := mintToken(t, jwt.SigningMethodHS256, testSecret, []string{"*"}, nil, time.Now().Add(time.Hour))
	doomed := dialWS(t, n.wsURL("token="+short), nil)
	doomed.subscribe("a", nil, 0)
	stays := dialWS(t, n.wsURL("token="+long), nil)
	stays.subscribe("a", nil, 0)

	res, err := http.Get(n.url + "/sse?channel=a&token=" + url.QueryEscape(short))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sseDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, res.Body)
		sseDone <- err
	}()

	if got := doomed.closeStatus(); got != wsbridge.CloseTokenExpired {
		t.Fatalf("close status %d, want %d", got, wsbridge.CloseTokenExpired)
	}
	select {
	case <-sseDone:
	case <-time.After(ioTimeout):
		t.Fatal("the SSE stream outlived its token")
	}
	n.publish(t, "a", []byte("m1"))
	if e := stays.expect("message"); e.Data != "m1" {
		t.Fatalf("got %s", e.raw)
	}
}

// TestTokenPublicKeys: RSA and ECDSA tokens, keys read from PEM files
// (a PUBLIC KEY block and a certificate).
func TestTokenPublicKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pkix, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(dir, "keys.pem")
	data := append(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if err := os.WriteFile(pemFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := wsbridge.LoadPublicKeys(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{Tokens: &wsbridge.TokenConfig{PublicKeys: keys}})
	for _, tc := range []struct {
		name   string
		method jwt.SigningMethod
		key    crypto.Signer
	}{
		{"RS256", jwt.SigningMethodRS256, rsaKey},
		{"PS384", jwt.SigningMethodPS384, rsaKey},
		{"ES256", jwt.SigningMethodES256, ecKey},
	} {
		tok := mintToken(t, tc.method, tc.key, []string{"x"}, nil, time.Now().Add(time.Hour))
		if code, body := httpGet(t, n.url+"/poll?timeout=0s&channel=x&token="+tok, nil); code != 200 {
			t.Errorf("%s: HTTP %d %s", tc.name, code, body)
		}
	}
	// An HMAC token signed with the RSA public key (the classic
	// algorithm-confusion attack) is refused: only asymmetric methods are
	// accepted without an HMAC secret.
	confused := mintToken(t, jwt.SigningMethodHS256, pkix, []string{"x"}, nil, time.Time{})
	if code, _ := httpGet(t, n.url+"/poll?timeout=0s&channel=x&token="+confused, nil); code != 401 {
		t.Errorf("HS256 with the public key as secret: HTTP %d, want 401", code)
	}
}

// TestTokenPublishEndpoint: with tokens configured, POST /publish needs a
// token whose publish claim covers the channel.
func TestTokenPublishEndpoint(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{Tokens: &wsbridge.TokenConfig{HMACSecret: testSecret}})
	tok := mintToken(t, jwt.SigningMethodHS256, testSecret, nil, []string{"jobs:*"}, time.Time{})
	for _, tc := range []struct {
		channel, auth string
		want          int
	}{
		{"jobs:1", "", 401},
		{"jobs:1", "Bearer " + tok, 200},
		{"other", "Bearer " + tok, 403},
	} {
		req, _ := http.NewRequest("POST", n.url+"/publish/"+tc.channel, strings.NewReader("x"))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s (token: %v): HTTP %d, want %d", tc.channel, tc.auth != "", res.StatusCode, tc.want)
		}
	}
}
