package shard

import "time"

// Endpoint is where a function type is served, with its limits.
type Endpoint struct {
	URL               string
	Timeout           time.Duration
	MaxBatchAddresses int // address batches per call
	MaxBatchMessages  int // invocations per address batch
	MaxInFlight       int // concurrent calls from this shard
	// MaxAttempts dead-letters a batch once it has failed this many times;
	// 0 retries without limit.
	MaxAttempts int
	// MaxAge dead-letters a batch that has kept failing for this long; 0
	// retries without limit.
	MaxAge time.Duration
}

// RejectedError is the outcome of a call that the endpoint refused for
// good (a request it finds invalid): sending the same call again cannot
// succeed, so its batches are dead-lettered. Any other call error means
// the endpoint could not be reached or could not answer, and the call's
// batches wait until it can.
type RejectedError struct{ Err error }

func (e *RejectedError) Error() string { return e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

// endpointState is what a shard knows of an endpoint's health.
type endpointState struct {
	inflight int // calls from this shard
	// down is set by a call that failed and cleared by one that succeeds.
	// While it is set, one call at a time goes out, no earlier than
	// retryAt: a probe, paced by Config.Probe.
	down      bool
	failures  int // calls failed in a row
	retryAt   time.Time
	downSince time.Time
	lastErr   string
}

// endpoint returns the state of ep, creating it.
func (c *Core) endpoint(ep *Endpoint) *endpointState {
	es := c.endpoints[ep]
	if es == nil {
		es = &endpointState{}
		c.endpoints[ep] = es
	}
	return es
}

// callLimit is how many calls to ep may be in flight now: none while a
// down endpoint's next probe is not due, one (the probe) once it is.
func (c *Core) callLimit(ep *Endpoint, es *endpointState, now time.Time) int {
	switch {
	case !es.down:
		return ep.MaxInFlight
	case now.Before(es.retryAt):
		return 0
	default:
		return 1
	}
}

// callFailed records a call to ep that failed without an answer.
func (c *Core) callFailed(ep *Endpoint, es *endpointState, err error, now time.Time) {
	es.failures++
	es.lastErr = err.Error()
	es.retryAt = now.Add(c.cfg.Probe.Delay(es.failures-1, c.rng))
	if !es.down {
		es.down, es.downSince = true, now
		c.m.endpointDown(ep.URL, c.shardL, true)
		c.log.Warn("endpoint unreachable; its addresses wait and it is probed until it answers",
			"endpoint", ep.URL, "err", err)
	}
}

// callSucceeded records a call to ep that was answered.
func (c *Core) callSucceeded(ep *Endpoint, es *endpointState, now time.Time) {
	if es.down {
		c.log.Info("endpoint reachable again", "endpoint", ep.URL, "unreachable_for", now.Sub(es.downSince).Round(time.Millisecond),
			"failed_calls", es.failures)
		c.m.endpointDown(ep.URL, c.shardL, false)
	}
	es.down, es.failures, es.lastErr = false, 0, ""
}
