package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// moveAddresses is how many addresses of state the moving key group holds.
const moveAddresses = 10_000

// BenchmarkMoveKeyGroup measures the move of one key group holding
// 10,000 addresses of state between workers, under a steady trickle of
// messages: a cluster of two key groups runs on worker a, then worker b
// joins and the assignment gives it one of them. It reports the time from
// b's join to a's release of the key group (the checkpoint of a's running
// pipeline that ends it there), from the release to b's acquisition, and
// from the acquisition to b's first exactly-once egress of the key group
// (the restore, the checkpoint of b's running pipeline that starts it, and
// the next one), how long the restore took, and the worst latency, publish
// to exactly-once egress, of the trickle's messages to the key group that
// moved and to the one that stayed (over the whole run, and before b
// joined). Run it with -benchtime 1x (make bench does), without the race
// detector.
func BenchmarkMoveKeyGroup(b *testing.B) {
	for range b.N {
		runMove(b)
	}
}

func runMove(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	twinflowBin, functionBin := plainBinaries(b)
	module := startFunction(ctx, b, functionBin)
	nats3 := clustertest.StartWith(b, clustertest.Options{SyncAlways: true})
	// Worker ids chosen ahead, so that the key group that moves is known.
	const k = 2
	ids := []string{"w-move-a", "w-move-b"}
	moving := 0
	for kg, w := range cluster.Assign(k, ids) {
		if w == 1 {
			moving = kg
		}
	}
	staying := 1 - moving
	workers := make([]*runtimeProc, 2)
	for i := range workers {
		workers[i] = newWorker(b, twinflowBin, module, nats3.URLs(), i, "-key-groups", fmt.Sprint(k))
		if err := os.WriteFile(filepath.Join(workers[i].dataDir, "worker-id"), []byte(ids[i]+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := workers[0].startReady(ctx); err != nil {
		b.Fatal(err)
	}
	_, js := nats3.Connect(b)
	log, _ := logTo(b, "driver.log")
	pub := natsbus.NewPublisher(js, natsbus.PublisherOptions{AckTimeout: 5 * time.Second, Logger: log})

	// The state: an increment to each of 10,000 addresses of the key group
	// that will move.
	var fill []Ingress
	for i := 0; len(fill) < moveAddresses; i++ {
		id := fmt.Sprintf("m%06d", i)
		if keygroup.Of(id, k) == moving {
			fill = append(fill, Ingress{To: id, Cmd: Command{ID: "fill-" + id, Ops: []Op{{Op: OpIncrement}}}})
		}
	}
	for i := 0; i < len(fill); i += 500 {
		if err := publishCommands(ctx, pub, fill[i:min(i+500, len(fill))]); err != nil {
			b.Fatal(err)
		}
	}
	for invocations(workers[:1]) < moveAddresses {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // a few checkpoints: the state is in the changelog

	// The trickle: a message every 10 ms to an address of each key group,
	// each writing an egress record.
	probe := map[int]string{}
	for i := 0; len(probe) < 2; i++ {
		id := fmt.Sprintf("p%d", i)
		if _, ok := probe[keygroup.Of(id, k)]; !ok {
			probe[keygroup.Of(id, k)] = id
		}
	}
	var mu sync.Mutex
	sent := map[string]time.Time{} // egress id -> publish time
	kgOf := map[string]int{}
	tctx, stopTrickle := context.WithCancel(ctx)
	trickled := make(chan error, 1)
	go func() {
		trickled <- func() error {
			for n := 0; tctx.Err() == nil; n++ {
				var cmds []Ingress
				now := time.Now()
				mu.Lock()
				for kg, id := range probe {
					eid := fmt.Sprintf("t%d-%d", kg, n)
					sent[eid], kgOf[eid] = now, kg
					cmds = append(cmds, Ingress{To: id, Cmd: Command{ID: eid, Ops: []Op{{Op: OpEgress, ID: eid}}}})
				}
				mu.Unlock()
				if err := publishCommands(ctx, pub, cmds); err != nil {
					return err
				}
				time.Sleep(10 * time.Millisecond)
			}
			return nil
		}()
	}()
	time.Sleep(time.Second)

	cl, err := cluster.Attach(ctx, js, clusterName)
	if err != nil {
		b.Fatal(err)
	}
	wt, err := cl.Watch(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer wt.Stop()
	if err := workers[1].start(); err != nil {
		b.Fatal(err)
	}
	var joined, released, acquired time.Time
	for acquired.IsZero() {
		select {
		case <-wt.Changed():
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			b.Fatal("worker b never took the key group over")
		}
		t := wt.Table()
		now := time.Now()
		if _, ok := t.Members[ids[1]]; ok && joined.IsZero() {
			joined = now
		}
		l := t.Lease(moving)
		if l.Holder.IsZero() && released.IsZero() && !joined.IsZero() {
			released = now
		}
		if l.Holder.Worker == ids[1] {
			acquired = now
			if released.IsZero() {
				released = now
			}
		}
	}
	time.Sleep(3 * time.Second)
	stopTrickle()
	if err := <-trickled; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()

	// From the egress stream: when each trickle message was published
	// (exactly once), and so each one's latency.
	var firstAfter time.Time
	var worst [2]time.Duration
	var worstBefore time.Duration // of the key group that stayed, published before b joined
	deadline := time.Now().Add(30 * time.Second)
	for {
		msgs, err := streamMsgs(ctx, js, "TWINFLOW_EGRESS_"+Egress)
		if err != nil {
			b.Fatal(err)
		}
		got := map[string]bool{}
		worst, firstAfter, worstBefore = [2]time.Duration{}, time.Time{}, 0
		for _, m := range msgs {
			var rec Record
			if err := json.Unmarshal(m.Data, &rec); err != nil {
				b.Fatal(err)
			}
			at, ok := sent[rec.ID]
			if !ok {
				continue
			}
			if got[rec.ID] {
				b.Fatalf("egress record %s published twice", rec.ID)
			}
			got[rec.ID] = true
			kg := kgOf[rec.ID]
			worst[kg] = max(worst[kg], m.Time.Sub(at))
			if kg == staying && at.Before(joined) {
				worstBefore = max(worstBefore, m.Time.Sub(at))
			}
			if kg == moving && m.Time.After(acquired) && (firstAfter.IsZero() || m.Time.Before(firstAfter)) {
				firstAfter = m.Time
			}
		}
		if len(got) == len(sent) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d trickle messages reached the egress", len(got), len(sent))
		}
		time.Sleep(250 * time.Millisecond)
	}
	restores := metricSum(workers[1].adminURL, "twinflow_cluster_restores_total")
	restoring := metricSum(workers[1].adminURL, "twinflow_cluster_restore_seconds_sum")
	b.ReportMetric(released.Sub(joined).Seconds(), "s-join-to-release")
	b.ReportMetric(acquired.Sub(released).Seconds(), "s-release-to-acquire")
	b.ReportMetric(firstAfter.Sub(acquired).Seconds(), "s-acquire-to-first-egress")
	b.ReportMetric(worst[moving].Seconds(), "s-worst-latency-moved")
	b.ReportMetric(worst[staying].Seconds(), "s-worst-latency-stayed")
	b.ReportMetric(worstBefore.Seconds(), "s-worst-latency-stayed-before-join")
	b.ReportMetric(restores, "restores")
	b.ReportMetric(restoring, "s-restoring")
	b.ReportMetric(0, "ns/op")
}
