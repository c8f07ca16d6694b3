package resp_test

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
)

// These tests drive Herald with the real redis-cli (7.0.15 here). Its output
// is not a terminal, so it prints replies raw: one line per element, nested
// arrays flattened, an empty array as an empty line.

// redisCLIPath returns the redis-cli binary, or fails the test: a missing
// tool is a broken machine, not a reason to skip.
func redisCLIPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not found: install redis-tools (make deps)")
	}
	return p
}

// cliArgs returns redis-cli's arguments to reach addr, followed by args.
func cliArgs(t testing.TB, addr string, args ...string) []string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"-h", host, "-p", port}, args...)
}

// cliRun runs redis-cli against addr, feeding it stdin, and returns what it
// printed, without the final newline.
func cliRun(t testing.TB, addr, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, redisCLIPath(t), cliArgs(t, addr, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("redis-cli %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return strings.TrimSuffix(stdout.String(), "\n")
}

// cliExpect runs redis-cli with args and fails unless it prints want, one
// element a line.
func cliExpect(t testing.TB, addr string, args []string, want ...string) {
	t.Helper()
	got := cliRun(t, addr, "", args...)
	if w := strings.Join(want, "\n"); got != w {
		t.Fatalf("redis-cli %s:\ngot  %q\nwant %q", strings.Join(args, " "), got, w)
	}
}

// cliProc is a redis-cli left running in the background, such as one in
// subscribed mode, which reads until it is killed.
type cliProc struct {
	t     testing.TB
	args  []string
	lines chan string
	seen  []string // every line read so far, for failure messages
	kill  func()   // ends the process; idempotent
}

// startCLI starts redis-cli with args against addr. It is killed when the
// test ends, or earlier by kill.
func startCLI(t testing.TB, addr string, args ...string) *cliProc {
	t.Helper()
	cmd := exec.Command(redisCLIPath(t), cliArgs(t, addr, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &cliProc{t: t, args: args, lines: make(chan string)}
	stop := make(chan struct{})
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			case <-stop:
				return
			}
		}
	}()
	var killed bool
	kill := func() {
		if killed {
			return
		}
		killed = true
		close(stop)
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Cleanup(kill)
	p.kill = kill
	return p
}

// expect reads the next lines and fails unless they are want.
func (p *cliProc) expect(want ...string) {
	p.t.Helper()
	for _, w := range want {
		timeout := time.NewTimer(10 * time.Second)
		select {
		case line, ok := <-p.lines:
			timeout.Stop()
			if !ok {
				p.t.Fatalf("redis-cli %s: output ended waiting for %q; read %q", strings.Join(p.args, " "), w, p.seen)
			}
			p.seen = append(p.seen, line)
			if line != w {
				p.t.Fatalf("redis-cli %s: got line %q, want %q; read %q", strings.Join(p.args, " "), line, w, p.seen)
			}
		case <-timeout.C:
			p.t.Fatalf("redis-cli %s: no line within 10s waiting for %q; read %q", strings.Join(p.args, " "), w, p.seen)
		}
	}
}

// waitForCond polls cond until it holds, failing the test with what if it
// does not within timeout.
func waitForCond(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronization
	}
}

// cliProtoFlags are redis-cli's flags for each protocol version.
var cliProtoFlags = []struct {
	name  string
	flags []string
}{
	{"RESP2", nil},
	{"RESP3", []string{"-3"}},
}

func TestRedisCLISubscribePublish(t *testing.T) {
	for _, p := range cliProtoFlags {
		t.Run(p.name, func(t *testing.T) {
			s := startServer(t, broker.Config{}, resp.Config{})
			sub := startCLI(t, s.addr, append(p.flags, "SUBSCRIBE", "news")...)
			// The confirmation is written only once publishers can see the
			// subscription, so the publish below must count it.
			sub.expect("subscribe", "news", "1")
			cliExpect(t, s.addr, append(p.flags, "PUBLISH", "news", "hello"), "1")
			sub.expect("message", "news", "hello")
			cliExpect(t, s.addr, append(p.flags, "PUBLISH", "elsewhere", "x"), "0")
			cliExpect(t, s.addr, append(p.flags, "PUBLISH", "news", "again"), "1")
			sub.expect("message", "news", "again")
		})
	}
}

func TestRedisCLIPatternSubscribe(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{})
	psub := startCLI(t, s.addr, "PSUBSCRIBE", "news.*")
	psub.expect("psubscribe", "news.*", "1")

	for _, tc := range []struct {
		channel string
		want    string // PUBLISH's reply
	}{
		{"news.sport", "1"},
		{"weather", "0"},
		{"news", "0"}, // news.* needs the dot
		{"newsXsport", "0"},
		{"news.tech", "1"},
	} {
		cliExpect(t, s.addr, []string{"PUBLISH", tc.channel, "on " + tc.channel}, tc.want)
	}
	// Messages arrive in log order, so one for a channel that does not
	// match would show up before news.tech's.
	psub.expect("pmessage", "news.*", "news.sport", "on news.sport")
	psub.expect("pmessage", "news.*", "news.tech", "on news.tech")

	// Redis counts a client subscribed to a channel and to a pattern that
	// matches it once for each. redis-cli sends only its first command once
	// subscribed, so this client is a raw connection.
	both := dialRaw(t, s.addr)
	both.send("SUBSCRIBE news.sport\r\nPSUBSCRIBE news.*\r\n")
	for _, want := range []string{
		"*3", "$9", "subscribe", "$10", "news.sport", ":1",
		"*3", "$10", "psubscribe", "$6", "news.*", ":2",
	} {
		if got := both.readLine(); got != want {
			t.Fatalf("confirmations: got %q, want %q", got, want)
		}
	}
	cliExpect(t, s.addr, []string{"PUBLISH", "news.sport", "goal"}, "3") // psub once, both twice
	psub.expect("pmessage", "news.*", "news.sport", "goal")
	for _, want := range []string{
		"*3", "$7", "message", "$10", "news.sport", "$4", "goal",
		"*4", "$8", "pmessage", "$6", "news.*", "$10", "news.sport", "$4", "goal",
	} {
		if got := both.readLine(); got != want {
			t.Fatalf("deliveries to the double subscriber: got %q, want %q", got, want)
		}
	}
}

