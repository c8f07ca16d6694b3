package wsbridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/raftstore/raftstoretest"
)

// FuzzQuery sends an arbitrary query string to /poll, /sse and the
// WebSocket handshake of a real server. Properties: parseChannelQuery never
// panics, and what it accepts has a non-empty channel each; the server
// answers every request with a status of its documented set, never a 5xx;
// no handler panics.
func FuzzQuery(f *testing.F) {
	for _, seed := range []string{
		"channel=a", "channel=a&since=3&epoch=2", "channel=a&channel=b&since=&since=7",
		"channel=&since=1", "since=1", "channel=a&since=-1", "channel=a&since=99999999999999999999",
		"channel=a&epoch=x", "channel=%zz", "channel=a;b", "channel=a&timeout=-1s", "channel=a&timeout=1h",
		"channel=" + strings.Repeat("x", 80), "channel=a&channel=b&channel=c&channel=d&channel=e",
		"token=abc&channel=a", "channel=a\x00&since=\xff",
	} {
		f.Add(seed, "")
	}
	f.Add("channel=a&channel=b", "a=5:42,b=5:17")
	f.Add("channel=a", "a=5:,=:1,a=x:y")
	b := broker.New(broker.Config{MaxChannelLen: 64})
	raftstoretest.Open(f, b, raftstore.Config{})
	srv := New(b, Config{MaxSubscriptions: 4, PollTimeout: 10 * time.Millisecond})
	hs, panicked := fuzzHTTP(f, srv)

	f.Fuzz(func(t *testing.T, rawQuery, lastEventID string) {
		if q, err := url.ParseQuery(rawQuery); err == nil {
			if subs, err := parseChannelQuery(q); err == nil {
				for _, s := range subs {
					if s.channel == "" {
						t.Fatalf("query %q: accepted an empty channel", rawQuery)
					}
				}
				applyLastEventID(subs, lastEventID)
			}
		}
		for _, path := range []string{"/poll", "/sse", "/ws"} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			req, err := http.NewRequestWithContext(ctx, "GET", hs.URL+path+"?"+rawQuery, nil)
			if err != nil {
				cancel()
				return // not a URL any client could send
			}
			if validHeader(lastEventID) {
				req.Header.Set("Last-Event-ID", lastEventID)
			}
			res, err := hs.Client().Do(req)
			if err != nil {
				cancel()
				t.Fatalf("%s?%q: %v", path, rawQuery, err)
			}
			switch res.StatusCode {
			case 200:
				if path == "/poll" {
					var body struct{ Events []json.RawMessage }
					if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
						t.Fatalf("/poll?%q: body is not JSON: %v", rawQuery, err)
					}
				}
			case 400, 426: // bad query; /ws without an upgrade
			default:
				t.Fatalf("%s?%q: HTTP %d", path, rawQuery, res.StatusCode)
			}
			res.Body.Close()
			cancel()
		}
		if p := panicked(); p != nil {
			t.Fatalf("query %q: a handler panicked: %v", rawQuery, p)
		}
	})
}

// validHeader reports whether net/http would send v as a header value.
func validHeader(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00") && !strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
}

// fuzzHTTP serves srv for a fuzz target and returns the server and the
// first panic of any handler.
func fuzzHTTP(f *testing.F, srv *Server) (*httptest.Server, func() any) {
	var mu sync.Mutex
	var first any
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				mu.Lock()
				if first == nil {
					first = p
				}
				mu.Unlock()
				panic(p)
			}
		}()
		srv.Handler().ServeHTTP(w, r)
	}))
	f.Cleanup(hs.Close)
	f.Cleanup(func() { srv.Shutdown(context.Background()) })
	return hs, func() any {
		mu.Lock()
		defer mu.Unlock()
		return first
	}
}

var fuzzSecret = []byte("fuzz-secret-fuzz-secret-fuzz-sec")

// FuzzToken checks token verification two ways. An arbitrary token string
// must never panic and never verify unless it is correctly signed with the
// secret by an allowed method. Arbitrary claims, correctly signed, must
// verify only if they are a JSON object with well-typed registered claims,
// and then grant exactly the channels they list.
func FuzzToken(f *testing.F) {
	sign := func(claims string) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
		p := base64.RawURLEncoding.EncodeToString([]byte(claims))
		sig, _ := jwt.SigningMethodHS256.Sign(h+"."+p, fuzzSecret)
		return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	for _, claims := range []string{
		`{"channels":["a","b:*"]}`, `{"channels":"a"}`, `{"channels":[1]}`, `{"exp":1}`, `{"exp":"x"}`,
		`{"exp":99999999999,"nbf":1,"iat":1,"channels":["*"],"publish":["p"]}`, `{"aud":["x"],"iss":5}`,
		`[]`, `null`, `{}`, `{"channels":null}`, `{"exp":1e300}`, `{"exp":-1e300}`, `{"nbf":99999999999}`,
	} {
		f.Add(sign(claims), claims)
	}
	f.Add("eyJhbGciOiJub25lIn0.eyJjaGFubmVscyI6WyIqIl19.", `{}`)
	f.Add("a.b.c", "")
	f.Add("", "")
	a, err := newTokenAuth(&TokenConfig{HMACSecret: fuzzSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token, claims string) {
		if g, err := a.verify(token); err == nil {
			// Accepted: it must be an HS* token whose signature checks.
			parts := strings.Split(token, ".")
			if len(parts) != 3 {
				t.Fatalf("accepted %q: not three parts", token)
			}
			hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
			var h struct{ Alg string }
			json.Unmarshal(hdr, &h)
			m := jwt.GetSigningMethod(h.Alg)
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			if !slices.Contains([]string{"HS256", "HS384", "HS512"}, h.Alg) || m == nil || m.Verify(parts[0]+"."+parts[1], sig, fuzzSecret) != nil {
				t.Fatalf("accepted %q (alg %q) without a valid signature", token, h.Alg)
			}
			if !g.expires.IsZero() && g.expires.Before(time.Now().Add(-time.Minute)) {
				t.Fatalf("accepted %q, expired at %v", token, g.expires)
			}
		}

		g, err := a.verify(sign(claims))
		if err != nil {
			return
		}
		var want struct {
			Channels []string `json:"channels"`
		}
		if err := json.Unmarshal([]byte(claims), &want); err != nil {
			t.Fatalf("claims %q verified but do not decode: %v", claims, err)
		}
		if !slices.Equal(g.subscribe, want.Channels) {
			t.Fatalf("claims %q grant %q, want %q", claims, g.subscribe, want.Channels)
		}
		for _, ch := range want.Channels {
			if !g.canSubscribe(ch, true) {
				t.Fatalf("claims %q: pattern %q it lists is not granted", claims, ch)
			}
		}
	})
}
