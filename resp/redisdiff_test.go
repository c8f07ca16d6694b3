package resp_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
)

// Differential tests: every script sends the same bytes to a real
// redis-server (7.0.15 here) and to Herald, and the raw reply bytes must be
// identical. Only what must differ (client ids, version strings, reply
// content of introspection commands) is normalised, and each case says why.

// ---------------------------------------------------------------------------
// A strict RESP2/RESP3 reply reader.

// Bounds on what readRESP accepts, so that a corrupt length fails instead of
// allocating gigabytes.
const (
	respMaxLine  = 1 << 20
	respMaxBulk  = 64 << 20
	respMaxElems = 1 << 20
	respMaxDepth = 64
)

// readRESP reads one complete reply (RESP2 or RESP3, including out-of-band
// pushes, and an attribute together with the reply it precedes) and returns
// its raw bytes. It is strict, as a client library is: every line ends in
// CRLF, numbers are canonical, bulk payloads are followed by CRLF, booleans
// are t or f, nulls are empty.
func readRESP(br *bufio.Reader) ([]byte, error) {
	var raw []byte
	err := readRESPValue(br, &raw, 0)
	return raw, err
}

func readRESPLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("resp: truncated line %q: %w", line, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if len(line) > respMaxLine {
			return nil, fmt.Errorf("resp: line longer than %d bytes", respMaxLine)
		}
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("resp: line %q does not end in CRLF", line)
	}
	if i := bytes.IndexByte(line[:len(line)-2], '\r'); i >= 0 {
		return nil, fmt.Errorf("resp: CR inside line %q", line)
	}
	return line, nil
}

// respInt parses a canonical decimal integer, as servers write them.
func respInt(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("resp: bad integer %q", s)
	}
	return n, nil
}

func readRESPValue(br *bufio.Reader, raw *[]byte, depth int) error {
	if depth > respMaxDepth {
		return errors.New("resp: nesting too deep")
	}
	line, err := readRESPLine(br)
	if err != nil {
		return err
	}
	*raw = append(*raw, line...)
	typ, body := line[0], string(line[1:len(line)-2])
	switch typ {
	case '+', '-': // simple string, error
		return nil
	case ':':
		_, err := respInt(body)
		return err
	case '(': // big number
		digits := strings.TrimPrefix(body, "-")
		if digits == "" || strings.Trim(digits, "0123456789") != "" {
			return fmt.Errorf("resp: bad big number %q", body)
		}
		return nil
	case ',': // double
		switch body {
		case "inf", "-inf", "nan":
			return nil
		}
		if _, err := strconv.ParseFloat(body, 64); err != nil {
			return fmt.Errorf("resp: bad double %q", body)
		}
		return nil
	case '#':
		if body != "t" && body != "f" {
			return fmt.Errorf("resp: bad boolean %q", body)
		}
		return nil
	case '_':
		if body != "" {
			return fmt.Errorf("resp: bad null %q", body)
		}
		return nil
	case '$', '!', '=': // bulk string, blob error, verbatim string
		n, err := respInt(body)
		if err != nil {
			return err
		}
		if typ == '$' && n == -1 {
			return nil
		}
		if n < 0 || n > respMaxBulk {
			return fmt.Errorf("resp: bad length %d", n)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("resp: truncated bulk: %w", err)
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return fmt.Errorf("resp: bulk of %d bytes not followed by CRLF", n)
		}
		if typ == '=' && (n < 4 || buf[3] != ':') {
			return fmt.Errorf("resp: verbatim string without format: %q", buf)
		}
		*raw = append(*raw, buf...)
		return nil
	case '*', '~', '>', '%', '|': // array, set, push, map, attribute
		n, err := respInt(body)
		if err != nil {
			return err
		}
		if typ == '*' && n == -1 {
			return nil
		}
		if n < 0 || n > respMaxElems {
			return fmt.Errorf("resp: bad element count %d", n)
		}
		if typ == '%' || typ == '|' {
			n *= 2
		}
		for i := int64(0); i < n; i++ {
			if err := readRESPValue(br, raw, depth+1); err != nil {
				return err
			}
		}
		if typ == '|' {
			// An attribute describes the reply that follows it.
			return readRESPValue(br, raw, depth+1)
		}
		return nil
	}
	return fmt.Errorf("resp: unknown type byte %q", typ)
}

// mb returns args as a RESP multibulk command.
func mb(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// A real redis-server.

// startRedisServer runs redis-server on a free loopback port, without
// persistence, in a temporary directory, and returns its address once it
// answers. It is killed when the test ends.
func startRedisServer(t testing.TB, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: install redis-server (make deps)")
	}
	dir := t.TempDir()
	logFile := filepath.Join(dir, "redis.log")
	for attempt := 0; attempt < 5; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, port, _ := net.SplitHostPort(addr)
		args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--logfile", logFile, "--daemonize", "no"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		if redisAnswers(addr, exited) {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return addr
		}
		// Most likely another process took the port between Close and
		// redis-server's bind: try another.
		cmd.Process.Kill()
		<-exited
	}
	t.Fatalf("redis-server did not start; see %s", logFile)
	return ""
}

