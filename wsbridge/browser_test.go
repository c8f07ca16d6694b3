package wsbridge_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/raftstore/raftstoretest"
	"github.com/herald-broker/herald/resp"
	"github.com/herald-broker/herald/wsbridge"
)

// The browser tests drive the demo page (static/index.html, on herald.js)
// in headless Chromium against an in-process node, and publish with the
// real redis-cli, as an operator trying the demo would.

const (
	browserChromium = "/usr/bin/chromium"
	browserTimeout  = 2 * time.Minute             // a whole test
	browserStep     = 30 * time.Second            // one step: load, wait for a message, ...
	demoChannel     = "chat:demo"                 // the demo's channel
	demoURLPath     = "/"                         // where the demo page is served
	demoOpenSel     = `#state[data-state="open"]` // the demo's connection state
)

// TestBrowserDemo loads the demo, sees a redis-cli publish arrive, cuts the
// node's HTTP side off (the browser's socket fails and reconnects are
// refused) while 20 messages are published, and checks that after the page
// reconnects it shows all 20, in order, once each, without a gap; then it
// sends a message from the page.
func TestBrowserDemo(t *testing.T) {
	n := startBrowserNode(t, raftstore.Config{}, wsbridge.Config{AllowBrowserPublish: true})
	ctx := openBrowser(t)

	browserDo(t, ctx, "load the demo",
		chromedp.Navigate("http://"+n.addr+demoURLPath),
		chromedp.WaitVisible(chromedp.CSS(demoOpenSel+`[data-opens="1"]`)))

	n.redisCLI(t, "", "PUBLISH", demoChannel, "hello from redis-cli")
	browserDo(t, ctx, "see the redis-cli message",
		chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="1"]`)))
	want := []demoMessage{{Seq: 1, Who: "backend", Text: "hello from redis-cli"}}
	checkDemoMessages(t, ctx, want)
	if got := browserRun(t, ctx, "read the panel", chromedp.Text(chromedp.CSS("#last-seq"))); got != "1" {
		t.Errorf("panel's last sequence: %q, want 1", got)
	}

	// The node's HTTP side goes away: every connection is cut and new ones
	// are refused until it comes back.
	n.drop()
	browserRun(t, ctx, "see reconnects refused",
		chromedp.Poll[bool](`+document.getElementById('attempts').dataset.n >= 2`,
			chromedp.WithPollingTimeout(browserStep)))
	var script strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&script, "PUBLISH %s \"outage %02d\"\n", demoChannel, i)
		want = append(want, demoMessage{Seq: 1 + i, Who: "backend", Text: fmt.Sprintf("outage %02d", i)})
	}
	out := n.redisCLI(t, script.String())
	// Each PUBLISH reached no subscriber on the node: the page was away.
	if got := strings.Fields(out); len(got) != 20 || strings.Trim(strings.Join(got, ""), "0") != "" {
		t.Fatalf("redis-cli during the outage: %q, want twenty 0s", out)
	}
	n.restore()

	browserDo(t, ctx, "reconnect and catch up",
		chromedp.WaitVisible(chromedp.CSS(demoOpenSel+`[data-opens="2"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="21"]`)))
	checkDemoMessages(t, ctx, want)
	checkDemoNoGap(t, ctx)

	// Send from the page: the WebSocket publish op (AllowBrowserPublish).
	browserDo(t, ctx, "send from the page",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("name").value = ""`),
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#text"), "hi from the browser"),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="22"]`)))
	want = append(want, demoMessage{Seq: 22, Who: "alice", Text: "hi from the browser"})
	checkDemoMessages(t, ctx, want)
	if mode := browserRun(t, ctx, "read the publish mode", chromedp.Text(chromedp.CSS("#pub-mode"))); mode != "WebSocket" {
		t.Errorf("publishing via %q, want WebSocket", mode)
	}
	if hist := n.redisCLI(t, "", "HERALD.HISTORY", demoChannel, "LAST", "1"); !strings.Contains(hist, `"text":"hi from the browser"`) {
		t.Errorf("HERALD.HISTORY after the page's publish:\n%s", hist)
	}
	checkDemoNoGap(t, ctx)
	saveBrowserScreenshot(t, ctx, "herald-demo.png")
}

