package raftstore

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Forward calls are how a follower asks the leader to do what only a leader
// can: commit a batch, confirm a read position, change membership. They run
// over the Raft port (stream kind 'F'), pipelined on one connection per
// leader, each frame a uvarint length and a body:
//
//	request:  type byte, id uvarint, payload
//	response: id uvarint, status byte, payload
//
// A status of fwdOK carries the call's result; any other status is an error
// code, with the message as payload.
const (
	fwdApply     byte = 1 // payload: an encoded command; result: uvarint log index
	fwdReadIndex byte = 2 // payload: none; result: uvarint index to wait for
	fwdJoin      byte = 3 // payload: id string, addr string, voter byte
	fwdRemove    byte = 4 // payload: id string
	fwdCommit    byte = 5 // payload: none; result: uvarint the leader's commit index

	fwdOK          byte = 0
	fwdNotLeader   byte = 1 // the callee is not the leader: nothing was done
	fwdUnavailable byte = 2 // no quorum in time: nothing is acknowledged
	fwdFailed      byte = 3 // any other failure

	maxFrame = 1 << 30
)

// errNotLeader means the node called is not the leader, and did nothing.
var errNotLeader = errors.New("not the leader")

// errNotMember answers a forward call, other than a request to join, from
// a peer whose certificate is not a member's.
var errNotMember = errors.New("not a member of this cluster: only a request to join is served")

// errNotSent means a forward call failed before any of its request reached
// the wire (the dial failed): it certainly had no effect.
var errNotSent = errors.New("request not sent")

// remoteError is an error a forward call returned.
type remoteError struct {
	code byte
	msg  string
}

func (e *remoteError) Error() string { return e.msg }

func writeFrame(w *bufio.Writer, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var hdr [binary.MaxVarintLen64]byte
	if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(n))]); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

func readFrame(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > maxFrame {
		return nil, fmt.Errorf("forward frame of %d bytes", n)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}

// fwdClient makes forward calls, keeping one connection per target.
type fwdClient struct {
	from        net.IP // source IP of its connections; nil: any
	dialTimeout time.Duration
	tls         *tls.Config // nil: plain TCP
	mu          sync.Mutex
	conns       map[string]*fwdConn
}

func newFwdClient(from net.IP, dialTimeout time.Duration, tlsCfg *tls.Config) *fwdClient {
	return &fwdClient{from: from, dialTimeout: dialTimeout, tls: tlsCfg, conns: make(map[string]*fwdConn)}
}

// call sends a request to addr and waits for its response. An error that
// is not a *remoteError means the connection failed: the request may or may
// not have been carried out.
func (c *fwdClient) call(ctx context.Context, addr string, typ byte, payload []byte) ([]byte, error) {
	fc, err := c.conn(ctx, addr)
	if err != nil {
		return nil, err
	}
	return fc.call(ctx, typ, payload)
}

func (c *fwdClient) conn(ctx context.Context, addr string) (*fwdConn, error) {
	c.mu.Lock()
	fc := c.conns[addr]
	c.mu.Unlock()
	if fc != nil {
		return fc, nil
	}
	nc, err := dialStream(ctx, c.from, addr, streamForward, c.dialTimeout, c.tls)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %v", errNotSent, addr, err)
	}
	fc = &fwdConn{nc: nc, bw: bufio.NewWriter(nc), pending: make(map[uint64]chan fwdResult)}
	c.mu.Lock()
	if old := c.conns[addr]; old != nil {
		c.mu.Unlock()
		nc.Close()
		return old, nil
	}
	c.conns[addr] = fc
	c.mu.Unlock()
	go fc.readLoop(func() {
		c.mu.Lock()
		if c.conns[addr] == fc {
			delete(c.conns, addr)
		}
		c.mu.Unlock()
	})
	return fc, nil
}

func (c *fwdClient) close() {
	c.mu.Lock()
	for _, fc := range c.conns {
		fc.nc.Close()
	}
	c.mu.Unlock()
}

type fwdResult struct {
	payload []byte
	err     error
}

type fwdConn struct {
	nc  net.Conn
	wmu sync.Mutex
	bw  *bufio.Writer

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan fwdResult
	err     error
}

func (fc *fwdConn) call(ctx context.Context, typ byte, payload []byte) ([]byte, error) {
	ch := make(chan fwdResult, 1)
	fc.mu.Lock()
	if fc.err != nil {
		fc.mu.Unlock()
		return nil, fc.err
	}
	fc.nextID++
	id := fc.nextID
	fc.pending[id] = ch
	fc.mu.Unlock()

	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := 1 + binary.PutUvarint(hdr[1:], id)
	fc.wmu.Lock()
	err := writeFrame(fc.bw, hdr[:n], payload)
	if err == nil {
		err = fc.bw.Flush()
	}
	fc.wmu.Unlock()
	if err != nil {
		fc.nc.Close()
		return nil, fmt.Errorf("forward: %w", err)
	}
	select {
	case r := <-ch:
		return r.payload, r.err
	case <-ctx.Done():
		fc.mu.Lock()
		delete(fc.pending, id)
		fc.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (fc *fwdConn) readLoop(onClose func()) {
	br := bufio.NewReader(fc.nc)
	var err error
	for {
		var b []byte
		if b, err = readFrame(br); err != nil {
			break
		}
		id, w := binary.Uvarint(b)
		if w <= 0 || len(b) < w+1 {
			err = errors.New("forward: malformed response")
			break
		}
		status, body := b[w], b[w+1:]
		r := fwdResult{payload: body}
		if status != fwdOK {
			r = fwdResult{err: &remoteError{code: status, msg: string(body)}}
		}
		fc.mu.Lock()
		ch := fc.pending[id]
		delete(fc.pending, id)
		fc.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	fc.nc.Close()
	onClose()
	fc.mu.Lock()
	fc.err = fmt.Errorf("forward connection lost: %w", err)
	for id, ch := range fc.pending {
		ch <- fwdResult{err: fc.err}
		delete(fc.pending, id)
	}
	fc.mu.Unlock()
}

// fwdHandler serves one forward request and returns its result.
type fwdHandler func(ctx context.Context, typ byte, payload []byte) ([]byte, error)

// serveForward serves forward calls on one connection until it fails or ctx
// ends. Calls run concurrently; responses are written as they finish.
func serveForward(ctx context.Context, nc net.Conn, h fwdHandler) {
	defer nc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		nc.Close()
	}()
	br := bufio.NewReader(nc)
	bw := bufio.NewWriter(nc)
	var wmu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		b, err := readFrame(br)
		if err != nil {
			return
		}
		if len(b) < 2 {
			return
		}
		typ := b[0]
		id, w := binary.Uvarint(b[1:])
		if w <= 0 {
			return
		}
		payload := b[1+w:]
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h(ctx, typ, payload)
			status := fwdOK
			if err != nil {
				status, res = errorStatus(err), []byte(err.Error())
			}
			var hdr [binary.MaxVarintLen64 + 1]byte
			n := binary.PutUvarint(hdr[:], id)
			hdr[n] = status
			wmu.Lock()
			if writeFrame(bw, hdr[:n+1], res) == nil {
				bw.Flush()
			}
			wmu.Unlock()
		}()
	}
}