// redisAnswers polls addr until a server there answers PING (with PONG or
// NOAUTH), the process exits, or 10 seconds pass.
func redisAnswers(addr string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			nc.SetDeadline(time.Now().Add(2 * time.Second))
			_, werr := nc.Write([]byte("PING\r\n"))
			reply, rerr := readRESP(bufio.NewReader(nc))
			nc.Close()
			if werr == nil && rerr == nil && (string(reply) == "+PONG\r\n" || bytes.HasPrefix(reply, []byte("-NOAUTH"))) {
				return true
			}
		}
		select {
		case <-exited:
			return false
		case <-tick.C:
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Scripts.

// diffStep sends bytes on one connection and reads a number of complete
// replies (pushes included) from it.
type diffStep struct {
	conn    int    // which of the case's connections
	send    string // bytes to write; empty: only read
	replies int    // complete replies to read afterwards
	closed  bool   // after them, the server closes the connection
}

// diffNorm rewrites a reply before comparison.
type diffNorm func([]byte) []byte

func reNorm(expr, repl string) diffNorm {
	re := regexp.MustCompile(expr)
	return func(b []byte) []byte { return re.ReplaceAll(b, []byte(repl)) }
}

type diffCase struct {
	name  string
	auth  bool // against the servers that require diffPassword
	conns int  // connections, default 1
	norm  []diffNorm
	steps []diffStep
}

const diffPassword = "s3cret"

func on(conn int, send string, replies int) diffStep {
	return diffStep{conn: conn, send: send, replies: replies}
}

// c0 is a step on the first connection.
func c0(send string, replies int) diffStep { return on(0, send, replies) }

// closes is a step after whose replies the server closes the connection.
func closes(conn int, send string, replies int) diffStep {
	return diffStep{conn: conn, send: send, replies: replies, closed: true}
}

var (
	// HELLO: Redis here is 7.0.15, Herald reports RedisVersion (7.2.0), the
	// version whose behaviour it follows; client ids depend on how many
	// connections each server has seen.
	normHello = []diffNorm{
		reNorm(`(\$7\r\nversion\r\n)\$\d+\r\n[0-9.]+\r\n`, "${1}<version>\r\n"),
		reNorm(`(\$2\r\nid\r\n):\d+\r\n`, "${1}:<id>\r\n"),
	}
	// HELLO before AUTH: Redis 7.2 added "<proto>" to this message; 7.0.15
	// lacks it.
	normHelloNoauth = reNorm(`HELLO <proto> AUTH`, "HELLO AUTH")
	// A reply that is only an integer: a client id, or a count of commands
	// (Herald serves a subset of Redis's).
	normInt = reNorm(`^:\d+\r\n$`, ":<n>\r\n")
	// INFO: the sections and fields are Herald's own; compare the reply
	// type (bulk in RESP2, verbatim in RESP3) and that redis_version is
	// there, which client libraries read.
	normInfo diffNorm = func(b []byte) []byte {
		return fmt.Appendf(nil, "type %c, redis_version: %v", b[0], bytes.Contains(b, []byte("\r\nredis_version:")))
	}
)

// normClientList reduces a CLIENT LIST or CLIENT INFO reply to its type, its
// field names and the values that do not depend on time, addresses, ids or
// memory. Redis 7.2 added the fields rbs, rbp, lib-name and lib-ver, which
// Herald (following 7.2) reports and 7.0.15 does not: they are dropped.
func normClientList(b []byte) []byte {
	text := string(b)
	if !strings.Contains(text, " addr=") {
		return b
	}
	typ := text[0]
	if i := strings.Index(text, "\r\n"); i >= 0 {
		text = text[i+2:]
	}
	text = strings.TrimPrefix(text, "txt:")
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var fields []string
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "rbs", "rbp", "lib-name", "lib-ver":
				continue
			case "name", "flags", "db", "sub", "psub", "ssub", "multi", "cmd", "user", "resp", "redir", "events":
				fields = append(fields, k+"="+v)
			default:
				fields = append(fields, k)
			}
		}
		out = append(out, strings.Join(fields, " "))
	}
	sort.Strings(out)
	return fmt.Appendf(nil, "type %c: %s", typ, strings.Join(out, " | "))
}

