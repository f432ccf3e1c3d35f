package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/twinflow/twinflow/internal/testwait"
)

// testPausedOwnerIsFenced is the deterministic test of ownership and
// fencing. Worker a owns key group 5 and commits. Its heartbeats stop, as
// when its process is paused; b's plan takes key group 5 over once a's
// membership expired, restores it and commits. When a resumes, every commit
// it attempts is refused by NATS with ErrFenced, and a third owner's
// restore sees b's writes and none of a's after b took over.
func testPausedOwnerIsFenced(t *testing.T, e *env) {
	c := e.open(t, "fence", 8)
	ctx := testContext(t)
	const kg = 5
	ma, mb := join(t, c, "a"), join(t, c, "b")
	storeA, storeB := newStore(t, 8), newStore(t, 8)
	oa, _ := own(t, c, ma, kg, storeA)
	want := model{}
	for id := uint64(1); id <= 3; id++ {
		kv := counters(kg, 10, "a"+string(rune('0'+id)))
		if _, err := c.Commit(ctx, id, []Part{{Owned: oa, Changes: changes(kv)}}); err != nil {
			t.Fatal(err)
		}
		want.apply(kv)
	}

	// a is paused: no heartbeats, no writes.
	ma.gate.Lock()
	w, err := c.Watch(ctx, testLog)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var plan Plan
	testwait.For(t, "b's plan to take key group 5 over", func() bool {
		plan = PlanFor(8, mb.Self().Holder(), w.Table())
		return contains(KeyGroups(plan.Acquire), kg)
	})
	var seen Lease
	for _, l := range plan.Acquire {
		if l.KeyGroup == kg {
			seen = l
		}
	}
	if seen.Holder != ma.Self().Holder() {
		t.Fatalf("b takes key group 5 over from %v, want from a", seen.Holder)
	}
	lb, err := c.Acquire(ctx, kg, mb.Self().Holder(), seen)
	if err != nil {
		t.Fatal(err)
	}
	ob, st, err := c.Restore(ctx, lb, storeB)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 3 {
		t.Fatalf("b's restore read %d records, want a's 3", st.Records)
	}
	checkStore(t, storeB, kg, want)
	kv := counters(kg, 10, "b4")
	if _, err := c.Commit(ctx, 4, []Part{{Owned: ob, Changes: changes(kv)}}); err != nil {
		t.Fatal(err)
	}
	want.apply(kv)

	// a resumes and goes on as if nothing happened.
	ma.gate.Unlock()
	for id := uint64(4); id <= 6; id++ {
		_, err := c.Commit(ctx, id, []Part{{Owned: oa, Changes: changes(counters(kg, 10, "a-late"))}})
		var fenced *FencedError
		if !errors.Is(err, ErrFenced) || !errors.As(err, &fenced) {
			t.Fatalf("a's commit %d after b took over: %v, want ErrFenced", id, err)
		}
		if fenced.KeyGroups[0] != kg || fenced.ByEpoch != lb.Epoch() {
			t.Fatalf("fenced error %+v, want key group 5 fenced by b's epoch %d", fenced, lb.Epoch())
		}
	}
	select {
	case <-ma.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("a did not learn that it lost its membership")
	}

	// What a third owner restores is b's, and nothing of a's late commits.
	mc := join(t, c, "c")
	storeC := newStore(t, 8)
	if _, st, err = c.Restore(ctx, mustAcquire(t, c, mc, kg, lb), storeC); err != nil {
		t.Fatal(err)
	}
	if st.Records != 4 {
		t.Fatalf("c's restore read %d records, want 4 (a's 3 and b's 1)", st.Records)
	}
	checkStore(t, storeC, kg, want)
}

// testWriteBeforeMarkerIsHistory shows the order the fence imposes when the
// old owner writes after the lease moved but before the new owner's marker:
// the write is stored, and is part of what the new owner restores; after
// the marker nothing of the old owner's is stored.
func testWriteBeforeMarkerIsHistory(t *testing.T, e *env) {
	c := e.open(t, "order", 4)
	ctx := testContext(t)
	const kg = 2
	ma, mb := join(t, c, "a"), join(t, c, "b")
	oa, _ := own(t, c, ma, kg, newStore(t, 4))
	la := oa.Lease()
	lb, err := c.Acquire(ctx, kg, mb.Self().Holder(), la) // the lease moves
	if err != nil {
		t.Fatal(err)
	}
	kv := counters(kg, 3, "a1")
	if _, err := c.Commit(ctx, 1, []Part{{Owned: oa, Changes: changes(kv)}}); err != nil {
		t.Fatalf("a's commit before b's marker: %v", err)
	}
	storeB := newStore(t, 4)
	if _, _, err := c.Restore(ctx, lb, storeB); err != nil {
		t.Fatal(err)
	}
	want := model{}
	want.apply(kv)
	checkStore(t, storeB, kg, want)
	if _, err := c.Commit(ctx, 2, []Part{{Owned: oa, Changes: changes(counters(kg, 3, "a2"))}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a's commit after b's marker: %v, want ErrFenced", err)
	}
}

// testCommitIsAtomicAcrossKeyGroups shows that a checkpoint of several key
// groups is stored whole or not at all: when one of them was taken over,
// none of the others' records is stored either.
func testCommitIsAtomicAcrossKeyGroups(t *testing.T, e *env) {
	c := e.open(t, "atomic", 8)
	ctx := testContext(t)
	ma, mb := join(t, c, "a"), join(t, c, "b")
	storeA := newStore(t, 8)
	o1, _ := own(t, c, ma, 1, storeA)
	o2, _ := own(t, c, ma, 2, storeA)
	o3, _ := own(t, c, ma, 3, storeA)
	heads := []uint64{o1.Head(), o3.Head()}

	lb, err := c.Acquire(ctx, 2, mb.Self().Holder(), o2.Lease())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Restore(ctx, lb, newStore(t, 8)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Commit(ctx, 1, []Part{
		{Owned: o1, Changes: changes(counters(1, 5, "x"))},
		{Owned: o2, Changes: changes(counters(2, 5, "x"))},
		{Owned: o3, Changes: changes(counters(3, 5, "x"))},
	})
	var fenced *FencedError
	if !errors.As(err, &fenced) || len(fenced.KeyGroups) != 1 || fenced.KeyGroups[0] != 2 {
		t.Fatalf("commit with key group 2 taken over: %v, want key group 2 fenced", err)
	}
	for i, o := range []*Owned{o1, o3} {
		last, err := c.lastElement(ctx, o.subject)
		if err != nil {
			t.Fatal(err)
		}
		if last.seq != heads[i] || o.Head() != heads[i] {
			t.Fatalf("key group %d's changelog moved from %d to %d: part of a refused batch was stored", o.KeyGroup(), heads[i], last.seq)
		}
	}
	// The others commit without the lost key group.
	if _, err := c.Commit(ctx, 1, []Part{{Owned: o1, Changes: changes(counters(1, 5, "x"))}, {Owned: o3, Changes: changes(counters(3, 5, "x"))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Commit(ctx, 2, []Part{{Owned: o2, Changes: changes(counters(2, 5, "y"))}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a fenced key group was committed again: %v", err)
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func mustAcquire(t *testing.T, c *Cluster, m *Membership, kg int, seen Lease) Lease {
	t.Helper()
	l, err := c.Acquire(testContext(t), kg, m.Self().Holder(), seen)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
