package resp_test

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
)

// Malformed input: each case sends, on a fresh connection, two well-formed
// commands and then bad bytes, all in one write. The connection must get
// the replies to the commands before the bad bytes, then exactly the error
// redis-server gives for the same bytes (or, where Redis gives none,
// Herald's own), and then be closed by the server; meanwhile a subscriber
// and a publisher connected before keep working.

// malPrefix is pipelined before every bad input; its replies must arrive.
var malPrefix = "PING\r\n" + mb("ECHO", "before")

// malSentinel follows inputs that Redis accepts: reading stops at its reply.
var (
	malSentinel      = mb("ECHO", "sentinel")
	malSentinelReply = "$8\r\nsentinel\r\n"
)

const malClosed = "<closed by server>"

// malTranscript writes input to a fresh connection and returns the replies
// it gets, up to the sentinel's, or up to the server closing the connection.
func malTranscript(t *testing.T, addr, input string) []string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Write concurrently: the server may stop reading (and close) before
	// a large input is all written.
	written := make(chan struct{})
	go func() {
		defer close(written)
		nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		nc.Write([]byte(input))
	}()
	defer func() {
		nc.Close()
		<-written
	}()
	br := bufio.NewReader(nc)
	var out []string
	for i := 0; i < 100; i++ {
		nc.SetReadDeadline(time.Now().Add(diffReadTimeout))
		reply, err := readRESP(br)
		if err != nil {
			if isClosedErr(err) {
				out = append(out, malClosed)
			} else {
				out = append(out, describeErr(err))
			}
			break
		}
		out = append(out, string(reply))
		if string(reply) == malSentinelReply {
			break
		}
	}
	return out
}

// malWitness is a subscriber and a publisher connected to a server before
// the bad inputs: both must keep working.
type malWitness struct {
	sub, pub *diffConn
	n        int
}

func newMalWitness(t *testing.T, addr, password string) *malWitness {
	t.Helper()
	w := &malWitness{sub: dialDiff(t, addr), pub: dialDiff(t, addr)}
	for _, c := range []*diffConn{w.sub, w.pub} {
		if password != "" {
			mustReply(t, c, mb("AUTH", password), "+OK\r\n")
		}
	}
	mustReply(t, w.sub, mb("SUBSCRIBE", "witness"), "*3\r\n$9\r\nsubscribe\r\n$7\r\nwitness\r\n:1\r\n")
	return w
}

// check publishes a new message and expects the subscriber to get it.
func (w *malWitness) check(t *testing.T) {
	t.Helper()
	w.n++
	msg := fmt.Sprintf("after-%d", w.n)
	mustReply(t, w.pub, mb("PUBLISH", "witness", msg), ":1\r\n")
	want := fmt.Sprintf("*3\r\n$7\r\nmessage\r\n$7\r\nwitness\r\n$%d\r\n%s\r\n", len(msg), msg)
	mustReply(t, w.sub, "", want)
}

// mustReply sends send (if any) on c and expects the next reply to be want.
func mustReply(t *testing.T, c *diffConn, send, want string) {
	t.Helper()
	if send != "" {
		c.nc.SetWriteDeadline(time.Now().Add(diffReadTimeout))
		if _, err := c.nc.Write([]byte(send)); err != nil {
			t.Fatalf("write %q: %v", send, err)
		}
	}
	c.nc.SetReadDeadline(time.Now().Add(diffReadTimeout))
	got, err := readRESP(c.br)
	if err != nil || string(got) != want {
		t.Fatalf("after %q: got %q, %v; want %q", send, got, err, want)
	}
}

// settle waits until the Herald at addr has committed a publish through
// Raft. A test whose server lives only milliseconds calls it first: a
// raftstore.Store closed while its first leader duties are in flight can
// hang in Close (its retention-policy Barrier is never answered after
// Raft shuts down).
func settle(t *testing.T, addr string) {
	t.Helper()
	c := dialDiff(t, addr)
	mustReply(t, c, mb("PUBLISH", "settle", "x"), ":0\r\n")
	c.nc.Close()
}

type malTarget struct {
	redis, herald string
	witness       *malWitness
}

type malCase struct {
	name   string
	target string // "default", "qbuf" (1 MiB query buffer) or "auth"
	input  string
	// want, if set, is Herald's own answer, for input to which Redis gives
	// no error (it waits, or its limit means something else); otherwise
	// Herald must answer what redis-server answers.
	want []string
	why  string // why want is Herald's own
}