func diffCases() []diffCase {
	long := strings.Repeat("x", 300)
	many := make([]string, 61)
	many[0] = "nosuchcmd"
	for i := 1; i < len(many); i++ {
		many[i] = fmt.Sprintf("arg%02d", i)
	}
	return []diffCase{
		// PING and ECHO.
		{name: "ping", steps: []diffStep{
			c0(mb("PING"), 1), c0(mb("PING", "hello"), 1), c0(mb("ping", ""), 1), c0("ping\r\n", 1),
		}},
		{name: "ping_wrong_arity", steps: []diffStep{c0(mb("PING", "a", "b"), 1)}},
		{name: "ping_subscribed_resp2", steps: []diffStep{
			c0(mb("SUBSCRIBE", "ps2"), 1), c0(mb("PING"), 1), c0(mb("PING", "x"), 1), c0(mb("PING", ""), 1),
		}},
		{name: "ping_subscribed_resp2_wrong_arity", steps: []diffStep{
			c0(mb("SUBSCRIBE", "ps2a"), 1), c0(mb("PING", "a", "b"), 1),
		}},
		{name: "ping_subscribed_resp3", norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "3"), 1), c0(mb("SUBSCRIBE", "ps3"), 1), c0(mb("PING"), 1), c0(mb("PING", "x"), 1),
		}},
		{name: "echo", steps: []diffStep{
			c0(mb("ECHO", "hello"), 1), c0(mb("ECHO", ""), 1), c0(mb("echo", "bin\x00\xff\r\nary"), 1),
		}},

		// Wrong number of arguments: Redis names the command by its
		// lower-case full name ('client|setname').
		{name: "wrong_arity", steps: []diffStep{
			c0(mb("subscribe"), 1), c0(mb("SUBSCRIBE"), 1), c0(mb("psubscribe"), 1), c0(mb("ssubscribe"), 1),
			c0(mb("publish", "a"), 1), c0(mb("PUBLISH", "a", "b", "c"), 1), c0(mb("spublish", "a"), 1),
			c0(mb("echo"), 1), c0(mb("echo", "a", "b"), 1), c0(mb("select"), 1), c0(mb("auth"), 1),
			c0(mb("client"), 1), c0(mb("client", "setname"), 1), c0(mb("CLIENT", "SETNAME", "a", "b"), 1),
			c0(mb("client", "getname", "x"), 1), c0(mb("client", "id", "x"), 1), c0(mb("client", "reply"), 1),
			c0(mb("client", "no-evict"), 1), c0(mb("pubsub"), 1), c0(mb("pubsub", "numpat", "x"), 1),
			c0(mb("config"), 1), c0(mb("config", "get"), 1), c0(mb("reset", "x"), 1), c0(mb("time", "x"), 1),
			c0(mb("command", "count", "x"), 1), c0(mb("readonly", "x"), 1),
		}},

		// Unknown commands quote up to 128 bytes of arguments.
		{name: "unknown_command", steps: []diffStep{
			c0(mb("FOOBAR"), 1), c0(mb("foobar", "a", "b"), 1), c0(mb("foobar", long), 1),
			c0(mb("foobar", "a", long), 1), c0(mb(many...), 1), c0(mb(strings.Repeat("c", 200), "x"), 1),
			c0("foobar 'a b' c\r\n", 1), c0(mb("foobar", "new\r\nline"), 1),
		}},
		{name: "unknown_command_utf8_name", steps: []diffStep{
			// '%.128s' cuts at 128 bytes in Redis.
			c0(mb(strings.Repeat("é", 100)), 1),
		}},
		{name: "unknown_command_nul", steps: []diffStep{
			// Redis formats arguments as C strings: a NUL ends them.
			c0(mb("foo\x00bar", "a\x00b"), 1),
		}},
		{name: "unknown_subcommand", steps: []diffStep{
			c0(mb("CLIENT", "FOO"), 1), c0(mb("client", "foo", "bar"), 1), c0(mb("PUBSUB", "FOO"), 1),
			c0(mb("pubsub", "Foo"), 1), c0(mb("CONFIG", "FOO"), 1), c0(mb("COMMAND", "FOO"), 1),
			c0(mb("CLIENT", strings.Repeat("s", 200)), 1),
		}},

		// Subscription confirmations and counts.
		{name: "subscribe_unsubscribe", steps: []diffStep{
			c0(mb("SUBSCRIBE", "s1", "s2", "s1"), 3), c0(mb("UNSUBSCRIBE", "s1"), 1), c0(mb("UNSUBSCRIBE", "s1"), 1),
			c0(mb("UNSUBSCRIBE", "never"), 1), c0(mb("UNSUBSCRIBE"), 1), c0(mb("UNSUBSCRIBE"), 1), c0(mb("PING"), 1),
		}},
		{name: "psubscribe_punsubscribe", steps: []diffStep{
			c0(mb("PSUBSCRIBE", "p1*", "p2*", "p1*"), 3), c0(mb("SUBSCRIBE", "pc"), 1), c0(mb("PUNSUBSCRIBE", "p1*"), 1),
			c0(mb("PUNSUBSCRIBE"), 1), c0(mb("PUNSUBSCRIBE"), 1), c0(mb("UNSUBSCRIBE"), 1), c0(mb("PING"), 1),
		}},
		{name: "ssubscribe_sunsubscribe", steps: []diffStep{
			c0(mb("SSUBSCRIBE", "sa", "sb", "sa"), 3), c0(mb("SUBSCRIBE", "sc"), 1), c0(mb("SUNSUBSCRIBE", "sa"), 1),
			c0(mb("SUNSUBSCRIBE"), 1), c0(mb("SUNSUBSCRIBE"), 1), c0(mb("PING"), 1), c0(mb("UNSUBSCRIBE", "sc"), 1),
			c0(mb("PING"), 1),
		}},
		{name: "unsubscribe_without_subscriptions_resp2", steps: []diffStep{
			c0(mb("UNSUBSCRIBE"), 1), c0(mb("PUNSUBSCRIBE"), 1), c0(mb("SUNSUBSCRIBE"), 1), c0(mb("PING"), 1),
		}},
		{name: "unsubscribe_without_subscriptions_resp3", norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "3"), 1), c0(mb("UNSUBSCRIBE"), 1), c0(mb("PUNSUBSCRIBE"), 1), c0(mb("SUNSUBSCRIBE"), 1),
			c0(mb("PING"), 1),
		}},
		{name: "subscribe_resp3", norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "3"), 1), c0(mb("SUBSCRIBE", "r3a", "r3b"), 2), c0(mb("PSUBSCRIBE", "r3*"), 1),
			c0(mb("SSUBSCRIBE", "r3s"), 1), c0(mb("UNSUBSCRIBE", "r3a", "r3b"), 2), c0(mb("PUNSUBSCRIBE", "r3*"), 1),
			c0(mb("SUNSUBSCRIBE", "r3s"), 1), c0(mb("ECHO", "x"), 1),
		}},

		// Subscribed mode: RESP2 allows only a few commands, RESP3 all.
		{name: "subscribed_mode_resp2", steps: []diffStep{
			c0(mb("SUBSCRIBE", "m2"), 1), c0(mb("ECHO", "x"), 1), c0(mb("PUBLISH", "m2", "x"), 1),
			c0(mb("CLIENT", "ID"), 1), c0(mb("HELLO", "3"), 1), c0(mb("SELECT", "0"), 1),
			c0(mb("PUBSUB", "NUMSUB", "m2"), 1), c0(mb("FOOBAR"), 1), c0(mb("ECHO"), 1), c0(mb("CLIENT", "FOO"), 1),
			c0(mb("SUBSCRIBE", "m2b"), 1), c0(mb("PING"), 1),
		}},
		{name: "subscribed_mode_resp2_pattern_only", steps: []diffStep{
			c0(mb("PSUBSCRIBE", "mp*"), 1), c0(mb("ECHO", "x"), 1),
		}},
		{name: "subscribed_mode_resp2_shard_only", steps: []diffStep{
			c0(mb("SSUBSCRIBE", "ms"), 1), c0(mb("ECHO", "x"), 1),
		}},
		{name: "subscribed_mode_resp3", norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "3"), 1), c0(mb("SUBSCRIBE", "m3"), 1), c0(mb("ECHO", "x"), 1),
			c0(mb("CLIENT", "GETNAME"), 1), c0(mb("PUBSUB", "NUMSUB", "m3"), 1),
			// Publishing to a channel the connection itself is subscribed
			// to: Redis pushes the message before the PUBLISH reply.
			c0(mb("PUBLISH", "m3", "self"), 2),
			// Back to RESP2 while subscribed: the restrictions apply again.
			c0(mb("HELLO", "2"), 1), c0(mb("ECHO", "x"), 1),
		}},

		// PUBLISH receiver counts: a client subscribed to a channel and a
		// matching pattern receives (and is counted) twice.
		{name: "publish_counts", conns: 3, steps: []diffStep{
			on(0, mb("SUBSCRIBE", "pc"), 1), on(0, mb("PSUBSCRIBE", "pc*"), 1), on(1, mb("SUBSCRIBE", "pc"), 1),
			on(2, mb("PUBLISH", "pc", "hello"), 1), on(0, "", 2), on(1, "", 1),
			on(2, mb("PUBLISH", "nobody", "x"), 1), on(2, mb("PUBLISH", "pcx", "y"), 1), on(0, "", 1),
			on(2, mb("SPUBLISH", "pc", "z"), 1),
		}},
		{name: "publish_shard", conns: 2, steps: []diffStep{
			on(0, mb("SSUBSCRIBE", "sh"), 1), on(1, mb("SPUBLISH", "sh", "m"), 1), on(0, "", 1),
			on(1, mb("PUBLISH", "sh", "m"), 1), on(1, mb("SPUBLISH", "nobody", "m"), 1),
		}},
		{name: "publish_resp3", conns: 2, norm: normHello, steps: []diffStep{
			on(0, mb("HELLO", "3"), 1), on(0, mb("SUBSCRIBE", "pr3"), 1), on(0, mb("PSUBSCRIBE", "pr3*"), 1),
			on(1, mb("PUBLISH", "pr3", "x"), 1), on(0, "", 2),
		}},

		// PUBSUB introspection. One channel per listing: Redis lists in
		// hash order.
		{name: "pubsub_introspection", conns: 4, steps: []diffStep{
			on(0, mb("SUBSCRIBE", "ic1"), 1), on(1, mb("SUBSCRIBE", "ic1"), 1), on(1, mb("PSUBSCRIBE", "ic*"), 1),
			on(2, mb("PSUBSCRIBE", "ic*"), 1), on(0, mb("SSUBSCRIBE", "isc"), 1),
			on(3, mb("PUBSUB", "CHANNELS"), 1), on(3, mb("PUBSUB", "CHANNELS", "ic*"), 1),
			on(3, mb("PUBSUB", "CHANNELS", "zz*"), 1), on(3, mb("PUBSUB", "NUMSUB", "ic1", "nosuch"), 1),
			on(3, mb("PUBSUB", "NUMSUB"), 1), on(3, mb("PUBSUB", "NUMPAT"), 1),
			on(3, mb("PUBSUB", "SHARDCHANNELS"), 1), on(3, mb("PUBSUB", "SHARDCHANNELS", "is*"), 1),
			on(3, mb("PUBSUB", "SHARDNUMSUB", "isc", "ic1"), 1), on(3, mb("PUBSUB", "SHARDNUMSUB"), 1),
			on(3, mb("pubsub", "channels", "a", "b"), 1), on(3, mb("PUBSUB", "SHARDCHANNELS", "a", "b"), 1),
			on(3, mb("PUBSUB", "NUMPAT", "x"), 1), on(3, mb("PUBSUB"), 1), on(3, mb("PUBSUB", "FOO"), 1),
		}},
		{name: "pubsub_introspection_resp3", conns: 2, norm: normHello, steps: []diffStep{
			on(0, mb("SUBSCRIBE", "i3"), 1), on(1, mb("HELLO", "3"), 1),
			on(1, mb("PUBSUB", "NUMSUB", "i3"), 1), on(1, mb("PUBSUB", "SHARDNUMSUB", "i3"), 1),
			on(1, mb("PUBSUB", "CHANNELS", "i3"), 1), on(1, mb("PUBSUB", "NUMPAT"), 1),
		}},

		// HELLO.
		{name: "hello", norm: normHello, steps: []diffStep{
			c0(mb("HELLO"), 1), c0(mb("HELLO", "2"), 1), c0(mb("HELLO", "3"), 1), c0(mb("HELLO"), 1),
			c0(mb("CLIENT", "GETNAME"), 1), c0(mb("HELLO", "2"), 1), c0(mb("CLIENT", "GETNAME"), 1),
		}},
		{name: "hello_errors", norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "4"), 1), c0(mb("HELLO", "1"), 1), c0(mb("HELLO", "-3"), 1), c0(mb("HELLO", "abc"), 1),
			c0(mb("HELLO", "99999999999999999999"), 1), c0(mb("HELLO", "3", "FOO"), 1),
			c0(mb("HELLO", "3", "AUTH", "default"), 1), c0(mb("HELLO", "3", "SETNAME"), 1),
			c0(mb("HELLO", "3", "SETNAME", "a b"), 1), c0(mb("CLIENT", "GETNAME"), 1),
			c0(mb("HELLO", "3", "AUTH", "bob", "x"), 1), c0(mb("CLIENT", "GETNAME"), 1),
		}},
		{name: "hello_setname_auth_without_password", norm: normHello, steps: []diffStep{
			// The default user has no password: any password is right.
			c0(mb("HELLO", "3", "AUTH", "default", "anything", "SETNAME", "me"), 1), c0(mb("CLIENT", "GETNAME"), 1),
			c0(mb("hello", "2", "setname", "you"), 1), c0(mb("CLIENT", "GETNAME"), 1),
		}},
		{name: "hello_noncanonical_version", norm: normHello, steps: []diffStep{
			// Redis's string2ll takes no leading zeros and no '+'.
			c0(mb("HELLO", "03"), 1), c0(mb("HELLO", "+3"), 1), c0(mb("HELLO", " 3"), 1),
		}},

		// AUTH without a password configured.
		{name: "auth_without_password", steps: []diffStep{
			c0(mb("AUTH", "x"), 1), c0(mb("AUTH", "default", "x"), 1), c0(mb("AUTH", "bob", "x"), 1),
			c0(mb("AUTH", "a", "b", "c"), 1),
		}},

		// requirepass.
		{name: "requirepass_noauth", auth: true, norm: append([]diffNorm{normHelloNoauth}, normHello...), steps: []diffStep{
			c0(mb("PING"), 1), c0(mb("ECHO", "a"), 1), c0(mb("SUBSCRIBE", "a"), 1), c0(mb("PUBLISH", "a", "b"), 1),
			c0(mb("CLIENT", "ID"), 1), c0(mb("SELECT", "0"), 1), c0(mb("FOOBAR"), 1), c0(mb("ECHO"), 1),
			c0(mb("CLIENT", "FOO"), 1), c0(mb("PING", "a", "b"), 1), c0("PING\r\n", 1),
			c0(mb("HELLO"), 1), c0(mb("HELLO", "3"), 1), c0(mb("HELLO", "3", "SETNAME", "x"), 1),
			c0(mb("HELLO", "3", "AUTH", "default", "wrong"), 1), c0(mb("AUTH", "wrong"), 1),
			c0(mb("AUTH", "default", "wrong"), 1), c0(mb("AUTH", "bob", diffPassword), 1),
			c0(mb("AUTH", "a", "b", "c"), 1), c0(mb("HELLO", "4"), 1),
			c0(mb("AUTH", diffPassword), 1), c0(mb("PING"), 1), c0(mb("HELLO"), 1),
		}},
		{name: "requirepass_hello_auth", auth: true, norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "3", "AUTH", "default", diffPassword, "SETNAME", "n1"), 1), c0(mb("CLIENT", "GETNAME"), 1),
			c0(mb("SUBSCRIBE", "ra"), 1), c0(mb("RESET"), 1), c0(mb("PING"), 1), c0(mb("CLIENT", "GETNAME"), 1),
			c0(mb("AUTH", "default", diffPassword), 1), c0(mb("CLIENT", "GETNAME"), 1),
		}},
		{name: "requirepass_quit_before_auth", auth: true, steps: []diffStep{
			closes(0, mb("QUIT"), 1),
		}},

		// SELECT.
		{name: "select", steps: []diffStep{
			c0(mb("SELECT", "0"), 1), c0(mb("SELECT", "15"), 1), c0(mb("SELECT", "16"), 1),
			c0(mb("SELECT", "-1"), 1), c0(mb("SELECT", "abc"), 1),
			c0(mb("SELECT", "99999999999999999999"), 1), c0(mb("SELECT", ""), 1),
		}},
		{name: "select_beyond_int32", steps: []diffStep{
			// An int64 outside int32 has its own message.
			c0(mb("SELECT", "2147483648"), 1), c0(mb("SELECT", "-2147483649"), 1),
		}},
		{name: "select_noncanonical", steps: []diffStep{
			c0(mb("SELECT", "01"), 1), c0(mb("SELECT", "+1"), 1),
		}},

		// CLIENT.
		{name: "client_id", norm: []diffNorm{normInt}, steps: []diffStep{
			// Ids depend on how many connections each server has seen.
			c0(mb("CLIENT", "ID"), 1), c0(mb("client", "id"), 1),
		}},
		{name: "client_setname_getname", steps: []diffStep{
			c0(mb("CLIENT", "GETNAME"), 1), c0(mb("CLIENT", "SETNAME", "conn-1"), 1), c0(mb("CLIENT", "GETNAME"), 1),
			c0(mb("CLIENT", "SETNAME", ""), 1), c0(mb("CLIENT", "GETNAME"), 1),
			c0(mb("CLIENT", "SETNAME", "a b"), 1), c0(mb("CLIENT", "SETNAME", "a\nb"), 1),
			c0(mb("CLIENT", "SETNAME", "caf\xc3\xa9"), 1), c0(mb("client", "setname", "x~!"), 1),
			c0(mb("CLIENT", "GETNAME"), 1),
		}},
		{name: "client_getname_resp3", norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "3"), 1), c0(mb("CLIENT", "GETNAME"), 1), c0(mb("CLIENT", "SETNAME", "n3"), 1),
			c0(mb("CLIENT", "GETNAME"), 1),
		}},
		{name: "client_reply", steps: []diffStep{
			c0(mb("CLIENT", "REPLY", "OFF"), 0), c0(mb("PING"), 0), c0(mb("ECHO", "x"), 0),
			c0(mb("CLIENT", "REPLY", "ON"), 1), c0(mb("PING"), 1),
			c0(mb("CLIENT", "REPLY", "SKIP"), 0), c0(mb("ECHO", "skipped"), 0), c0(mb("ECHO", "seen"), 1),
			c0(mb("CLIENT", "REPLY", "OFF"), 0), c0(mb("CLIENT", "REPLY", "SKIP"), 0), c0(mb("PING"), 0),
			c0(mb("CLIENT", "REPLY", "ON"), 1), c0(mb("CLIENT", "REPLY", "maybe"), 1),
			c0(mb("CLIENT", "REPLY", "OFF"), 0), c0(mb("PUBLISH", "nobody", "x"), 0),
			c0(mb("CLIENT", "REPLY", "ON"), 1),
		}},
		{name: "client_reply_off_rejected_commands", steps: []diffStep{
			// Redis suppresses every reply, errors of rejected commands too.
			c0(mb("CLIENT", "REPLY", "OFF"), 0), c0(mb("FOOBAR"), 0), c0(mb("ECHO"), 0),
			c0(mb("CLIENT", "FOO"), 0), c0(mb("CLIENT", "REPLY", "ON"), 1),
		}},
		{name: "client_reply_skip_rejected_command", steps: []diffStep{
			// SKIP applies to the next command, even one that is rejected.
			c0(mb("CLIENT", "REPLY", "SKIP"), 0), c0(mb("FOOBAR"), 0), c0(mb("PING"), 1),
		}},
		{name: "client_reply_off_subscribe_resp2", conns: 2, steps: []diffStep{
			// Confirmations and messages are pushes: REPLY OFF keeps them.
			on(0, mb("CLIENT", "REPLY", "OFF"), 0), on(0, mb("SUBSCRIBE", "ro2"), 1),
			on(1, mb("PUBLISH", "ro2", "x"), 1), on(0, "", 1), on(0, mb("UNSUBSCRIBE", "ro2"), 1),
			on(0, mb("CLIENT", "REPLY", "ON"), 1),
		}},
		{name: "client_reply_off_subscribe_resp3", conns: 2, norm: normHello, steps: []diffStep{
			on(0, mb("HELLO", "3"), 1), on(0, mb("CLIENT", "REPLY", "OFF"), 0), on(0, mb("SUBSCRIBE", "ro3"), 1),
			on(1, mb("PUBLISH", "ro3", "x"), 1), on(0, "", 1), on(0, mb("UNSUBSCRIBE", "ro3"), 1),
			on(0, mb("CLIENT", "REPLY", "ON"), 1),
		}},
		{name: "client_no_evict", steps: []diffStep{
			c0(mb("CLIENT", "NO-EVICT", "on"), 1), c0(mb("CLIENT", "NO-EVICT", "OFF"), 1),
			c0(mb("client", "no-evict", "bad"), 1), c0(mb("CLIENT", "NO-EVICT", "on", "x"), 1),
		}},
		{name: "client_list_shape", norm: []diffNorm{normClientList}, steps: []diffStep{
			c0(mb("CLIENT", "SETNAME", "lister"), 1), c0(mb("CLIENT", "LIST"), 1), c0(mb("CLIENT", "INFO"), 1),
			c0(mb("CLIENT", "LIST", "TYPE", "pubsub"), 1),
		}},
		{name: "client_list_shape_resp3", norm: append([]diffNorm{normClientList}, normHello...), steps: []diffStep{
			c0(mb("HELLO", "3"), 1), c0(mb("CLIENT", "INFO"), 1),
		}},

		// QUIT and RESET.
		{name: "quit", steps: []diffStep{c0(mb("PING"), 1), closes(0, mb("QUIT"), 1)}},
		{name: "quit_pipelined", steps: []diffStep{closes(0, mb("PING")+mb("QUIT")+mb("PING"), 2)}},
		{name: "reset_subscribed_resp3", conns: 2, norm: normHello, steps: []diffStep{
			on(0, mb("HELLO", "3"), 1), on(0, mb("SUBSCRIBE", "rs1"), 1), on(0, mb("PSUBSCRIBE", "rs*"), 1),
			on(0, mb("SSUBSCRIBE", "rss"), 1), on(0, mb("CLIENT", "SETNAME", "nm"), 1), on(0, mb("SELECT", "3"), 1),
			on(0, mb("RESET"), 1), on(0, mb("CLIENT", "GETNAME"), 1), on(0, mb("ECHO", "x"), 1),
			on(0, mb("PING"), 1), on(0, mb("HELLO"), 1),
			on(1, mb("PUBLISH", "rs1", "m"), 1), on(1, mb("SPUBLISH", "rss", "m"), 1),
			on(1, mb("PUBSUB", "NUMSUB", "rs1"), 1), on(1, mb("PUBSUB", "NUMPAT"), 1),
		}},
		{name: "reset_subscribed_resp2", steps: []diffStep{
			c0(mb("SUBSCRIBE", "rs2"), 1), c0(mb("CLIENT", "REPLY", "OFF"), 1), c0(mb("RESET"), 1),
			c0(mb("ECHO", "x"), 1), c0(mb("UNSUBSCRIBE"), 1),
		}},

		// Inline commands.
		{name: "inline", steps: []diffStep{
			c0("PING\r\n", 1), c0("ping hello\r\n", 1), c0("PING\n", 1), c0("\r\n", 0), c0("\n", 0),
			c0("   \r\n", 0), c0("  ECHO   spaced   \r\n", 1), c0("SUBSCRIBE ia ib\r\n", 2), c0("PING\r\n", 1),
			c0("UNSUBSCRIBE ia ib\r\n", 2), c0("ECHO\r\n", 1), c0("nosuch a b\r\n", 1),
		}},
		{name: "inline_quotes", steps: []diffStep{
			c0("ECHO \"hello world\"\r\n", 1), c0("ECHO 'single quoted'\r\n", 1), c0("ECHO \"tab\\there\"\r\n", 1),
			c0("ECHO \"a\\\"b\"\r\n", 1), c0("ECHO ''\r\n", 1), c0("ECHO \"\"\r\n", 1),
			c0("ECHO \"nl\\nx\"\r\n", 1), c0("ECHO 'it\\'s'\r\n", 1),
		}},
		{name: "inline_unbalanced_quotes", steps: []diffStep{
			c0("PING\r\n", 1), closes(0, "ECHO \"abc\r\n", 1),
		}},
		{name: "inline_quote_then_text", steps: []diffStep{closes(0, "ECHO \"abc\"def\r\n", 1)}},
		// Inline lines that redcon splits differently from Redis's
		// sdssplitargs: see TestInlineDeviations.
		// Not compared: an inline line with a NUL byte. Redis looks for its
		// end with strchr, which stops at the NUL, so it never answers and
		// waits for 64 KiB; Herald's answer is the saner one.

		// HTTP sent to the Redis port: Redis closes the connection
		// silently (a cross-protocol attack).
		{name: "http_post", steps: []diffStep{closes(0, "POST / HTTP/1.1\r\nHost: example\r\n\r\n", 0)}},
		{name: "http_host", steps: []diffStep{closes(0, "Host: example\r\n", 0)}},

		// CONFIG GET.
		{name: "config_get", steps: []diffStep{
			c0(mb("CONFIG", "GET", "nosuchparam"), 1), c0(mb("CONFIG", "GET", "save"), 1),
			c0(mb("config", "get", "appendonly"), 1), c0(mb("CONFIG", "GET", "no*such"), 1),
		}},
		{name: "config_get_resp3", norm: normHello, steps: []diffStep{
			c0(mb("HELLO", "3"), 1), c0(mb("CONFIG", "GET", "nosuchparam"), 1), c0(mb("CONFIG", "GET", "save"), 1),
		}},

		// Introspection whose content is Herald's own: shape only.
		{name: "info_shape", norm: append([]diffNorm{normInfo}, normHello...), steps: []diffStep{
			c0(mb("INFO"), 1), c0(mb("INFO", "server"), 1), c0(mb("HELLO", "3"), 1), c0(mb("INFO", "server"), 1),
		}},
		{name: "command_shape", norm: []diffNorm{
			normInt,
			// COMMAND INFO: Herald's flags, ACL categories and tips are
			// its own; the name and arity must match.
			reNorm(`^(\*1\r\n\*10\r\n\$\d+\r\n[a-z]+\r\n:-?\d+\r\n)(?s:.*)$`, "${1}..."),
		}, steps: []diffStep{
			c0(mb("COMMAND", "COUNT"), 1), c0(mb("COMMAND", "INFO", "ping"), 1), c0(mb("COMMAND", "INFO", "subscribe"), 1),
			c0(mb("COMMAND", "INFO", "publish"), 1),
		}},
		{name: "command_info_unknown", norm: normHello, steps: []diffStep{
			c0(mb("COMMAND", "INFO", "nosuchcmd"), 1), c0(mb("HELLO", "3"), 1), c0(mb("COMMAND", "INFO", "nosuchcmd"), 1),
		}},

		// Last: QUIT while subscribed. Herald drops the subscription only
		// after the connection is closed, so no case may follow that counts
		// subscriptions globally.
		{name: "quit_subscribed", steps: []diffStep{c0(mb("SUBSCRIBE", "qs"), 1), closes(0, mb("QUIT"), 1)}},
	}
}

