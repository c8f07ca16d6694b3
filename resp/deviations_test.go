package resp_test

import (
	"testing"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/resp"
)

// TestInlineDeviations pins down where Herald's inline commands (the
// telnet form, tidwall/redcon's parser) differ from Redis's sdssplitargs, as
// docs/protocol.md lists. Client libraries send multibulk commands, where
// there is no difference; this is for people typing at a terminal.
func TestInlineDeviations(t *testing.T) {
	s := startServer(t, broker.Config{}, resp.Config{})
	tests := []struct {
		name, send string
		want       []string
		redis      string // what Redis answers instead
	}{
		{"tab is not a separator", "ECHO\thello\r\n",
			[]string{"-ERR unknown command 'ECHO\thello', with args beginning with: "}, "$5 hello"},
		{"quote inside a word", "ECHO a\"b c\"\r\n",
			[]string{"-ERR Protocol error: unbalanced quotes in request", "<closed>"}, "$4 ab c"},
		{"escapes in single quotes", "ECHO 'a\\nb'\r\n",
			[]string{"$3", "a\n", "b"}, "$4 a\\nb"}, // the payload is a, newline, b
		{"no hex escapes", "ECHO \"\\x41\\x42\"\r\n",
			[]string{"$6", "x41x42"}, "$2 AB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, s.addr)
			c.send(tt.send)
			for _, want := range tt.want {
				if want == "<closed>" {
					if line, err := c.br.ReadString('\n'); err == nil {
						t.Fatalf("got %q, want the connection closed", line)
					}
					continue
				}
				if got := c.readLine(); got != want {
					t.Fatalf("got %q, want %q (Redis answers %s)", got, want, tt.redis)
				}
			}
		})
	}
}
