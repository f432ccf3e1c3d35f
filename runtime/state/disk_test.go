package state

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
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/runtime/state/faultfs"
)

// countingHandler counts the records logged at error level.
type countingHandler struct{ errors *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.errors.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

const testMinFree = 8 << 20

// openFaulty opens a store on disk in a fresh directory through a file
// system whose faults the test switches.
func openFaulty(t *testing.T) (*Store, *faultfs.FS, string, *atomic.Int64) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	fs := faultfs.New(vfs.Default)
	errs := new(atomic.Int64)
	s, err := Open(dir, faultyOptions(fs, errs))
	if err != nil {
		t.Fatal(err)
	}
	return s, fs, dir, errs
}

func faultyOptions(fs vfs.FS, errs *atomic.Int64) Options {
	return Options{KeyGroups: 8, FS: fs, CacheBytes: 16 << 20, MemTableBytes: 1 << 20, MinFreeBytes: testMinFree,
		DiskPollInterval: time.Millisecond, Logger: slog.New(countingHandler{errs})}
}

func overlay(kv ...string) *Overlay {
	o := NewOverlay()
	for i := 0; i+1 < len(kv); i += 2 {
		o.Set([]byte(kv[i]), []byte(kv[i+1]))
	}
	o.Freeze()
	return o
}

