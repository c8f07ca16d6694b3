package broker_test

import (
	"bytes"
	"strconv"
	"sync"
	"testing"

	"github.com/herald-broker/herald/broker"
)

// benchFormat frames a message the way RESP2 does, so that the benchmarks
// measure the broker and not a formatting library.
type benchFormat struct{}

func (benchFormat) AppendMessage(dst []byte, k broker.Kind, name string, m *broker.Message) []byte {
	n := 3
	if k == broker.KindPattern {
		n = 4
	}
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, "\r\n"...)
	kind := "message"
	if k == broker.KindPattern {
		kind = "pmessage"
	}
	dst = appendBulk(dst, kind)
	if k == broker.KindPattern {
		dst = appendBulk(dst, name)
	}
	dst = appendBulk(dst, m.Channel)
	return appendBulk(dst, string(m.Payload))
}

func (benchFormat) AppendResume(dst []byte, channel string, r broker.Resume) []byte {
	return appendBulk(dst, channel)
}

func appendBulk(dst []byte, s string) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, s...)
	return append(dst, "\r\n"...)
}

// benchPayload is the size of a chat message or a small JSON event.
var benchPayload = bytes.Repeat([]byte("x"), 128)

// BenchmarkDeliverFanout measures Deliver of one message to every client on
// a channel: the publisher's cost of a fan-out.
//
// drained-between: each outbox is empty when the message arrives, as when
// writers keep up; the queues are emptied with the timer stopped, so only
// the enqueue is measured.
//
// writers: every client has its writer goroutine draining its outbox with
// Next, as transports run them; the measurement includes the contention
// with those goroutines and waking them.
func BenchmarkDeliverFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run("clients="+strconv.Itoa(n)+"/drained-between", func(b *testing.B) {
			br, clients := fanoutClients(n)
			m := &broker.Message{Channel: "fan", Payload: benchPayload, Epoch: 1}
			bufs := make([][][]byte, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m.Seq = uint64(i + 1)
				if got := deliver(br, m); got != n {
					b.Fatalf("delivered to %d, want %d", got, n)
				}
				b.StopTimer()
				for j, c := range clients {
					var err error
					if bufs[j], err = c.Outbox().Next(nil, bufs[j][:0]); err != nil || len(bufs[j]) != 1 {
						b.Fatalf("client %d: %d frames, %v", j, len(bufs[j]), err)
					}
				}
				b.StartTimer()
			}
		})
		b.Run("clients="+strconv.Itoa(n)+"/writers", func(b *testing.B) {
			br, clients := fanoutClients(n)
			done := make(chan struct{})
			var wg sync.WaitGroup
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var buf [][]byte
					for {
						var err error
						if buf, err = c.Outbox().Next(done, buf[:0]); err != nil {
							return
						}
					}
				}()
			}
			m := &broker.Message{Channel: "fan", Payload: benchPayload, Epoch: 1}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m.Seq = uint64(i + 1)
				if got := deliver(br, m); got != n {
					b.Fatalf("delivered to %d, want %d", got, n)
				}
			}
			b.StopTimer()
			close(done)
			wg.Wait()
			if st := br.Stats(); st.SlowDisconnect != 0 {
				b.Fatalf("%d writers fell behind the outbox limits", st.SlowDisconnect)
			}
		})
	}
}

func fanoutClients(n int) (*broker.Broker, []*broker.Client) {
	br := broker.New(broker.Config{})
	clients := make([]*broker.Client, n)
	for i := range clients {
		clients[i] = br.NewClient(benchFormat{})
		clients[i].Subscribe(broker.KindChannel, "fan")
	}
	return br, clients
}

// BenchmarkDeliverPatterns measures Deliver of a message on a channel that
// one of 100 subscribed patterns matches; the receiving client's writer
// drains its outbox on its own goroutine.
func BenchmarkDeliverPatterns(b *testing.B) {
	br := broker.New(broker.Config{})
	var target *broker.Client
	for i := range 100 {
		c := br.NewClient(benchFormat{})
		c.Subscribe(broker.KindPattern, "news."+strconv.Itoa(i)+".*")
		if i == 42 {
			target = c
		}
	}
	done := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var buf [][]byte
		for {
			var err error
			if buf, err = target.Outbox().Next(done, buf[:0]); err != nil {
				return
			}
		}
	}()
	m := &broker.Message{Channel: "news.42.sports", Payload: benchPayload, Epoch: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.Seq = uint64(i + 1)
		if got := deliver(br, m); got != 1 {
			b.Fatalf("delivered to %d, want 1", got)
		}
	}
	b.StopTimer()
	close(done)
	<-writerDone
}

// BenchmarkOutboxPush measures Push of a 128-byte frame into one outbox
// drained by a writer goroutine: from one producer, and from as many
// producers as GOMAXPROCS (a busy channel's fan-out and the connection's own
// replies).
func BenchmarkOutboxPush(b *testing.B) {
	limits := broker.OutboxLimits{HardBytes: 1 << 40, SoftBytes: 1 << 40, MaxFrames: 1 << 40}
	frame := benchPayload
	writer := func(o *broker.Outbox, done <-chan struct{}) <-chan struct{} {
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			var buf [][]byte
			for {
				var err error
				if buf, err = o.Next(done, buf[:0]); err != nil {
					return
				}
			}
		}()
		return exited
	}
	b.Run("producers=1", func(b *testing.B) {
		o := broker.NewOutbox(limits, nil)
		done := make(chan struct{})
		exited := writer(o, done)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if !o.Push(frame) {
				b.Fatal(o.Err())
			}
		}
		b.StopTimer()
		close(done)
		<-exited
	})
	b.Run("producers=GOMAXPROCS", func(b *testing.B) {
		o := broker.NewOutbox(limits, nil)
		done := make(chan struct{})
		exited := writer(o, done)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !o.Push(frame) {
					b.Error(o.Err())
					return
				}
			}
		})
		b.StopTimer()
		close(done)
		<-exited
	})
}

// deliver fans one message out, as the log delivers a batch of one.
func deliver(b *broker.Broker, m *broker.Message) int {
	var n [1]int
	b.DeliverBatch([]*broker.Message{m}, n[:])
	return n[0]
}
