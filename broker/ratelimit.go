package broker

import "time"

// RateLimiter is a token bucket: each request takes a token; tokens come
// back at Rate per second, up to Burst. Transports keep one per connection
// to bound its request rate. It is not safe for concurrent use.
type RateLimiter struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

// NewRateLimiter returns a full bucket allowing rate requests per second on
// average and burst at once (burst < 1 means rate, one second's worth), or
// nil when rate <= 0: no limit. A nil *RateLimiter allows everything.
func NewRateLimiter(rate float64, burst int) *RateLimiter {
	if rate <= 0 {
		return nil
	}
	b := float64(burst)
	if b < 1 {
		b = max(rate, 1)
	}
	return &RateLimiter{rate: rate, burst: b, tokens: b}
}

// Allow takes a token at time now and reports whether there was one.
func (r *RateLimiter) Allow(now time.Time) bool {
	if r == nil {
		return true
	}
	if !r.last.IsZero() {
		r.tokens = min(r.burst, r.tokens+now.Sub(r.last).Seconds()*r.rate)
	}
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
