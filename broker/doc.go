// Package broker routes messages from publishers to subscribers. It knows
// nothing of wire protocols or Raft: transports (package resp, package wsbridge)
// turn connections into Clients, and a Log (package raftstore) makes every
// publish durable, numbers it, and hands it back through Broker.DeliverBatch.
//
// # The publish path
//
//	transport ──Broker.Publish──▶ Log (commit, assign sequence number)
//	                                 │
//	          ◀──Broker.DeliverBatch─┘  in log order, on every node
//	fan-out: one non-blocking Outbox.Push per matching subscription
//
// A publish is acknowledged only after the log has committed it and this
// node has delivered it. DeliverBatch never blocks on a client: each client has a
// bounded Outbox, drained by its transport's writer goroutine, and a client
// whose outbox passes its limits is failed with ErrSlowConsumer and
// disconnected by its transport.
//
// A message is encoded once per wire Format and subscription name, and the
// same bytes are queued for every receiver.
//
// # Writers
//
// Each transport drains a client's outbox with a writer goroutine. Two
// helpers keep thousands of writers woken by one fan-out from getting in
// each other's way, and in the way of the log: WriteSlots bounds how many
// send at once, and WriteNow sends what a socket takes without waiting for
// it, so that a writer holding a slot never waits for a client.
//
// # Concurrency
//
// Broker and Client methods are safe for concurrent use. DeliverBatch calls are
// serialized by the broker, so messages reach every client in log order. A
// subscription is visible to DeliverBatch as soon as Subscribe returns.
package broker
