package resp

import (
	"io"
	"strconv"
)

// Backup is what HERALD.BACKUP serves: a consistent copy of the node's
// state, as a file-like reader and its length. Close releases it.
type Backup interface {
	io.ReadCloser
	Size() int64
}

// backupChunk is how much of a backup is queued at a time: a backup is
// written to the client a chunk at a time, never held whole in memory.
const backupChunk = 1 << 20

func init() {
	register(&command{name: "herald.backup", arity: 1, flags: flagsAdmin, group: "herald", since: "0.1.0",
		summary:    "Returns a consistent copy of this node's state (channels, sequences, retained history) as one bulk string; see herald backup.",
		complexity: "O(N) where N is the size of the state",
		run:        cmdHeraldBackup})
}

func cmdHeraldBackup(c *conn, args [][]byte) error {
	if c.srv.cfg.Backup == nil {
		c.rep.err("ERR backups are not available on this server")
		return nil
	}
	if c.suppress {
		return nil // CLIENT REPLY OFF: no one would read it
	}
	b, err := c.srv.cfg.Backup(c.ctx)
	if err != nil {
		c.rep.err("ERR backup failed: " + err.Error())
		return nil
	}
	defer b.Close()
	c.srv.cfg.Logger.Info("backup started", "client", c.id, "remote", c.addr, "bytes", b.Size())
	// The bulk string's header, then its body in chunks, each queued once
	// the writer has taken the previous one.
	c.rep.b = append(c.rep.b, '$')
	c.rep.b = strconv.AppendInt(c.rep.b, b.Size(), 10)
	c.rep.b = append(c.rep.b, '\r', '\n')
	c.flushReplies()
	left := b.Size()
	for left > 0 {
		chunk := make([]byte, min(left, backupChunk))
		if _, err := io.ReadFull(b, chunk); err != nil {
			// The length is promised: the connection cannot continue.
			c.srv.cfg.Logger.Error("backup failed while sending", "client", c.id, "err", err)
			return err
		}
		if !c.out.PushReply(chunk) {
			return c.out.Err()
		}
		left -= int64(len(chunk))
		if err := c.out.WaitEmpty(c.ctx); err != nil {
			return err
		}
	}
	c.rep.b = append(c.rep.b, '\r', '\n')
	c.srv.cfg.Logger.Info("backup sent", "client", c.id, "remote", c.addr, "bytes", b.Size())
	return nil
}
