package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram counts durations (nanoseconds) in log-linear buckets, as
// HdrHistogram does: values below 256 ns are exact, and every power of two
// above is split into 128 equal buckets, so a percentile is reported within
// 1/128 (0.8%) of the true value, from 0 to 2^42 ns (73 minutes; larger
// values are counted in the last bucket). It is 36 KiB, safe for concurrent
// use (every update is atomic), and mergeable.
//
// Written here rather than taken from a library: it is 100 lines, needs no
// locks, and the maintained Go port of HdrHistogram is not synchronized,
// which would mean one histogram per subscriber (10,000 × its size) or a
// lock on the hot path.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Uint64
	min    atomic.Uint64 // stored as value+1 so that zero means unset
	max    atomic.Uint64
}

const (
	histSubBits  = 7
	histSub      = 1 << histSubBits // buckets per power of two
	histExact    = 2 * histSub      // values below this are their own bucket
	histMaxBits  = 42               // values >= 2^histMaxBits are clamped
	histBuckets  = histExact + (histMaxBits-histSubBits-1)*histSub
	histMaxValue = 1<<histMaxBits - 1
)

func bucketOf(v uint64) int {
	if v < histExact {
		return int(v)
	}
	if v > histMaxValue {
		v = histMaxValue
	}
	k := bits.Len64(v) - 1 // v is in [2^k, 2^(k+1)), k >= histSubBits+1
	shift := k - histSubBits
	sub := int(v >> shift) // in [histSub, 2*histSub)
	return histExact + (k-histSubBits-1)*histSub + sub - histSub
}

// bucketBounds returns the smallest and largest value bucket i counts.
func bucketBounds(i int) (lo, hi uint64) {
	if i < histExact {
		return uint64(i), uint64(i)
	}
	j := i - histExact
	k := j/histSub + histSubBits + 1
	sub := uint64(j%histSub + histSub)
	shift := k - histSubBits
	return sub << shift, (sub+1)<<shift - 1
}

// Record counts one value; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)].Add(1)
	h.count.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && v+1 >= m) || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.count.Add(o.count.Load())
	h.sum.Add(o.sum.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
	if m := o.min.Load(); m != 0 && (h.min.Load() == 0 || m < h.min.Load()) {
		h.min.Store(m)
	}
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Max returns the largest value recorded, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Min returns the smallest value recorded, exactly.
func (h *Histogram) Min() time.Duration {
	if m := h.min.Load(); m != 0 {
		return time.Duration(m - 1)
	}
	return 0
}

// Mean returns the average value.
func (h *Histogram) Mean() time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the value at or below which a fraction q of the values
// lie: the upper bound of the bucket holding that rank (never more than the
// maximum recorded), as HdrHistogram reports it. Zero when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketBounds(i)
			if m := h.max.Load(); hi > m {
				hi = m
			}
			return time.Duration(hi)
		}
	}
	return h.Max()
}

// Summary is a histogram's percentiles, for reports.
type Summary struct {
	Count uint64        `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Summary returns h's percentiles.
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.Count(), Mean: h.Mean(),
		P50: h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99), P999: h.Quantile(0.999),
		Max: h.Max(),
	}
}

// shardedHistogram spreads concurrent recorders over several histograms so
// that thousands of goroutines do not contend on one set of cache lines.
type shardedHistogram struct {
	shards []Histogram
}

func newShardedHistogram(n int) *shardedHistogram {
	return &shardedHistogram{shards: make([]Histogram, n)}
}

// shard returns the histogram recorder i should use.
func (s *shardedHistogram) shard(i int) *Histogram { return &s.shards[i%len(s.shards)] }

// merged returns one histogram holding every shard's values.
func (s *shardedHistogram) merged() *Histogram {
	h := &Histogram{}
	for i := range s.shards {
		h.Merge(&s.shards[i])
	}
	return h
}
