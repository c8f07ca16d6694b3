package broker

import (
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := NewRateLimiter(10, 0) // burst: one second's worth
	for i := range 10 {
		if !r.Allow(t0) {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if r.Allow(t0) {
		t.Fatal("request 11 at once allowed: burst is 10")
	}
	if r.Allow(t0.Add(99 * time.Millisecond)) {
		t.Fatal("allowed before a token came back (100ms at 10/s)")
	}
	if !r.Allow(t0.Add(100 * time.Millisecond)) {
		t.Fatal("refused after a token came back")
	}
	// A long pause refills to the burst, not beyond.
	later := t0.Add(time.Hour)
	for i := range 10 {
		if !r.Allow(later) {
			t.Fatalf("after a pause, request %d refused", i+1)
		}
	}
	if r.Allow(later) {
		t.Fatal("bucket refilled beyond its burst")
	}
	var none *RateLimiter = NewRateLimiter(0, 0)
	if none != nil || !none.Allow(t0) {
		t.Fatal("rate 0 should mean no limit")
	}
}
