package crashtest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cli runs a twinflow client command and returns its output.
func cli(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("twinflow %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// waitStates polls the query API until every address of w has its model
// state.
func waitStates(ctx context.Context, t *testing.T, rt *runtimeProc, w *Workload) {
	t.Helper()
	var diff []string
	for deadline := time.Now().Add(30 * time.Second); ; {
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
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSavepointRestore stops a runtime with a savepoint, starts a new one
// from it in a new data dir, and checks that the state came along and that
// the new runtime goes on processing.
func TestSavepointRestore(t *testing.T) {
	twinflowBin, functionBin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log, _ := logTo(t, "driver.log")

	// Two workloads over the same addresses: the first before the
	// savepoint, the second after the restore.
	before := Generate(11, Options{Addresses: 30, Commands: 300, Prefix: "b"})
	after := Generate(12, Options{Addresses: 30, Commands: 300, Prefix: "r"})
	both := &Workload{Addresses: before.Addresses, Count: map[string]int64{}, Msgs: map[string]int64{}}
	for _, w := range []*Workload{before, after} {
		for a, n := range w.Count {
			both.Count[a] += n
		}
		for a, n := range w.Msgs {
			both.Msgs[a] += n
		}
	}

	module := startFunction(ctx, t, functionBin)
	first := newRuntime(t, twinflowBin, module, t.TempDir())
	if err := first.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, first.access(t), log)
	if err := d.publish(ctx, before.Commands); err != nil {
		t.Fatal(err)
	}
	waitStates(ctx, t, first, before)
	d.nc.Close()

	// The savepoint goes under the first runtime's savepoint dir.
	savepoint := filepath.Join(first.dataDir, "savepoints", "before")
	out, err := cli(ctx, twinflowBin, "stop", "--savepoint", "before", "--data-dir", first.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`stopped after checkpoint (\d+)`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, savepoint) {
		t.Fatalf("twinflow stop printed %q; want the checkpoint and the savepoint dir", out)
	}
	if err := first.wait(ctx); err != nil {
		t.Fatal(err)
	}

	second := newRuntime(t, twinflowBin, module, t.TempDir(), "-restore", savepoint)
	if err := second.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("first runtime's log ends with:\n%s", first.tail(20))
			t.Logf("second runtime's log ends with:\n%s", second.tail(20))
		}
	})
	got, err := readStates(ctx, second.admin(), before.Addresses)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffStates(before, got); len(diff) > 0 {
		t.Fatalf("the restored runtime lost state:\n%s", summarize(diff, 20))
	}
	list, err := cli(ctx, twinflowBin, "checkpoint", "list", "--data-dir", second.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	// The restored runtime goes on from the savepoint's checkpoint: it
	// lists that one (with the ones before it that the savepoint kept),
	// unless it has taken as many checkpoints since as the list keeps (10,
	// one per 100ms on a slow machine).
	var ids []int
	for _, id := range regexp.MustCompile(`(?m)^(\d+) `).FindAllStringSubmatch(list, -1) {
		n, _ := strconv.Atoi(id[1])
		ids = append(ids, n)
	}
	saved, _ := strconv.Atoi(m[1])
	restored := second.grep("restored_checkpoint=")
	if !slices.ContainsFunc(restored, func(l string) bool { return strings.HasSuffix(l, "restored_checkpoint="+m[1]) }) {
		t.Errorf("the restored runtime did not start from the savepoint's checkpoint %s: %q", m[1], restored)
	}
	if len(ids) == 0 || slices.Max(ids) < saved || !(slices.Contains(ids, saved) || slices.Min(ids) > saved) {
		t.Errorf("checkpoint list of the restored runtime does not go on from the savepoint's checkpoint %s:\n%s", m[1], list)
	}

	d = newDriver(t, second.access(t), log)
	if err := d.publish(ctx, after.Commands); err != nil {
		t.Fatal(err)
	}
	waitStates(ctx, t, second, both)
	// The new deployment's egress holds what the second workload wrote.
	var ediff []string
	for deadline := time.Now().Add(20 * time.Second); ; {
		ids, err := egressIDs(ctx, d.ops)
		if err != nil {
			t.Fatal(err)
		}
		if ediff = diffEgress(after, ids); len(ediff) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(ediff) > 0 {
		t.Errorf("egress of the restored runtime differs from exactly-once:\n%s", summarize(ediff, 20))
	}
}
