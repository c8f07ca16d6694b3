package resp

import (
	"context"
	"errors"
	"strconv"

	"github.com/herald-broker/herald/broker"
)

// Cluster is the replication layer as the HERALD.CLUSTER commands and INFO
// see it. The wiring in cmd/herald adapts raftstore.Store to it.
type Cluster interface {
	// Status describes the cluster as this node sees it.
	Status() ClusterStatus
	// AddNode adds a node (a voter, or a non-voter that only follows the
	// log) to the cluster, through the leader.
	AddNode(ctx context.Context, id, addr string, voter bool) error
	// RemoveNode removes a node from the cluster, through the leader.
	RemoveNode(ctx context.Context, id string) error
}

// ClusterStatus is a cluster as one node sees it.
type ClusterStatus struct {
	NodeID       string
	State        string // Leader, Follower, Candidate, Shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastLogIndex uint64
	Nodes        []ClusterNode
}

// ClusterNode is one member of the cluster.
type ClusterNode struct {
	ID       string
	Addr     string
	Suffrage string // Voter, Nonvoter
}

func registerHerald() {
	flagsWrite := []string{"write", "pubsub", "fast"}
	flagsRead := []string{"readonly", "pubsub"}
	register(
		&command{name: "herald.publish", arity: 3, flags: flagsWrite, group: "herald", since: "0.1.0",
			summary:    "Publishes a message and returns its sequence number, the channel's epoch and the number of receivers on this node.",
			complexity: "O(N+M) like PUBLISH", publish: true},
		&command{name: "herald.subscribe", arity: -2, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "herald", since: "0.1.0",
			summary:    "Subscribes to a channel's sequenced stream, optionally resuming after a sequence number.",
			complexity: "O(N) where N is the number of retained messages replayed",
			pubsubOK:   true, run: cmdHeraldSubscribe},
		&command{name: "herald.unsubscribe", arity: -1, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "herald", since: "0.1.0",
			summary: "Stops sequenced subscriptions.", complexity: "O(N) where N is the number of channels",
			pubsubOK: true, run: unsubscribe(broker.KindSequenced, "hunsubscribe")},
		&command{name: "herald.history", arity: -2, flags: flagsRead, group: "herald", since: "0.1.0",
			summary: "Reads a channel's retained messages.", complexity: "O(N) where N is the number of messages returned",
			run: cmdHeraldHistory},
		&command{name: "herald.channel", arity: 2, flags: flagsRead, group: "herald", since: "0.1.0",
			summary: "Describes a channel: epoch, sequence numbers, retained messages.", complexity: "O(1)",
			run: cmdHeraldChannel},
		&command{name: "herald.delete", arity: 2, flags: []string{"write"}, group: "herald", since: "0.1.0",
			summary: "Deletes a channel's history; its next message starts a new epoch.", complexity: "O(N) where N is the number of retained messages",
			run: cmdHeraldDelete},
		container("herald.cluster", "herald", "0.1.0", "A container for cluster commands."),
		&command{name: "herald.cluster|status", arity: 2, flags: flagsAdmin, group: "herald", since: "0.1.0",
			summary: "Describes the Raft cluster: nodes, leader, term, commit and applied index.", complexity: "O(N) where N is the number of nodes",
			run: cmdClusterStatus},
		&command{name: "herald.cluster|add", arity: -4, flags: flagsAdmin, group: "herald", since: "0.1.0",
			summary: "Adds a node: HERALD.CLUSTER ADD <id> <raft-addr> [NONVOTER].", complexity: "O(1)",
			run: cmdClusterAdd},
		&command{name: "herald.cluster|remove", arity: 3, flags: flagsAdmin, group: "herald", since: "0.1.0",
			summary: "Removes a node: HERALD.CLUSTER REMOVE <id>.", complexity: "O(1)",
			run: cmdClusterRemove},
		&command{name: "herald.cluster|help", arity: 2, flags: []string{"loading", "stale"}, group: "herald", since: "0.1.0",
			summary: "Returns helpful text about the different subcommands.", complexity: "O(1)",
			run: cmdClusterHelp},
	)
}