// ---------------------------------------------------------------------------
// Running scripts.

const diffReadTimeout = 5 * time.Second

type diffConn struct {
	nc     net.Conn
	br     *bufio.Reader
	closed bool
}

func dialDiff(t *testing.T, addr string) *diffConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &diffConn{nc: nc, br: bufio.NewReader(nc)}
}

// isClosedErr reports whether err means the peer closed the connection.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// describeErr turns a read error into a stable transcript entry.
func describeErr(err error) string {
	var ne net.Error
	switch {
	case isClosedErr(err):
		return "<closed>"
	case errors.As(err, &ne) && ne.Timeout():
		return "<no reply>"
	default:
		return "<" + err.Error() + ">"
	}
}

// checkClosed reports what follows the expected replies: the server closing
// the connection, or bytes, or nothing.
func (c *diffConn) checkClosed() string {
	c.nc.SetReadDeadline(time.Now().Add(diffReadTimeout))
	reply, err := readRESP(c.br)
	if err != nil {
		if isClosedErr(err) {
			return "closed by server"
		}
		return "still open: " + describeErr(err)
	}
	return fmt.Sprintf("not closed: unexpected reply %q", reply)
}

// runDiff runs a case against the server at addr and returns its
// transcript. Each connection still open at the end gets RESET: its reply
// must come next on both servers, which catches replies the script did not
// expect, and it drops the connection's subscriptions before the next case.
func runDiff(t *testing.T, addr string, c diffCase) []string {
	n := max(c.conns, 1)
	conns := make([]*diffConn, n)
	for i := range conns {
		conns[i] = dialDiff(t, addr)
	}
	defer func() {
		for _, dc := range conns {
			dc.nc.Close()
		}
		waitClientsGone(t, addr, c.auth)
	}()
	var out []string
	record := func(step, conn int, s string) {
		out = append(out, fmt.Sprintf("step %d, conn %d: %s", step, conn, s))
	}
	readReplies := func(step, conn, k int) {
		dc := conns[conn]
		for j := 0; j < k && !dc.closed; j++ {
			dc.nc.SetReadDeadline(time.Now().Add(diffReadTimeout))
			reply, err := readRESP(dc.br)
			if err != nil {
				record(step, conn, describeErr(err))
				dc.closed = true // the stream is no longer in step
				return
			}
			for _, f := range c.norm {
				reply = f(reply)
			}
			record(step, conn, strconv.Quote(string(reply)))
		}
	}
	for i, s := range c.steps {
		dc := conns[s.conn]
		if dc.closed {
			record(i, s.conn, "<skipped: connection gone>")
			continue
		}
		if s.send != "" {
			dc.nc.SetWriteDeadline(time.Now().Add(diffReadTimeout))
			if _, err := dc.nc.Write([]byte(s.send)); err != nil {
				record(i, s.conn, "<write: "+describeErr(err)+">")
				dc.closed = true
				continue
			}
		}
		readReplies(i, s.conn, s.replies)
		if s.closed && !dc.closed {
			record(i, s.conn, dc.checkClosed())
			dc.closed = true
		}
	}
	for i, dc := range conns {
		if dc.closed {
			continue
		}
		dc.nc.SetWriteDeadline(time.Now().Add(diffReadTimeout))
		if _, err := dc.nc.Write([]byte(mb("RESET"))); err != nil {
			record(-1, i, "<write RESET: "+describeErr(err)+">")
			continue
		}
		readReplies(-1, i, 1)
	}
	return out
}

