package resp

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
)

// RedisVersion is the Redis version whose behaviour Herald's RESP side
// follows. HELLO and INFO report it, since client libraries gate features on
// it; INFO's herald_version gives Herald's own.
const RedisVersion = "7.2.0"

func cmdPing(c *conn, args [][]byte) error {
	if len(args) > 2 {
		// Redis checks this in the command itself, after NOAUTH and the
		// subscribed-mode check.
		c.rep.err(wrongArity("ping"))
		return nil
	}
	if c.rep.proto == 2 && c.subscribed() {
		c.rep.array(2)
		c.rep.bulkString("pong")
		if len(args) == 2 {
			c.rep.bulk(args[1])
		} else {
			c.rep.bulkString("")
		}
		return nil
	}
	if len(args) == 2 {
		c.rep.bulk(args[1])
	} else {
		c.rep.status("PONG")
	}
	return nil
}

func cmdEcho(c *conn, args [][]byte) error {
	c.rep.bulk(args[1])
	return nil
}

func cmdQuit(c *conn, args [][]byte) error {
	c.rep.ok()
	return errQuit
}

// cmdReset returns the connection to its initial state, like Redis's RESET:
// RESP2, no subscriptions (without confirmations), no name, database 0,
// replies on, and, when a password is required, not authenticated.
func cmdReset(c *conn, args [][]byte) error {
	c.cl.UnsubscribeAll()
	c.setProto(2)
	c.replyOff, c.replySkip, c.suppress = false, false, false
	c.setUser(c.srv.acl.initial())
	c.mu.Lock()
	c.name, c.db = "", 0
	c.mu.Unlock()
	c.rep.status("RESET")
	return nil
}

func cmdSelect(c *conn, args [][]byte) error {
	db, ok := string2ll(args[1])
	if !ok {
		c.rep.err("ERR value is not an integer or out of range")
		return nil
	}
	if db != int64(int32(db)) {
		c.rep.err("ERR value is out of range, value must between -2147483648 and 2147483647")
		return nil
	}
	if db < 0 || db >= 16 {
		c.rep.err("ERR DB index is out of range")
		return nil
	}
	// Channels are global, as in Redis: the database only shows in
	// CLIENT LIST.
	c.mu.Lock()
	c.db = int(db)
	c.mu.Unlock()
	c.rep.ok()
	return nil
}

// authenticate logs the connection in as user, if pass is its password
// (any password for a nopass user, as in Redis).
func (c *conn) authenticate(user, pass []byte) bool {
	u := c.srv.acl.authenticate(user, pass)
	if u == nil {
		c.srv.cfg.Logger.Info("authentication failed", "remote", c.addr, "user", string(user))
		return false
	}
	c.setUser(u)
	return true
}

const wrongPass = "WRONGPASS invalid username-password pair or user is disabled."

func cmdAuth(c *conn, args [][]byte) error {
	if len(args) > 3 {
		c.rep.err(syntaxError)
		return nil
	}
	user, pass := []byte("default"), args[1]
	if len(args) == 2 {
		if c.srv.acl.users["default"].noPass {
			c.rep.err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
			return nil
		}
	} else {
		user, pass = args[1], args[2]
	}
	if !c.authenticate(user, pass) {
		c.rep.err(wrongPass)
		return nil
	}
	c.rep.ok()
	return nil
}