func malCases() []malCase {
	// Seeded random bytes, without CR and LF, so the line ends where the
	// case says.
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 4096)
	for i := range garbage {
		for garbage[i] = byte(rng.UintN(256)); garbage[i] == '\r' || garbage[i] == '\n'; {
			garbage[i] = byte(rng.UintN(256))
		}
	}
	big := strings.Repeat("$1\r\na\r\n", 1024*1024+1)
	answered := []string{"+PONG\r\n", "$6\r\nbefore\r\n"}
	return []malCase{
		// Multibulk counts.
		{name: "multibulk_count_not_a_number", input: malPrefix + "*abc\r\n"},
		{name: "multibulk_count_empty", input: malPrefix + "*\r\n"},
		{name: "multibulk_count_over_int_max", input: malPrefix + "*2147483648\r\n"},
		{name: "multibulk_count_huge", input: malPrefix + "*99999999999999999999999\r\n"},
		// Redis ignores a count <= 0 and goes on; redcon, Herald's parser,
		// calls it malformed. A documented deviation (docs/protocol.md).
		{name: "multibulk_count_negative", input: malPrefix + "*-1\r\n" + malSentinel,
			want: append(answered, "-ERR Protocol error: invalid multibulk length\r\n", malClosed),
			why:  "redcon rejects a count <= 0, which Redis skips"},
		{name: "multibulk_count_zero", input: malPrefix + "*0\r\n" + malSentinel,
			want: append(answered, "-ERR Protocol error: invalid multibulk length\r\n", malClosed),
			why:  "redcon rejects a count <= 0, which Redis skips"},
		// Redis 7 accepts up to INT_MAX arguments; Herald keeps Redis 6's
		// 1024*1024, which bounds a command's argument list (24 bytes an
		// argument, held whole while the command runs).
		{name: "multibulk_count_over_1M", input: malPrefix + "*1048577\r\n" + big + malSentinel,
			want: append(answered, "-ERR Protocol error: invalid multibulk length\r\n", malClosed),
			why:  "Herald keeps the 1M argument limit"},
		// Redis's string2ll takes no leading zeros.
		{name: "multibulk_count_leading_zero", input: malPrefix + "*01\r\n$4\r\nPING\r\n" + malSentinel},
		{name: "multibulk_line_over_64k", input: malPrefix + "*" + strings.Repeat("1", 70000)},

		// Bulk headers.
		{name: "bulk_length_negative", input: malPrefix + "*1\r\n$-5\r\n"},
		{name: "bulk_length_over_proto_max_bulk_len", input: malPrefix + "*1\r\n$99999999999\r\n"},
		{name: "bulk_length_not_a_number", input: malPrefix + "*1\r\n$abc\r\n"},
		{name: "bulk_length_empty", input: malPrefix + "*1\r\n$\r\n"},
		{name: "bulk_length_leading_zero", input: malPrefix + "*1\r\n$04\r\nPING\r\n" + malSentinel},
		{name: "bulk_header_without_dollar", input: malPrefix + "*2\r\n$4\r\nECHO\r\nfoo\r\n"},
		{name: "bulk_header_without_dollar_binary", input: malPrefix + "*1\r\n\xff\r\n"},
		{name: "bulk_line_over_64k", input: malPrefix + "*1\r\n$" + strings.Repeat("1", 70000)},
		// Redis skips the two bytes after a bulk without looking at them;
		// redcon checks they are CRLF.
		{name: "bulk_not_followed_by_crlf", input: malPrefix + "*1\r\n$4\r\nPINGxx\r\n" + malSentinel,
			want: append(answered, "-ERR Protocol error: invalid bulk length\r\n", malClosed),
			why:  "redcon checks the CRLF after a bulk"},

		// Inline commands.
		{name: "inline_over_64k", input: malPrefix + "ECHO " + strings.Repeat("a", 70000)},
		// The commands before the bad line run, as in Redis.
		{name: "inline_unbalanced_quotes", input: malPrefix + "ECHO \"abc\r\n"},
		{name: "inline_binary", input: malPrefix + "\xff\xfe\xfd\x80\r\n" + malSentinel},

		// Binary garbage after '*'. Redis scans for CR with strchr, which
		// stops at a NUL byte: it waits for more input and gives no error.
		{name: "garbage_nul_after_star", input: malPrefix + "*\xff\x00garbage\r\n",
			want: append(answered, "-ERR Protocol error: invalid multibulk length\r\n", malClosed),
			why:  "Redis waits at the NUL"},
		{name: "garbage_random_after_star", input: malPrefix + "*" + string(garbage) + "\r\n",
			want: append(answered, "-ERR Protocol error: invalid multibulk length\r\n", malClosed),
			why:  "Redis waits at the NUL"},

		// Query buffer. Redis limits its buffer, from which it moves each
		// big bulk out as soon as it is read; Herald's MaxQueryBuffer is
		// the largest single command.
		// (Without the prefix: whether its replies survive is a race here;
		// TestQueryBufferLimitAnswersEarlierCommands pins it down.)
		{name: "command_over_max_query_buffer", target: "qbuf",
			input: mb("NOSUCH", strings.Repeat("a", 600000), strings.Repeat("b", 600000), "c"),
			want:  []string{malClosed}, why: "MaxQueryBuffer bounds a command, client-query-buffer-limit a buffer"},
		{name: "last_bulk_over_max_query_buffer", target: "qbuf",
			input: malPrefix + mb("NOSUCH", "x", strings.Repeat("a", 2000000)) + malSentinel},

		// Before AUTH, Redis allows at most 10 arguments of at most 16 KiB.
		{name: "unauthenticated_multibulk_length", target: "auth", input: mb("PING") + "*11\r\n"},
		{name: "unauthenticated_bulk_length", target: "auth", input: mb("PING") + "*2\r\n$4\r\nECHO\r\n$16385\r\n"},
		{name: "unauthenticated_limits_boundary", target: "auth",
			input: mb("PING") + "*10\r\n" + strings.Repeat("$1\r\na\r\n", 10) +
				mb("ECHO", strings.Repeat("b", 16384)) + mb("QUIT")},
		{name: "authenticated_no_limits", target: "auth",
			input: mb("AUTH", diffPassword) + "*11\r\n" + strings.Repeat("$1\r\na\r\n", 11) +
				mb("ECHO", strings.Repeat("b", 16385)) + malSentinel},
	}
}

