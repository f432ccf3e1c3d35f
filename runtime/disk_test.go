package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go"

	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/datadir"
	"github.com/twinflow/twinflow/runtime/state"
	"github.com/twinflow/twinflow/runtime/state/faultfs"
	"github.com/twinflow/twinflow/sdk"
)

// counterRegistry serves test/counter.
func counterRegistry(t *testing.T) *endpoint {
	t.Helper()
	reg := sdk.NewRegistry()
	if err := reg.Register("test/counter", sdk.FunctionFunc(counter), count); err != nil {
		t.Fatal(err)
	}
	return serve(t, reg)
}

// sendRound sends 1 to each of n counters.
func (h *harness) sendRound(n int) {
	for i := 0; i < n; i++ {
		h.sendInt("test/counter", fmt.Sprint("c", i), 1)
	}
}

// waitCounts waits until each of n counters counts want.
func (h *harness) waitCounts(n int, want int64) {
	h.t.Helper()
	testwait.For(h.t, fmt.Sprintf("every counter at %d", want), func() bool {
		for i := 0; i < n; i++ {
			if h.stateInt("test/counter", fmt.Sprint("c", i), "count") != want {
				return false
			}
		}
		return true
	})
}

// TestFullDiskPausesIntakeAndResumes fills the state store's disk under
// traffic: checkpoints are refused with an error naming the path and the
// space, intake pauses, queries are answered, and once space returns every
// acknowledged message is applied, once, and survives a crash.
func TestFullDiskPausesIntakeAndResumes(t *testing.T) {
	h, fs := startOnFaultyDisk(t)
	cfg := h.cfg
	const counters = 10
	h.sendRound(counters)
	h.waitCounts(counters, 1)

	// The disk fills: first the free space it reports drops, so that the
	// next checkpoint is refused before any write, then writes fail too.
	fs.ReportFree(1 << 20)
	testwait.For(t, "a checkpoint refused for lack of space", func() bool { return h.e.DiskFull() != nil })
	fs.Fill(1 << 20)
	msg := h.e.DiskFull().Error()
	t.Logf("DiskFull: %s", msg)
	for _, want := range []string{"disk full at " + filepath.Join(cfg.DataDir, "state"), "1.0 MiB free", "needed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("DiskFull() does not say %q: %s", want, msg)
		}
	}
	// Whichever write met the full disk first says what it could not do:
	// the checkpoint's commit, or the deletion of egress records it
	// published just before.
	if !strings.Contains(msg, "cannot commit a checkpoint") && !strings.Contains(msg, "cannot delete published egress records") {
		t.Errorf("DiskFull() does not say what could not be written: %s", msg)
	}
	var full *state.DiskFullError
	if !errors.As(h.e.DiskFull(), &full) || full.Free != 1<<20 || full.Need <= full.Free {
		t.Errorf("DiskFull() = %#v", h.e.DiskFull())
	}
	if v := h.metric("twinflow_state_disk_full"); v != 1 {
		t.Errorf("twinflow_state_disk_full = %v while the disk is full", v)
	}
	waits := h.metric("twinflow_ingress_backpressure_waits_total")
	testwait.For(t, "intake to pause", func() bool { return h.metric("twinflow_ingress_backpressure_waits_total") > waits+10 })

	// Acknowledged while the disk is full; queries are still answered.
	h.sendRound(counters)
	h.sendRound(counters)
	if got := h.stateInt("test/counter", "c0", "count"); got < 1 {
		t.Errorf("query while the disk is full: count = %d", got)
	}
	if h.e.Err() != nil {
		t.Fatalf("the engine stopped: %v", h.e.Err())
	}

	fs.Heal()
	h.waitCounts(counters, 3)
	testwait.For(t, "the disk-full state to clear", func() bool { return h.e.DiskFull() == nil })
	if v := h.metric("twinflow_state_disk_full"); v != 0 {
		t.Errorf("twinflow_state_disk_full = %v after space returned", v)
	}
	if _, err := h.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.crash()
	h.waitCounts(counters, 3)
}