// waitClientsGone waits until the server at addr counts no connection but
// the one asking: a case's connections are gone before the next case, whose
// CLIENT LIST would show them.
func waitClientsGone(t *testing.T, addr string, auth bool) {
	t.Helper()
	dc := dialDiff(t, addr)
	defer dc.nc.Close()
	ask := func(cmd string) string {
		dc.nc.SetDeadline(time.Now().Add(diffReadTimeout))
		if _, err := dc.nc.Write([]byte(cmd)); err != nil {
			t.Fatal(err)
		}
		reply, err := readRESP(dc.br)
		if err != nil {
			t.Fatal(err)
		}
		return string(reply)
	}
	if auth {
		ask(mb("AUTH", diffPassword))
	}
	waitForCond(t, 10*time.Second, "the case's connections to close", func() bool {
		return strings.Contains(ask(mb("INFO", "clients")), "connected_clients:1\r\n")
	})
}

// diffTranscripts reports the two transcripts side by side, marking the
// lines that differ, or "" when they are the same.
func diffTranscripts(redis, herald []string) string {
	same := len(redis) == len(herald)
	for i := 0; same && i < len(redis); i++ {
		same = redis[i] == herald[i]
	}
	if same {
		return ""
	}
	var b strings.Builder
	for i := 0; i < max(len(redis), len(herald)); i++ {
		r, h := "<nothing>", "<nothing>"
		if i < len(redis) {
			r = redis[i]
		}
		if i < len(herald) {
			h = herald[i]
		}
		if r == h {
			fmt.Fprintf(&b, "    %s\n", r)
			continue
		}
		fmt.Fprintf(&b, "  ! redis:  %s\n  ! herald: %s\n", r, h)
	}
	return b.String()
}

