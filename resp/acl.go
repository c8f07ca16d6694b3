package resp

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/herald-broker/herald/broker"
)

// ACL is a set of users, in the spirit of Redis 7's ACL: each has passwords,
// the commands it may run and the channels it may use. It is built once
// (ParseACL, LoadACLFile, or from Config.RequirePass) and read-only after.
type ACL struct {
	users map[string]*User
	order []string // names in file order, for ACL USERS
	// fileDefault: the file defined the default user.
	fileDefault bool
}

// User is one ACL user.
type User struct {
	name    string
	enabled bool
	noPass  bool
	// passwords are SHA-256 digests, as Redis keeps them.
	passwords [][sha256.Size]byte
	// commands are the commands the user may run, by full name
	// ("publish", "client|setname").
	commands map[string]bool
	// pubAll and subAll grant every channel; pub and sub list the Redis
	// globs the user may publish to and subscribe to.
	pubAll, subAll bool
	pub, sub       []string
}

// Name returns the user's name.
func (u *User) Name() string { return u.name }

// newUser returns a user as Redis creates one: off, no password, no
// commands, no channels (Redis 7's acl-pubsub-default resetchannels).
func newUser(name string) *User {
	return &User{name: name, commands: map[string]bool{}}
}

// defaultUser is Redis's default user: on, every command and channel, with
// the given password or nopass.
func defaultUser(pass string) *User {
	u := newUser("default")
	rules := []string{"on", "+@all", "allchannels", "nopass"}
	if pass != "" {
		rules[3] = ">" + pass
	}
	for _, r := range rules {
		if err := u.apply(r); err != nil {
			panic(err)
		}
	}
	return u
}

// newACL returns the ACL of a server without an ACL file: the default user
// alone, with requirepass as its password.
func newACL(requirePass string) *ACL {
	return &ACL{users: map[string]*User{"default": defaultUser(requirePass)}, order: []string{"default"}}
}