func TestRedisCLIPubsubIntrospection(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{})
	sub := startCLI(t, s.addr, "SUBSCRIBE", "news")
	sub.expect("subscribe", "news", "1")
	psub := startCLI(t, s.addr, "PSUBSCRIBE", "news.*", "chat.*")
	psub.expect("psubscribe", "news.*", "1", "psubscribe", "chat.*", "2")

	for _, p := range cliProtoFlags {
		for _, tc := range []struct {
			args []string
			want []string
		}{
			{[]string{"PUBSUB", "NUMSUB", "news", "other"}, []string{"news", "1", "other", "0"}},
			{[]string{"PUBSUB", "NUMSUB"}, []string{""}},
			{[]string{"PUBSUB", "CHANNELS"}, []string{"news"}},
			{[]string{"PUBSUB", "CHANNELS", "n*"}, []string{"news"}},
			{[]string{"PUBSUB", "CHANNELS", "x*"}, []string{""}},
			// Patterns are not channels: NUMSUB counts none of them.
			{[]string{"PUBSUB", "NUMSUB", "news.*"}, []string{"news.*", "0"}},
			{[]string{"PUBSUB", "NUMPAT"}, []string{"2"}},
		} {
			t.Run(p.name+"/"+strings.Join(tc.args, "_"), func(t *testing.T) {
				cliExpect(t, s.addr, append(p.flags, tc.args...), tc.want...)
			})
		}
	}

	// A subscriber that goes away is no longer counted.
	sub.kill()
	psub.kill()
	waitForCond(t, 10*time.Second, "PUBSUB NUMSUB news to drop to 0", func() bool {
		return cliRun(t, s.addr, "", "PUBSUB", "NUMSUB", "news") == "news\n0"
	})
	waitForCond(t, 10*time.Second, "PUBSUB NUMPAT to drop to 0", func() bool {
		return cliRun(t, s.addr, "", "PUBSUB", "NUMPAT") == "0"
	})
	cliExpect(t, s.addr, []string{"PUBSUB", "CHANNELS"}, "")
}

