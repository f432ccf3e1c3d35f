package crashtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
)

// TestRetriedPublishAfterKill is the deterministic case of a publisher's
// retry across a crash: a message is stored and processed, complete
// checkpoints cover it (and the ingress stream is trimmed), the runtime
// (with its embedded NATS) is killed and started again, and the message is
// published again with the same id, as a publisher does whose
// acknowledgement the crash lost. NATS, which forgot the trimmed id, stores
// it again; its target drops it as a repeat, and it counts once.
func TestRetriedPublishAfterKill(t *testing.T) {
	twinflowBin, functionBin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log, _ := logTo(t, "driver.log")
	w := Generate(21, Options{Addresses: 5, Commands: 20, Prefix: "k"})

	fn := newFunction(t, functionBin)
	rt := newRuntime(t, twinflowBin, writeModule(t, fn.addr), t.TempDir())
	if err := fn.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, rt.access(t), log)
	if err := d.publish(ctx, w.Commands); err != nil {
		t.Fatal(err)
	}
	waitStates(ctx, t, rt, w)
	// Checkpoints after the states are exact cover every command.
	admin := rt.admin()
	first := latestCheckpoint(ctx, t, admin)
	for latestCheckpoint(ctx, t, admin) < first+3 {
		time.Sleep(50 * time.Millisecond)
	}
	rt.kill()
	if err := rt.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, c := range w.Commands {
		if ack := d.publishOne(ctx, t, c); !ack.Duplicate {
			stored++
		}
	}
	t.Logf("%d of %d commands published again were stored again by NATS; their targets must drop them", stored, len(w.Commands))
	// A marker after them: once it is applied, the repeats would have been.
	marker := Generate(22, Options{Addresses: 5, Commands: 1, Prefix: "m"})
	if err := d.publish(ctx, marker.Commands); err != nil {
		t.Fatal(err)
	}
	both := merge(w, marker)
	waitStates(ctx, t, rt, both)
	got, err := readStates(ctx, admin, both.Addresses)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffStates(both, got); len(diff) > 0 {
		t.Fatalf("states after the repeated publishes:\n%s", summarize(diff, 20))
	}
}

