package wsbridge

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
)

// keepAliveFrame is an SSE comment; its empty first line tells the writer it
// carries no position.
var keepAliveFrame = []byte("\n: keep-alive\n\n")

// serveSSE streams channels as Server-Sent Events: GET
// /sse?channel=a&channel=b[&since=..&epoch=..]. Every event's id is the
// position of every channel of the stream ("a=5:42,b=5:17"), so the
// browser's EventSource resumes all of them through Last-Event-ID when it
// reconnects.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	if !s.allowCORS(w, r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	subs, err := parseChannelQuery(r.URL.Query())
	if err == nil && len(subs) == 0 {
		err = errors.New("give at least one channel: /sse?channel=NAME")
	}
	if err == nil && len(subs) > s.cfg.MaxSubscriptions {
		err = errTooManySubscriptions
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
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		applyLastEventID(subs, id)
	}
	ctx, stop := s.streamContext(r)
	defer stop()
	if g != nil && !g.expires.IsZero() {
		// The stream ends when the token expires; the browser needs a
		// new URL, with a fresh token, to go on.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, g.expires)
		defer cancel()
	}
	cl := s.broker.NewClient(sseFormat{})
	defer cl.Close()
	out := cl.Outbox()
	s.numSSE.Add(1)
	defer s.numSSE.Add(-1)
	s.cfg.Logger.Debug("sse stream opened", "client", cl.ID(), "remote", r.RemoteAddr)
	defer s.cfg.Logger.Debug("sse stream closed", "client", cl.ID(), "remote", r.RemoteAddr)

	// Subscribe before the response starts: a browser that acts once the
	// stream is open (EventSource's open event) must not miss what it
	// causes. A channel without a position starts from its latest: its
	// resume event gives the stream's id a position for it from the
	// start, so a reconnect misses nothing even if no message came before.
	catchUps := subscribeAll(cl, subs)

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	pos := newPositions(subs)
	// Tell the browser where the stream starts, and to retry quickly.
	var first bytes.Buffer
	first.WriteString("retry: 2000\nid: ")
	first.WriteString(pos.id())
	first.WriteString("\n\n")
	if _, err := w.Write(first.Bytes()); err != nil || rc.Flush() != nil {
		return
	}

	go func() {
		for _, cu := range catchUps {
			cu.Run(ctx)
		}
	}()
	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()
	go func() {
		for {
			select {
			case <-keepAlive.C:
				out.PushReply(keepAliveFrame)
			case <-ctx.Done():
				return
			}
		}
	}()

	var frames [][]byte
	var buf []byte
	for {
		var err error
		frames, err = out.Next(ctx.Done(), frames[:0])
		buf = buf[:0]
		for _, f := range frames {
			buf = pos.appendEvent(buf, f)
		}
		clear(frames)
		if len(buf) > 0 {
			rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if _, werr := w.Write(buf); werr != nil || rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return // slow consumer, client gone, or shutdown: the browser reconnects
		}
	}
}

// positions is the position of each channel of an SSE stream, in the order
// the channels were given.
type positions struct {
	names []string // escaped channel names
	at    map[string][2]uint64
}

func newPositions(subs []subRequest) *positions {
	p := &positions{at: make(map[string][2]uint64)}
	for _, s := range subs {
		name := escapeIDPart(s.channel)
		p.names = append(p.names, name)
		if s.resume {
			p.at[name] = [2]uint64{s.from.Epoch, s.from.Seq}
		}
	}
	return p
}

// id formats the stream's position as an event id: name=epoch:seq,...
// Channels without a position yet are left out.
func (p *positions) id() string {
	var b strings.Builder
	for _, n := range p.names {
		v, ok := p.at[n]
		if !ok {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(strconv.FormatUint(v[0], 10))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(v[1], 10))
	}
	return b.String()
}

// appendEvent appends frame as an SSE event, with the stream's position
// (updated by the frame's position line) as its id.
func (p *positions) appendEvent(dst, frame []byte) []byte {
	line, event, ok := bytes.Cut(frame, []byte{'\n'})
	if !ok {
		return dst
	}
	if len(line) > 0 {
		parts := bytes.Split(line, []byte{' '})
		if len(parts) == 3 {
			epoch, _ := strconv.ParseUint(string(parts[1]), 10, 64)
			seq, _ := strconv.ParseUint(string(parts[2]), 10, 64)
			p.at[string(parts[0])] = [2]uint64{epoch, seq}
		}
		dst = append(dst, "id: "...)
		dst = append(dst, p.id()...)
		dst = append(dst, '\n')
	}
	return append(dst, event...)
}

// escapeIDPart escapes a channel name for an event id, where ',', '=', ':'
// and line breaks are taken.
func escapeIDPart(channel string) string { return url.QueryEscape(channel) }

// applyLastEventID resumes the requested channels from the positions in an
// event id the browser sends back on reconnect.
func applyLastEventID(subs []subRequest, id string) {
	at := map[string]broker.Position{}
	for _, part := range strings.Split(id, ",") {
		name, pos, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		es, ss, ok := strings.Cut(pos, ":")
		if !ok {
			continue
		}
		ch, err1 := url.QueryUnescape(name)
		epoch, err2 := strconv.ParseUint(es, 10, 64)
		seq, err3 := strconv.ParseUint(ss, 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		at[ch] = broker.Position{Epoch: epoch, Seq: seq}
	}
	for i := range subs {
		if p, ok := at[subs[i].channel]; ok {
			subs[i].from, subs[i].resume = p, true
		}
	}
}
