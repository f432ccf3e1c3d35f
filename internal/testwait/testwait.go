// Package testwait waits in tests for conditions that have no channel to
// wait on: a count reached through an API, a process that answers, a file
// that appears. Its bound guards against hangs; it is never a performance
// assertion.
package testwait

import (
	"testing"
	"time"
)

// Limit bounds [For]: long enough for a loaded CI machine running the race
// detector, short enough that a hang fails the test instead of its package.
const Limit = time.Minute

// For polls cond until it holds, failing t with what after [Limit].
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Limit, what, cond)
}

// Within polls cond until it holds, failing t with what after limit. It
// polls often at first and less often later, so that quick conditions are
// seen at once and slow ones do not burn the CPU the tested code needs.
func Within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(delay)
	}
}
