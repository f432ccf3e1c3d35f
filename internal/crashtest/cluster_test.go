package crashtest

import (
	"context"

	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/internal/testwait"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

var clusterLong = flag.Bool("cluster.long", false, "run TestClusterCrashRecovery's long workload, and TestClusterRescale without the race detector (for make bench)")

// clusterName is the cluster the test's workers form.
const clusterName = "crash"

// clusterShape is the size of a run of TestClusterCrashRecovery.
type clusterShape struct {
	commands    int
	period      time.Duration // over which the commands are published
	workerKills int
	// lateCancels adds cancels sent in a later invocation.
	lateCancels bool
}

// clusterFault is one planned kill of a worker.
type clusterFault struct {
	worker int
	after  time.Duration // since the previous fault
	down   time.Duration // before the restart
}

// planClusterFaults draws the kills from the seed. Some restarts come
// before the member TTL (the worker takes its own key groups back), most
// after it (the others take them over first).
func planClusterFaults(seed uint64, n int) []clusterFault {
	rng := rand.New(rand.NewPCG(seed, 0xc105))
	var plan []clusterFault
	for range n {
		plan = append(plan, clusterFault{
			worker: rng.IntN(3),
			after:  time.Second + time.Duration(rng.Int64N(int64(2*time.Second))),
			down:   time.Second + time.Duration(rng.Int64N(int64(8*time.Second))),
		})
	}
	return plan
}

// TestClusterCrashRecovery is the crash test of cluster mode: three workers
// (real twinflow processes) on a three-server NATS cluster with R3 streams,
// the crash workload published to the direct ingress, workers killed with
// SIGKILL at random moments and restarted, one NATS server killed and
// restarted once; at the end every address's state and every egress
// record must be exactly once. It also measures failover: from the kill of
// a worker to the processing of a message to one of its key groups.
func TestClusterCrashRecovery(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (run again with -crash.seed=%d)", seed, seed)
	shape := clusterShape{commands: 1200, period: 15 * time.Second, workerKills: 3}
	if *clusterLong {
		shape = clusterShape{commands: 6000, period: 60 * time.Second, workerKills: 10, lateCancels: true}
	}
	w := Generate(seed, Options{Commands: shape.commands, NoLateCancels: !shape.lateCancels})
	plan := planClusterFaults(seed, shape.workerKills)
	t.Logf("workload: %d commands to %d addresses, %d messages in all, %d egress records; ops %v",
		len(w.Commands), len(w.Addresses), w.Messages(), len(w.Egress), w.Ops)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nats3 := clustertest.Start(t)
	twinflowBin, functionBin := binaries(t)
	rig := startClusterRig(ctx, t, seed, nats3, twinflowBin, functionBin, 3)
	workers, js, pub, cl := rig.workers, rig.js, rig.pub, rig.cl
	begin := time.Now()

	// The driver publishes on a schedule while the test's goroutine runs
	// the faults (clustertest is driven from it).
	published := make(chan error, 1)
	go func() {
		published <- func() error {
			perTick := (len(w.Commands)*int(publishTick) + int(shape.period) - 1) / int(shape.period)
			for i, next := 0, time.Now(); i < len(w.Commands); i += perTick {
				batch := w.Commands[i:min(i+perTick, len(w.Commands))]
				if err := publishCommands(ctx, pub, batch); err != nil {
					return fmt.Errorf("publishing commands %d..%d: %w", i, i+len(batch)-1, err)
				}
				next = next.Add(publishTick)
				time.Sleep(time.Until(next))
			}
			return nil
		}()
	}()

	var failovers []time.Duration
	var mu sync.Mutex
	var probes sync.WaitGroup
	natsKilled := false
	for n, f := range plan {
		time.Sleep(f.after)
		wk := workers[f.worker]
		if wk.exited() {
			t.Fatalf("%s exited by itself; its log ends with:\n%s", wk.name, wk.tail(30))
		}
		victim, err := os.ReadFile(filepath.Join(wk.dataDir, "worker-id"))
		if err != nil {
			t.Fatal(err)
		}
		probe, err := probeAddress(ctx, cl, strings.TrimSpace(string(victim)), n)
		if err != nil {
			t.Fatal(err)
		}
		wk.kill()
		killed := time.Now()
		if probe != "" {
			probes.Add(1)
			go func() {
				defer probes.Done()
				d, err := measureFailover(ctx, pub, workers, probe, killed)
				if err != nil {
					t.Errorf("failover after killing %s: %v", wk.name, err)
					return
				}
				mu.Lock()
				failovers = append(failovers, d)
				mu.Unlock()
			}()
		}
		// One NATS server dies once, while a worker is down.
		if !natsKilled && n == len(plan)/2 {
			s := int(seed % clustertest.Size)
			nats3.Kill(s)
			time.Sleep(2 * time.Second)
			nats3.Restart(s)
			nats3.WaitHealthy()
			natsKilled = true
			t.Logf("killed NATS server %d at %v", s, time.Since(begin).Round(time.Millisecond))
		}
		time.Sleep(time.Until(killed.Add(f.down)))
		if err := wk.startReady(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed %s at %v; back after %v", wk.name, killed.Sub(begin).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	probes.Wait()
	faulted := time.Since(begin)

	checkClusterOutcome(ctx, t, w, workers, js, cl)
	converged := time.Since(begin)
	// Listing asks every worker: one worker's pages hold every address.
	var want []string
	for _, a := range w.Addresses {
		if w.Msgs[a] > 0 {
			want = append(want, a)
		}
	}
	testwait.Nil(t, "a listing of every address through one worker", func() error {
		got, err := listAll(ctx, workers[int(seed%3+1)%3].admin(), FunctionType, "a", 37)
		if err == nil && !slices.Equal(got, want) {
			err = fmt.Errorf("listed %d addresses, want the %d with state (first listed %v)", len(got), len(want), got[:min(5, len(got))])
		}
		return err
	})
	// A clean stop of a worker hands its key groups to the others at
	// once; nothing changes.
	stopped := workers[seed%3]
	stopWorker(ctx, t, stopped)
	var running []*runtimeProc
	for _, wk := range workers {
		if wk != stopped {
			running = append(running, wk)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := readClusterStates(ctx, running, w.Addresses)
		if err == nil && len(diffStates(w, got)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the clean stop of %s the states are not exact: %v %s", stopped.name, err, summarize(diffStates(w, got), 20))
		}
		time.Sleep(250 * time.Millisecond)
	}

	// The cluster's status, read from NATS alone.
	status, err := exec.CommandContext(ctx, twinflowBin, "cluster", "status", "-nats", nats3.URLs(), "-cluster", clusterName, "-v").CombinedOutput()
	if err != nil {
		t.Fatalf("twinflow cluster status: %v\n%s", err, status)
	}
	for _, want := range []string{"cluster crash: 128 key groups, 128 held, 2 workers", "KEY GROUP", "checkpoint", "ROUTED"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("twinflow cluster status does not say %q:\n%s", want, status)
		}
	}
	// Each worker's row ends with its readers' lag, which its heartbeats
	// carry.
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "w-") && len(f) >= 9 {
			if _, err := strconv.ParseUint(f[len(f)-1], 10, 64); err != nil {
				t.Errorf("twinflow cluster status shows no lag for worker %s: %q", f[0], line)
			}
		}
	}
	if strings.Contains(string(status), "moving:") {
		t.Errorf("twinflow cluster status shows key groups moving after the faults ended:\n%s", status)
	}
	slices.Sort(failovers)
	t.Logf("%d commands (%d messages) published; %d worker kills and 1 NATS server kill by %v; states exact at %v; egress (%d records) checked at %v; "+
		"failover (kill to a message of the killed worker's key groups processed) %v",
		len(w.Commands), w.Messages(), len(plan), faulted.Round(time.Millisecond), converged.Round(time.Millisecond), len(w.Egress),
		time.Since(begin).Round(time.Millisecond), roundAll(failovers))
}

// clusterRig is what the cluster tests drive: three workers of one
// function endpoint on a NATS cluster, a publisher, and the cluster.
type clusterRig struct {
	workers []*runtimeProc
	js      jetstream.JetStream
	pub     *natsbus.Publisher
	cl      *cluster.Cluster
}

// startClusterRig starts the endpoint and the first running workers; the
// logs of all three are printed if the test fails.
func startClusterRig(ctx context.Context, t *testing.T, seed uint64, nats3 *clustertest.Cluster, twinflowBin, functionBin string, running int) clusterRig {
	t.Helper()
	module := startFunction(ctx, t, functionBin)
	workers := make([]*runtimeProc, 3)
	for i := range workers {
		workers[i] = newWorker(t, twinflowBin, module, nats3.URLs(), i)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
			for _, wk := range workers {
				t.Logf("%s log %s:\n%s", wk.name, wk.log, wk.digest())
			}
		}
	})
	for _, wk := range workers[:running] {
		if err := wk.startReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, js := nats3.Connect(t)
	log, logPath := logTo(t, "driver.log")
	t.Logf("driver log: %s", logPath)
	pub := natsbus.NewPublisher(js, natsbus.PublisherOptions{AckTimeout: 2 * time.Second, Logger: log})
	cl, err := cluster.Open(ctx, js, cluster.Config{Name: clusterName})
	if err != nil {
		t.Fatal(err)
	}
	return clusterRig{workers: workers, js: js, pub: pub, cl: cl}
}

