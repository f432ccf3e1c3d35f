package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// changed returns writes of a checkpoint: counters from..from+n of key
// group kg set to value, and the counters in del deleted.
func changed(kg, from, n int, value string, del ...int) map[string]string {
	kv := map[string]string{}
	for i := from; i < from+n; i++ {
		kv[string(key(kg, fmt.Sprintf("addr-%06d", i)))] = value
	}
	for _, i := range del {
		kv[string(key(kg, fmt.Sprintf("addr-%06d", i)))] = ""
	}
	return kv
}

// testRestore restores a key group of 10,000 addresses the three ways: from
// a snapshot and the changelog after it (a new worker), from the store's
// own copy and the changelog since (a worker that gets its key group back),
// and from a snapshot when the store's copy is older than it (stale keys
// must go). It also checks that a snapshot compacts the changelog.
func testRestore(t *testing.T, e *env) {
	c := e.open(t, "restore", 8)
	ctx := testContext(t)
	const kg = 3
	ma := join(t, c, "a")
	storeA := newStore(t, 8)
	oa, _ := own(t, c, ma, kg, storeA)
	m := model{}
	checkpoint(t, c, oa, storeA, m, 1, changed(kg, 0, 10_000, "v1"))
	staleStore := newStore(t, 8) // a worker that had the key group at checkpoint 1
	commitLocal(t, staleStore, oa, changed(kg, 0, 10_000, "v1"))
	checkpoint(t, c, oa, storeA, m, 2, changed(kg, 0, 1000, "v2", 9999))
	checkpoint(t, c, oa, storeA, m, 3, changed(kg, 1000, 1000, "v3", 9998))
	info, err := c.Snapshot(ctx, oa, storeA)
	if err != nil {
		t.Fatal(err)
	}
	if info.Seq != oa.Head() || info.Entries != 9998 {
		t.Fatalf("snapshot %+v, want %d entries at %d", info, 9998, oa.Head())
	}
	if n := subjectMessages(t, c, kg); n != 1 {
		t.Fatalf("the changelog holds %d messages after the snapshot, want 1 (its last)", n)
	}
	checkpoint(t, c, oa, storeA, m, 4, changed(kg, 2000, 1000, "v4", 9997))
	checkpoint(t, c, oa, storeA, m, 5, changed(kg, 3000, 1000, "v5"))

	// A new worker: the snapshot and the changelog after it.
	{
		mb := join(t, c, "b")
		storeB := newStore(t, 8)
		lb := mustAcquire(t, c, mb, kg, oa.Lease())
		_, st, err := c.Restore(ctx, lb, storeB)
		if err != nil {
			t.Fatal(err)
		}
		if !st.FromSnapshot || st.SnapshotEntries != 9998 || st.Records != 2 {
			t.Fatalf("restore %+v: want the snapshot's 9998 entries and 2 records", st)
		}
		checkStore(t, storeB, kg, m)
		lb2, err := c.LeaseOf(ctx, kg)
		if err != nil {
			t.Fatal(err)
		}

		// a restarts (a new incarnation) with its store, and gets the key
		// group back: it reads the changelog since its copy, b's marker.
		if err := ma.Leave(ctx); err != nil {
			t.Fatal(err)
		}
		ma2 := join(t, c, "a")
		la := mustAcquire(t, c, ma2, kg, lb2)
		o, st, err := c.Restore(ctx, la, storeA)
		if err != nil {
			t.Fatal(err)
		}
		if !st.FromStore || st.Records != 0 || st.RecordEntries != 0 {
			t.Fatalf("restore from the store's copy %+v: want nothing but b's marker read", st)
		}
		checkStore(t, storeA, kg, m)
		checkpoint(t, c, o, storeA, m, 6, changed(kg, 4000, 10, "v6"))

		// A store older than the snapshot is not used: its deleted keys
		// (addresses 9997 to 9999) must not come back.
		mc := join(t, c, "c")
		lc := mustAcquire(t, c, mc, kg, o.Lease())
		_, st, err = c.Restore(ctx, lc, staleStore)
		if err != nil {
			t.Fatal(err)
		}
		if st.FromStore || !st.FromSnapshot || st.Records != 3 {
			t.Fatalf("restore over a stale store %+v: want the snapshot and 3 records", st)
		}
		checkStore(t, staleStore, kg, m)
	}
}

