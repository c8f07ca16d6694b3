package wsbridge

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/herald-broker/herald/broker"
)

// servePoll answers a long-poll: GET /poll?channel=a[&since=N[&epoch=E]]...
// [&timeout=25s]. If messages after since exist, it returns at once with
// them (up to MaxPollEvents); otherwise it waits, up to the timeout, for the
// next one. A channel without since waits for the next message, and its
// resume event gives the position to poll from next. The
// response is {"events":[...]}, the same events as over WebSocket, "resume"
// events included; an empty list means the wait timed out.
func (s *Server) servePoll(w http.ResponseWriter, r *http.Request) {
	if !s.allowCORS(w, r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	subs, err := parseChannelQuery(q)
	if err == nil && len(subs) == 0 {
		err = errors.New("give at least one channel: /poll?channel=NAME&since=SEQ")
	}
	if err == nil && len(subs) > s.cfg.MaxSubscriptions {
		err = errTooManySubscriptions
	}
	wait := s.cfg.PollTimeout
	if t := q.Get("timeout"); t != "" && err == nil {
		var d time.Duration
		if d, err = time.ParseDuration(t); err == nil && d >= 0 {
			wait = min(d, s.cfg.PollTimeout)
		} else if err == nil {
			err = errors.New("timeout must not be negative")
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}

	g, release, ok := s.gate(w, r, subs)
	if !ok {
		return
	}
	defer release()
	if g != nil && !g.expires.IsZero() {
		wait = min(wait, max(time.Until(g.expires), 0))
	}
	sctx, stop := s.streamContext(r)
	defer stop()
	ctx, cancel := context.WithTimeout(sctx, wait)
	defer cancel()
	cl := s.broker.NewClient(jsonFormat{})
	defer cl.Close()
	out := cl.Outbox()
	s.numPoll.Add(1)
	defer s.numPoll.Add(-1)
	// A channel without since starts at its latest position: its resume
	// event tells the client where to poll from next.
	catchUps := subscribeAll(cl, subs)
	replaying := len(catchUps) > 0
	if replaying {
		go func() {
			// The replay is bounded by the request, not by the wait:
			// timeout=0 still returns what is retained.
			for _, cu := range catchUps {
				cu.Run(sctx)
			}
			out.PushReply(replayDone)
		}()
	}

	var events, frames [][]byte
	messages := 0
	for len(events) < s.cfg.MaxPollEvents {
		// Once history is replayed and there is something to return,
		// take only what is queued already; until then, wait.
		var done <-chan struct{}
		switch {
		case replaying:
			done = sctx.Done() // history comes back whatever the timeout
		case messages > 0 || hasGap(events):
			done = closed
		default:
			done = ctx.Done()
		}
		var err error
		frames, err = out.Next(done, frames[:0])
		for _, f := range frames {
			if len(f) == 0 {
				replaying = false
				continue
			}
			if len(events) == s.cfg.MaxPollEvents {
				continue // the client polls again from the last sequence number it got
			}
			events = append(events, f)
			if isMessageEvent(f) {
				messages++
			}
		}
		if errors.Is(err, broker.ErrSlowConsumer) {
			http.Error(w, "too many messages queued", http.StatusServiceUnavailable)
			return
		}
		if err != nil {
			break // timed out, or returning what there is
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	var b bytes.Buffer
	b.WriteString(`{"events":[`)
	for i, e := range events {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(e)
	}
	b.WriteString("]}\n")
	w.Write(b.Bytes())
}

// replayDone is the empty frame the replay goroutine queues when history is
// replayed; an empty frame is never an event.
var replayDone = []byte{}

// closed is a closed channel: Next with it returns what is queued at once.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

var (
	messagePrefix = []byte(`{"type":"message"`)
	gapPrefix     = []byte(`{"type":"resume","channel":`)
)

func isMessageEvent(f []byte) bool { return bytes.HasPrefix(f, messagePrefix) }

// hasGap reports whether events include a resume that did not recover:
// news the client should have at once.
func hasGap(events [][]byte) bool {
	for _, e := range events {
		if bytes.HasPrefix(e, gapPrefix) && bytes.Contains(e, []byte(`"recovered":false`)) {
			return true
		}
	}
	return false
}

// subscribeAll subscribes cl to each requested channel: from its since
// when given, else from its latest position. Every channel gets a resume
// event (its starting position); the returned replays deliver them and the
// history, and must be run.
func subscribeAll(cl *broker.Client, subs []subRequest) []*broker.CatchUp {
	var catchUps []*broker.CatchUp
	for _, sub := range subs {
		var cu *broker.CatchUp
		if sub.resume {
			cu = cl.SubscribeFrom(sub.channel, sub.from)
		} else {
			cu = cl.SubscribeLatest(sub.channel)
		}
		if cu != nil {
			catchUps = append(catchUps, cu)
		}
	}
	return catchUps
}

// subRequest is one channel asked for in a query string.
type subRequest struct {
	channel string
	from    broker.Position
	resume  bool
}

// parseChannelQuery reads channel=NAME (repeatable) with optional since=SEQ
// and epoch=EPOCH, paired with the channels by position: the first since
// belongs to the first channel, and so on.
func parseChannelQuery(q map[string][]string) ([]subRequest, error) {
	chans, sinces, epochs := q["channel"], q["since"], q["epoch"]
	if len(sinces) > len(chans) || len(epochs) > len(chans) {
		return nil, errors.New("more since or epoch values than channels: they pair with channels in order")
	}
	subs := make([]subRequest, 0, len(chans))
	for i, ch := range chans {
		if ch == "" {
			return nil, errors.New("empty channel name")
		}
		sub := subRequest{channel: ch}
		if i < len(sinces) && sinces[i] != "" {
			n, err := strconv.ParseUint(sinces[i], 10, 64)
			if err != nil {
				return nil, errors.New("since must be a sequence number")
			}
			sub.from.Seq, sub.resume = n, true
		}
		if i < len(epochs) && epochs[i] != "" {
			n, err := strconv.ParseUint(epochs[i], 10, 64)
			if err != nil {
				return nil, errors.New("epoch must be a number")
			}
			sub.from.Epoch = n
		}
		subs = append(subs, sub)
	}
	return subs, nil
}
