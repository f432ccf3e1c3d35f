package crashtest

import (
	"context"
	"testing"
	"time"

	"github.com/twinflow/twinflow/client"
	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
)

// TestWorkerStartsWhileJetStreamHasNoLeader starts a worker while two of
// the three NATS servers are down, so that JetStream answers nothing: the
// worker asks again until the servers are back, instead of failing its
// start, and then serves.
func TestWorkerStartsWhileJetStreamHasNoLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster and a worker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nats3 := clustertest.Start(t)
	twinflowBin, functionBin := binaries(t)
	rig := startClusterRig(ctx, t, 0, nats3, twinflowBin, functionBin, 0)
	nats3.Kill(1)
	nats3.Kill(2)
	started := make(chan error, 1)
	go func() { started <- rig.workers[0].startReady(ctx) }()
	// The servers come back once the worker has found JetStream silent.
	deadline := time.After(time.Minute)
	for len(rig.workers[0].grep("JetStream did not answer; trying again")) == 0 {
		select {
		case err := <-started:
			t.Fatalf("the worker's start ended before it found JetStream silent: %v", err)
		case <-deadline:
			t.Fatal("the worker did not find JetStream silent within a minute")
		case <-time.After(100 * time.Millisecond):
		}
	}
	nats3.Restart(1)
	nats3.Restart(2)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	sender, err := client.New(rig.js.Conn(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(ctx)
	ids := addresses("late-", 16)
	sendIncrements(ctx, t, sender, ids, "")
	waitIncremented(ctx, t, rig.workers[:1], ids, 1)
	rig.workers[0].checkClean(t)
}
