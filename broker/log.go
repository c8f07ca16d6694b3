package broker

import "context"

// Log is the durable, ordered record every publish goes through. It assigns
// each message its channel's next sequence number, keeps the retained
// history, and hands each committed message back to the broker, in log order,
// through Broker.DeliverBatch. raftstore.Store implements it on Raft and Pebble.
type Log interface {
	// Publish commits msgs, in order, and returns once each is committed
	// and delivered to this node's subscribers, with its position and the
	// number of local subscriptions it reached. On error none of msgs is
	// acknowledged: each may or may not have been committed.
	Publish(ctx context.Context, msgs []Publish) ([]Receipt, error)

	// History reads channel's retained messages on this node.
	History(ns Namespace, channel string, q HistoryQuery) (History, error)

	// Info describes channel's state on this node.
	Info(ns Namespace, channel string) (ChannelInfo, error)

	// Delete drops channel's history and sequence: its next publish starts
	// a new epoch. It reports whether the channel had any state.
	Delete(ctx context.Context, ns Namespace, channel string) (bool, error)

	// Sync waits until this node has applied everything the log had
	// committed when Sync was called, so that a read on this node that
	// follows sees every publish acknowledged before it, wherever made.
	Sync(ctx context.Context) error
}

// Publish is one message to commit.
type Publish struct {
	Namespace Namespace
	Channel   string
	Payload   []byte
}

// Receipt is what a committed publish was given.
type Receipt struct {
	Epoch uint64
	Seq   uint64
	// Receivers is the number of this node's subscriptions the message was
	// delivered to, counted as Redis counts the PUBLISH reply.
	Receivers int
}

// HistoryQuery selects retained messages. With After set, it selects the
// messages after that sequence number, oldest first; with Last set instead,
// the newest Last messages, oldest first. Limit caps how many are returned
// (0 means no cap beyond retention).
type HistoryQuery struct {
	After uint64
	Last  int
	Limit int
}

// History is a channel's retained messages and where they sit in its stream.
type History struct {
	// Epoch is the channel's epoch; 0 if the channel has no state.
	Epoch uint64
	// First is the sequence number of the oldest retained message, or
	// Last+1 when none is retained.
	First uint64
	// Last is the channel's last sequence number; 0 if never published.
	Last uint64
	// Messages are the selected messages, oldest first.
	Messages []*Message
}

// ChannelInfo is a channel's replicated state.
type ChannelInfo struct {
	Epoch uint64 // 0 if the channel has no state
	// LastSeq is the last sequence number assigned in this epoch.
	LastSeq uint64
	// FirstSeq is the oldest retained sequence number, or LastSeq+1 if
	// nothing is retained.
	FirstSeq      uint64
	Retained      int
	RetainedBytes int64
	// Created and LastPublish are leader timestamps in Unix milliseconds.
	Created     int64
	LastPublish int64
}