// parseUint parses a non-negative integer argument, or writes Redis's error
// and reports false.
func (c *conn) parseUint(b []byte) (uint64, bool) {
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil || n > 1<<63-1 {
		c.rep.err("ERR value is not an integer or out of range")
		return 0, false
	}
	return n, true
}

// cmdHeraldSubscribe implements HERALD.SUBSCRIBE <channel> [SINCE <seq>]
// [EPOCH <epoch>]. Without SINCE the subscription starts live, after an
// hresume push giving the position it starts from; with it, the retained
// messages after <seq> are replayed first (preceded by an hresume push
// saying whether the replay is complete) and the stream continues live
// without a gap or a duplicate.
func cmdHeraldSubscribe(c *conn, args [][]byte) error {
	var from broker.Position
	since := false
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			c.rep.err(syntaxError)
			return nil
		}
		n, ok := c.parseUint(args[i+1])
		if !ok {
			return nil
		}
		switch lower(args[i]) {
		case "since":
			from.Seq, since = n, true
		case "epoch":
			from.Epoch = n
		default:
			c.rep.err(syntaxError)
			return nil
		}
	}
	ch := string(args[1])
	c.out.Hold()
	n := c.subscriptionCount(broker.KindSequenced)
	if !c.cl.Has(broker.KindSequenced, ch) {
		n++
	}
	c.confirm("hsubscribe", args[1], n)
	c.flushReplies()
	var cu *broker.CatchUp
	if since {
		cu = c.cl.SubscribeFrom(ch, from)
	} else {
		cu = c.cl.SubscribeLatest(ch)
	}
	c.out.Release()
	if cu != nil {
		if err := cu.Run(c.ctx); err != nil && !errors.Is(err, context.Canceled) {
			c.srv.cfg.Logger.Warn("history replay failed", "client", c.id, "channel", ch, "err", err)
		}
	}
	return nil
}

// cmdHeraldHistory implements HERALD.HISTORY <channel> [SINCE <seq> | LAST
// <n>] [LIMIT <n>]. It first waits until this node has applied everything
// committed, so it sees every publish acknowledged before it on any node.
func cmdHeraldHistory(c *conn, args [][]byte) error {
	var q broker.HistoryQuery
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			c.rep.err(syntaxError)
			return nil
		}
		n, ok := c.parseUint(args[i+1])
		if !ok {
			return nil
		}
		switch lower(args[i]) {
		case "since":
			q.After = n
		case "last":
			q.Last = int(min(n, 1<<31))
		case "limit":
			q.Limit = int(min(n, 1<<31))
		default:
			c.rep.err(syntaxError)
			return nil
		}
	}
	log := c.srv.broker.Log()
	if err := log.Sync(c.ctx); err != nil {
		c.rep.err(errorReply(err))
		return nil
	}
	h, err := log.History(broker.Global, string(args[1]), q)
	if err != nil {
		c.rep.err(errorReply(err))
		return nil
	}
	c.rep.mapHeader(4)
	c.rep.bulkString("epoch")
	c.rep.int(int64(h.Epoch))
	c.rep.bulkString("first")
	c.rep.int(int64(h.First))
	c.rep.bulkString("last")
	c.rep.int(int64(h.Last))
	c.rep.bulkString("messages")
	c.rep.array(len(h.Messages))
	for _, m := range h.Messages {
		c.rep.array(3)
		c.rep.int(int64(m.Seq))
		c.rep.int(m.Time)
		c.rep.bulk(m.Payload)
	}
	return nil
}