// cmdHello implements HELLO [protover [AUTH username password] [SETNAME
// clientname]] with Redis's checks in Redis's order.
func cmdHello(c *conn, args [][]byte) error {
	proto := 0
	if len(args) >= 2 {
		v, ok := string2ll(args[1])
		if !ok {
			c.rep.err("ERR Protocol version is not an integer or out of range")
			return nil
		}
		if v < 2 || v > 3 {
			c.rep.err("NOPROTO unsupported protocol version")
			return nil
		}
		proto = int(v)
	}
	var user, pass, name []byte
	hasName := false
	for j := 2; j < len(args); j++ {
		more := len(args) - 1 - j
		switch opt := lower(args[j]); {
		case opt == "auth" && more >= 2:
			user, pass = args[j+1], args[j+2]
			j += 2
		case opt == "setname" && more >= 1:
			name, hasName = args[j+1], true
			j++
		default:
			c.rep.err(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", cstr(args[j], -1)))
			return nil
		}
	}
	if user != nil {
		if !c.authenticate(user, pass) {
			c.rep.err(wrongPass)
			return nil
		}
	}
	if c.user == nil {
		c.rep.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return nil
	}
	if hasName && !c.setName(name) {
		return nil
	}
	if proto != 0 {
		c.setProto(proto)
	}
	c.rep.mapHeader(7)
	c.rep.bulkString("server")
	c.rep.bulkString("redis")
	c.rep.bulkString("version")
	c.rep.bulkString(RedisVersion)
	c.rep.bulkString("proto")
	c.rep.int(int64(c.rep.proto))
	c.rep.bulkString("id")
	c.rep.int(int64(c.id))
	c.rep.bulkString("mode")
	c.rep.bulkString("standalone")
	c.rep.bulkString("role")
	c.rep.bulkString("master")
	c.rep.bulkString("modules")
	c.rep.array(0)
	return nil
}

// validAttr reports whether v may be a client name or library attribute:
// printable ASCII without spaces, so CLIENT LIST stays parseable.
func validAttr(v []byte) bool {
	for _, ch := range v {
		if ch < '!' || ch > '~' {
			return false
		}
	}
	return true
}

// setName sets the client name, or writes Redis's error and reports false.
func (c *conn) setName(name []byte) bool {
	if !validAttr(name) {
		c.rep.err("ERR Client names cannot contain spaces, newlines or special characters.")
		return false
	}
	c.mu.Lock()
	c.name = string(name)
	c.mu.Unlock()
	return true
}

func cmdClientID(c *conn, args [][]byte) error {
	c.rep.int(int64(c.id))
	return nil
}

func cmdClientSetName(c *conn, args [][]byte) error {
	if c.setName(args[2]) {
		c.rep.ok()
	}
	return nil
}

func cmdClientGetName(c *conn, args [][]byte) error {
	c.mu.Lock()
	name := c.name
	c.mu.Unlock()
	c.rep.nullableBulk(name)
	return nil
}

func cmdClientSetInfo(c *conn, args [][]byte) error {
	attr := lower(args[2])
	if attr != "lib-name" && attr != "lib-ver" {
		c.rep.err(fmt.Sprintf("ERR Unrecognized option '%s'", args[2]))
		return nil
	}
	if !validAttr(args[3]) {
		c.rep.err(fmt.Sprintf("ERR %s cannot contain spaces, newlines or special characters.", args[2]))
		return nil
	}
	c.mu.Lock()
	if attr == "lib-name" {
		c.libName = string(args[3])
	} else {
		c.libVer = string(args[3])
	}
	c.mu.Unlock()
	c.rep.ok()
	return nil
}

func cmdClientInfo(c *conn, args [][]byte) error {
	c.rep.verbatim(c.describe())
	return nil
}

func cmdClientList(c *conn, args [][]byte) error {
	typ := ""
	var ids map[uint64]bool
	switch {
	case len(args) == 2:
	case len(args) == 4 && lower(args[2]) == "type":
		typ = lower(args[3])
		if !validClientType(typ) {
			c.rep.err(fmt.Sprintf("ERR Unknown client type '%s'", args[3]))
			return nil
		}
	case len(args) > 3 && lower(args[2]) == "id":
		ids = map[uint64]bool{}
		for _, a := range args[3:] {
			id, err := strconv.ParseInt(string(a), 10, 64)
			if err != nil || id < 1 {
				c.rep.err("ERR Invalid client ID")
				return nil
			}
			ids[uint64(id)] = true
		}
	default:
		c.rep.err(syntaxError)
		return nil
	}
	var b strings.Builder
	for _, o := range c.srv.connections() {
		if (typ != "" && o.clientType() != typ) || (ids != nil && !ids[o.id]) {
			continue
		}
		b.WriteString(o.describe())
	}
	c.rep.verbatim(b.String())
	return nil
}

// validClientType reports whether t names a client type CLIENT LIST and
// CLIENT KILL accept.
func validClientType(t string) bool {
	switch t {
	case "normal", "pubsub", "master", "replica", "slave":
		return true
	}
	return false
}

func (c *conn) clientType() string {
	if c.subscribed() {
		return "pubsub"
	}
	return "normal"
}

// describe returns the connection's CLIENT LIST line, in Redis 7.2's
// format. Fields Herald has no counterpart for are reported as zero.
func (c *conn) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	flags := "N"
	if c.subscribed() {
		flags = "P"
	}
	frames, bytes := c.out.Len()
	now := time.Now()
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=-1 name=%s age=%d idle=%d flags=%s db=%d sub=%d psub=%d ssub=%d multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=%d omem=%d tot-mem=%d events=r cmd=%s user=%s redir=-1 resp=%d lib-name=%s lib-ver=%s\n",
		c.id, c.addr, c.laddr, c.name,
		int(now.Sub(c.created).Seconds()), int(now.Sub(c.lastActive).Seconds()),
		flags, c.db,
		c.cl.Count(broker.KindChannel, broker.KindSequenced), c.cl.Count(broker.KindPattern), c.cl.Count(broker.KindShard),
		frames, bytes, bytes,
		c.lastCmd, c.userName, c.proto, c.libName, c.libVer)
}