// checkClusterOutcome waits until every address's state is exactly once,
// checks that no delayed message is left pending, waits until the
// cancelled ones would have fallen due and checks that nothing changed,
// then checks the egress stream (every record once), the dead letters
// (none), that the ingress streams are trimmed, and the workers' logs (no
// data race, no panic).
func checkClusterOutcome(ctx context.Context, t *testing.T, w *Workload, workers []*runtimeProc, js jetstream.JetStream, cl *cluster.Cluster) {
	t.Helper()
	seed := w.Seed
	var diff []string
	deadline := time.Now().Add(90 * time.Second)
	for {
		got, err := readClusterStates(ctx, workers, w.Addresses)
		if err == nil {
			if diff = diffStates(w, got); len(diff) == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("reading states: %v", err)
			}
			t.Fatalf("seed %d: %d of %d addresses never reached their exactly-once state:\n%s",
				seed, len(diff), len(w.Addresses), summarize(diff, 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// As in TestCrashRecovery: no delayed message may be left pending, and
	// once the others would have fallen due the states must still be exact.
	admins := make([]twinflowv1connect.AdminServiceClient, len(workers))
	for i, wk := range workers {
		admins[i] = wk.admin()
	}
	var pending []string
	testwait.Nil(t, "the delayed messages of every address", func() (err error) {
		pending, err = pendingDelayed(ctx, admins, w.Addresses)
		return err
	})
	if len(pending) > 0 {
		t.Errorf("seed %d: %d addresses have delayed messages pending after every command ran (cancels that did not take effect):\n%s",
			seed, len(pending), summarize(pending, 20))
	}
	time.Sleep(MaxDelay + time.Second)
	// A worker may be between two pipelines (a late move): ask again.
	var got states
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if got, err = readClusterStates(ctx, workers, w.Addresses); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reading states: %v", err)
		}
	}
	if diff := diffStates(w, got); len(diff) > 0 {
		t.Errorf("seed %d: %d addresses changed after reaching their exactly-once state:\n%s", seed, len(diff), summarize(diff, 40))
	}
	var ediff []string
	deadline = time.Now().Add(30 * time.Second)
	for {
		ids, err := egressIDs(ctx, js)
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
	dead, err := deadLetters(ctx, js)
	if err != nil {
		t.Fatalf("reading dead letters: %v", err)
	}
	if len(dead) > 0 {
		t.Errorf("seed %d: %d dead letters:\n%s", seed, len(dead), summarize(dead, 20))
	}
	// The ingress streams are trimmed: the router purges the direct
	// ingress below what it routed, each worker its key groups' routed
	// ingress below what they committed, keeping each subject's last
	// message. With every state exact, nothing unprocessed was purged.
	var trimmed string
	deadline = time.Now().Add(30 * time.Second)
	for {
		src, err1 := js.Stream(ctx, "TWINFLOW_IN")
		in, err2 := js.Stream(ctx, cl.InStream())
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("reading the ingress streams: %v", err)
		}
		s, r := src.CachedInfo().State, in.CachedInfo().State
		trimmed = fmt.Sprintf("direct ingress %d messages (of %d), partitioned ingress %d messages (of %d) on %d subjects",
			s.Msgs, s.LastSeq, r.Msgs, r.LastSeq, r.NumSubjects)
		if s.Msgs == 0 && r.Msgs <= uint64(cl.KeyGroups()) && r.NumSubjects == uint64(cl.KeyGroups()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ingress streams were not trimmed: %s", trimmed)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("trimmed: %s", trimmed)
	for _, wk := range workers {
		wk.checkClean(t)
	}
}

// listAll pages through the addresses of a function type with prefix,
// size at a time.
func listAll(ctx context.Context, admin twinflowv1connect.AdminServiceClient, functionType, prefix string, size int32) ([]string, error) {
	var ids []string
	after := ""
	for {
		resp, err := admin.ListAddresses(ctx, connect.NewRequest(&twinflowv1.ListAddressesRequest{
			Type: functionType, Prefix: prefix, After: after, Limit: size}))
		if err != nil {
			return nil, err
		}
		for _, a := range resp.Msg.GetAddresses() {
			ids = append(ids, a.GetId())
		}
		if after = resp.Msg.GetNextAfter(); after == "" {
			return ids, nil
		}
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// newWorker is a twinflow run process that joins the test's cluster.
func newWorker(t testing.TB, bin, module, natsURLs string, i int, extra ...string) *runtimeProc {
	adminPort := freePort(t)
	dataDir := t.TempDir()
	args := []string{"run", "-config", module, "-data", dataDir, "-nats", natsURLs, "-cluster", clusterName,
		"-admin", "127.0.0.1:" + strconv.Itoa(adminPort), "-checkpoint-interval", "200ms", "-shards", "2",
		"-memory", "256MiB", "-log-level", "info"}
	args = append(args, extra...)
	return &runtimeProc{
		process:  newProcess(t, fmt.Sprintf("worker%d", i), bin, args...),
		dataDir:  dataDir,
		adminURL: fmt.Sprintf("http://127.0.0.1:%d", adminPort),
	}
}

// publishCommands publishes commands to the direct ingress, each with its
// command id as message id.
func publishCommands(ctx context.Context, pub *natsbus.Publisher, cmds []Ingress) error {
	recs := make([]natsbus.Record, len(cmds))
	for i, c := range cmds {
		subject, err := router.DirectSubject(FunctionType, c.To)
		if err != nil {
			return err
		}
		data, err := json.Marshal(c.Cmd)
		if err != nil {
			return err
		}
		recs[i] = natsbus.Record{Subject: subject, Header: nats.Header{router.TypenameHeader: {CommandType.Typename()}}, Data: data, MsgID: c.Cmd.ID}
	}
	return pub.Publish(ctx, recs)
}

// probeAddress returns an address, outside the workload, of a key group
// the victim owns; "" when it owns none.
func probeAddress(ctx context.Context, cl *cluster.Cluster, victim string, n int) (string, error) {
	for kg := range cl.KeyGroups() {
		l, err := cl.LeaseOf(ctx, kg)
		if err != nil {
			return "", err
		}
		if l.Holder.Worker != victim {
			continue
		}
		for x := 0; ; x++ {
			id := fmt.Sprintf("probe%d-%d", n, x)
			if keygroup.Of(id, cl.KeyGroups()) == kg {
				return id, nil
			}
		}
	}
	return "", nil
}

// measureFailover sends one increment to the probe address and returns how
// long after the kill its count showed 1 on its owner.
func measureFailover(ctx context.Context, pub *natsbus.Publisher, workers []*runtimeProc, probe string, killed time.Time) (time.Duration, error) {
	cmd := Ingress{To: probe, Cmd: Command{ID: probe, Ops: []Op{{Op: OpIncrement}}}}
	if err := publishCommands(ctx, pub, []Ingress{cmd}); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := readClusterStates(ctx, workers, []string{probe}); err == nil && got[probe][0] == 1 {
			return time.Since(killed), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, errors.New("the probe was not processed within 60s")
}

// readClusterStates reads count and msgs of every address from the first
// worker that answers: it forwards the query to the address's owner.
func readClusterStates(ctx context.Context, workers []*runtimeProc, addresses []string) (states, error) {
	out := make(states, len(addresses))
	clients := make([]twinflowv1connect.AdminServiceClient, len(workers))
	for i, wk := range workers {
		clients[i] = wk.admin()
	}
	for _, a := range addresses {
		var errs []error
		found := false
		for _, c := range clients {
			one, err := readStates(ctx, c, []string{a})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out[a], found = one[a], true
			break
		}
		if !found {
			return nil, fmt.Errorf("no worker answered for %s: %w", a, errors.Join(errs...))
		}
	}
	return out, nil
}