// cmdHeraldChannel implements HERALD.CHANNEL <channel>.
func cmdHeraldChannel(c *conn, args [][]byte) error {
	log := c.srv.broker.Log()
	if err := log.Sync(c.ctx); err != nil {
		c.rep.err(errorReply(err))
		return nil
	}
	info, err := log.Info(broker.Global, string(args[1]))
	if err != nil {
		c.rep.err(errorReply(err))
		return nil
	}
	c.rep.mapHeader(8)
	c.rep.bulkString("epoch")
	c.rep.int(int64(info.Epoch))
	c.rep.bulkString("last_seq")
	c.rep.int(int64(info.LastSeq))
	c.rep.bulkString("first_seq")
	c.rep.int(int64(info.FirstSeq))
	c.rep.bulkString("retained")
	c.rep.int(int64(info.Retained))
	c.rep.bulkString("retained_bytes")
	c.rep.int(info.RetainedBytes)
	c.rep.bulkString("created")
	c.rep.int(info.Created)
	c.rep.bulkString("last_publish")
	c.rep.int(info.LastPublish)
	c.rep.bulkString("subscribers")
	c.rep.int(int64(c.srv.broker.NumSub(broker.Global, string(args[1]))))
	return nil
}

// cmdHeraldDelete implements HERALD.DELETE <channel>.
func cmdHeraldDelete(c *conn, args [][]byte) error {
	existed, err := c.srv.broker.Log().Delete(c.ctx, broker.Global, string(args[1]))
	if err != nil {
		c.rep.err(errorReply(err))
		return nil
	}
	if existed {
		c.rep.int(1)
	} else {
		c.rep.int(0)
	}
	return nil
}

func (c *conn) cluster() Cluster {
	if c.srv.cfg.Cluster == nil {
		c.rep.err("ERR this server has no cluster")
	}
	return c.srv.cfg.Cluster
}

func cmdClusterStatus(c *conn, args [][]byte) error {
	cl := c.cluster()
	if cl == nil {
		return nil
	}
	st := cl.Status()
	c.rep.mapHeader(9)
	c.rep.bulkString("node_id")
	c.rep.bulkString(st.NodeID)
	c.rep.bulkString("state")
	c.rep.bulkString(st.State)
	c.rep.bulkString("leader_id")
	c.rep.bulkString(st.LeaderID)
	c.rep.bulkString("leader_addr")
	c.rep.bulkString(st.LeaderAddr)
	c.rep.bulkString("term")
	c.rep.int(int64(st.Term))
	c.rep.bulkString("commit_index")
	c.rep.int(int64(st.CommitIndex))
	c.rep.bulkString("applied_index")
	c.rep.int(int64(st.AppliedIndex))
	c.rep.bulkString("last_log_index")
	c.rep.int(int64(st.LastLogIndex))
	c.rep.bulkString("nodes")
	c.rep.array(len(st.Nodes))
	for _, n := range st.Nodes {
		c.rep.mapHeader(3)
		c.rep.bulkString("id")
		c.rep.bulkString(n.ID)
		c.rep.bulkString("addr")
		c.rep.bulkString(n.Addr)
		c.rep.bulkString("suffrage")
		c.rep.bulkString(n.Suffrage)
	}
	return nil
}

func cmdClusterAdd(c *conn, args [][]byte) error {
	cl := c.cluster()
	if cl == nil {
		return nil
	}
	voter := true
	switch {
	case len(args) == 5 && lower(args[4]) == "nonvoter":
		voter = false
	case len(args) != 4:
		c.rep.err(syntaxError)
		return nil
	}
	if err := cl.AddNode(c.ctx, string(args[2]), string(args[3]), voter); err != nil {
		c.rep.err(errorReply(err))
		return nil
	}
	c.rep.ok()
	return nil
}

func cmdClusterRemove(c *conn, args [][]byte) error {
	cl := c.cluster()
	if cl == nil {
		return nil
	}
	if err := cl.RemoveNode(c.ctx, string(args[2])); err != nil {
		c.rep.err(errorReply(err))
		return nil
	}
	c.rep.ok()
	return nil
}

func cmdClusterHelp(c *conn, args [][]byte) error {
	writeHelp(&c.rep, "HERALD.CLUSTER",
		"STATUS", "    Describe the cluster: this node, the leader, term, commit and applied index, members.",
		"ADD <id> <raft-addr> [NONVOTER]", "    Add a node (through the leader).",
		"REMOVE <id>", "    Remove a node (through the leader).")
	return nil
}