// TestBrowserResumeAndGap checks herald.js's own reconnect() resumes each
// time, and that a gap it cannot fill (retention keeps 5 messages, 20 were
// published while the page was disconnected) is reported with recovered
// false and shown by the demo.
func TestBrowserResumeAndGap(t *testing.T) {
	policy := raftstore.Policy{Rules: []raftstore.Rule{{Pattern: "*", MaxCount: 5}}}
	n := startBrowserNode(t, raftstore.Config{Retention: &policy}, wsbridge.Config{AllowBrowserPublish: true})
	ctx := openBrowser(t)

	browserDo(t, ctx, "load the demo",
		chromedp.Navigate("http://"+n.addr+demoURLPath),
		chromedp.WaitVisible(chromedp.CSS(demoOpenSel+`[data-opens="1"]`)))
	n.redisCLI(t, "", "PUBLISH", demoChannel, "m1")
	browserDo(t, ctx, "see m1", chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="1"]`)))

	// The Force reconnect button: herald.js drops its socket and resumes.
	browserDo(t, ctx, "force reconnect",
		chromedp.Click(chromedp.CSS("#reconnect")),
		chromedp.WaitVisible(chromedp.CSS(demoOpenSel+`[data-opens="2"]`)))
	n.redisCLI(t, "", "PUBLISH", demoChannel, "m2")
	browserDo(t, ctx, "see m2", chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="2"]`)))

	// disconnected runs publish while the page's client is closed, then
	// reconnects it with h.reconnect().
	disconnected := func(step string, opens int, publish func()) {
		browserDo(t, ctx, step+": close",
			chromedp.Evaluate[chromedp.Void](`demo.herald.close()`),
			chromedp.WaitVisible(chromedp.CSS(`#state[data-state="closed"]`)))
		publish()
		browserDo(t, ctx, step+": reconnect",
			chromedp.Evaluate[chromedp.Void](`demo.herald.reconnect()`),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`%s[data-opens="%d"]`, demoOpenSel, opens))))
	}
	publishN := func(from, to int) {
		var script strings.Builder
		for i := from; i <= to; i++ {
			fmt.Fprintf(&script, "PUBLISH %s m%d\n", demoChannel, i)
		}
		n.redisCLI(t, script.String())
	}

	// Three messages while away: within retention, so all are recovered.
	disconnected("within retention", 3, func() { publishN(3, 5) })
	browserDo(t, ctx, "see m5", chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="5"]`)))
	var want []demoMessage
	for i := 1; i <= 5; i++ {
		want = append(want, demoMessage{Seq: i, Who: "backend", Text: fmt.Sprintf("m%d", i)})
	}
	checkDemoMessages(t, ctx, want)
	checkDemoNoGap(t, ctx)

	// Twenty while away: only 21..25 are retained, 6..20 are lost.
	disconnected("beyond retention", 4, func() { publishN(6, 25) })
	browserDo(t, ctx, "see the gap and m25",
		chromedp.WaitVisible(chromedp.CSS(`#messages li.gap`)),
		chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="25"]`)))
	for i := 21; i <= 25; i++ {
		want = append(want, demoMessage{Seq: i, Who: "backend", Text: fmt.Sprintf("m%d", i)})
	}
	checkDemoMessages(t, ctx, want)

	type gap struct {
		Channel   string `json:"channel"`
		Recovered *bool  `json:"recovered"`
		Epoch     uint64 `json:"epoch"`
		From      uint64 `json:"from"`
		Last      uint64 `json:"last"`
	}
	gaps := browserRun(t, ctx, "read the gaps", chromedp.Evaluate[[]gap](`demo.gaps`))
	epoch := browserRun(t, ctx, "read the epoch", chromedp.Evaluate[uint64](`demo.epoch`))
	if len(gaps) != 1 || gaps[0].Channel != demoChannel || gaps[0].Recovered == nil || *gaps[0].Recovered ||
		gaps[0].Epoch != epoch || gaps[0].From != 21 || gaps[0].Last != 25 {
		t.Errorf("gap handler got %+v, want one gap on %s: recovered false, epoch %d, from 21, last 25", gaps, demoChannel, epoch)
	}
	// The notice sits between m5 and m21, where the messages are missing.
	order := browserRun(t, ctx, "read the list", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#messages li')].map(li => li.className + ':' + (li.dataset.seq || li.dataset.from))`))
	wantOrder := "msg:1 msg:2 msg:3 msg:4 msg:5 gap:21 msg:21 msg:22 msg:23 msg:24 msg:25"
	if got := strings.Join(order, " "); got != wantOrder {
		t.Errorf("list: %s\nwant: %s", got, wantOrder)
	}
	notice := browserRun(t, ctx, "read the notice", chromedp.Text(chromedp.CSS("#messages li.gap")))
	if !strings.Contains(notice, "History could not be recovered") || !strings.Contains(notice, "#6–#20") {
		t.Errorf("gap notice: %q", notice)
	}
	saveBrowserScreenshot(t, ctx, "herald-demo-gap.png")
}

