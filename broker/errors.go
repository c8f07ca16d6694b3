package broker

import "errors"

var (
	// ErrSlowConsumer means a client's outbox went over its limits: the
	// client is disconnected rather than let it slow anyone else down.
	ErrSlowConsumer = errors.New("slow consumer: outbox limit exceeded")

	// ErrClosed means the client or broker has been closed.
	ErrClosed = errors.New("closed")

	// ErrNoLog means the broker was used before a Log was attached.
	ErrNoLog = errors.New("broker has no log")

	// ErrNoQuorum means the log could not commit because no leader with a
	// quorum could be reached in time; nothing was acknowledged.
	ErrNoQuorum = errors.New("no quorum")

	// ErrTimeout means the log did not confirm a write in time; the write
	// may or may not have been committed.
	ErrTimeout = errors.New("timed out waiting for commit")

	// ErrPayloadTooLarge means a publish exceeded the payload limit.
	ErrPayloadTooLarge = errors.New("payload too large")

	// ErrChannelTooLong means a channel name or pattern exceeded the
	// length limit.
	ErrChannelTooLong = errors.New("channel name too long")
)
