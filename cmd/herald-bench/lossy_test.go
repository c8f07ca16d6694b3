package main

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
)

// startLossyServer is a tiny RESP pub/sub server for one channel that
// delivers every publish but the one numbered drop (from 0), and delivers
// the one after it twice: the loss checker must see both.
func startLossyServer(t *testing.T, drop int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var subs []net.Conn
	n := 0
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, s := range subs {
			s.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				rd := newRESPReader(bufio.NewReader(c), 4096)
				for {
					v, err := rd.next()
					if err != nil || !v.isArray() || len(v.elems) == 0 {
						return
					}
					switch strings.ToUpper(string(v.elems[0].str)) {
					case "PING":
						c.Write([]byte("+PONG\r\n"))
					case "SUBSCRIBE":
						mu.Lock()
						subs = append(subs, c)
						mu.Unlock()
						c.Write(appendCommand(nil, "subscribe", string(v.elems[1].str)))
					case "PUBLISH":
						msg := appendCommand(nil, "message", string(v.elems[1].str), string(v.elems[2].str))
						mu.Lock()
						i := n
						n++
						for _, s := range subs {
							switch i {
							case drop:
							case drop + 1:
								s.Write(append(msg, msg...))
							default:
								s.Write(msg)
							}
						}
						mu.Unlock()
						c.Write([]byte(":1\r\n"))
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
