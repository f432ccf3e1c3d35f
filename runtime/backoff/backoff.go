// Package backoff computes the delays between retries: exponential growth
// from a base to a cap, with jitter so that many retriers that failed
// together do not retry in lockstep. Every retry loop of the runtime uses
// it: function calls, JetStream publishes, consumer re-creation, checkpoint
// commits.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff with equal jitter: the delay
// before retry n (counting from 0) is drawn uniformly from [d/2, d] where
// d = min(Max, Base·2ⁿ). Half of it is fixed, so a retrier never comes back
// at once (full jitter, uniform over [0, d], can, and against an endpoint
// that is down that is wasted work); the other half spreads the retriers.
type Policy struct {
	Base time.Duration // d for the first retry
	Max  time.Duration // the cap of d
}

// Ceiling returns d for retry n: the longest delay Delay may return.
func (p Policy) Ceiling(n int) time.Duration {
	base, limit := max(p.Base, time.Nanosecond), max(p.Max, p.Base, time.Nanosecond)
	if n < 0 {
		n = 0
	}
	// Shifting by 62 or more overflows; the cap is reached long before.
	if n >= 62 || base > limit>>n {
		return limit
	}
	return base << n
}

// Delay returns the delay before retry n, drawn from rng (the global
// source when rng is nil).
func (p Policy) Delay(n int, rng *rand.Rand) time.Duration {
	d := p.Ceiling(n)
	half := int64(d / 2)
	var r int64
	if rng == nil {
		r = rand.Int64N(int64(d) - half + 1)
	} else {
		r = rng.Int64N(int64(d) - half + 1)
	}
	return time.Duration(half + r)
}

// Retrier counts the retries of one operation.
type Retrier struct {
	Policy Policy
	n      int
}

// Next returns the delay before the next retry and counts it.
func (r *Retrier) Next() time.Duration {
	d := r.Policy.Delay(r.n, nil)
	r.n++
	return d
}

// Reset starts counting again after a success.
func (r *Retrier) Reset() { r.n = 0 }

// Retries is the number of retries counted since the last Reset.
func (r *Retrier) Retries() int { return r.n }
