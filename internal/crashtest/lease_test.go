package crashtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/client"
	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
)

// TestLeasesWrittenBehindAWorkersBack writes the leases of key groups a
// running worker owns, as a worker cut off from the cluster's bucket
// would miss them: some taken by an incarnation that is no member (which
// then died), some written again for the worker itself (an acquire whose
// outcome it never learned). The worker must notice from its table and
// take back what is assigned to it with the leases as they are, and hand
// off what it no longer owns when a second worker joins. Then a lease of
// the second worker's is written for the first, which never restored that
// key group: the first must give it back. The states stay exact, and a
// clean stop releases every lease the worker holds.
func TestLeasesWrittenBehindAWorkersBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster and two workers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nats3 := clustertest.Start(t)
	twinflowBin, functionBin := binaries(t)
	rig := startClusterRig(ctx, t, 0, nats3, twinflowBin, functionBin, 1)
	workers, cl := rig.workers, rig.cl
	sender, err := client.New(rig.js.Conn(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(ctx)

	before, during, after := addresses("before-", 64), addresses("during-", 128), addresses("after-", 64)
	sendIncrements(ctx, t, sender, before, "")
	waitIncremented(ctx, t, workers[:1], before, 1)

	// Increments flow to every key group while the leases are written:
	// a key group restored under the running pipeline would count some
	// twice or never.
	const rounds = 12
	flowing := make(chan struct{})
	go func() {
		defer close(flowing)
		for r := range rounds {
			sendIncrements(ctx, t, sender, during, fmt.Sprintf("/%d", r))
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	// Every fourth key group: half to a ghost, half to worker0 again.
	ghost := cluster.Holder{Worker: "w-ghost", Incarnation: "gone"}
	var rewritten []string
	for kg := 0; kg < cl.KeyGroups(); kg += 4 {
		l, err := cl.LeaseOf(ctx, kg)
		if err != nil {
			t.Fatal(err)
		}
		to := l.Holder
		if kg%8 == 4 {
			to = ghost
		}
		got, err := cl.Acquire(ctx, kg, to, l)
		if err != nil {
			t.Fatal(err)
		}
		rewritten = append(rewritten, fmt.Sprintf("%d: %s@%d -> %s@%d", kg, l.Holder, l.Revision, got.Holder, got.Revision))
	}
	t.Logf("leases written: %s", strings.Join(rewritten, ", "))
	<-flowing
	waitIncremented(ctx, t, workers[:1], during, rounds)
	// Noticed from the table: nothing restored under the running pipeline,
	// so no commit of it was fenced.
	if fenced := workers[0].grep(cluster.ErrFenced.Error()); len(fenced) > 0 {
		t.Errorf("worker0 had commits fenced (%d log lines):\n%s", len(fenced), strings.Join(fenced, "\n"))
	}

	if err := workers[1].startReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitAssignedHeld(ctx, t, cl, 2)

	// A lease of a key group assigned to worker1 written for worker0,
	// which never restored it: worker0 must give it back.
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w0 := workerID(t, workers[0])
	var of0 cluster.Holder
	kg1 := -1
	for _, g := range st.Groups {
		if g.Holder.Worker == w0 {
			of0 = g.Holder
		} else if kg1 < 0 {
			kg1 = g.KeyGroup
		}
	}
	l, err := cl.LeaseOf(ctx, kg1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Acquire(ctx, kg1, of0, l); err != nil {
		t.Fatal(err)
	}
	t.Logf("the lease of key group %d, held by %s, written for %s", kg1, l.Holder, of0)
	waitAssignedHeld(ctx, t, cl, 2)
	sendIncrements(ctx, t, sender, before, "") // repeated: applied once
	sendIncrements(ctx, t, sender, after, "")
	check := func(workers []*runtimeProc) {
		t.Helper()
		waitIncremented(ctx, t, workers, before, 1)
		waitIncremented(ctx, t, workers, during, rounds)
		waitIncremented(ctx, t, workers, after, 1)
	}
	check(workers[:2])

	stopWorker(ctx, t, workers[0])
	if failed := workers[0].grep("releasing a key group at the stop failed"); len(failed) > 0 {
		t.Errorf("worker0 could not release leases it held:\n%s", strings.Join(failed, "\n"))
	}
	waitAssignedHeld(ctx, t, cl, 1)
	check(workers[1:2])
	for _, wk := range workers[:2] {
		wk.checkClean(t)
	}
}

// waitIncremented waits until each address of ids was incremented times
// times, each increment applied once, asking the workers.
func waitIncremented(ctx context.Context, t *testing.T, workers []*runtimeProc, ids []string, times int64) {
	t.Helper()
	testwait.Nil(t, fmt.Sprintf("%d increments applied once to each of %s...", times, ids[0]), func() error {
		got, err := readClusterStates(ctx, workers, ids)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if got[id] != [2]int64{times, times} {
				return fmt.Errorf("%s: count and msgs %v, want %d increments applied once", id, got[id], times)
			}
		}
		return nil
	})
}

// waitAssignedHeld waits until the cluster has the given number of
// members and each key group's lease is held by the worker it is
// assigned to.
func waitAssignedHeld(ctx context.Context, t *testing.T, cl *cluster.Cluster, members int) {
	t.Helper()
	testwait.Nil(t, fmt.Sprintf("every key group held by the one of %d workers it is assigned to", members), func() error {
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		if len(st.Members) != members {
			return fmt.Errorf("%d members", len(st.Members))
		}
		var wrong []string
		for _, g := range st.Groups {
			if g.Holder.Worker != g.Assigned {
				wrong = append(wrong, fmt.Sprintf("%d held by %q, assigned to %q", g.KeyGroup, g.Holder.Worker, g.Assigned))
			}
		}
		if len(wrong) > 0 {
			return fmt.Errorf("%d key groups not held where assigned: %s", len(wrong), strings.Join(wrong[:min(len(wrong), 8)], "; "))
		}
		return nil
	})
}
