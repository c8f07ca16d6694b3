package raftstore

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/herald-broker/herald/broker"
)

// BenchmarkAckedPublish measures acknowledged publishes per second: each
// publish is committed to the Raft log on disk (and, with three nodes, on a
// quorum) and applied before it returns. Publishers call Store.Publish
// concurrently, one message per call, so the figure includes group commit.
// Every node runs in this process, on one machine.
func BenchmarkAckedPublish(b *testing.B) {
	payload := make([]byte, 64)
	for _, nodes := range []int{1, 3} {
		for _, publishers := range []int{1, 64} {
			b.Run(fmt.Sprintf("nodes=%d/publishers=%d", nodes, publishers), func(b *testing.B) {
				c := newTestCluster(b, nodes, Config{ElectionTimeout: time.Second})
				// Publish on the leader: forwarding adds a hop, measured
				// separately below.
				s := c.nodes[c.leader()].store
				b.SetParallelism(publishers)
				b.ReportAllocs()
				b.ResetTimer()
				var seq atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						ch := "bench:" + strconv.Itoa(int(seq.Add(1)%64))
						if _, err := s.Publish(context.Background(), []broker.Publish{{Channel: ch, Payload: payload}}); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
			})
		}
	}
	b.Run("nodes=3/publishers=64/on-follower", func(b *testing.B) {
		c := newTestCluster(b, 3, Config{ElectionTimeout: time.Second})
		s := c.nodes[c.follower()].store
		b.SetParallelism(64)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Publish(context.Background(), []broker.Publish{{Channel: "bench", Payload: payload}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
	})
}

// BenchmarkFSMApply measures the state machine alone: entries of 64
// messages of 64 bytes over 1,000 channels, applied in batches of 16 entries
// (retention trimming at 100 per channel). It writes a checkpoint to Pebble
// after every batch, and then as a node does, every 250 ms.
func BenchmarkFSMApply(b *testing.B) {
	for _, every := range []time.Duration{0, DefaultCheckpoint} {
		name := "checkpoint=every-batch"
		if every > 0 {
			name = "checkpoint=" + every.String()
		}
		b.Run(name, func(b *testing.B) {
			f := newBareFSM(b)
			f.checkpointEvery = every
			payload := make([]byte, 64)
			const perEntry, perBatch = 64, 16
			index := uint64(0)
			b.ReportAllocs()
			b.SetBytes(perEntry * perBatch * 64)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				logs := make([]*raft.Log, perBatch)
				for j := range logs {
					msgs := make([]broker.Publish, perEntry)
					for k := range msgs {
						msgs[k] = broker.Publish{Channel: "ch:" + strconv.Itoa((i*perBatch*perEntry+j*perEntry+k)%1000), Payload: payload}
					}
					data := encodePublish(msgs)
					stamp(data, time.Now().UnixMilli())
					index++
					logs[j] = &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
				}
				f.ApplyBatch(logs)
			}
			b.ReportMetric(float64(b.N*perBatch*perEntry)/b.Elapsed().Seconds(), "messages/s")
		})
	}
}