// LoadACLFile reads an ACL file; see ParseACL.
func LoadACLFile(path string) (*ACL, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open acl file: %w", err)
	}
	defer f.Close()
	a, err := ParseACL(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// ParseACL reads users in Redis's ACL file format, one per line:
//
//	user alice on >secret &room:* +@all
//	user metrics on #<sha256 hex> %S&stats:* +subscribe +psubscribe
//
// Blank lines and lines starting with '#' are skipped. The rules are a
// subset of Redis's (see docs/operations.md): on, off, nopass, >password,
// <password, #sha256, !sha256, resetpass, &pattern, allchannels,
// resetchannels, +command, -command, +command|sub, +@category, -@category,
// allcommands, nocommands, reset; key rules (~pattern, allkeys, resetkeys,
// %R~ ...) are accepted and ignored, since Herald has no keys. Herald adds
// %P&pattern (publish only) and %S&pattern (subscribe only); &pattern
// grants both. A file that does not define "default" gets Redis's default
// user (on, nopass, every command and channel).
func ParseACL(r io.Reader) (*ACL, error) {
	a := &ACL{users: map[string]*User{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		fields := strings.Fields(text)
		if fields[0] != "user" || len(fields) < 2 {
			return nil, fmt.Errorf("line %d: should start with user keyword", line)
		}
		name := fields[1]
		if _, dup := a.users[name]; dup {
			return nil, fmt.Errorf("line %d: duplicate user '%s' found", line, name)
		}
		u := newUser(name)
		for _, rule := range fields[2:] {
			if err := u.apply(rule); err != nil {
				return nil, fmt.Errorf("line %d: error in user declaration '%s': %w", line, rule, err)
			}
		}
		a.users[name] = u
		a.order = append(a.order, name)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read acl: %w", err)
	}
	a.fileDefault = a.users["default"] != nil
	if !a.fileDefault {
		a.users["default"] = defaultUser("")
		a.order = append([]string{"default"}, a.order...)
	}
	return a, nil
}

// HasUser reports whether the ACL defines a user.
func (a *ACL) HasUser(name string) bool { return a.users[name] != nil }

// DefinesDefault reports whether the ACL file had a "user default" line
// (else the default user is Redis's: on, nopass, everything).
func (a *ACL) DefinesDefault() bool { return a.fileDefault }

// SetDefaultPassword makes pass the default user's only password, as
// Redis's requirepass does.
func (a *ACL) SetDefaultPassword(pass string) {
	u := a.users["default"]
	u.apply("resetpass")
	if pass == "" {
		u.apply("nopass")
	} else {
		u.apply(">" + pass)
	}
}

// initial returns the user a new connection is authenticated as: the
// default user when it is on and needs no password, else nil (the client
// must AUTH).
func (a *ACL) initial() *User {
	if u := a.users["default"]; u.enabled && u.noPass {
		return u
	}
	return nil
}

// authenticate returns the user that name and pass log in as, or nil.
func (a *ACL) authenticate(name, pass []byte) *User {
	u := a.users[string(name)]
	if u == nil || !u.enabled {
		return nil
	}
	if u.noPass {
		return u
	}
	sum := sha256.Sum256(pass)
	ok := 0
	for _, p := range u.passwords {
		ok |= subtle.ConstantTimeCompare(sum[:], p[:])
	}
	if ok == 0 {
		return nil
	}
	return u
}

var errBadHash = errors.New("the password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")

// apply applies one rule to u.
func (u *User) apply(rule string) error {
	lower := strings.ToLower(rule)
	switch {
	case lower == "on":
		u.enabled = true
	case lower == "off":
		u.enabled = false
	case lower == "nopass":
		u.noPass, u.passwords = true, nil
	case lower == "resetpass":
		u.noPass, u.passwords = false, nil
	case rule[0] == '>':
		u.addPassword(sha256.Sum256([]byte(rule[1:])))
	case rule[0] == '<':
		u.removePassword(sha256.Sum256([]byte(rule[1:])))
	case rule[0] == '#' || rule[0] == '!':
		var sum [sha256.Size]byte
		digits := rule[1:]
		if len(digits) != 2*sha256.Size || strings.ToLower(digits) != digits {
			return errBadHash
		}
		if _, err := hex.Decode(sum[:], []byte(digits)); err != nil {
			return errBadHash
		}
		if rule[0] == '#' {
			u.addPassword(sum)
		} else {
			u.removePassword(sum)
		}
	case lower == "allchannels" || rule == "&*":
		u.pubAll, u.subAll, u.pub, u.sub = true, true, nil, nil
	case lower == "resetchannels":
		u.pubAll, u.subAll, u.pub, u.sub = false, false, nil, nil
	case rule[0] == '&':
		u.addChannel(rule[1:], true, true)
	case strings.HasPrefix(rule, "%P&"), strings.HasPrefix(rule, "%p&"):
		u.addChannel(rule[3:], true, false)
	case strings.HasPrefix(rule, "%S&"), strings.HasPrefix(rule, "%s&"):
		u.addChannel(rule[3:], false, true)
	case lower == "allkeys" || lower == "resetkeys" || rule[0] == '~' ||
		(rule[0] == '%' && strings.Contains(rule, "~")):
		// Herald has no keys.
	case lower == "allcommands":
		u.setCommands("@all", true)
	case lower == "nocommands":
		u.setCommands("@all", false)
	case rule[0] == '+' || rule[0] == '-':
		if len(rule) == 1 {
			return fmt.Errorf("syntax error")
		}
		return u.setCommands(lower[1:], rule[0] == '+')
	case lower == "reset":
		for _, r := range []string{"resetpass", "resetchannels", "off", "nocommands"} {
			u.apply(r)
		}
	default:
		return fmt.Errorf("syntax error")
	}
	return nil
}

func (u *User) addPassword(sum [sha256.Size]byte) {
	u.noPass = false
	if !slices.Contains(u.passwords, sum) {
		u.passwords = append(u.passwords, sum)
	}
}

func (u *User) removePassword(sum [sha256.Size]byte) {
	u.passwords = slices.DeleteFunc(u.passwords, func(p [sha256.Size]byte) bool { return p == sum })
}

func (u *User) addChannel(pattern string, pub, sub bool) {
	if pub && !u.pubAll && !slices.Contains(u.pub, pattern) {
		u.pub = append(u.pub, pattern)
	}
	if sub && !u.subAll && !slices.Contains(u.sub, pattern) {
		u.sub = append(u.sub, pattern)
	}
}

// setCommands allows or denies a command ("publish"), a subcommand
// ("client|setname") or a category ("@pubsub", "@all").
func (u *User) setCommands(what string, allow bool) error {
	if cat, ok := strings.CutPrefix(what, "@"); ok {
		found := false
		for _, cmd := range allCommands() {
			if cat == "all" || inCategory(cmd, cat) {
				u.commands[cmd.name] = allow
				found = true
			}
		}
		if !found {
			return fmt.Errorf("unknown command category '%s'", cat)
		}
		return nil
	}
	parent, sub, isSub := strings.Cut(what, "|")
	cmd := commands[parent]
	if cmd == nil || (isSub && cmd.subs[sub] == nil) {
		return fmt.Errorf("unknown command '%s'", what)
	}
	if isSub {
		u.commands[cmd.subs[sub].name] = allow
		return nil
	}
	u.commands[cmd.name] = allow
	for _, s := range cmd.subs {
		u.commands[s.name] = allow
	}
	return nil
}

// allCommands returns every command and subcommand of the table.
func allCommands() []*command {
	var out []*command
	for _, cmd := range commands {
		out = append(out, cmd)
		for _, s := range cmd.subs {
			out = append(out, s)
		}
	}
	return out
}

// inCategory reports whether cmd belongs to an ACL category: its group
// ("pubsub", "connection", "server", "herald"), a category it lists, or
// one implied by its flags ("admin", "read", "write", "fast").
func inCategory(cmd *command, cat string) bool {
	if cmd.group == cat || slices.Contains(cmd.aclCats, "@"+cat) || slices.Contains(cmd.flags, cat) {
		return true
	}
	switch cat {
	case "pubsub":
		return cmd.group == "herald" && (cmd.chanRule() != chanNone || cmd.name == "herald.unsubscribe")
	case "slow":
		return !slices.Contains(cmd.flags, "fast")
	case "dangerous":
		return slices.Contains(cmd.flags, "admin")
	}
	return false
}

// canRun reports whether u may run cmd. Commands that may run before
// AUTH (AUTH, HELLO, QUIT, RESET) are always allowed, as in Redis.
func (u *User) canRun(cmd *command) bool {
	return cmd.noAuth || u.commands[cmd.name]
}

// canPublish reports whether u may publish to channel.
func (u *User) canPublish(channel string) bool {
	return u.pubAll || matchAny(u.pub, channel)
}

// canSubscribe reports whether u may subscribe to a channel or, with
// pattern, to a pattern. As in Redis, a pattern is allowed only if it is
// literally one of the user's patterns: "room:*" does not cover "room:1*".
func (u *User) canSubscribe(name string, pattern bool) bool {
	if u.subAll {
		return true
	}
	if pattern {
		return slices.Contains(u.sub, name)
	}
	return matchAny(u.sub, name)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if broker.Match(p, name) {
			return true
		}
	}
	return false
}

// chanRule says which arguments of a command are channels the ACL checks,
// and for what.
type chanRule int

const (
	chanNone           chanRule = iota
	chanPublishFirst            // the first argument is published to
	chanSubscribeAll            // every argument is subscribed to
	chanPatternAll              // every argument is a pattern subscribed to
	chanSubscribeFirst          // the first argument is read (subscribe or history)
)

// channelRules lists the commands whose channels the ACL checks.
// Unsubscribing is never checked, as in Redis.
var channelRules = map[string]chanRule{
	"publish":          chanPublishFirst,
	"spublish":         chanPublishFirst,
	"herald.publish":   chanPublishFirst,
	"herald.delete":    chanPublishFirst,
	"subscribe":        chanSubscribeAll,
	"ssubscribe":       chanSubscribeAll,
	"psubscribe":       chanPatternAll,
	"herald.subscribe": chanSubscribeFirst,
	"herald.history":   chanSubscribeFirst,
	"herald.channel":   chanSubscribeFirst,
}

func (cmd *command) chanRule() chanRule { return channelRules[cmd.name] }

// checkACL returns the NOPERM error that refuses cmd for the connection's
// user, in Redis 7.2's wording, or "".
func (c *conn) checkACL(cmd *command, args [][]byte) string {
	u := c.user
	if !u.canRun(cmd) {
		return fmt.Sprintf("NOPERM User %s has no permissions to run the '%s' command", u.name, cmd.name)
	}
	var denied []byte
	switch cmd.chanRule() {
	case chanPublishFirst:
		if !u.canPublish(string(args[1])) {
			denied = args[1]
		}
	case chanSubscribeFirst:
		if !u.canSubscribe(string(args[1]), false) {
			denied = args[1]
		}
	case chanSubscribeAll, chanPatternAll:
		for _, a := range args[1:] {
			if !u.canSubscribe(string(a), cmd.chanRule() == chanPatternAll) {
				denied = a
				break
			}
		}
	}
	if denied != nil {
		return fmt.Sprintf("NOPERM User %s has no permissions to access the '%s' channel", u.name, denied)
	}
	return ""
}

// cmdACLWhoami replies with the connection's user name.
func cmdACLWhoami(c *conn, args [][]byte) error {
	c.rep.bulkString(c.user.name)
	return nil
}

// cmdACLUsers replies with every user's name.
func cmdACLUsers(c *conn, args [][]byte) error {
	names := slices.Clone(c.srv.acl.order)
	slices.Sort(names)
	c.rep.array(len(names))
	for _, n := range names {
		c.rep.bulkString(n)
	}
	return nil
}

func cmdACLHelp(c *conn, args [][]byte) error {
	writeHelp(&c.rep, "ACL",
		"USERS", "    List all the registered usernames.",
		"WHOAMI", "    Return the current connection username.")
	return nil
}

func init() {
	register(
		container("acl", "server", "6.0.0", "A container for Access List Control commands."),
		&command{name: "acl|whoami", arity: 2, flags: []string{"noscript", "loading", "stale"}, group: "server", since: "6.0.0",
			summary: "Returns the authenticated username of the current connection.", complexity: "O(1)", run: cmdACLWhoami},
		&command{name: "acl|users", arity: 2, flags: flagsAdmin, group: "server", since: "6.0.0",
			summary: "Lists all ACL users.", complexity: "O(N). Where N is the number of configured users.", run: cmdACLUsers},
		&command{name: "acl|help", arity: 2, flags: []string{"loading", "stale"}, group: "server", since: "6.0.0",
			summary: "Returns helpful text about the different subcommands.", complexity: "O(1)", run: cmdACLHelp},
	)
}
