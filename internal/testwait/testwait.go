// Package testwait waits in tests for conditions that have no channel to
// wait on: a count reached through an API, a process that answers, a file
// that appears. Its bound guards against hangs; it is never a performance
// assertion.
package testwait

import (
	"errors"
	"testing"
	"time"
)

// Limit bounds [For] and [Nil]: long enough for a loaded CI machine running
// the race detector, short enough that a hang fails the test instead of its
// package.
const Limit = time.Minute

// errNotYet is the last error of a condition that only says no.
var errNotYet = errors.New("not yet")

// For polls cond until it holds, failing t with what after [Limit].
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Limit, what, cond)
}

// Within polls cond until it holds, failing t with what after limit.
func Within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	poll(t, limit, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// Nil polls cond until it returns nil, failing t with what and cond's last
// error after [Limit]: for conditions that can say what is still missing.
func Nil(t testing.TB, what string, cond func() error) {
	t.Helper()
	poll(t, Limit, what, cond)
}

// poll polls often at first and less often later, so that quick conditions
// are seen at once and slow ones do not take the CPU the tested code needs.
func poll(t testing.TB, limit time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if errors.Is(err, errNotYet) {
				t.Fatalf("timed out after %v waiting for %s", limit, what)
			}
			t.Fatalf("timed out after %v waiting for %s: %v", limit, what, err)
		}
		time.Sleep(delay)
	}
}