// TestFullDiskRefusesWritesUntilSpaceReturns fills the disk under a store:
// its writes are refused with an error that names the directory and the
// space, before Pebble sees them; reads go on; once space returns the same
// writes succeed, and a reopened store holds all of them.
func TestFullDiskRefusesWritesUntilSpaceReturns(t *testing.T) {
	s, fs, dir, _ := openFaulty(t)
	commit(t, s, overlay("a", "1"))

	fs.Fill(1 << 20)
	pending := overlay("b", "2")
	_, err := s.Commit([]*Overlay{pending}, nil)
	var full *DiskFullError
	if !errors.As(err, &full) {
		t.Fatalf("Commit on a full disk = %v, want a DiskFullError", err)
	}
	t.Logf("error: %v", err)
	if full.Path != dir || full.Free != 1<<20 || full.Need <= testMinFree || full.Op != "commit a checkpoint" {
		t.Errorf("DiskFullError = %+v; want path %s, 1 MiB free, more than %d needed", full, dir, testMinFree)
	}
	for _, want := range []string{"disk full at " + dir, "1.0 MiB free", "8.0 MiB kept free"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("errors.Is(%v, ENOSPC) = false", err)
	}
	if s.DiskFull() == nil {
		t.Error("DiskFull() = nil while writes are refused")
	}
	if _, err := s.SaveSpecs("t/f", nil); err != nil {
		t.Errorf("SaveSpecs with nothing to save wrote: %v", err)
	}
	if err := s.DeleteEgress("x"); !errors.As(err, &full) {
		t.Errorf("DeleteEgress on a full disk = %v, want a DiskFullError", err)
	}
	if v, ok := mustGet(t, NewView(s), "a"); !ok || v != "1" {
		t.Errorf("reading on a full disk: a = %q, %v", v, ok)
	}
	if s.Err() != nil {
		t.Fatalf("the store failed: %v", s.Err())
	}

	fs.Heal()
	if _, err := s.Commit([]*Overlay{pending}, nil); err != nil {
		t.Fatalf("Commit once space returned: %v", err)
	}
	if s.DiskFull() != nil {
		t.Errorf("DiskFull() = %v after a write succeeded", s.DiskFull())
	}
	closeStore(t, s)
	s, err = Open(dir, faultyOptions(fs, new(atomic.Int64)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	for k, want := range map[string]string{"a": "1", "b": "2"} {
		if v, ok := mustGet(t, NewView(s), k); !ok || v != want {
			t.Errorf("after reopening: %s = %q, %v; want %q", k, v, ok, want)
		}
	}
}

// TestWriteThatHitsAFullDiskWaits lets a write of Pebble's own, a flush,
// find the disk full: it waits, the store says why, and it completes once
// space returns, with one error logged however long it waited.
func TestWriteThatHitsAFullDiskWaits(t *testing.T) {
	s, fs, dir, errs := openFaulty(t)
	defer closeStore(t, s)
	commit(t, s, overlay("a", strings.Repeat("x", 1000)))

	fs.Fill(1 << 20)
	flushed := make(chan error, 1)
	go func() { flushed <- s.db.Flush() }()
	var full *DiskFullError
	testwait.For(t, "the flush to wait for space", func() bool {
		full = s.DiskFull()
		return full != nil
	})
	// The flush cannot finish while the disk is full.
	select {
	case err := <-flushed:
		t.Fatalf("the flush ended on a full disk: %v", err)
	default:
	}
	if full.Path != dir || full.Free != 1<<20 || full.Need != testMinFree {
		t.Errorf("DiskFull() = %+v", full)
	}
	t.Logf("waiting: %v", full)
	// Let it poll many times.
	for range 50 {
		fs.Fill(1 << 20)
		time.Sleep(time.Millisecond)
	}

	fs.Heal()
	if err := <-flushed; err != nil {
		t.Fatalf("the flush failed after space returned: %v", err)
	}
	if s.DiskFull() != nil || s.Err() != nil {
		t.Errorf("after space returned: DiskFull() = %v, Err() = %v", s.DiskFull(), s.Err())
	}
	if n := errs.Load(); n != 1 {
		t.Errorf("%d errors logged while a write waited for space; want 1", n)
	}
	commit(t, s, overlay("b", "2"))
}

// TestCloseDoesNotWaitForSpace closes a store while one of its writes (a
// compaction's) waits for space: the write gives up and Close returns.
// The compaction, when it returns, failed; when its retried write is its
// manifest's, Pebble cannot continue: the store fails, and the compaction
// stays parked (as does a manual compaction that Close overtook, which
// Pebble never answers).
func TestCloseDoesNotWaitForSpace(t *testing.T) {
	s, fs, _, _ := openFaulty(t)
	for _, k := range []string{"a", "b", "c"} {
		commit(t, s, overlay(k, "1"))
		if err := s.db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	fs.Fill(1 << 20)
	compacted := make(chan error, 1)
	go func() { compacted <- s.db.Compact(context.Background(), []byte("a"), []byte("z"), false) }()
	testwait.For(t, "the compaction to wait for space", func() bool { return s.DiskFull() != nil })
	_ = within(t, func() error { return s.Close() })
	select {
	case err := <-compacted:
		if err == nil {
			t.Error("the compaction succeeded on a full disk")
		}
	case <-s.Failed():
	case <-time.After(time.Second):
	}
}

// TestWriteThatCannotBeDoneFailsTheStore makes the write-ahead log's write
// fail while the file system reports free space (a disk that filled between
// the check and the write, or a quota): Pebble cannot continue, and the
// store fails with an error instead of crashing the process. What was
// committed before is intact after a restart.
func TestWriteThatCannotBeDoneFailsTheStore(t *testing.T) {
	s, fs, dir, _ := openFaulty(t)
	commit(t, s, overlay("a", "1"))

	fs.FailWrites(syscall.ENOSPC)
	_, err := s.Commit([]*Overlay{overlay("b", "2")}, nil)
	if err == nil {
		t.Fatal("Commit succeeded although writes fail")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{"cannot continue after a failed write", "no space left on device", "free space on that file system and restart"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	select {
	case <-s.Failed():
	default:
		t.Fatal("Failed() is open after the store failed")
	}
	if s.Err() == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Err() = %v; errors.Is(err, ENOSPC) = %v", s.Err(), errors.Is(err, syscall.ENOSPC))
	}
	fs.Heal()
	if _, err := s.Commit([]*Overlay{overlay("c", "3")}, nil); err == nil || !strings.Contains(err.Error(), "cannot continue") {
		t.Errorf("Commit after the failure = %v, want the failure", err)
	}
	if err := s.Close(); err == nil {
		t.Error("Close of a failed store returned nil")
	}

	s, err = Open(dir, faultyOptions(fs, new(atomic.Int64)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	if v, ok := mustGet(t, NewView(s), "a"); !ok || v != "1" {
		t.Errorf("after the failure and a restart: a = %q, %v", v, ok)
	}
}

// TestFatalInPebblesGoroutine checks that a Fatalf from a goroutine of
// Pebble's fails the store and stops that goroutine, and one from a call of
// the store's returns the failure as an error.
func TestFatalInPebblesGoroutine(t *testing.T) {
	d := newDisk("/data", vfs.NewMem(), 0, time.Millisecond, slog.New(slog.DiscardHandler))
	l := pebbleLogger{slog.New(slog.DiscardHandler), d}
	returned := make(chan struct{})
	go func() {
		l.Fatalf("MANIFEST sync failed: %v", syscall.EIO)
		close(returned)
	}()
	<-d.failed
	if err := d.err(); err == nil || !strings.Contains(err.Error(), "MANIFEST sync failed") {
		t.Errorf("err() = %v", err)
	}
	err := guardedCall(d, func() error {
		l.Fatalf("another failure")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "MANIFEST sync failed") {
		t.Errorf("guarded Fatalf = %v, want the first failure", err)
	}
	select {
	case <-returned:
		t.Error("Fatalf returned in Pebble's goroutine")
	default:
	}
}

// TestOpenOnAFullDiskFailsAtOnce starts on a full disk: Open fails with
// the space it needs instead of waiting, for a new directory and for one
// that holds a store.
func TestOpenOnAFullDiskFailsAtOnce(t *testing.T) {
	s, fs, dir, errs := openFaulty(t)
	commit(t, s, overlay("a", "1"))
	closeStore(t, s)
	fs.Fill(2 << 20)
	for _, d := range []string{dir, filepath.Join(filepath.Dir(dir), "new", "state")} {
		_, err := Open(d, faultyOptions(fs, errs))
		var full *DiskFullError
		if !errors.As(err, &full) || full.Op != "open the store" || full.Path != d || full.Free != 2<<20 || full.Need != testMinFree {
			t.Fatalf("Open of %s on a full disk = %v (%+v), want a DiskFullError", d, err, full)
		}
		t.Logf("error: %v", err)
	}
}

// TestOpenFailsAtOnceWhenAWriteHitsAFullDisk lets the writes of Open fail
// although the file system reports free space: Open fails at once with
// the error, and once space returns the store opens with its data.
func TestOpenFailsAtOnceWhenAWriteHitsAFullDisk(t *testing.T) {
	s, fs, dir, errs := openFaulty(t)
	commit(t, s, overlay("a", strings.Repeat("x", 3<<20))) // more than a memtable: Open flushes it
	closeStore(t, s)

	fs.FailWrites(syscall.ENOSPC)
	err := within(t, func() error { return openErr(dir, fs, errs) })
	var full *DiskFullError
	if !errors.As(err, &full) || full.Path != dir {
		t.Fatalf("Open with failing writes = %v, want a DiskFullError", err)
	}
	t.Logf("error: %v", err)

	fs.Heal()
	// The abandoned open finishes, and lets go of the directory.
	testwait.For(t, "the store to open once space returned", func() bool {
		s, err = Open(dir, faultyOptions(fs, errs))
		var inUse *InUseError
		if errors.As(err, &inUse) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	})
	defer closeStore(t, s)
	if v, ok := mustGet(t, NewView(s), "a"); !ok || len(v) != 3<<20 {
		t.Errorf("after space returned: a has %d bytes, %v", len(v), ok)
	}
}

// TestOpenFailsAtOnceWhenItsFlushFails makes the flush that Pebble's open
// waits for fail (here with an I/O error creating its table): Open returns
// the error instead of waiting forever, and opens once the fault is gone.
func TestOpenFailsAtOnceWhenItsFlushFails(t *testing.T) {
	s, _, dir, errs := openFaulty(t)
	commit(t, s, overlay("a", "1")) // in the write-ahead log: Open flushes it
	closeStore(t, s)

	var broken atomic.Bool
	broken.Store(true)
	fs := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if broken.Load() && op.Kind == errorfs.OpCreate && strings.HasSuffix(op.Path, ".sst") {
			return &os.PathError{Op: "open", Path: op.Path, Err: syscall.EIO}
		}
		return nil
	}))
	err := within(t, func() error { return openErr(dir, fs, errs) })
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), ".sst") || strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open whose flush fails = %v, want the I/O error", err)
	}
	t.Logf("error: %v", err)

	broken.Store(false)
	testwait.For(t, "the store to open once the fault is gone", func() bool {
		s, err = Open(dir, faultyOptions(fs, errs))
		var inUse *InUseError
		if errors.As(err, &inUse) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	})
	defer closeStore(t, s)
	if v, ok := mustGet(t, NewView(s), "a"); !ok || v != "1" {
		t.Errorf("after the fault: a = %q, %v", v, ok)
	}
}

// within runs f, failing the test if it has not returned after a bound
// far beyond what it needs: it guards against a hang.
func within(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("it hangs")
		return nil
	}
}