func TestMalformedInput(t *testing.T) {
	targets := map[string]*malTarget{
		"default": {
			redis:  startRedisServer(t),
			herald: startServer(t, broker.Config{}, resp.Config{}).addr,
		},
		"qbuf": {
			redis:  startRedisServer(t, "--client-query-buffer-limit", "1mb"),
			herald: startServer(t, broker.Config{}, resp.Config{MaxQueryBuffer: 1 << 20}).addr,
		},
		"auth": {
			redis:  startRedisServer(t, "--requirepass", diffPassword),
			herald: startServer(t, broker.Config{}, resp.Config{RequirePass: diffPassword}).addr,
		},
	}
	for name, tg := range targets {
		password := ""
		if name == "auth" {
			password = diffPassword
		}
		tg.witness = newMalWitness(t, tg.herald, password)
	}
	for _, c := range malCases() {
		t.Run(c.name, func(t *testing.T) {
			tg := targets[c.target]
			if tg == nil {
				tg = targets["default"]
			}
			want := c.want
			if want == nil {
				want = malTranscript(t, tg.redis, c.input)
				if last := want[len(want)-1]; last != malClosed && last != malSentinelReply {
					t.Fatalf("redis-server neither closed the connection nor reached the sentinel: %q", want)
				}
			}
			got := malTranscript(t, tg.herald, c.input)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				src := "redis-server"
				if c.want != nil {
					src = "Herald's own (" + c.why + ")"
				}
				t.Errorf("replies differ\n got:  %q\n want: %q (%s)", got, want, src)
			}
			tg.witness.check(t)
		})
	}
}

// TestQueryBufferLimitAnswersEarlierCommands: a command over MaxQueryBuffer
// closes the connection without a reply to it, but the commands before it
// are answered, even when their replies are still queued because the
// client is slow to read. The client reads only once it has written
// everything, through a small receive buffer, so that most replies are
// still queued in Herald when it reaches the bad command.
func TestQueryBufferLimitAnswersEarlierCommands(t *testing.T) {
	addr := startServer(t, broker.Config{}, resp.Config{MaxQueryBuffer: 1 << 20}).addr
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		})
		return errors.Join(err, serr)
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const n = 32
	payload := strings.Repeat("p", 900_000)
	input := strings.Repeat(mb("ECHO", payload), n) + mb("NOSUCH", strings.Repeat("a", 600000), strings.Repeat("b", 600000), "c")
	written := make(chan struct{})
	go func() {
		defer close(written)
		nc.SetWriteDeadline(time.Now().Add(60 * time.Second))
		nc.Write([]byte(input)) // may fail once the server closes: fine
	}()
	<-written
	br := bufio.NewReader(nc)
	want := fmt.Sprintf("$%d\r\n%s\r\n", len(payload), payload)
	for i := 0; i < n; i++ {
		nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		reply, err := readRESP(br)
		if err != nil || string(reply) != want {
			t.Fatalf("reply %d of %d to the commands before the bad one: %.60q, %v", i+1, n, reply, err)
		}
	}
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if reply, err := readRESP(br); !isClosedErr(err) {
		t.Fatalf("after the replies: %.60q, %v; want the connection closed", reply, err)
	}
}

