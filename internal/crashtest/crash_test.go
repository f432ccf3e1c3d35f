package crashtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twinflow/twinflow/internal/testwait"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

// Shape of TestCrashRecovery: the workload is published over
// publishPeriod while the faults run; the numbers keep the test near a
// minute on 2 cores with the race detector.
const (
	publishPeriod = 30 * time.Second
	publishTick   = 250 * time.Millisecond
	runtimeKills  = 5
	functionKills = 3
)

// fault is one planned kill.
type fault struct {
	runtime bool          // the runtime, else the function endpoint
	after   time.Duration // since the previous fault's restart
	down    time.Duration // before the restart
}

// planFaults draws the kills from the seed, in random order.
func planFaults(seed uint64) []fault {
	rng := rand.New(rand.NewPCG(seed, 0xfa17))
	var plan []fault
	for i := range runtimeKills + functionKills {
		plan = append(plan, fault{
			runtime: i < runtimeKills,
			after:   2*time.Second + time.Duration(rng.Int64N(int64(2500*time.Millisecond))),
			down:    100*time.Millisecond + time.Duration(rng.Int64N(int64(600*time.Millisecond))),
		})
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	return plan
}

// TestCrashRecovery is the exactly-once crash test described in the
// package documentation.
func TestCrashRecovery(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (run again with -crash.seed=%d)", seed, seed)
	w := Generate(seed, Options{})
	plan := planFaults(seed)
	t.Logf("workload: %d commands to %d addresses, %d messages in all, %d egress records; ops %v",
		len(w.Commands), len(w.Addresses), w.Messages(), len(w.Egress), w.Ops)

	twinflowBin, functionBin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	begin := time.Now()

	fn := newFunction(t, functionBin)
	rt := newRuntime(t, twinflowBin, writeModule(t, fn.addr), t.TempDir())
	driverLog, driverLogPath := logTo(t, "driver.log")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d; runtime log %s:\n%s", seed, rt.log, rt.digest())
			t.Logf("function log %s ends with:\n%s", fn.log, fn.tail(10))
			t.Logf("driver log: %s", driverLogPath)
		}
	})
	if err := fn.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, rt.access(t), driverLog)

	// The faults run while the driver publishes.
	faultsDone := make(chan error, 1)
	var kills [2]int // runtime, function
	var rtRestarted atomic.Bool
	var faults sync.WaitGroup
	defer faults.Wait() // after cancel, before the cleanups kill the processes
	defer cancel()
	faults.Go(func() {
		faultsDone <- func() error {
			for _, f := range plan {
				select {
				case <-time.After(f.after):
				case <-ctx.Done():
					return ctx.Err()
				}
				p, restart := fn.process, fn.startReady
				if f.runtime {
					p, restart = rt.process, rt.startReady
				}
				if p.exited() {
					return fmt.Errorf("%s exited by itself; its log ends with:\n%s", p.name, p.tail(30))
				}
				p.kill()
				if f.runtime {
					kills[0]++
				} else {
					kills[1]++
				}
				killed := time.Now()
				time.Sleep(f.down)
				if err := restart(ctx); err != nil {
					return err
				}
				if f.runtime {
					rtRestarted.Store(true)
				}
				t.Logf("killed %s at %v; back after %v (%v down by plan)", p.name,
					killed.Sub(begin).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), f.down.Round(time.Millisecond))
			}
			return nil
		}()
	})

	// Batches go out on a schedule; after a stall (the runtime was down)
	// the driver catches up. After each restart of the runtime the driver
	// publishes the batches of the last second again, with the same message
	// ids, as a publisher does whose acknowledgements the crash lost: the
	// repeats must be dropped, however long ago a checkpoint read them.
	perTick := (len(w.Commands)*int(publishTick) + int(publishPeriod) - 1) / int(publishPeriod)
	repeated := 0
	for i, next := 0, time.Now(); i < len(w.Commands); i += perTick {
		if rtRestarted.Swap(false) {
			again := w.Commands[max(0, i-4*perTick):i]
			if err := d.publish(ctx, again); err != nil {
				t.Fatalf("publishing %d commands again: %v", len(again), err)
			}
			repeated += len(again)
		}
		batch := w.Commands[i:min(i+perTick, len(w.Commands))]
		if err := d.publish(ctx, batch); err != nil {
			t.Fatalf("publishing commands %d..%d: %v", i, i+len(batch)-1, err)
		}
		next = next.Add(publishTick)
		time.Sleep(time.Until(next))
	}
	published := time.Since(begin)
	if err := <-faultsDone; err != nil {
		t.Fatalf("faults: %v", err)
	}
	faulted := time.Since(begin)

	// Every address must reach its model state exactly.
	admin := rt.admin()
	var diff []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := readStates(ctx, admin, w.Addresses)
		if err == nil {
			if diff = diffStates(w, got); len(diff) == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("reading states: %v", err)
			}
			t.Fatalf("seed %d: %d of %d addresses never reached their exactly-once state:\n%s%s",
				seed, len(diff), len(w.Addresses), summarize(diff, 40), cancelledFired(ctx, d, w))
		}
		time.Sleep(250 * time.Millisecond)
	}
	converged := time.Since(begin)

	// Every command has run, every cancel with it, and every delayed
	// message that was not cancelled has fired: none may be left pending.
	// A message cancelled in a later invocation is due only after the
	// test (LateCancelDelay), so its cancel is checked here, not by
	// waiting for it to fire.
	var pending []string
	testwait.Nil(t, "the delayed messages of every address", func() (err error) {
		pending, err = pendingDelayed(ctx, []twinflowv1connect.AdminServiceClient{admin}, w.Addresses)
		return err
	})
	if len(pending) > 0 {
		t.Errorf("seed %d: %d addresses have delayed messages pending after every command ran (cancels that did not take effect):\n%s",
			seed, len(pending), summarize(pending, 20))
	}
	// Once every other delayed message would have fallen due, the states
	// must still be exact.
	time.Sleep(MaxDelay + time.Second)
	got, err := readStates(ctx, admin, w.Addresses)
	if err != nil {
		t.Fatalf("reading states: %v", err)
	}
	if diff := diffStates(w, got); len(diff) > 0 {
		t.Errorf("seed %d: %d addresses changed after reaching their exactly-once state (delayed messages that were cancelled, or repeated work):\n%s",
			seed, len(diff), summarize(diff, 40))
	}

	// Egress: every id exactly once. Records are published after the
	// checkpoint that holds them, so wait for the last ones.
	var ediff []string
	deadline = time.Now().Add(30 * time.Second)
	for {
		ids, err := egressIDs(ctx, d.ops)
		if err != nil {
			t.Fatalf("reading egress: %v", err)
		}
		ediff = diffEgress(w, ids)
		if len(ediff) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(ediff) > 0 {
		t.Errorf("seed %d: egress stream differs from exactly-once for %d records:\n%s", seed, len(ediff), summarize(ediff, 40))
	}
	dead, err := deadLetters(ctx, d.ops)
	if err != nil {
		t.Fatalf("reading dead letters: %v", err)
	}
	if len(dead) > 0 {
		t.Errorf("seed %d: %d dead letters:\n%s", seed, len(dead), summarize(dead, 20))
	}
	rt.checkClean(t)
	fn.checkClean(t)

	var checkpoints uint64
	if st, err := admin.GetCheckpointStatus(ctx, connect.NewRequest(&twinflowv1.GetCheckpointStatusRequest{})); err == nil {
		checkpoints = st.Msg.GetLatest().GetId()
	}
	t.Logf("%d commands (%d messages, %d published again after restarts) published in %v; %d runtime and %d function kills by %v; states exact at %v; "+
		"checked again and egress (%d records) at %v; last checkpoint %d",
		len(w.Commands), w.Messages(), repeated, published.Round(time.Millisecond), kills[0], kills[1], faulted.Round(time.Millisecond),
		converged.Round(time.Millisecond), len(w.Egress), time.Since(begin).Round(time.Millisecond), checkpoints)
}

// cancelledFired says how many delayed messages that were cancelled fired,
// as their egress records show: a state ahead of the model by one count
// and one message at their targets is their doing.
func cancelledFired(ctx context.Context, d *driver, w *Workload) string {
	ids, err := egressIDs(ctx, d.ops)
	if err != nil {
		return ""
	}
	n := 0
	for id := range ids {
		if w.Cancelled[id] {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("\n%d delayed messages that were cancelled fired", n)
}
