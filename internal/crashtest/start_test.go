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
	time.Sleep(3 * time.Second)
	nats3.Restart(1)
	nats3.Restart(2)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if retried := rig.workers[0].grep("JetStream did not answer; trying again"); len(retried) == 0 {
		t.Error("the worker never found JetStream silent: the test did not test the start it names")
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