func latestCheckpoint(ctx context.Context, t *testing.T, admin interface {
	GetCheckpointStatus(context.Context, *connect.Request[twinflowv1.GetCheckpointStatusRequest]) (*connect.Response[twinflowv1.GetCheckpointStatusResponse], error)
}) uint64 {
	t.Helper()
	st, err := admin.GetCheckpointStatus(ctx, connect.NewRequest(&twinflowv1.GetCheckpointStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	return st.Msg.GetLatest().GetId()
}

// merge adds up the model outcomes of workloads over the same addresses.
func merge(ws ...*Workload) *Workload {
	out := &Workload{Addresses: ws[0].Addresses, Count: map[string]int64{}, Msgs: map[string]int64{},
		Egress: map[string]bool{}, Cancelled: map[string]bool{}}
	for _, w := range ws {
		for a, n := range w.Count {
			out.Count[a] += n
		}
		for a, n := range w.Msgs {
			out.Msgs[a] += n
		}
		for id := range w.Egress {
			out.Egress[id] = true
		}
		for id := range w.Cancelled {
			out.Cancelled[id] = true
		}
	}
	return out
}

// publishOne publishes one command and returns JetStream's
// acknowledgement, which says whether it was a duplicate.
func (d *driver) publishOne(ctx context.Context, t *testing.T, c Ingress) *jetstream.PubAck {
	t.Helper()
	subject, err := router.DirectSubject(FunctionType, c.To)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(c.Cmd)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(router.TypenameHeader, CommandType.Typename())
	msg.Header.Set(jetstream.MsgIDHeader, c.Cmd.ID)
	msg.Data = data
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publishing %s: %v", c.Cmd.ID, err)
	}
	return ack
}

// Shape of TestEndpointOutage.
const (
	outageCommands = 20_000
	outageLength   = 60 * time.Second
	outageMemory   = 256 << 20 // the runtime's -memory
)

// TestEndpointOutage keeps the function endpoint down for a minute while
// 20,000 commands arrive: readiness reports the outage while it lasts, the
// runtime's resident memory stays within its budget, and once the endpoint
// is back every command counts exactly once and nothing is dead-lettered.
// The runtime is built without the race detector, which multiplies memory.
func TestEndpointOutage(t *testing.T) {
	twinflowBin, functionBin := plainBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log, _ := logTo(t, "driver.log")
	w := Generate(31, Options{Addresses: 500, Commands: outageCommands, MaxDepth: 1, MaxOps: 2, Prefix: "o", NoLateCancels: true})

	fn := newFunction(t, functionBin)
	rt := newRuntime(t, twinflowBin, writeModule(t, fn.addr), t.TempDir()) // -memory 256MiB
	if err := fn.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, rt.access(t), log)
	fn.kill()
	down := time.Now()

	// Watch readiness and memory while the endpoint is down.
	watch, stopWatch := context.WithCancel(ctx)
	type seen struct {
		reported string
		maxRSS   int64
	}
	watched := make(chan seen, 1)
	go func() {
		var s seen
		defer func() { watched <- s }()
		for watch.Err() == nil {
			if s.reported == "" {
				if body := readyz(rt.adminURL); strings.Contains(body, "endpoint http://"+fn.addr+" unreachable") {
					s.reported = body
				}
			}
			s.maxRSS = max(s.maxRSS, rss(rt.cmd.Process.Pid))
			select {
			case <-time.After(250 * time.Millisecond):
			case <-watch.Done():
			}
		}
	}()

	const batches = 100
	per := (len(w.Commands) + batches - 1) / batches
	next := time.Now()
	for i := 0; i < len(w.Commands); i += per {
		if err := d.publish(ctx, w.Commands[i:min(i+per, len(w.Commands))]); err != nil {
			t.Fatal(err)
		}
		next = next.Add(outageLength * 9 / 10 / batches)
		time.Sleep(time.Until(next))
	}
	time.Sleep(time.Until(down.Add(outageLength)))
	stopWatch()
	s := <-watched
	if err := fn.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("endpoint down for %v while %d commands (%d messages in all) were published; the runtime's RSS peaked at %d MiB (budget %d MiB)",
		time.Since(down).Round(time.Second), len(w.Commands), w.Messages(), s.maxRSS>>20, outageMemory>>20)
	if s.reported == "" {
		t.Error("readiness never reported the unreachable endpoint")
	} else {
		t.Logf("readiness while down:\n%s", s.reported)
	}
	if s.maxRSS > outageMemory {
		t.Errorf("the runtime's resident memory reached %d MiB, over its budget of %d MiB", s.maxRSS>>20, outageMemory>>20)
	}

	waitStatesWithin(ctx, t, rt, w, 2*time.Minute)
	var ediff []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		ids, err := egressIDs(ctx, d.ops)
		if err != nil {
			t.Fatal(err)
		}
		if ediff = diffEgress(w, ids); len(ediff) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(ediff) > 0 {
		t.Errorf("egress differs from exactly-once for %d records:\n%s", len(ediff), summarize(ediff, 20))
	}
	dead, err := deadLetters(ctx, d.ops)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) > 0 {
		t.Errorf("%d dead letters after an outage:\n%s", len(dead), summarize(dead, 10))
	}
	if body := readyz(rt.adminURL); body != "ok\n" {
		t.Errorf("not ready after the endpoint came back:\n%s", body)
	}
}

// waitStatesWithin is waitStates with its own bound.
func waitStatesWithin(ctx context.Context, t *testing.T, rt *runtimeProc, w *Workload, bound time.Duration) {
	t.Helper()
	var diff []string
	for deadline := time.Now().Add(bound); ; {
		got, err := readStates(ctx, rt.admin(), w.Addresses)
		if err == nil {
			if diff = diffStates(w, got); len(diff) == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatal(err)
			}
			t.Fatalf("states never matched the model:\n%s", summarize(diff, 20))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// readyz returns the body of the runtime's /readyz.
func readyz(adminURL string) string {
	resp, err := httpClient.Get(adminURL + "/readyz")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK && !strings.HasPrefix(string(b), "not ready") {
		return fmt.Sprintf("%s: %s", resp.Status, b)
	}
	return string(b)
}

// rss returns the resident set size of a process, in bytes, from
// /proc/PID/status; 0 when it cannot be read.
func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
