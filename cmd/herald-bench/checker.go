package main

import "fmt"

// Loss counts what went wrong with a run's messages. Any non-zero field
// but Unacked fails the run: a benchmark that loses messages is a failure,
// not a fast run.
type Loss struct {
	// Missing: messages a publisher had acknowledged that a subscriber
	// never received (counted per subscriber).
	Missing uint64 `json:"missing"`
	// Duplicate: a message received twice by one subscriber.
	Duplicate uint64 `json:"duplicate"`
	// OutOfOrder: a message received after a later one of the same
	// publisher on the same channel.
	OutOfOrder uint64 `json:"out_of_order"`
	// SeqGaps: sequence numbers skipped in a Herald sequenced stream
	// (WebSocket, HERALD.SUBSCRIBE); SeqBack: a sequence number at or
	// below one already seen; EpochChanges: the stream moved to a new
	// epoch mid-run.
	SeqGaps      uint64 `json:"seq_gaps"`
	SeqBack      uint64 `json:"seq_back"`
	EpochChanges uint64 `json:"epoch_changes"`
	// Foreign: messages that were not this run's payloads.
	Foreign uint64 `json:"foreign"`
	// Disconnects: subscriber or publisher connections that ended before
	// the run did.
	Disconnects uint64 `json:"disconnects"`
	// Errors: error replies to publishes (each may or may not have been
	// committed, so subscribers may still receive it).
	Errors uint64 `json:"errors"`
}

// Add adds o to l.
func (l *Loss) Add(o Loss) {
	l.Missing += o.Missing
	l.Duplicate += o.Duplicate
	l.OutOfOrder += o.OutOfOrder
	l.SeqGaps += o.SeqGaps
	l.SeqBack += o.SeqBack
	l.EpochChanges += o.EpochChanges
	l.Foreign += o.Foreign
	l.Disconnects += o.Disconnects
	l.Errors += o.Errors
}

// Failures returns a description of each kind of loss, empty when none.
func (l Loss) Failures() []string {
	var out []string
	add := func(n uint64, what string) {
		if n > 0 {
			out = append(out, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(l.Missing, "missing")
	add(l.Duplicate, "duplicate")
	add(l.OutOfOrder, "out of order")
	add(l.SeqGaps, "sequence numbers skipped")
	add(l.SeqBack, "sequence numbers repeated or backwards")
	add(l.EpochChanges, "epoch changes")
	add(l.Foreign, "foreign messages")
	add(l.Disconnects, "disconnects")
	add(l.Errors, "publish errors")
	return out
}

// maxTrackedGaps bounds the counters a stream remembers as skipped. Past
// it, skipped counters are only counted missing: a late arrival of one of
// them then counts as a duplicate instead of out of order. Either fails the
// run.
const maxTrackedGaps = 1 << 20

// streamCheck follows the messages of one publisher on one channel as one
// subscriber receives them. The publisher numbers them 0, 1, 2, ...; every
// one it had acknowledged must arrive exactly once, in order. Not safe for
// concurrent use: one subscriber's reader owns it.
type streamCheck struct {
	next      uint64              // the counter expected next
	gaps      map[uint64]struct{} // counters skipped over and not seen since
	untracked uint64              // skipped counters past maxTrackedGaps
	received  uint64              // distinct messages received
	dup, ooo  uint64
}

// observe records the arrival of message counter c.
func (s *streamCheck) observe(c uint64) {
	switch {
	case c == s.next:
		s.next++
		s.received++
	case c > s.next:
		if s.gaps == nil {
			s.gaps = make(map[uint64]struct{})
		}
		for i := s.next; i < c; i++ {
			if len(s.gaps) >= maxTrackedGaps {
				s.untracked += c - i
				break
			}
			s.gaps[i] = struct{}{}
		}
		s.next = c + 1
		s.received++
	default:
		if _, ok := s.gaps[c]; ok {
			delete(s.gaps, c)
			s.ooo++
			s.received++
		} else {
			s.dup++
		}
	}
}

// loss returns the stream's tally given that the publisher had
// acknowledged counters 0 to acked-1. Messages beyond acked (sent, not
// acknowledged when the run ended) are not required.
func (s *streamCheck) loss(acked uint64) Loss {
	l := Loss{Duplicate: s.dup, OutOfOrder: s.ooo, Missing: s.untracked}
	for g := range s.gaps {
		if g < acked {
			l.Missing++
		}
	}
	if s.next < acked {
		l.Missing += acked - s.next
	}
	return l
}

// seqCheck follows the sequence numbers of one channel in a Herald
// sequenced stream: within an epoch they must be contiguous.
type seqCheck struct {
	epoch uint64
	next  uint64 // 0: not known yet
	l     Loss
}

// resume records a resume event: the stream continues at from in epoch.
// from 0 means the position is unknown (history could not be read).
func (s *seqCheck) resume(epoch, from uint64) {
	if s.next != 0 && (epoch != s.epoch || from != s.next) {
		s.l.EpochChanges++
	}
	s.epoch, s.next = epoch, from
}

// message records a message's position. An epoch of 0 from a resume means
// the channel had no state yet: its first message creates the epoch.
func (s *seqCheck) message(epoch, seq uint64) {
	switch {
	case s.next == 0:
	case epoch != s.epoch && s.epoch != 0:
		s.l.EpochChanges++
	case seq > s.next:
		s.l.SeqGaps += seq - s.next
	case seq < s.next:
		s.l.SeqBack++
		return
	}
	s.epoch, s.next = epoch, seq+1
}
