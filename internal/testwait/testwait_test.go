package testwait

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	For(t, "the third call", func() bool { return calls.Add(1) == 3 })
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
}

// recorder is a testing.TB whose Fatalf ends the goroutine, as the real one
// does, and records the message.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWithinFailsNamingTheCondition(t *testing.T) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Within(r, 20*time.Millisecond, "the answer", func() bool { return false })
	}()
	<-done
	if want := "timed out after 20ms waiting for the answer"; r.failed != want {
		t.Errorf("failed with %q, want %q", r.failed, want)
	}
}

func TestNilFailsWithTheLastError(t *testing.T) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	calls := 0
	go func() {
		defer close(done)
		poll(r, 20*time.Millisecond, "the answer", func() error {
			calls++
			return fmt.Errorf("%d calls", calls)
		})
	}()
	<-done
	if want := fmt.Sprintf("timed out after 20ms waiting for the answer: %d calls", calls); r.failed != want {
		t.Errorf("failed with %q, want %q", r.failed, want)
	}
}