// TestBrowserPublishDisabled checks the demo on a server that does not let
// browsers publish (the default): sending shows the operator how to enable
// it and how to publish from a backend, keeps the text, and publishes
// nothing; redis-cli still reaches the page.
func TestBrowserPublishDisabled(t *testing.T) {
	n := startBrowserNode(t, raftstore.Config{}, wsbridge.Config{})
	ctx := openBrowser(t)

	browserDo(t, ctx, "load the demo and send",
		chromedp.Navigate("http://"+n.addr+demoURLPath),
		chromedp.WaitVisible(chromedp.CSS(demoOpenSel+`[data-opens="1"]`)),
		chromedp.SendKeys(chromedp.CSS("#text"), "not allowed"),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.CSS("#notice")))
	notice := browserRun(t, ctx, "read the notice", chromedp.Text(chromedp.CSS("#notice")))
	for _, want := range []string{"disabled", "--allow-browser-publish", `redis-cli PUBLISH chat:demo "hello"`} {
		if !strings.Contains(notice, want) {
			t.Errorf("notice %q lacks %q", notice, want)
		}
	}
	saveBrowserScreenshot(t, ctx, "herald-demo-publish-disabled.png")
	if v := browserRun(t, ctx, "read the text box", chromedp.Value(chromedp.CSS("#text"))); v != "not allowed" {
		t.Errorf("text box after a refused send: %q, want the text kept", v)
	}
	// The page published nothing: the backend's message is the first.
	n.redisCLI(t, "", "PUBLISH", demoChannel, "from a backend")
	browserDo(t, ctx, "see the backend's message",
		chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="1"]`)))
	checkDemoMessages(t, ctx, []demoMessage{{Seq: 1, Who: "backend", Text: "from a backend"}})
}

// TestBrowserCluster loads the demo from two nodes of a three-node cluster,
// each page connected to the node that served it, publishes with redis-cli
// on the third node, and sends from one page: both pages show both
// messages with the same sequence numbers.
func TestBrowserCluster(t *testing.T) {
	c := raftstoretest.OpenCluster(t, 3, broker.Config{}, raftstore.Config{})
	var nodes []*browserNode
	for _, b := range c.Brokers {
		nodes = append(nodes, serveBrowserNode(t, b, wsbridge.Config{AllowBrowserPublish: true}))
	}
	// Two browsers: a background tab of one browser is throttled.
	page1, page3 := openBrowser(t), openBrowser(t)
	for _, p := range []struct {
		ctx  context.Context
		node *browserNode
	}{{page1, nodes[0]}, {page3, nodes[2]}} {
		browserDo(t, p.ctx, "load the demo from "+p.node.addr,
			chromedp.Navigate("http://"+p.node.addr+demoURLPath),
			chromedp.WaitVisible(chromedp.CSS(demoOpenSel+`[data-opens="1"]`)))
		if url := browserRun(t, p.ctx, "read the server", chromedp.Text(chromedp.CSS("#server"))); url != "ws://"+p.node.addr+"/ws" {
			t.Errorf("page from %s connects to %s", p.node.addr, url)
		}
	}

	nodes[1].redisCLI(t, "", "PUBLISH", demoChannel, "via node 2")
	browserDo(t, page3, "send from the page on node 3",
		chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="1"]`)),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("name").value = "carol"`),
		chromedp.SendKeys(chromedp.CSS("#text"), "from node 3"),
		chromedp.Click(chromedp.CSS("#send")))
	want := []demoMessage{{Seq: 1, Who: "backend", Text: "via node 2"}, {Seq: 2, Who: "carol", Text: "from node 3"}}
	for _, p := range []context.Context{page1, page3} {
		browserDo(t, p, "see both messages", chromedp.WaitVisible(chromedp.CSS(`#messages li.msg[data-seq="2"]`)))
		checkDemoMessages(t, p, want)
	}
}

// demoMessage is a chat line as the demo shows it.
type demoMessage struct {
	Seq  int    `json:"seq"`
	Who  string `json:"who"`
	Text string `json:"text"`
}