// diffTargets are a Redis and a Herald configured alike.
type diffTargets struct{ redis, herald string }

func TestRedisDiff(t *testing.T) {
	open := diffTargets{
		redis:  startRedisServer(t),
		herald: startServer(t, broker.Config{}, resp.Config{}).addr,
	}
	auth := diffTargets{
		redis:  startRedisServer(t, "--requirepass", diffPassword),
		herald: startServer(t, broker.Config{}, resp.Config{RequirePass: diffPassword}).addr,
	}
	for _, c := range diffCases() {
		t.Run(c.name, func(t *testing.T) {
			tg := open
			if c.auth {
				tg = auth
			}
			want := runDiff(t, tg.redis, c)
			for _, line := range want {
				if strings.Contains(line, "<no reply>") || strings.Contains(line, "<resp:") {
					t.Fatalf("the script does not fit Redis's behaviour:\n%s", strings.Join(want, "\n"))
				}
			}
			got := runDiff(t, tg.herald, c)
			if d := diffTranscripts(want, got); d != "" {
				t.Errorf("Herald differs from redis-server:\n%s", d)
			}
		})
	}
}

// TestReadRESP checks the reply reader the differential tests rely on.
func TestReadRESP(t *testing.T) {
	valid := []string{
		"+OK\r\n", "-ERR x\r\n", ":0\r\n", ":-12\r\n", "$-1\r\n", "$0\r\n\r\n", "$3\r\na\r\n\r\n",
		"*-1\r\n", "*0\r\n", "*2\r\n:1\r\n$1\r\nx\r\n", "_\r\n", ",1.5\r\n", ",inf\r\n", "#t\r\n",
		"(12345678901234567890\r\n", "!3\r\nerr\r\n", "=7\r\ntxt:abc\r\n", "%1\r\n+k\r\n:1\r\n",
		"~2\r\n:1\r\n:2\r\n", ">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", "|1\r\n+a\r\n:1\r\n+reply\r\n",
	}
	for _, v := range valid {
		br := bufio.NewReader(strings.NewReader(v + "+next\r\n"))
		got, err := readRESP(br)
		if err != nil || string(got) != v {
			t.Errorf("readRESP(%q) = %q, %v", v, got, err)
		}
		if next, err := readRESP(br); err != nil || string(next) != "+next\r\n" {
			t.Errorf("after %q: next reply %q, %v", v, next, err)
		}
	}
	invalid := []string{
		"", "+OK\n", "+O\rK\r\n", ":01\r\n", ":+1\r\n", ":x\r\n", "$-2\r\n", "$3\r\nab\r\n", "$1\r\nab\r\n",
		"*1\r\n", "*-2\r\n", "#x\r\n", "_x\r\n", ",abc\r\n", "=3\r\nabc\r\n", "?\r\n", "(\r\n", "%1\r\n+k\r\n",
	}
	for _, v := range invalid {
		if got, err := readRESP(bufio.NewReader(strings.NewReader(v))); err == nil {
			t.Errorf("readRESP(%q) = %q, want an error", v, got)
		}
	}
}