// TestFailedWriteStopsTheEngineCleanly makes the store's writes fail while
// the disk reports free space, as when it fills between the check and the
// write: Pebble cannot continue, the engine stops by itself with an error
// that says so (no panic), and a restart once space returns has applied
// every acknowledged message exactly once.
func TestFailedWriteStopsTheEngineCleanly(t *testing.T) {
	h, fs := startOnFaultyDisk(t)
	cfg := h.cfg
	const counters = 10
	h.sendRound(counters)
	h.waitCounts(counters, 1)

	fs.FailWrites(syscall.ENOSPC)
	h.sendRound(counters)
	select {
	case <-h.e.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the engine did not stop after its store failed")
	}
	err := h.e.Err()
	t.Logf("Err: %v", err)
	if err == nil || !strings.Contains(err.Error(), "cannot continue after a failed write") ||
		!strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), filepath.Join(cfg.DataDir, "state")) {
		t.Fatalf("Err() = %v", err)
	}

	fs.Heal()
	h.nc.Close()
	h.reopen()
	h.sendRound(counters)
	h.waitCounts(counters, 3)
}

// TestStartOnFullDiskFailsAtOnce starts on a full disk: Start fails at once
// with the path and the space, logging little, and the data dir starts
// once space returns, with its state.
func TestStartOnFullDiskFailsAtOnce(t *testing.T) {
	h, fs := startOnFaultyDisk(t)
	cfg := h.cfg
	h.sendRound(3)
	h.waitCounts(3, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.e.Stop(ctx, ""); err != nil {
		t.Fatal(err)
	}
	h.nc.Close()

	var logged atomic.Int64
	cfg.Logger = slog.New(countingHandler{&logged, cfg.Logger.Handler()})
	fs.Fill(1 << 20)
	_, err := runtime.Start(context.Background(), cfg)
	t.Logf("full disk: %v (%d log records)", err, logged.Load())
	var full *state.DiskFullError
	if !errors.As(err, &full) || !strings.Contains(err.Error(), "disk full at "+filepath.Join(cfg.DataDir, "state")+": cannot open the store: 1.0 MiB free") {
		t.Fatalf("Start on a full disk = %v", err)
	}
	if n := logged.Load(); n > 10 {
		t.Errorf("%d log records for one failed start", n)
	}

	// A disk that refuses writes although it reports space.
	fs.Heal()
	fs.FailWrites(syscall.ENOSPC)
	_, err = runtime.Start(context.Background(), cfg)
	t.Logf("failing writes: %v", err)
	if !errors.As(err, &full) {
		t.Fatalf("Start with failing writes = %v", err)
	}

	fs.Heal()
	cfg.Logger = testLogger(t)
	h.cfg = cfg
	var e *runtime.Engine
	testwait.For(t, "a start once space returned", func() bool {
		// The open abandoned above lets go of the store once it finishes.
		var inUse *state.InUseError
		e, err = runtime.Start(context.Background(), cfg)
		if errors.As(err, &inUse) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	})
	h.e = e
	h.connect()
	t.Cleanup(func() { h.nc.Close(); e.Kill() })
	h.waitCounts(3, 1)
}

// countingHandler counts records and passes them on.
type countingHandler struct {
	n    *atomic.Int64
	next slog.Handler
}

func (h countingHandler) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.n.Add(1)
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}
func (h countingHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return countingHandler{h.n, h.next.WithAttrs(a)}
}
func (h countingHandler) WithGroup(g string) slog.Handler {
	return countingHandler{h.n, h.next.WithGroup(g)}
}

// TestDataDirInUse starts a second engine on a data dir in use: it is told
// which process holds it, and nothing says damaged.
func TestDataDirInUse(t *testing.T) {
	ep := counterRegistry(t)
	cfg := baseConfig(t, ep.url())
	h := start(t, cfg)
	h.sendRound(1)
	h.waitCounts(1, 1)

	_, err := runtime.Start(context.Background(), cfg)
	t.Logf("second start: %v", err)
	var inUse *datadir.InUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() || strings.Contains(err.Error(), "damaged") ||
		!strings.Contains(err.Error(), fmt.Sprintf("in use by process %d", os.Getpid())) {
		t.Fatalf("second Start on a data dir in use = %v", err)
	}
	h.waitCounts(1, 1) // the first engine goes on
}

