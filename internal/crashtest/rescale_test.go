package crashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/client"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
	"github.com/twinflow/twinflow/runtime/frontdoor"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/secrets"
)

// TestClusterRescale changes a running cluster under load: two workers,
// a third joins, one leaves with SIGTERM, one is killed with SIGKILL and
// restarted, the one that left comes back, and an operator drains a worker
// and undrains it. At the end every address's state and every egress
// record must be exactly once. With -cluster.long (make bench) the
// workers run without the race detector. The test logs which key groups moved and
// when, and the latency of messages (publish to exactly-once egress) of
// the key groups that moved and of those that did not.
func TestClusterRescale(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (run again with -crash.seed=%d)", seed, seed)
	const period = 22 * time.Second
	w := Generate(seed, Options{Commands: 1500, NoLateCancels: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nats3 := clustertest.Start(t)
	twinflowBin, functionBin := binaries(t)
	if *clusterLong {
		// For the latencies make bench reports: without the race
		// detector's cost.
		twinflowBin, functionBin = plainBinaries(t)
	}
	rig := startClusterRig(ctx, t, seed, nats3, twinflowBin, functionBin, 2)
	workers, js, pub, cl := rig.workers, rig.js, rig.pub, rig.cl
	begin := time.Now()
	moves := watchMoves(ctx, t, cl, begin)

	published := make([]time.Time, len(w.Commands))
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			perTick := (len(w.Commands)*int(publishTick) + int(period) - 1) / int(period)
			for i, next := 0, time.Now(); i < len(w.Commands); i += perTick {
				batch := w.Commands[i:min(i+perTick, len(w.Commands))]
				now := time.Now()
				for j := range batch {
					published[i+j] = now
				}
				if err := publishCommands(ctx, pub, batch); err != nil {
					return fmt.Errorf("publishing commands %d..%d: %w", i, i+len(batch)-1, err)
				}
				next = next.Add(publishTick)
				time.Sleep(time.Until(next))
			}
			return nil
		}()
	}()

	step := func(at time.Duration, what string, do func()) {
		time.Sleep(time.Until(begin.Add(at)))
		do()
		t.Logf("%v: %s", time.Since(begin).Round(time.Millisecond), what)
	}
	step(3*time.Second, "worker2 joined", func() {
		if err := workers[2].startReady(ctx); err != nil {
			t.Fatal(err)
		}
	})
	const doorAddresses = 60
	sender, err := client.New(js.Conn(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(ctx)
	step(5*time.Second, "60 increments sent through the workers' HTTP front doors, 60 through package client", func() {
		sendThroughDoors(ctx, t, workers, doorAddresses)
		sendIncrements(ctx, t, sender, addresses("client-", doorAddresses), "")
	})
	step(7*time.Second, "worker0 stopped with SIGTERM", func() { stopWorker(ctx, t, workers[0]) })
	step(10*time.Second, "worker1 killed with SIGKILL", func() { workers[1].kill() })
	step(12*time.Second, "worker1 restarted", func() {
		if err := workers[1].startReady(ctx); err != nil {
			t.Fatal(err)
		}
	})
	step(14*time.Second, "worker0 back", func() {
		if err := workers[0].startReady(ctx); err != nil {
			t.Fatal(err)
		}
	})
	var drained []byte
	step(17*time.Second, "worker2 drained by an operator", func() {
		drained = clusterCLI(ctx, t, twinflowBin, nats3.URLs(), "drain", "-wait", "60s", workerID(t, workers[2]))
	})
	if !strings.Contains(string(drained), "holds no key group") {
		t.Errorf("twinflow cluster drain did not wait for the worker to hand its key groups over:\n%s", drained)
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if m.Worker == workerID(t, workers[2]) && (!m.Draining || len(m.KeyGroups) > 0 || m.Assigned > 0) {
			t.Errorf("drained %s: draining %v, holds %v, assigned %d; want drained, holding and assigned nothing", m.Worker, m.Draining, m.KeyGroups, m.Assigned)
		}
	}
	clusterCLI(ctx, t, twinflowBin, nats3.URLs(), "drain", "-undo", workerID(t, workers[2]))
	t.Logf("%v: worker2 undrained", time.Since(begin).Round(time.Millisecond))
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The same increments again, with the same keys: applied once.
	sendThroughDoors(ctx, t, workers, doorAddresses)
	sendIncrements(ctx, t, sender, addresses("client-", doorAddresses), "")
	checkClusterOutcome(ctx, t, w, workers, js, cl)
	waitIncremented(ctx, t, workers, addresses("door-", doorAddresses), 1)
	waitIncremented(ctx, t, workers, addresses("client-", doorAddresses), 1)
	// Back in balance: every worker holds key groups again.
	testwaitBalanced(ctx, t, cl, workers)
	checkMovedLive(t, workers)

	moved := moves.report(t)
	reportLatencies(ctx, t, w, js, published, moved)
}

// checkMovedLive checks that every worker took and handed off key groups
// at checkpoints of its running pipeline, and rebuilt its pipeline only
// for its first plan and after a refused commit or a failed live move.
func checkMovedLive(t *testing.T, workers []*runtimeProc) {
	t.Helper()
	for i, wk := range workers {
		live := metricSum(wk.adminURL, `twinflow_cluster_moves_total{how="live"}`)
		failed := metricSum(wk.adminURL, `twinflow_cluster_moves_total{how="failed"}`)
		rebuilt := metricSum(wk.adminURL, `twinflow_cluster_moves_total{how="rebuild"}`)
		refused := metricSum(wk.adminURL, "twinflow_cluster_commits_refused_total")
		lost := metricSum(wk.adminURL, "twinflow_cluster_leases_lost_total")
		t.Logf("worker%d (this process): %v live moves, %v failed, %v pipeline rebuilds, %v refused commits, %v times leases lost", i, live, failed, rebuilt, refused, lost)
		if live == 0 {
			t.Errorf("worker%d moved no key group live", i)
		}
		if rebuilt > 1+failed+refused+lost {
			t.Errorf("worker%d rebuilt its pipeline %v times: more than for its first plan, %v failed live moves, %v refused commits and %v times leases lost", i, rebuilt, failed, refused, lost)
		}
	}
}

// sendThroughDoors sends an increment to each of n addresses door-<i>
// through the HTTP front door of the running workers in turn, each with
// its idempotency key.
func sendThroughDoors(ctx context.Context, t *testing.T, workers []*runtimeProc, n int) {
	t.Helper()
	var up []*runtimeProc
	for _, wk := range workers {
		if wk.cmd != nil && !wk.exited() {
			up = append(up, wk)
		}
	}
	for i := range n {
		wk := up[i%len(up)]
		info := wk.accessTB(t)
		tok, err := secrets.ReadIngressToken(info.IngressTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("door-%d", i)
		body, _ := json.Marshal(Command{ID: id, Ops: []Op{{Op: OpIncrement}}})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, info.IngressURL+"/send/"+FunctionType+"/"+id, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(router.TypenameHeader, CommandType.Typename())
		req.Header.Set(frontdoor.IdempotencyKeyHeader, id)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("sending to %s through %s's front door: %v", id, wk.name, err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("sending to %s through %s's front door: %s %s", id, wk.name, resp.Status, msg)
		}
	}
}

// addresses returns the ids <prefix>0 to <prefix><n-1>.
func addresses(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return ids
}

// sendIncrements sends an increment to each address of ids with c, all
// at once, each with the idempotency key <id><round> and repeated while
// its error is temporary.
func sendIncrements(ctx context.Context, t *testing.T, c *client.Client, ids []string, round string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			key := id + round
			body, _ := json.Marshal(Command{ID: key, Ops: []Op{{Op: OpIncrement}}})
			for {
				_, err := c.Send(ctx, router.Address{Type: FunctionType, ID: id}, CommandType.Typename(), body, client.WithKey(key))
				var ce *client.Error
				if err == nil || !errors.As(err, &ce) || !ce.Temporary() || ctx.Err() != nil {
					if err != nil {
						t.Errorf("sending to %s with package client: %v", id, err)
					}
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
}

// workerID reads a worker's id from its data dir.
func workerID(t *testing.T, wk *runtimeProc) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(wk.dataDir, "worker-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// stopWorker stops a worker with SIGTERM and checks that it exited cleanly.
func stopWorker(ctx context.Context, t *testing.T, wk *runtimeProc) {
	t.Helper()
	cmd := wk.cmd
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := wk.wait(ctx); err != nil {
		t.Fatal(err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited with status %d after SIGTERM; its log ends with:\n%s", wk.name, code, wk.tail(30))
	}
}

// clusterCLI runs twinflow cluster with args on the test's cluster.
func clusterCLI(ctx context.Context, t *testing.T, bin, natsURLs string, args ...string) []byte {
	t.Helper()
	full := append([]string{"cluster", args[0], "-nats", natsURLs, "-cluster", clusterName}, args[1:]...)
	out, err := exec.CommandContext(ctx, bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("twinflow %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return out
}

// testwaitBalanced waits until each worker holds key groups.
func testwaitBalanced(ctx context.Context, t *testing.T, cl *cluster.Cluster, workers []*runtimeProc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := cl.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		holding := 0
		for _, m := range st.Members {
			if len(m.KeyGroups) > 0 {
				holding++
			}
		}
		if holding == len(workers) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the changes %d of %d workers hold key groups", holding, len(workers))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// move is a change of a key group's lease holder.
type move struct {
	at       time.Duration // since the test began
	when     time.Time
	kg       int
	from, to string // workers; "" for a free lease
}

// moveLog records the changes of lease holders seen by a watch.
type moveLog struct {
	mu    sync.Mutex
	moves []move
}

// watchMoves records every change of a key group's holder from now on.
func watchMoves(ctx context.Context, t *testing.T, cl *cluster.Cluster, begin time.Time) *moveLog {
	wt, err := cl.Watch(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ml := &moveLog{}
	prev := wt.Table()
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done; wt.Stop() })
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-wt.Changed():
			}
			cur := wt.Table()
			when := time.Now()
			at := when.Sub(begin)
			ml.mu.Lock()
			for kg := range cl.KeyGroups() {
				was, is := prev.Lease(kg).Holder, cur.Lease(kg).Holder
				if was != is {
					ml.moves = append(ml.moves, move{at: at, when: when, kg: kg, from: was.Worker, to: is.Worker})
				}
			}
			ml.mu.Unlock()
			prev = cur
		}
	}()
	return ml
}

// report logs the moves, grouped by the pair of workers and the second
// they happened in, and returns when each key group changed holder.
func (ml *moveLog) report(t *testing.T) map[int][]time.Time {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	type group struct {
		second   int
		from, to string
	}
	var order []group
	kgs := map[group][]int{}
	moved := map[int][]time.Time{}
	for _, m := range ml.moves {
		g := group{int(m.at / time.Second), m.from, m.to}
		if _, ok := kgs[g]; !ok {
			order = append(order, g)
		}
		kgs[g] = append(kgs[g], m.kg)
		moved[m.kg] = append(moved[m.kg], m.when)
	}
	var b strings.Builder
	for _, g := range order {
		fmt.Fprintf(&b, "  %2ds  %-16s -> %-16s %3d key groups %v\n", g.second, orFree(g.from), orFree(g.to), len(kgs[g]), kgs[g])
	}
	t.Logf("lease changes (%d, %d key groups moved at least once):\n%s", len(ml.moves), len(moved), b.String())
	return moved
}

func orFree(w string) string {
	if w == "" {
		return "(free)"
	}
	return w
}

// reportLatencies logs the percentiles of the time from the publication of
// a command to its exactly-once egress record, for the commands whose key
// group changed holder meanwhile and for the others.
func reportLatencies(ctx context.Context, t *testing.T, w *Workload, js jetstream.JetStream, published []time.Time, moved map[int][]time.Time) {
	type sent struct {
		at time.Time
		kg int
	}
	byEgress := map[string]sent{}
	for i, c := range w.Commands {
		for _, op := range c.Cmd.Ops {
			if op.Op == OpEgress {
				byEgress[op.ID] = sent{published[i], keygroup.Of(c.To, keygroup.DefaultK)}
			}
		}
	}
	msgs, err := streamMsgs(ctx, js, "TWINFLOW_EGRESS_"+Egress)
	if err != nil {
		t.Fatal(err)
	}
	// Key group 0's owner routes every ingress message: while it moves,
	// the messages of every key group wait.
	var stayed, rerouted, went []time.Duration
	for _, m := range msgs {
		var rec Record
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatalf("egress record %d: %v", m.Seq, err)
		}
		s, ok := byEgress[rec.ID]
		if !ok {
			continue
		}
		d := m.Time.Sub(s.at)
		inFlight := func(at time.Time) bool { return !at.Before(s.at) && !at.After(m.Time) }
		switch {
		case slices.ContainsFunc(moved[s.kg], inFlight):
			went = append(went, d)
		case slices.ContainsFunc(moved[0], inFlight):
			rerouted = append(rerouted, d)
		default:
			stayed = append(stayed, d)
		}
	}
	t.Logf("publish to exactly-once egress: key group not moving meanwhile %s; not moving, but the router (key group 0) moving %s; moving %s",
		percentiles(stayed), percentiles(rerouted), percentiles(went))
}

// percentiles describes a sample of durations: its size, p50, p99 and max.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no sample"
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration {
		return ds[min(len(ds)-1, int(q*float64(len(ds))))].Round(time.Millisecond)
	}
	return fmt.Sprintf("n=%d p50 %v p99 %v max %v", len(ds), at(0.50), at(0.99), ds[len(ds)-1].Round(time.Millisecond))
}
