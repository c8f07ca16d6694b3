package resp

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
)

// command is one entry of the command table. Its fields mirror what Redis's
// COMMAND INFO and COMMAND DOCS report, so clients that introspect see a
// familiar shape.
type command struct {
	name       string // lower-case full name: "publish", "client|setname"
	arity      int    // Redis arity: n exact, -n at least n (the name counts)
	flags      []string
	group      string
	since      string
	summary    string
	complexity string
	aclCats    []string
	keySpec    bool // first argument is a channel (first/last/step 1/1/1)

	noAuth   bool // may run before AUTH
	pubsubOK bool // may run in RESP2 subscribed mode
	publish  bool // batched with the publishes next to it in a pipeline

	run  func(c *conn, args [][]byte) error
	subs map[string]*command // subcommands of a container (CLIENT, PUBSUB, ...)
}

// commands is the command table, by lower-case name.
var commands = map[string]*command{}

func register(cmds ...*command) {
	for _, cmd := range cmds {
		if i := strings.IndexByte(cmd.name, '|'); i >= 0 {
			parent := commands[cmd.name[:i]]
			if parent.subs == nil {
				parent.subs = map[string]*command{}
			}
			parent.subs[cmd.name[i+1:]] = cmd
			continue
		}
		commands[cmd.name] = cmd
	}
}

// container returns the table entry of a command that only groups
// subcommands.
func container(name, group, since, summary string, flags ...string) *command {
	return &command{name: name, arity: -2, group: group, since: since, summary: summary,
		complexity: "Depends on subcommand.", flags: flags}
}

// exec runs one command. It returns errQuit to end the connection.
func (c *conn) exec(args [][]byte) error {
	c.srv.commands.Add(1)
	var nameBuf [32]byte // a command's name, lowercased without allocating
	name := appendLower(nameBuf[:0], args[0])
	if string(name) == "host:" || string(name) == "post" {
		// An HTTP request sent to the Redis port: like Redis, close the
		// connection without a reply (cross-protocol scripting).
		c.srv.cfg.Logger.Warn("possible security attack: HTTP request on the RESP port", "remote", c.addr)
		return errSecurityAttack
	}
	// CLIENT REPLY OFF or SKIP silences this command's reply, the error of
	// a rejected command too; SKIP lasts one command, rejected or not.
	c.suppress = c.replyOff || c.replySkip
	c.replySkip = false
	if c.limiter != nil && !c.limiter.Allow(time.Now()) {
		c.flushPublishes()
		c.reject(errRateLimit)
		return nil
	}
	cmd := commands[string(name)]
	if cmd == nil {
		c.flushPublishes()
		c.reject(unknownCommand(args))
		return nil
	}
	if cmd.subs != nil && len(args) >= 2 {
		sub := cmd.subs[lower(args[1])]
		if sub == nil {
			c.flushPublishes()
			c.reject(fmt.Sprintf("ERR unknown subcommand '%s'. Try %s HELP.", cstr(args[1], 128), upper(args[0])))
			return nil
		}
		cmd = sub
	}
	c.noteCommand(cmd.name)
	if err := c.check(cmd, args); err != "" {
		c.flushPublishes()
		c.reject(err)
		return nil
	}
	if cmd.publish {
		c.queuePublish(cmd, args)
		return nil
	}
	c.flushPublishes()
	mark := len(c.rep.b)
	err := cmd.run(c, args)
	if c.suppress && len(c.rep.b) >= mark {
		c.rep.b = c.rep.b[:mark]
	}
	return err
}

// reject writes the error that refuses a command, unless replies are off.
func (c *conn) reject(msg string) {
	if !c.suppress {
		c.rep.err(msg)
	}
}

// check applies Redis's checks, in Redis's order, and returns the error
// reply that refuses the command, or "".
func (c *conn) check(cmd *command, args [][]byte) string {
	if (cmd.arity > 0 && len(args) != cmd.arity) || len(args) < -cmd.arity {
		return wrongArity(cmd.name)
	}
	if c.user == nil && !cmd.noAuth {
		return "NOAUTH Authentication required."
	}
	if c.user != nil {
		if err := c.checkACL(cmd, args); err != "" {
			return err
		}
	}
	if c.rep.proto == 2 && !cmd.pubsubOK && c.subscribed() {
		return fmt.Sprintf("ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", cmd.name)
	}
	return c.checkLimits(cmd, args)
}