// testUnreadableSnapshot replaces a key group's snapshot with bytes of
// another format: the restore reads it again a few times, then fails
// naming it, and restores nothing.
func testUnreadableSnapshot(t *testing.T, e *env) {
	c := e.open(t, "unreadable", 8)
	ctx := testContext(t)
	const kg = 2
	ma := join(t, c, "a")
	storeA := newStore(t, 8)
	oa, _ := own(t, c, ma, kg, storeA)
	checkpoint(t, c, oa, storeA, model{}, 1, changed(kg, 0, 100, "v1"))
	info, err := c.Snapshot(ctx, oa, storeA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.snap.PutBytes(ctx, info.Object, []byte{0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	mb := join(t, c, "b")
	lb := mustAcquire(t, c, mb, kg, oa.Lease())
	_, st, err := c.Restore(ctx, lb, newStore(t, 8))
	if !errors.Is(err, errSnapshotRead) || !strings.Contains(err.Error(), info.Object) || st.Attempts != maxRestoreAttempts {
		t.Fatalf("restore from an unreadable snapshot: %v after %d attempts; want errSnapshotRead naming %s after %d", err, st.Attempts, info.Object, maxRestoreAttempts)
	}
}

// TestKilledServer kills the server that leads both the cluster bucket and
// the changelog stream, in the middle of a run of checkpoints. The commits
// in flight are resolved and retried while the two servers left elect new
// leaders; a snapshot is taken with one server down; the members' heartbeats
// stop for the whole election, longer than the member TTL, and still no
// member is judged dead, because each sees that its own heartbeats are
// missing too. After the server's restart a new owner restores exactly what
// was committed, each checkpoint once.
func TestKilledServer(t *testing.T) {
	t.Parallel() // on a cluster of its own, alongside TestOnOneCluster
	e := newEnv(t)
	c := e.open(t, "kill", 4)
	ctx := testContext(t)
	const kg, doomed = 1, 0
	e.nc.MoveLeader(e.js, c.changelogStream(), doomed)
	e.nc.MoveLeader(e.js, "KV_"+c.bucketName(), doomed)
	ma, mb := join(t, c, "a"), join(t, c, "b")
	storeA := newStore(t, 4)
	oa, _ := own(t, c, ma, kg, storeA)
	m := model{}
	for id := uint64(1); id <= 20; id++ {
		switch id {
		case 6:
			e.nc.Kill(doomed)
		case 12:
			if _, err := c.Snapshot(ctx, oa, storeA); err != nil {
				t.Fatalf("snapshot with a server down: %v", err)
			}
		case 16:
			e.nc.Restart(doomed)
		}
		start := time.Now()
		checkpoint(t, c, oa, storeA, m, id, changed(kg, int(id)*50, 100, fmt.Sprint("v", id), int(id)))
		if d := time.Since(start); d > time.Second {
			t.Logf("checkpoint %d took %s", id, d.Round(time.Millisecond))
		}
	}
	for _, w := range []*Membership{ma, mb} {
		select {
		case <-w.Lost():
			t.Fatalf("%s lost its membership through the leader election: %v", w.Self().Worker, w.Err())
		default:
		}
		if !w.Table().Live(ma.Self().Holder()) || !w.Table().Live(mb.Self().Holder()) {
			t.Fatalf("%s judged a member dead through the leader election", w.Self().Worker)
		}
	}

	storeB := newStore(t, 4)
	_, st, err := c.Restore(ctx, mustAcquire(t, c, mb, kg, oa.Lease()), storeB)
	if err != nil {
		t.Fatal(err)
	}
	if !st.FromSnapshot || st.Records != 9 {
		t.Fatalf("restore %+v: want the snapshot taken before checkpoint 12 and the 9 records after it", st)
	}
	checkStore(t, storeB, kg, m)
}

// testLargeRecord commits a checkpoint larger than a NATS message: it is
// cut into chunks, stored in one batch, and joined again on restore.
func testLargeRecord(t *testing.T, e *env) {
	c := e.open(t, "large", 4)
	const kg = 2
	ma := join(t, c, "a")
	storeA := newStore(t, 4)
	oa, _ := own(t, c, ma, kg, storeA)
	kv := map[string]string{}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		v := make([]byte, 100<<10) // incompressible
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		kv[string(key(kg, fmt.Sprint("big-", i)))] = string(v)
	}
	m := model{}
	st := checkpoint(t, c, oa, storeA, m, 1, kv)
	if st.Messages < 4 {
		t.Fatalf("a record of %d bytes took %d messages, want it cut into chunks", st.Bytes, st.Messages)
	}
	storeB := newStore(t, 4)
	_, rst, err := c.Restore(testContext(t), mustAcquire(t, c, join(t, c, "b"), kg, oa.Lease()), storeB)
	if err != nil {
		t.Fatal(err)
	}
	if rst.Records != 1 {
		t.Fatalf("restore read %d records, want 1", rst.Records)
	}
	checkStore(t, storeB, kg, m)
}
