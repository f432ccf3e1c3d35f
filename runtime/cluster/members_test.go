package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/internal/testwait"
)

func testOpenRecordsKeyGroups(t *testing.T, e *env) {
	ctx := testContext(t)
	c := e.open(t, "k", 16)
	if c.KeyGroups() != 16 {
		t.Fatalf("K = %d, want 16", c.KeyGroups())
	}
	again, err := Open(ctx, e.js, Config{Name: "k"})
	if err != nil || again.KeyGroups() != 16 {
		t.Fatalf("reopened with K 0: K = %v, %v; want the recorded 16", again, err)
	}
	// The buckets are read from their leaders, also after a reopen (whose
	// update of a bucket turns direct gets on again at first).
	for _, stream := range []string{"KV_" + c.bucketName(), "OBJ_" + c.snapshotBucket()} {
		s, err := e.js.Stream(ctx, stream)
		if err != nil || s.CachedInfo().Config.AllowDirect {
			t.Fatalf("stream %s allows direct gets (err %v): a replica behind the leader could answer a read", stream, err)
		}
	}
	_, err = Open(ctx, e.js, Config{Name: "k", KeyGroups: 32})
	if err == nil || !strings.Contains(err.Error(), "has 16 key groups but 32 were requested") {
		t.Fatalf("reopened with K 32: %v, want an error naming both", err)
	}
	for _, bad := range []Config{{Name: "a.b"}, {Name: ""}, {Name: "x", KeyGroups: 3}, {Name: "x", MemberTTL: time.Millisecond}} {
		if _, err := Open(ctx, e.js, bad); err == nil {
			t.Errorf("Open(%+v) succeeded", bad)
		}
	}
}

// testMembership shows members coming and going: a worker that leaves is
// gone at once; one whose heartbeats stop (as when its process is paused)
// is judged dead by the others after the member TTL and its key deleted;
// when it resumes, its next heartbeat is refused and it learns that it is
// no longer a member.
func testMembership(t *testing.T, e *env) {
	c := e.open(t, "m", 8)
	a, b, d := join(t, c, "a"), join(t, c, "b"), join(t, c, "d")
	testwait.For(t, "a, b and d to see each other", func() bool {
		for _, m := range []*Membership{a, b, d} {
			tb := m.Table()
			if !tb.Live(a.Self().Holder()) || !tb.Live(b.Self().Holder()) || !tb.Live(d.Self().Holder()) {
				return false
			}
		}
		return true
	})

	if err := b.Leave(testContext(t)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "b to be gone after it left", func() bool { return !d.Table().Live(b.Self().Holder()) })

	a.gate.Lock() // a stops sending heartbeats
	paused := time.Now()
	testwait.For(t, "d to judge a dead", func() bool { return !d.Table().Live(a.Self().Holder()) })
	t.Logf("a was judged dead %s after its heartbeats stopped (TTL %s)", time.Since(paused).Round(time.Millisecond), c.cfg.MemberTTL)
	select {
	case <-a.Lost():
		t.Fatal("a learned it was lost while paused")
	default:
	}
	a.gate.Unlock()
	select {
	case <-a.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("a did not learn that it lost its membership")
	}
	if !errors.Is(a.Err(), ErrNotMember) {
		t.Fatalf("a lost its membership with %v, want ErrNotMember", a.Err())
	}
	if !d.Table().Live(d.Self().Holder()) {
		t.Fatal("d is not live in its own table")
	}
}

// testDuplicateWorker shows that of two processes with one worker id, the
// earlier learns that the later took the id over and must stop.
func testDuplicateWorker(t *testing.T, e *env) {
	c := e.open(t, "d", 8)
	first := join(t, c, "same")
	second := join(t, c, "same")
	select {
	case <-first.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the first process did not learn that its id was taken over")
	}
	var dup *DuplicateWorkerError
	if !errors.As(first.Err(), &dup) || dup.Other.Incarnation != second.Self().Incarnation {
		t.Fatalf("first lost its membership with %v, want a DuplicateWorkerError naming the second", first.Err())
	}
	select {
	case <-second.Lost():
		t.Fatalf("the second process lost its membership too: %v", second.Err())
	case <-time.After(2 * c.cfg.MemberTTL):
	}
}

// testLeases shows compare-and-set on leases: an acquisition with a stale
// view fails, epochs grow with every change of owner, and a released lease
// can be acquired again.
func testLeases(t *testing.T, e *env) {
	c := e.open(t, "l", 8)
	ctx := testContext(t)
	a, b := Holder{"a", "1"}, Holder{"b", "1"}
	never := Lease{KeyGroup: 3}
	la, err := c.Acquire(ctx, 3, a, never)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx, 3, b, never); !errors.Is(err, ErrLeaseChanged) {
		t.Fatalf("b acquired with a stale view: %v, want ErrLeaseChanged", err)
	}
	lb, err := c.Acquire(ctx, 3, b, la) // b takes over (Plan decides when)
	if err != nil {
		t.Fatal(err)
	}
	if lb.Epoch() <= la.Epoch() {
		t.Fatalf("epoch %d after %d: epochs must grow", lb.Epoch(), la.Epoch())
	}
	if err := c.Release(ctx, la); !errors.Is(err, ErrLeaseChanged) {
		t.Fatalf("a released a lease it no longer holds: %v, want ErrLeaseChanged", err)
	}
	if err := c.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	released, err := c.LeaseOf(ctx, 3)
	if err != nil || !released.Holder.IsZero() {
		t.Fatalf("after release: %+v, %v", released, err)
	}
	la2, err := c.Acquire(ctx, 3, a, released)
	if err != nil {
		t.Fatal(err)
	}
	if la2.Epoch() <= lb.Epoch() {
		t.Fatalf("epoch %d after %d: epochs must grow", la2.Epoch(), lb.Epoch())
	}
	if _, err := c.Acquire(ctx, 8, a, Lease{KeyGroup: 8}); err == nil {
		t.Fatal("acquired key group 8 of 8")
	}
}