// checkLimits refuses a command whose channel name or payload is over the
// broker's limits, before it joins a batch of publishes: only the
// offending command fails.
func (c *conn) checkLimits(cmd *command, args [][]byte) string {
	names := args[1:]
	switch cmd.chanRule() {
	case chanNone:
		return ""
	case chanPublishFirst, chanSubscribeFirst:
		names = args[1:2]
	}
	for _, name := range names {
		if err := c.srv.broker.CheckChannel(string(name)); err != nil {
			return errorReply(err)
		}
	}
	if cmd.publish {
		if limit := c.srv.broker.Config().MaxPayload; len(args[2]) > limit {
			return fmt.Sprintf("ERR %s: %d bytes, limit %d", broker.ErrPayloadTooLarge, len(args[2]), limit)
		}
	}
	return ""
}

func (c *conn) noteCommand(name string) {
	c.mu.Lock()
	c.lastCmd = name
	c.lastActive = time.Now()
	c.mu.Unlock()
}

func wrongArity(name string) string {
	return fmt.Sprintf("ERR wrong number of arguments for '%s' command", name)
}

const syntaxError = "ERR syntax error"

// errRateLimit refuses a command over Config.MaxRequestRate.
const errRateLimit = "ERR max request rate exceeded"

// unknownCommand returns Redis's reply to a command it does not know,
// quoting up to 128 bytes of the arguments.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	for _, a := range args[1:] {
		if b.Len() >= 128 {
			break
		}
		room := 128 - b.Len()
		b.WriteByte('\'')
		b.Write(cstr(a, room))
		b.WriteString("' ")
	}
	return fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", cstr(args[0], 128), b.String())
}

// cstr returns b as Redis's "%.<n>s" prints it: up to its first NUL byte
// (Redis formats a C string), and at most n bytes (n < 0: no limit). Go's
// %.128s would count runes, not bytes.
func cstr(b []byte, n int) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if n >= 0 && len(b) > n {
		b = b[:n]
	}
	return b
}

// string2ll parses an integer as Redis's string2ll does: an optional '-',
// no '+', no spaces, no leading zeros, at most 20 characters, within int64.
func string2ll(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) >= 21 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		d := uint64(ch - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	switch {
	case neg && v <= 1<<63:
		return int64(-v), true
	case !neg && v <= math.MaxInt64:
		return int64(v), true
	}
	return 0, false
}

// appendLower appends b, lowercased (ASCII), to dst.
func appendLower(dst, b []byte) []byte {
	for _, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		dst = append(dst, ch)
	}
	return dst
}

// lower returns b as a lower-case string, converting it only once when b
// is already lower case.
func lower(b []byte) string {
	for _, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			return strings.ToLower(string(b))
		}
	}
	return string(b)
}

func upper(b []byte) string { return strings.ToUpper(string(b)) }

