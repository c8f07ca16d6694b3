package resp_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
	"github.com/redis/go-redis/v9"
)

// testACL is the ACL file the tests load.
func testACL(t *testing.T) *resp.ACL {
	t.Helper()
	sum := sha256.Sum256([]byte("hashed"))
	text := `# Herald test users
user alice on >secret &room:* +@all -herald.delete
user pub on >p %P&news:* +publish +herald.publish
user sub on >s %S&news:* %S&feed:? +subscribe +unsubscribe +psubscribe +herald.subscribe +herald.history +ping
user hash on #` + hex.EncodeToString(sum[:]) + ` allchannels +@pubsub
user off off >x &* +@all
user two on >one >two allchannels +@all <one
`
	path := filepath.Join(t.TempDir(), "users.acl")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	acl, err := resp.LoadACLFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return acl
}

// TestACLRaw checks Redis's replies, byte for byte, on a raw connection.
func TestACLRaw(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{ACL: testACL(t), RequirePass: "dflt"})
	const (
		noauth   = "-NOAUTH Authentication required."
		wrongp   = "-WRONGPASS invalid username-password pair or user is disabled."
		pingOnly = "-NOPERM User pub has no permissions to run the 'ping' command"
	)
	for _, tc := range []struct {
		name string
		cmds []string // one command per entry (inline form)
		want []string // first line of each reply
	}{
		{"unauthenticated", []string{"PUBLISH news:1 x"}, []string{noauth}},
		{"default user keeps requirepass", []string{"AUTH dflt", "PUBLISH any x", "ACL WHOAMI"}, []string{"+OK", ":0", "$7"}},
		{"wrong password", []string{"AUTH alice nope", "PUBLISH room:1 x"}, []string{wrongp, noauth}},
		{"unknown user", []string{"AUTH mallory secret"}, []string{wrongp}},
		{"disabled user", []string{"AUTH off x"}, []string{wrongp}},
		{"removed password", []string{"AUTH two one", "AUTH two two"}, []string{wrongp, "+OK"}},
		{"sha256 password", []string{"AUTH hash hashed", "PUBLISH anything x"}, []string{"+OK", ":0"}},
		{"channel allowed", []string{"AUTH alice secret", "PUBLISH room:9 x"}, []string{"+OK", ":0"}},
		{"channel denied", []string{"AUTH alice secret", "PUBLISH lobby x"},
			[]string{"+OK", "-NOPERM User alice has no permissions to access the 'lobby' channel"}},
		{"command denied", []string{"AUTH alice secret", "HERALD.DELETE room:1"},
			[]string{"+OK", "-NOPERM User alice has no permissions to run the 'herald.delete' command"}},
		{"publish-only user cannot subscribe", []string{"AUTH pub p", "PUBLISH news:1 x", "SUBSCRIBE news:1", "PING"},
			[]string{"+OK", ":0", "-NOPERM User pub has no permissions to run the 'subscribe' command", pingOnly}},
		{"subscribe-only user cannot publish", []string{"AUTH sub s", "PUBLISH news:1 x", "HERALD.HISTORY news:1"},
			[]string{"+OK", "-NOPERM User sub has no permissions to run the 'publish' command", "*8"}},
		{"one denied channel refuses the whole SUBSCRIBE", []string{"AUTH sub s", "SUBSCRIBE news:1 other", "PING"},
			[]string{"+OK", "-NOPERM User sub has no permissions to access the 'other' channel", "+PONG"}},
		{"pattern literally permitted", []string{"AUTH sub s", "PSUBSCRIBE feed:?"}, []string{"+OK", "*3"}},
		{"pattern not literally permitted", []string{"AUTH sub s", "PSUBSCRIBE news:1*", "PSUBSCRIBE *"},
			[]string{"+OK", "-NOPERM User sub has no permissions to access the 'news:1*' channel",
				"-NOPERM User sub has no permissions to access the '*' channel"}},
		{"HELLO AUTH", []string{"HELLO 3 AUTH alice nope", "HELLO 3 AUTH alice secret", "ACL WHOAMI"}, []string{wrongp, "%7", "$5"}},
		{"RESET logs out", []string{"AUTH alice secret", "RESET", "PUBLISH room:1 x"}, []string{"+OK", "+RESET", noauth}},
		{"unsubscribe never checked", []string{"AUTH sub s", "UNSUBSCRIBE secret"}, []string{"+OK", "*3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s.addr)
			for i, cmd := range tc.cmds {
				c.send(cmd + "\r\n")
				got := c.readLine()
				if got != tc.want[i] {
					t.Fatalf("%s: got %q, want %q", cmd, got, tc.want[i])
				}
				drainReply(c, got)
			}
		})
	}
}