// TestOpenErrorsSayWhatHappened checks that a lock held by another open
// store and a directory the process may not write are reported as what they
// are, by Verify and by Open, and never as damage.
func TestOpenErrorsSayWhatHappened(t *testing.T) {
	s, fs, dir, errs := openFaulty(t)
	commit(t, s, overlay("a", "1"))

	for name, err := range map[string]error{"Verify": Verify(dir, fs), "Open": openErr(dir, fs, errs)} {
		var inUse *InUseError
		if !errors.As(err, &inUse) || strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "is in use") {
			t.Errorf("%s of a store that is open = %v, want an InUseError", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	closeStore(t, s)

	fs.FailWrites(syscall.EACCES)
	for name, err := range map[string]error{"Verify": Verify(dir, fs), "Open": openErr(dir, fs, errs)} {
		var perm *PermissionError
		if !errors.As(err, &perm) || strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s of a directory the process may not write = %v, want a PermissionError", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	fs.FailWrites(syscall.EROFS)
	if err := openErr(dir, fs, errs); !strings.Contains(err.Error(), "read-only file system") || !strings.Contains(err.Error(), "mounted read-write") {
		t.Errorf("Open on a read-only file system = %v", err)
	}
	fs.Heal()

	if os.Geteuid() != 0 {
		// The operating system's own refusal, which root is exempt from.
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o700)
		err := openErr(dir, vfs.Default, errs)
		var perm *PermissionError
		if !errors.As(err, &perm) || strings.Contains(err.Error(), "damaged") {
			t.Errorf("Open of a read-only directory = %v, want a PermissionError", err)
		}
		t.Logf("chmod: %v", err)
	}
}

func openErr(dir string, fs vfs.FS, errs *atomic.Int64) error {
	s, err := Open(dir, faultyOptions(fs, errs))
	if err == nil {
		_ = s.Close()
		return fmt.Errorf("opened")
	}
	return err
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1 << 10: "1.0 KiB", 3 << 19: "1.5 MiB", 5 << 30: "5.0 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