// TestProtoMaxBulkLenBoundary: a bulk of exactly ProtoMaxBulkLen bytes is
// accepted, one byte more closes the connection with Redis's error. At
// 1 MiB, the smallest proto-max-bulk-len Redis takes, it is compared with
// redis-server; at 1024 bytes with Herald alone.
func TestProtoMaxBulkLenBoundary(t *testing.T) {
	echo := func(n int) (string, string) {
		s := strings.Repeat("x", n)
		return mb("ECHO", s), fmt.Sprintf("$%d\r\n%s\r\n", n, s)
	}
	t.Run("1KiB", func(t *testing.T) {
		addr := startServer(t, broker.Config{}, resp.Config{ProtoMaxBulkLen: 1024}).addr
		settle(t, addr)
		ok, okReply := echo(1024)
		if got := malTranscript(t, addr, ok+malSentinel); fmt.Sprint(got) != fmt.Sprint([]string{okReply, malSentinelReply}) {
			t.Errorf("1024-byte bulk: got %q", got)
		}
		bad, _ := echo(1025)
		want := []string{"+PONG\r\n", "$6\r\nbefore\r\n", "-ERR Protocol error: invalid bulk length\r\n", malClosed}
		if got := malTranscript(t, addr, malPrefix+bad); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("1025-byte bulk: got %q, want %q", got, want)
		}
	})
	t.Run("1MiB_vs_redis", func(t *testing.T) {
		redis := startRedisServer(t, "--proto-max-bulk-len", "1mb")
		herald := startServer(t, broker.Config{}, resp.Config{ProtoMaxBulkLen: 1 << 20}).addr
		settle(t, herald)
		for _, n := range []int{1 << 20, 1<<20 + 1} {
			in, _ := echo(n)
			in = malPrefix + in + malSentinel
			want := malTranscript(t, redis, in)
			got := malTranscript(t, herald, in)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%d-byte bulk: herald %.200q, redis %.200q", n, got, want)
			}
		}
	})
}

// TestMaxClientsBoundary: with room for three clients, three connections
// work, a fourth gets Redis's error and is closed, and once one of the three
// leaves a new connection is accepted. Run against redis-server
// --maxclients 3 too, with the same expectations.
func TestMaxClientsBoundary(t *testing.T) {
	targets := []struct{ name, addr string }{
		{"herald", startServer(t, broker.Config{}, resp.Config{MaxClients: 3}).addr},
		{"redis", startRedisServer(t, "--maxclients", "3")},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			var conns []*diffConn
			for i := 0; i < 3; i++ {
				c := dialDiff(t, tg.addr)
				if i == 0 {
					// Also settles Herald's Raft (see settle).
					mustReply(t, c, mb("PUBLISH", "settle", "x"), ":0\r\n")
				} else {
					mustReply(t, c, mb("PING"), "+PONG\r\n")
				}
				conns = append(conns, c)
			}
			if got := malTranscript(t, tg.addr, mb("PING")); fmt.Sprint(got) != fmt.Sprint([]string{"-ERR max number of clients reached\r\n", malClosed}) {
				t.Fatalf("fourth connection: got %q", got)
			}
			for _, c := range conns {
				mustReply(t, c, mb("ECHO", "still here"), "$10\r\nstill here\r\n")
			}
			conns[0].nc.Close()
			// The server notices the close asynchronously: poll until a new
			// connection is let in.
			deadline := time.Now().Add(10 * time.Second)
			for attempt := 0; ; attempt++ {
				got := malTranscript(t, tg.addr, mb("ECHO", "sentinel"))
				if fmt.Sprint(got) == fmt.Sprint([]string{malSentinelReply}) {
					break
				}
				if fmt.Sprint(got) != fmt.Sprint([]string{"-ERR max number of clients reached\r\n", malClosed}) {
					t.Fatalf("attempt %d: got %q", attempt, got)
				}
				if time.Now().After(deadline) {
					t.Fatal("no new connection accepted after one of three closed")
				}
			}
		})
	}
}