// drainReply reads the rest of a reply whose first line is first.
func drainReply(c *rawConn, first string) {
	var n int
	switch first[0] {
	case '$':
		if first != "$-1" {
			c.readLine()
		}
		return
	case '*', '%', '>':
		for _, ch := range first[1:] {
			n = 10*n + int(ch-'0')
		}
		if first[0] == '%' {
			n *= 2
		}
	}
	for range n {
		drainReply(c, c.readLine())
	}
}

// TestACLGoRedis logs in as ACL users with go-redis (which sends HELLO 3
// AUTH, or AUTH with RESP2) and checks that a publish-only and a
// subscribe-only user together carry messages.
func TestACLGoRedis(t *testing.T) {
	grForEachProtocol(t, func(t *testing.T, proto int) {
		s := startServer(t, broker.Config{}, resp.Config{ACL: testACL(t)})
		ctx := grContext(t, 30*time.Second)
		sub := newGoRedis(t, s.addr, proto, func(o *redis.Options) { o.Username, o.Password = "sub", "s" })
		pub := newGoRedis(t, s.addr, proto, func(o *redis.Options) { o.Username, o.Password = "pub", "p" })
		ps := sub.Subscribe(ctx, "news:1")
		defer ps.Close()
		grSubscribed(t, ctx, ps, "subscribe", "news:1", 1)
		grPublish(t, ctx, pub, "news:1", "hello", 1)
		grMessage(t, ctx, ps, redis.Message{Channel: "news:1", Payload: "hello"})
		if err := pub.Publish(ctx, "elsewhere", "x").Err(); err == nil ||
			err.Error() != "NOPERM User pub has no permissions to access the 'elsewhere' channel" {
			t.Fatalf("publish to a denied channel: %v", err)
		}
		bad := newGoRedis(t, s.addr, proto, func(o *redis.Options) { o.Username, o.Password = "pub", "wrong" })
		if err := bad.Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
			t.Fatalf("wrong password: %v", err)
		}
		// The default user, without requirepass, is nopass: connections
		// start logged in as it.
		dflt := newGoRedis(t, s.addr, proto)
		if who, err := dflt.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "default" {
			t.Fatalf("ACL WHOAMI: %q, %v", who, err)
		}
	})
}

// TestACLRedisCli logs in with redis-cli --user --pass.
func TestACLRedisCli(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not found: install redis-tools (make deps)")
	}
	s := startServer(t, broker.Config{}, resp.Config{ACL: testACL(t), RequirePass: "dflt"})
	host, port, _ := strings.Cut(s.addr, ":")
	out, err := exec.Command(cli, "-h", host, "-p", port, "--user", "alice", "--pass", "secret", "--no-auth-warning",
		"PUBLISH", "lobby", "x").CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "(error) NOPERM User alice has no permissions to access the 'lobby' channel" &&
		got != "NOPERM User alice has no permissions to access the 'lobby' channel" {
		t.Fatalf("redis-cli printed %q", got)
	}
}

func TestParseACLErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"usr alice on", "line 1: should start with user keyword"},
		{"user a on\nuser a off", "line 2: duplicate user 'a' found"},
		{"user a on +nosuch", "line 1: error in user declaration '+nosuch': unknown command 'nosuch'"},
		{"user a on +@nosuch", "line 1: error in user declaration '+@nosuch': unknown command category 'nosuch'"},
		{"user a on #abc", "line 1: error in user declaration '#abc': the password hash must be exactly 64 characters and contain only lowercase hexadecimal characters"},
		{"user a on bogus", "line 1: error in user declaration 'bogus': syntax error"},
	} {
		_, err := resp.ParseACL(strings.NewReader(tc.text))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: got %v, want %q", tc.text, err, tc.want)
		}
	}
	// Key rules are accepted and ignored.
	if _, err := resp.ParseACL(strings.NewReader("user a on ~* allkeys %R~x resetkeys &* +@all")); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseACL: no ACL file makes the parser panic, and every user it
// accepts can be checked against every command without panicking.
func FuzzParseACL(f *testing.F) {
	for _, seed := range []string{
		"user alice on >secret &room:* +@all -herald.delete",
		"user a on #" + strings.Repeat("ab", 32) + " %P&x %S&y:* +publish +client|setname",
		"user default off\nuser b reset on nopass allchannels allcommands resetchannels",
		"# comment\n\n   user c on ~* allkeys %R~k &* +@pubsub -@all +@connection",
		"user", "user d <x !" + strings.Repeat("0", 64) + " >", "user e + - & %P& %S",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		acl, err := resp.ParseACL(strings.NewReader(text))
		if err != nil {
			return
		}
		if !acl.HasUser("default") {
			t.Fatalf("%q: no default user", text)
		}
	})
}
