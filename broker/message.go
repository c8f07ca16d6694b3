package broker

// Namespace separates the two channel spaces Redis has: channels used by
// PUBLISH/SUBSCRIBE and shard channels used by SPUBLISH/SSUBSCRIBE. A
// message published in one is never seen by subscribers of the other.
type Namespace uint8

const (
	// Global is the namespace of PUBLISH, SUBSCRIBE and PSUBSCRIBE.
	Global Namespace = 0
	// Shard is the namespace of SPUBLISH and SSUBSCRIBE.
	Shard Namespace = 1
)

// Kind is how a subscription selects messages.
type Kind uint8

const (
	// KindChannel receives messages published to one channel (SUBSCRIBE).
	KindChannel Kind = iota
	// KindPattern receives messages of every channel matching a glob
	// pattern (PSUBSCRIBE).
	KindPattern
	// KindShard receives messages published to one shard channel
	// (SSUBSCRIBE).
	KindShard
	// KindSequenced receives messages published to one channel, each with
	// its sequence number, and can resume from a position (HERALD.SUBSCRIBE
	// and the WebSocket protocol).
	KindSequenced
	numKinds
)

// Namespace returns the namespace a subscription of kind k listens in.
func (k Kind) Namespace() Namespace {
	if k == KindShard {
		return Shard
	}
	return Global
}

// Message is one committed publish, as applied from the log.
type Message struct {
	Namespace Namespace
	Channel   string
	Payload   []byte
	// Epoch identifies the channel's current life: it changes only when the
	// channel's history is deleted or the channel is forgotten and created
	// anew. Sequence numbers are unique within an epoch.
	Epoch uint64
	// Seq is the message's sequence number in its channel: 1, 2, 3, ...
	Seq uint64
	// Time is when the leader stamped the message, in Unix milliseconds.
	Time int64

	frames []cachedFrame // encoded once per format and subscription name
}

type cachedFrame struct {
	format Format
	kind   Kind
	name   string
	b      []byte
}

// frame returns the bytes that deliver m to a subscription of kind k named
// name in format f, encoding them on first use. Only the goroutine that
// delivers m may call it.
func (m *Message) frame(f Format, k Kind, name string) []byte {
	for i := range m.frames {
		c := &m.frames[i]
		if c.format == f && c.kind == k && c.name == name {
			return c.b
		}
	}
	b := f.AppendMessage(nil, k, name, m)
	m.frames = append(m.frames, cachedFrame{format: f, kind: k, name: name, b: b})
	return b
}

// Position is a place in a channel's stream: the last message a subscriber
// has seen.
type Position struct {
	Epoch uint64
	Seq   uint64
}

// Resume tells a sequenced subscriber how its stream continues after it asked
// to resume from a position.
type Resume struct {
	// Recovered is true when every message after the requested position is
	// about to be delivered: no gap. It is false when the epoch differs or
	// history no longer reaches back far enough.
	Recovered bool
	// Epoch is the channel's current epoch (0 if the channel has no state).
	Epoch uint64
	// From is the sequence number of the first message that will be
	// delivered; messages between the requested position and From are lost.
	From uint64
	// Last is the channel's last sequence number when the subscription was
	// made: messages up to Last come from history, later ones live.
	Last uint64
}

// Format encodes what the broker delivers into one wire protocol's frames.
// A transport defines one Format value per wire format it speaks (RESP2,
// RESP3, WebSocket JSON) and gives it to each client; the broker encodes each
// message at most once per format and subscription name, and shares the bytes
// among all receivers. Implementations must be comparable (pointers or small
// structs) and safe for concurrent use.
type Format interface {
	// AppendMessage appends the frame that delivers m through a
	// subscription of kind k named name (the pattern, for KindPattern).
	AppendMessage(dst []byte, k Kind, name string, m *Message) []byte
	// AppendResume appends the frame that tells a sequenced subscriber of
	// channel how its resumed stream continues.
	AppendResume(dst []byte, channel string, r Resume) []byte
}
