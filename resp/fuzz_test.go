package resp_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
)

// FuzzConn feeds arbitrary bytes to a real Herald server, in two writes
// (the input split in half, as nats-server's parser fuzz test does), then
// "PING\r\n", then half-closes the connection. Properties:
//
//   - everything the server sends back is valid RESP (RESP2 or RESP3);
//   - the server closes the connection after the client's EOF, within a
//     deadline (no hang, whatever state the input left the parser in);
//   - a fresh connection then gets +PONG: the server is unaffected.
//
// The limits are small so that short inputs reach them.
func FuzzConn(f *testing.F) {
	for _, seed := range fuzzConnSeeds() {
		f.Add([]byte(seed))
	}
	// One server for the whole fuzz process (each worker runs this setup
	// once); it is shut down by f's cleanup.
	addr := startServer(f, broker.Config{}, resp.Config{ProtoMaxBulkLen: 1024, MaxQueryBuffer: 8192}).addr
	f.Fuzz(func(t *testing.T, data []byte) {
		replies, err := fuzzExchange(addr, data[:len(data)/2], data[len(data)/2:], []byte("PING\r\n"))
		if err != nil {
			t.Fatalf("input %q: %v (after %d valid replies: %.500q)", data, err, len(replies), strings.Join(replies, ""))
		}
		pong, err := fuzzExchange(addr, []byte("PING\r\n"))
		if err != nil || len(pong) != 1 || pong[0] != "+PONG\r\n" {
			t.Fatalf("after input %q, a fresh connection got %q, %v; want +PONG", data, pong, err)
		}
	})
}

// fuzzExchange writes the chunks on a fresh connection, half-closes it, and
// reads replies until the server closes it. It fails if a reply is not
// valid RESP, or if the server neither closes nor answers within the
// deadline. A reply cut short by a connection reset is not a failure: a
// server that closes with unread input makes its kernel send a reset, which
// may discard replies not yet delivered (Redis does the same).
func fuzzExchange(addr string, chunks ...[]byte) ([]string, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	// Write concurrently with reading: a large reply must not block the
	// server's writer while it waits for the rest of our input.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for _, c := range chunks {
			if len(c) == 0 {
				continue
			}
			if _, err := nc.Write(c); err != nil {
				return // the server closed the connection: fine
			}
		}
		nc.(*net.TCPConn).CloseWrite()
	}()
	defer func() {
		nc.Close()
		<-wrote
	}()
	br := bufio.NewReader(io.LimitReader(nc, 256<<20))
	var replies []string
	for i := 0; i < 1<<20; i++ {
		reply, err := readRESP(br)
		switch {
		case err == nil:
			replies = append(replies, string(reply))
			continue
		case errors.Is(err, io.EOF) && len(reply) == 0:
			return replies, nil // closed between replies
		case errors.Is(err, syscall.ECONNRESET):
			return replies, nil
		default:
			return replies, err
		}
	}
	return replies, errors.New("too many replies")
}

// fuzzConnSeeds are valid pipelines in both protocols, the malformed inputs
// of malformed_test.go (shortened), and RESP3 types a client never sends.
func fuzzConnSeeds() []string {
	seeds := []string{
		"PING\r\n",
		mb("PING") + mb("ECHO", "hi") + "ping x\r\n",
		mb("SUBSCRIBE", "a", "b") + mb("PUBLISH", "a", "m") + mb("PING") + mb("UNSUBSCRIBE"),
		mb("HELLO", "3") + mb("SUBSCRIBE", "a") + mb("PUBLISH", "a", "m") + mb("ECHO", "x") + mb("RESET"),
		mb("PSUBSCRIBE", "a*") + mb("PUBLISH", "ab", "m") + mb("PUNSUBSCRIBE"),
		mb("SSUBSCRIBE", "s") + mb("SPUBLISH", "s", "m") + mb("SUNSUBSCRIBE", "s"),
		"SUBSCRIBE a b\r\nPUBLISH a hello\r\nUNSUBSCRIBE\r\n",
		"ECHO \"quoted \\x41 arg\" 'single'\r\n",
		mb("HELLO", "3", "SETNAME", "fz") + mb("CLIENT", "INFO") + mb("CLIENT", "LIST") + mb("HELLO", "2"),
		mb("CLIENT", "REPLY", "OFF") + mb("PING") + mb("CLIENT", "REPLY", "ON") + mb("CLIENT", "REPLY", "SKIP") + mb("PING"),
		mb("PUBSUB", "CHANNELS") + mb("PUBSUB", "NUMSUB", "a") + mb("PUBSUB", "NUMPAT") + mb("PUBSUB", "HELP"),
		mb("COMMAND", "COUNT") + mb("COMMAND", "INFO", "ping") + mb("COMMAND", "DOCS", "publish") + mb("INFO"),
		mb("HERALD.PUBLISH", "h", "m") + mb("HERALD.SUBSCRIBE", "h") + mb("HERALD.UNSUBSCRIBE"),
		mb("HERALD.HISTORY", "h") + mb("HERALD.CHANNEL", "h") + mb("CONFIG", "GET", "*"),
		mb("AUTH", "x") + mb("SELECT", "1") + mb("TIME") + mb("QUIT") + mb("PING"),
		mb("nosuch", strings.Repeat("x", 200)),
		// Malformed.
		"*abc\r\n", "*-1\r\n" + mb("PING"), "*0\r\n", "*2147483648\r\n", "*1048577\r\n", "*01\r\n$4\r\nPING\r\n",
		"*1\r\n$-5\r\n", "*1\r\n$99999999999\r\n", "*1\r\n$\r\n", "*1\r\n$04\r\nPING\r\n", "*1\r\n$1025\r\n",
		"*2\r\n$4\r\nECHO\r\nfoo\r\n", "*1\r\n\xff\r\n", "*1\r\n$4\r\nPINGxx\r\n", "*1\rX$4\r\nPING\r\n",
		"*" + strings.Repeat("1", 100), "ECHO \"abc\r\n", "ECHO a\"b c\"\r\n", "\x00\xff\x13\x80garbage\r\n",
		"*\xff\x00garbage\r\n", "POST / HTTP/1.1\r\nHost: x\r\n\r\n", "PING\r\n" + mb("ECHO", "before") + "*abc\r\n",
		mb("NOSUCH", strings.Repeat("a", 1000), strings.Repeat("b", 1000), strings.Repeat("c", 1000), "x"),
		// RESP3 types as input.
		"%1\r\n+a\r\n:1\r\n", "_\r\n", ">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", ",1.5\r\n#t\r\n(123\r\n",
		"=7\r\ntxt:abc\r\n", "|1\r\n+a\r\n+b\r\n+c\r\n", "~1\r\n:1\r\n", "!3\r\nerr\r\n",
	}
	return seeds
}