func TestRedisCLIShardChannels(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{})
	ssub := startCLI(t, s.addr, "SSUBSCRIBE", "orders")
	ssub.expect("ssubscribe", "orders", "1")
	sub := startCLI(t, s.addr, "SUBSCRIBE", "orders")
	sub.expect("subscribe", "orders", "1")
	psub := startCLI(t, s.addr, "PSUBSCRIBE", "o*")
	psub.expect("psubscribe", "o*", "1")

	// The two namespaces share no subscribers, and patterns match only
	// the global one.
	cliExpect(t, s.addr, []string{"SPUBLISH", "orders", "s1"}, "1")
	cliExpect(t, s.addr, []string{"PUBLISH", "orders", "g1"}, "2")
	cliExpect(t, s.addr, []string{"SPUBLISH", "orders", "s2"}, "1")
	cliExpect(t, s.addr, []string{"PUBLISH", "orders", "g2"}, "2")
	ssub.expect("smessage", "orders", "s1", "smessage", "orders", "s2")
	sub.expect("message", "orders", "g1", "message", "orders", "g2")
	psub.expect("pmessage", "o*", "orders", "g1", "pmessage", "o*", "orders", "g2")

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"PUBSUB", "SHARDCHANNELS"}, []string{"orders"}},
		{[]string{"PUBSUB", "SHARDNUMSUB", "orders", "none"}, []string{"orders", "1", "none", "0"}},
		{[]string{"PUBSUB", "CHANNELS"}, []string{"orders"}},
		{[]string{"PUBSUB", "NUMSUB", "orders"}, []string{"orders", "1"}},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			cliExpect(t, s.addr, tc.args, tc.want...)
		})
	}
}

// TestRedisCLIPipeMode feeds commands on stdin. redis-cli then first sends
// COMMAND DOCS (for its hints) and prints nothing of its reply; a reply it
// could not parse would show up as an error or a hang.
func TestRedisCLIPipeMode(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{})
	for _, p := range cliProtoFlags {
		t.Run(p.name, func(t *testing.T) {
			got := cliRun(t, s.addr, "PING\nPUBLISH a b\n", p.flags...)
			if want := "PONG\n0"; got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

func TestRedisCLIHeraldPublishHistory(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{})

	// HERALD.PUBLISH replies seq, epoch, receivers.
	first := strings.Split(cliRun(t, s.addr, "", "HERALD.PUBLISH", "hist", "first"), "\n")
	if len(first) != 3 || first[0] != "1" || first[2] != "0" {
		t.Fatalf("first HERALD.PUBLISH: got %q, want [1 <epoch> 0]", first)
	}
	epoch := first[1]
	if n, err := strconv.ParseUint(epoch, 10, 64); err != nil || n == 0 {
		t.Fatalf("epoch: got %q, want a positive integer", epoch)
	}

	sub := startCLI(t, s.addr, "SUBSCRIBE", "hist")
	sub.expect("subscribe", "hist", "1")
	cliExpect(t, s.addr, []string{"HERALD.PUBLISH", "hist", "second"}, "2", epoch, "1")
	sub.expect("message", "hist", "second")

	// Each message is seq, time (leader's Unix ms), payload.
	for _, tc := range []struct {
		name  string
		query []string
		msgs  []string // seq, payload pairs
	}{
		{"all", nil, []string{"1", "first", "2", "second"}},
		{"since", []string{"SINCE", "1"}, []string{"2", "second"}},
		{"last", []string{"LAST", "1"}, []string{"2", "second"}},
		{"limit", []string{"LIMIT", "1"}, []string{"1", "first"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"HERALD.HISTORY", "hist"}, tc.query...)
			got := strings.Split(cliRun(t, s.addr, "", args...), "\n")
			head := []string{"epoch", epoch, "first", "1", "last", "2", "messages"}
			if len(got) != len(head)+3*len(tc.msgs)/2 || strings.Join(got[:len(head)], " ") != strings.Join(head, " ") {
				t.Fatalf("HERALD.HISTORY %s: got %q", strings.Join(tc.query, " "), got)
			}
			for i, m := range got[len(head):] {
				j := i / 3
				switch i % 3 {
				case 0:
					if m != tc.msgs[2*j] {
						t.Errorf("message %d: seq %q, want %s", j, m, tc.msgs[2*j])
					}
				case 1:
					if ms, err := strconv.ParseInt(m, 10, 64); err != nil || ms <= 0 {
						t.Errorf("message %d: time %q, want Unix milliseconds", j, m)
					}
				case 2:
					if m != tc.msgs[2*j+1] {
						t.Errorf("message %d: payload %q, want %q", j, m, tc.msgs[2*j+1])
					}
				}
			}
		})
	}
}
