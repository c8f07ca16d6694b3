package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// exactQuantile is the nearest-rank quantile of sorted values.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func TestHistogramQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dists := []struct {
		name string
		gen  func() int64
	}{
		{"uniform 1ns-1ms", func() int64 { return 1 + r.Int64N(1_000_000) }},
		{"exponential mean 2ms", func() int64 { return int64(r.ExpFloat64() * 2e6) }},
		{"lognormal around 500µs", func() int64 { return int64(math.Exp(r.NormFloat64()*1.5) * 5e5) }},
		{"small exact values", func() int64 { return r.Int64N(200) }},
		{"bimodal 50µs and 3s", func() int64 {
			if r.IntN(100) < 99 {
				return 50_000 + r.Int64N(1000)
			}
			return 3e9 + r.Int64N(1e6)
		}},
	}
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			var h Histogram
			vals := make([]int64, 200_000)
			for i := range vals {
				vals[i] = d.gen()
				h.Record(time.Duration(vals[i]))
			}
			slices.Sort(vals)
			for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
				want := exactQuantile(vals, q)
				got := int64(h.Quantile(q))
				// The bucket's upper bound: never below the true value, at
				// most 1/128 above it.
				if got < want || float64(got-want) > float64(want)/128+1 {
					t.Errorf("q%.3f = %d, want %d (within 1/128 above)", q, got, want)
				}
			}
			if h.Max() != time.Duration(vals[len(vals)-1]) || h.Min() != time.Duration(vals[0]) {
				t.Errorf("min/max = %v/%v, want %v/%v", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
			}
			if h.Count() != uint64(len(vals)) {
				t.Errorf("count %d, want %d", h.Count(), len(vals))
			}
			var sum int64
			for _, v := range vals {
				sum += v
			}
			if want := time.Duration(sum / int64(len(vals))); h.Mean() != want {
				t.Errorf("mean %v, want %v", h.Mean(), want)
			}
		})
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Buckets tile the range without gaps or overlaps, and each value
	// lands in the bucket whose bounds hold it.
	var prevHi uint64
	for i := range histBuckets {
		lo, hi := bucketBounds(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if hi < lo || (lo >= histExact && float64(hi-lo+1) > float64(lo)/histSub+1) {
			t.Fatalf("bucket %d = [%d, %d]: wider than 1/%d of its start", i, lo, hi, histSub)
		}
		for _, v := range []uint64{lo, hi, lo + (hi-lo)/2} {
			if b := bucketOf(v); b != i {
				t.Fatalf("value %d in bucket %d, want %d", v, b, i)
			}
		}
		prevHi = hi
	}
	if prevHi != histMaxValue {
		t.Fatalf("last bucket ends at %d, want %d", prevHi, uint64(histMaxValue))
	}
	if b := bucketOf(math.MaxUint64); b != histBuckets-1 {
		t.Fatalf("huge value in bucket %d, want the last", b)
	}
}

func TestHistogramEdges(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Mean() != 0 || h.Min() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	h.Record(-5 * time.Millisecond) // clock skew between processes: counted as 0
	h.Record(time.Hour * 100)       // past the range: clamped
	if h.Min() != 0 || h.Count() != 2 {
		t.Fatalf("min %v count %d", h.Min(), h.Count())
	}
	if h.Max() != 100*time.Hour {
		t.Fatalf("max %v: the exact maximum is kept even past the buckets' range", h.Max())
	}
}

func TestHistogramMergeConcurrent(t *testing.T) {
	sh := newShardedHistogram(8)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sh.shard(g)
			for i := range 10_000 {
				h.Record(time.Duration(i+1) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	m := sh.merged()
	if m.Count() != 160_000 {
		t.Fatalf("count %d", m.Count())
	}
	if m.Max() != 10*time.Millisecond || m.Min() != time.Microsecond {
		t.Fatalf("min/max %v/%v", m.Min(), m.Max())
	}
	if p := m.Quantile(0.5); p < 5*time.Millisecond || p > 5*time.Millisecond+5*time.Millisecond/128 {
		t.Fatalf("p50 %v, want about 5ms", p)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := range b.N {
		h.Record(time.Duration(i&0xfffff) * 100)
	}
}