// sortedCommands returns every command and subcommand, sorted by name.
func sortedCommands() []*command {
	var out []*command
	for _, cmd := range commands {
		out = append(out, cmd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func sortedSubs(cmd *command) []*command {
	out := make([]*command, 0, len(cmd.subs))
	for _, s := range cmd.subs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// writeCommandInfo writes one COMMAND INFO entry: name, arity, flags, first
// key, last key, step, ACL categories, tips, key specs, subcommands.
func writeCommandInfo(r *reply, cmd *command) {
	r.array(10)
	r.bulkString(cmd.name)
	r.int(int64(cmd.arity))
	r.setHeader(len(cmd.flags))
	for _, f := range cmd.flags {
		r.status(f)
	}
	if cmd.keySpec {
		r.int(1)
		r.int(1)
		r.int(1)
	} else {
		r.int(0)
		r.int(0)
		r.int(0)
	}
	cats := append([]string{"@pubsub"}, cmd.aclCats...)
	if cmd.group != "pubsub" {
		cats = cmd.aclCats
	}
	r.setHeader(len(cats))
	for _, cat := range cats {
		r.status(cat)
	}
	r.array(0) // tips
	r.array(0) // key specs: channels are not keys
	subs := sortedSubs(cmd)
	r.array(len(subs))
	for _, s := range subs {
		writeCommandInfo(r, s)
	}
}

// writeCommandDocs writes one COMMAND DOCS map.
func writeCommandDocs(r *reply, cmd *command) {
	n := 4
	if len(cmd.subs) > 0 {
		n++
	}
	r.mapHeader(n)
	r.bulkString("summary")
	r.bulkString(cmd.summary)
	r.bulkString("since")
	r.bulkString(cmd.since)
	r.bulkString("group")
	r.bulkString(cmd.group)
	r.bulkString("complexity")
	r.bulkString(cmd.complexity)
	if len(cmd.subs) > 0 {
		r.bulkString("subcommands")
		subs := sortedSubs(cmd)
		r.mapHeader(len(subs))
		for _, s := range subs {
			r.bulkString(s.name)
			writeCommandDocs(r, s)
		}
	}
}

func cmdCommand(c *conn, args [][]byte) error {
	all := sortedCommands()
	c.rep.array(len(all))
	for _, cmd := range all {
		writeCommandInfo(&c.rep, cmd)
	}
	return nil
}

func cmdCommandCount(c *conn, args [][]byte) error {
	c.rep.int(int64(len(commands)))
	return nil
}

func cmdCommandList(c *conn, args [][]byte) error {
	if len(args) > 2 {
		// FILTERBY is not supported; say so as Redis does for bad syntax.
		c.rep.err(syntaxError)
		return nil
	}
	all := sortedCommands()
	c.rep.array(len(all))
	for _, cmd := range all {
		c.rep.bulkString(cmd.name)
	}
	return nil
}

func cmdCommandInfo(c *conn, args [][]byte) error {
	names := args[2:]
	if len(names) == 0 {
		return cmdCommand(c, args)
	}
	c.rep.array(len(names))
	for _, n := range names {
		if cmd := lookupFullName(lower(n)); cmd != nil {
			writeCommandInfo(&c.rep, cmd)
		} else {
			c.rep.null() // Redis 7: a null bulk string in RESP2
		}
	}
	return nil
}

func cmdCommandDocs(c *conn, args [][]byte) error {
	var list []*command
	if len(args) == 2 {
		list = sortedCommands()
	} else {
		for _, n := range args[2:] {
			if cmd := lookupFullName(lower(n)); cmd != nil {
				list = append(list, cmd)
			}
		}
	}
	c.rep.mapHeader(len(list))
	for _, cmd := range list {
		c.rep.bulkString(cmd.name)
		writeCommandDocs(&c.rep, cmd)
	}
	return nil
}

// lookupFullName finds "publish" or "client|list".
func lookupFullName(name string) *command {
	if i := strings.IndexByte(name, '|'); i >= 0 {
		if parent := commands[name[:i]]; parent != nil {
			return parent.subs[name[i+1:]]
		}
		return nil
	}
	return commands[name]
}

func cmdCommandHelp(c *conn, args [][]byte) error {
	writeHelp(&c.rep, "COMMAND",
		"(no subcommand)", "    Return details about all Herald commands.",
		"COUNT", "    Return the total number of commands.",
		"DOCS [<command-name> ...]", "    Return documentary information about commands.",
		"INFO [<command-name> ...]", "    Return details about the given commands, or all of them.",
		"LIST", "    Return a list of all command names.")
	return nil
}

// writeHelp writes a HELP reply in Redis's layout.
func writeHelp(r *reply, container string, lines ...string) {
	all := append([]string{container + " <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"}, lines...)
	all = append(all, "HELP", "    Print this help.")
	r.array(len(all))
	for _, l := range all {
		r.status(l)
	}
}