// checkDemoMessages compares the page's chat lines with want: the same
// messages, in order, each once.
func checkDemoMessages(t *testing.T, ctx context.Context, want []demoMessage) {
	t.Helper()
	got := browserRun(t, ctx, "read the messages", chromedp.Evaluate[[]demoMessage](
		`[...document.querySelectorAll('#messages li.msg')].map(li => ({
			seq: +li.dataset.seq,
			who: li.querySelector('.who').textContent,
			text: li.querySelector('.text').textContent,
		}))`))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("page shows %d messages:\n%v\nwant %d:\n%v", len(got), got, len(want), want)
	}
}

func checkDemoNoGap(t *testing.T, ctx context.Context) {
	t.Helper()
	n := browserRun(t, ctx, "count gaps", chromedp.Evaluate[int](
		`document.querySelectorAll('#messages li.gap').length + demo.gaps.length`))
	if n != 0 {
		t.Fatalf("the page reports a gap")
	}
}

// browserNode is one Herald node in the test process: a broker with its
// Raft store on Pebble, the HTTP side on a listener the test can cut off,
// and RESP for redis-cli.
type browserNode struct {
	t        *testing.T
	http     *wsbridge.Server
	addr     string // HTTP host:port, kept across drop and restore
	respPort string
	ln       *cuttableListener
}

// startBrowserNode starts a single-node cluster and serves it.
func startBrowserNode(t *testing.T, rcfg raftstore.Config, wcfg wsbridge.Config) *browserNode {
	t.Helper()
	b := broker.New(broker.Config{})
	raftstoretest.Open(t, b, rcfg)
	return serveBrowserNode(t, b, wcfg)
}

// serveBrowserNode serves HTTP and RESP for b, a broker with its store.
func serveBrowserNode(t *testing.T, b *broker.Broker, wcfg wsbridge.Config) *browserNode {
	t.Helper()
	n := &browserNode{t: t, http: wsbridge.New(b, wcfg)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	n.serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.http.Shutdown(ctx)
	})

	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, n.respPort, _ = net.SplitHostPort(rln.Addr().String())
	rs := resp.New(b, resp.Config{})
	go rs.Serve(rln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rs.Shutdown(ctx)
	})
	return n
}

func (n *browserNode) serve(ln net.Listener) {
	n.ln = &cuttableListener{Listener: ln, conns: make(map[net.Conn]struct{})}
	go n.http.Serve(n.ln) // returns when the listener is cut
}

// drop cuts the HTTP side off, as if the node died: the listener closes, so
// new connections are refused, and so does every connection it accepted,
// WebSocket ones included, without a closing handshake.
func (n *browserNode) drop() { n.ln.cut() }

// restore listens on the same address again.
func (n *browserNode) restore() {
	n.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", n.addr)
		if err == nil {
			n.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("listen on %s again: %v", n.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisCLI runs the real redis-cli against the node with args; without
// args it runs the commands on stdin, one per line.
func (n *browserNode) redisCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not found: install redis-tools (make deps)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserStep)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"-h", "127.0.0.1", "-p", n.respPort}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// cuttableListener remembers the connections it accepted, so cut can close
// them all with the listener.
type cuttableListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (l *cuttableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	return c, nil
}

func (l *cuttableListener) cut() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
	}
}

// openBrowser starts headless Chromium for the test and returns its
// context. The page's console messages and exceptions are logged if the
// test fails.
func openBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(browserChromium); err != nil {
		t.Fatal("chromium not found: apt-get install chromium (make deps)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(browserChromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), // containers have a small /dev/shm
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}

	var mu sync.Mutex
	var console []string
	messages := chromedp.Console(bctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, fmt.Sprintf("%s %s", m.Type, m))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		bcancel()
		<-done
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("page console:\n%s", strings.Join(console, "\n"))
		}
	})
	return bctx
}

// browserDo runs steps with a timeout; on failure it logs what the page
// shows.
func browserDo(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserStep)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		t.Fatalf("%s: %v\npage:\n%s", what, err, demoPageText(ctx))
	}
}

// browserRun runs one action with a timeout and returns its value.
func browserRun[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserStep)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v\npage:\n%s", what, err, demoPageText(ctx))
	}
	return v
}

func demoPageText(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	return s
}

// saveBrowserScreenshot saves the whole page as a PNG in
// $HERALD_SCREENSHOT_DIR, or in the test's temporary directory.
func saveBrowserScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := browserRun(t, ctx, "take a screenshot", chromedp.FullScreenshot(100))
	dir := os.Getenv("HERALD_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