func (c *conn) nameOfUser() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userName
}

// cmdClientKill implements both forms: CLIENT KILL addr:port, and CLIENT
// KILL with ID, ADDR, LADDR, TYPE, USER and SKIPME filters.
func cmdClientKill(c *conn, args [][]byte) error {
	var (
		id          uint64
		addr, laddr string
		typ, user   string
		skipMe      = true
		oldStyle    = len(args) == 3
	)
	if oldStyle {
		addr = string(args[2])
		skipMe = false
	} else {
		for i := 2; i < len(args); i += 2 {
			if i+1 >= len(args) {
				c.rep.err(syntaxError)
				return nil
			}
			val := args[i+1]
			switch lower(args[i]) {
			case "id":
				n, err := strconv.ParseInt(string(val), 10, 64)
				if err != nil || n < 1 {
					c.rep.err("ERR client-id should be greater than 0")
					return nil
				}
				id = uint64(n)
			case "type":
				typ = lower(val)
				if !validClientType(typ) {
					c.rep.err(fmt.Sprintf("ERR Unknown client type '%s'", val))
					return nil
				}
			case "addr":
				addr = string(val)
			case "laddr":
				laddr = string(val)
			case "user":
				user = string(val)
				if !c.srv.acl.HasUser(user) {
					c.rep.err(fmt.Sprintf("ERR No such user '%s'", val))
					return nil
				}
			case "skipme":
				switch lower(val) {
				case "yes":
					skipMe = true
				case "no":
					skipMe = false
				default:
					c.rep.err(syntaxError)
					return nil
				}
			default:
				c.rep.err(syntaxError)
				return nil
			}
		}
	}
	killed, self := 0, false
	for _, o := range c.srv.connections() {
		if (id != 0 && o.id != id) || (addr != "" && o.addr != addr) || (laddr != "" && o.laddr != laddr) ||
			(typ != "" && o.clientType() != typ) || (user != "" && o.nameOfUser() != user) || (o == c && skipMe) {
			continue
		}
		if o == c {
			self = true // closed after this reply, as Redis does
		} else {
			o.kill()
		}
		killed++
	}
	switch {
	case !oldStyle:
		c.rep.int(int64(killed))
	case killed == 0:
		c.rep.err("ERR No such client")
	default:
		c.rep.ok()
	}
	if self {
		return errQuit
	}
	return nil
}

// cmdClientOnOff accepts CLIENT NO-EVICT and CLIENT NO-TOUCH: Herald evicts
// nothing and tracks no key access, so both are accepted and change nothing.
func cmdClientOnOff(c *conn, args [][]byte) error {
	switch lower(args[2]) {
	case "on", "off":
		c.rep.ok()
	default:
		c.rep.err(syntaxError)
	}
	return nil
}

func cmdClientReply(c *conn, args [][]byte) error {
	switch lower(args[2]) {
	case "on":
		c.replyOff, c.replySkip = false, false
		c.suppress = false
		c.rep.ok()
	case "off":
		c.replyOff = true
	case "skip":
		if !c.replyOff {
			c.replySkip = true
		}
	default:
		c.rep.err(syntaxError)
	}
	return nil
}

func cmdClientGetRedir(c *conn, args [][]byte) error {
	c.rep.int(-1)
	return nil
}

func cmdClientHelp(c *conn, args [][]byte) error {
	writeHelp(&c.rep, "CLIENT",
		"GETNAME", "    Return the name of the current connection.",
		"GETREDIR", "    Return the client ID we are redirecting to when tracking is enabled (always -1).",
		"ID", "    Return the ID of the current connection.",
		"INFO", "    Return information about the current client connection.",
		"KILL <ip:port>", "    Kill connection made from <ip:port>.",
		"KILL <option> <value> [<option> <value> [...]]", "    Kill connections. Options are: ID, TYPE, USER, ADDR, LADDR, SKIPME.",
		"LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> [<id> ...]]", "    Return information about client connections.",
		"NO-EVICT (ON|OFF)", "    Accepted for compatibility; Herald evicts nothing.",
		"NO-TOUCH (ON|OFF)", "    Accepted for compatibility; Herald has no keys to touch.",
		"REPLY (ON|OFF|SKIP)", "    Control the replies sent to the current connection.",
		"SETINFO <option> <value>", "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
		"SETNAME <name>", "    Assign the name <name> to the current connection.")
	return nil
}