// TestReadOnlyDataDir starts on a data dir the process may not write: the
// error says so, and nothing says damaged. Root may write anyway; there the
// store's file system refuses instead.
func TestReadOnlyDataDir(t *testing.T) {
	h, fs := startOnFaultyDisk(t)
	cfg := h.cfg
	h.sendRound(1)
	h.waitCounts(1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.e.Stop(ctx, ""); err != nil {
		t.Fatal(err)
	}
	h.nc.Close()

	if os.Geteuid() == 0 {
		fs.FailWrites(syscall.EACCES)
	} else {
		chmodAll(t, cfg.DataDir, 0o555, 0o444)
		t.Cleanup(func() { chmodAll(t, cfg.DataDir, 0o755, 0o644) })
	}
	_, err := runtime.Start(context.Background(), cfg)
	t.Logf("read-only: %v", err)
	if err == nil || !strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Start on a read-only data dir = %v", err)
	}
}

// chmodAll sets the mode of dir, its subdirectories and its files.
func chmodAll(t *testing.T, dir string, dirMode, fileMode os.FileMode) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, dirMode)
		}
		return os.Chmod(path, fileMode)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestNATSStoreFailureStopsTheEngine makes the embedded NATS server fail
// to write the direct ingress stream's next block, as a full disk would:
// JetStream refuses that stream from then on, so the engine stops with an
// error naming the NATS store, and after a restart every message that was
// acknowledged is applied.
func TestNATSStoreFailureStopsTheEngine(t *testing.T) {
	ep := counterRegistry(t)
	cfg := baseConfig(t, ep.url())
	// No checkpoint trims the stream, which would start new blocks.
	cfg.CheckpointInterval = time.Hour
	h := start(t, cfg)
	h.sendRound(1)
	h.waitCounts(1, 1)

	// A directory where the stream's next block file goes: creating it
	// fails. The stream's blocks hold 8 MiB.
	blocks := filepath.Join(cfg.DataDir, "nats", "jetstream", "$G", "streams", runtime.DirectStream, "msgs")
	next := 1
	for {
		if _, err := os.Stat(filepath.Join(blocks, fmt.Sprintf("%d.blk", next))); err != nil {
			break
		}
		next++
	}
	nextBlock := filepath.Join(blocks, fmt.Sprintf("%d.blk", next))
	if err := os.MkdirAll(filepath.Join(nextBlock, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := []byte("1" + strings.Repeat(" ", 900<<10)) // the number 1, padded
	// A publish whose acknowledgement times out may still have been
	// stored: it may count, an acknowledged one must.
	acked, attempted := int64(1), int64(1)
	for i := 0; i < 40; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		subject := "twinflow.in.test.counter.c0"
		attempted++
		_, err := h.js.PublishMsg(ctx, natsMsg(subject, sdk.Int64Type.Typename(), big))
		cancel()
		if err != nil {
			break
		}
		acked++
	}
	select {
	case <-h.e.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the engine did not stop after the NATS store failed")
	}
	err := h.e.Err()
	t.Logf("Err: %v (acknowledged %d)", err, acked)
	if err == nil || !strings.Contains(err.Error(), "embedded NATS server could not write its store at "+filepath.Join(cfg.DataDir, "nats")) ||
		!strings.Contains(err.Error(), filepath.Base(nextBlock)) {
		t.Fatalf("Err() = %v", err)
	}
	if acked < 2 {
		t.Errorf("no large message was acknowledged before the store failed")
	}

	if err := os.RemoveAll(nextBlock); err != nil {
		t.Fatal(err)
	}
	h.nc.Close()
	h.reopen()
	testwait.For(t, "every acknowledged message applied", func() bool {
		n := h.stateInt("test/counter", "c0", "count")
		return n >= acked && n <= attempted
	})
}

func natsMsg(subject, typename string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(router.TypenameHeader, typename)
	m.Data = data
	return m
}

// startOnFaultyDisk starts the counter function and an engine whose store's
// file system fails on demand.
func startOnFaultyDisk(t *testing.T) (*harness, *faultfs.FS) {
	t.Helper()
	ep := counterRegistry(t)
	fs := faultfs.New(vfs.Default)
	cfg := baseConfig(t, ep.url())
	cfg.StateFS = fs
	return start(t, cfg), fs
}
