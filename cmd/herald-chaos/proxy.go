package main

import (
	"log/slog"
	"net"
	"sync"
)

// Partitions are made by a fault-injecting TCP proxy in front of each
// node's Raft address. Nodes are configured (--peers) with the proxies'
// addresses and listen elsewhere, so every Raft message and forward call
// between two nodes goes through the proxy of its destination. Each node
// listens on its own loopback IP (127.0.0.11, .12, ...) and Herald dials
// its peers from that IP, so a proxy knows which node a connection comes
// from by its source address.

// cutMode is how a cut link behaves.
type cutMode string

const (
	// modeHold stops a link's bytes where they are, as a network that
	// drops packets does: connections stay open and stall (the sender's
	// writes fill the socket buffers), new connections are accepted but
	// not carried through; when the cut heals, what was held is delivered,
	// as TCP retransmission would.
	modeHold cutMode = "hold"
	// modeReset closes a link's open connections when it is cut and every
	// new one at once, as a firewall rejecting with a reset does.
	modeReset cutMode = "reset"
)

// network is the links between n nodes, each of which may be cut in one
// direction: cut[a][b] means nothing a sends reaches b.
type network struct {
	logger *slog.Logger

	mu      sync.Mutex
	cut     [][]bool
	mode    cutMode
	changed chan struct{} // closed and replaced on every change
	closed  bool
	links   map[*link]struct{}
}

// link is one proxied connection from node from to node to.
type link struct {
	from, to int
	down     net.Conn // from the dialing node

	mu     sync.Mutex
	up     net.Conn // to the target, once connected
	closed bool
}

func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.down.Close()
	if l.up != nil {
		l.up.Close()
	}
}

// attach sets the connection to the target, or closes it if the link was
// closed meanwhile.
func (l *link) attach(up net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		up.Close()
		return false
	}
	l.up = up
	return true
}

func newNetwork(n int, logger *slog.Logger) *network {
	cut := make([][]bool, n)
	for i := range cut {
		cut[i] = make([]bool, n)
	}
	return &network{logger: logger, cut: cut, mode: modeHold, changed: make(chan struct{}), links: make(map[*link]struct{})}
}

// partition cuts every link between the groups of nodes: nodes in
// different groups cannot talk; nodes in no group talk to everyone. Links
// within a group stay up.
func (nw *network) partition(mode cutMode, pairs [][2]int) {
	nw.mu.Lock()
	nw.mode = mode
	for _, p := range pairs {
		nw.cut[p[0]][p[1]] = true
		nw.cut[p[1]][p[0]] = true
	}
	var doomed []*link
	if mode == modeReset {
		for l := range nw.links {
			if nw.cut[l.from][l.to] || nw.cut[l.to][l.from] {
				doomed = append(doomed, l)
			}
		}
	}
	nw.changedLocked()
	nw.mu.Unlock()
	for _, l := range doomed {
		l.close()
	}
}

// heal restores every link.
func (nw *network) heal() {
	nw.mu.Lock()
	for i := range nw.cut {
		for j := range nw.cut[i] {
			nw.cut[i][j] = false
		}
	}
	nw.changedLocked()
	nw.mu.Unlock()
}

func (nw *network) changedLocked() {
	close(nw.changed)
	nw.changed = make(chan struct{})
}

// close releases every held connection and closes them all.
func (nw *network) close() {
	nw.mu.Lock()
	nw.closed = true
	nw.changedLocked()
	links := make([]*link, 0, len(nw.links))
	for l := range nw.links {
		links = append(links, l)
	}
	nw.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// wait blocks while the link from a to b is cut in hold mode. It reports
// false if the connection must be dropped instead: the link is cut in reset
// mode, or the network is closing.
func (nw *network) wait(a, b int) bool {
	for {
		nw.mu.Lock()
		if nw.closed {
			nw.mu.Unlock()
			return false
		}
		if !nw.cut[a][b] {
			nw.mu.Unlock()
			return true
		}
		if nw.mode == modeReset {
			nw.mu.Unlock()
			return false
		}
		ch := nw.changed
		nw.mu.Unlock()
		<-ch
	}
}

// proxy listens in front of node to's Raft address.
type proxy struct {
	nw     *network
	to     int
	ln     net.Listener
	target string
	nodeOf func(net.Addr) int // index of the node a connection comes from, -1 if none
	wg     sync.WaitGroup
}

func startProxy(nw *network, to int, listen, target string, nodeOf func(net.Addr) int) (*proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &proxy{nw: nw, to: to, ln: ln, target: target, nodeOf: nodeOf}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) close() {
	p.ln.Close()
	p.wg.Wait()
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		from := p.nodeOf(c.RemoteAddr())
		if from < 0 {
			p.nw.logger.Warn("proxy: connection from an unknown address", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		l := &link{from: from, to: p.to, down: c}
		p.nw.mu.Lock()
		if p.nw.closed {
			p.nw.mu.Unlock()
			c.Close()
			return
		}
		p.nw.links[l] = struct{}{}
		p.nw.mu.Unlock()
		go p.carry(l)
	}
}

// carry connects l to the target once the link is up and copies bytes both
// ways, holding them while the link is cut.
func (p *proxy) carry(l *link) {
	defer func() {
		l.close()
		p.nw.mu.Lock()
		delete(p.nw.links, l)
		p.nw.mu.Unlock()
	}()
	if !p.nw.wait(l.from, l.to) {
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return // the node is down: the dialer sees its connection closed
	}
	if !l.attach(up) {
		return
	}
	done := make(chan struct{})
	go func() {
		p.pipe(up, l.down, l.to, l.from)
		l.close()
		close(done)
	}()
	p.pipe(l.down, up, l.from, l.to)
	l.close()
	<-done
}

// pipe copies src to dst, the bytes going from node a to node b.
func (p *proxy) pipe(src, dst net.Conn, a, b int) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.nw.wait(a, b) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection: the caller closes both sides
		}
	}
}
