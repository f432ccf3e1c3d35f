package state

// A full disk and failed writes.
//
// Pebble cannot continue after a failed write to its write-ahead log or its
// MANIFEST: it calls its logger's Fatalf, or panics, and its commit pipeline
// is unusable from then on. It retries a failed flush at once, forever, and
// Open waits for the flush of the recovered log: on a full disk that is a
// start that never ends and a log line per attempt. So the store:
//
//   - checks the free space before each of its own writes and refuses one
//     that would leave less than Options.MinFreeBytes with a
//     [DiskFullError]; nothing is written, and the caller retries once space
//     returns ([Store.DiskFull] says why in the meantime). Open refuses to
//     start below the reserve, so a restart on a full disk fails at once;
//   - makes a write of Pebble's that hits ENOSPC anyway (a flush, a
//     compaction, a write that raced another process for the last bytes)
//     wait until the reserve is free again, through vfs.OnDiskFull, rather
//     than fail: the disk fills, the store waits, and it carries on when
//     space returns. During Open such a write, or any error of Pebble's
//     background work, makes Open fail at once; Pebble's open goes on in the
//     background until it can finish, and closes the store again;
//   - turns what Pebble cannot continue from into [Store.Err], once. In a
//     goroutine of the caller's the failure is returned as an error; a
//     goroutine of Pebble's stops where it is (Pebble requires that Fatalf
//     not return), and the owner of the store is expected to exit;
//   - logs Pebble's repeated errors at most once per interval, with the
//     number of repeats.
//
// Not covered: Pebble panics with its locks in a bad state (a Go fatal
// error, which nothing can recover) when it cannot create a new
// write-ahead log; the reserve is there so that it never has to on a full
// disk, but a file system that refuses writes while it reports free space
// (a quota) can still bring it to that.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// DiskFullError reports that the file system of a store lacks the space a
// write needs.
type DiskFullError struct {
	Path  string // the store's directory
	Op    string // what needed the space, e.g. "commit a checkpoint"
	Free  uint64 // bytes available
	Need  uint64 // bytes that must be available: Write and the store's reserve
	Write uint64 // bytes of the write itself; 0 when not known
}

func (e *DiskFullError) Error() string {
	if e.Free >= e.Need {
		return fmt.Sprintf("disk full at %s: cannot %s: a write failed for lack of space although the file system reports %s free "+
			"(a quota, or space taken by another process)", e.Path, e.Op, FormatBytes(e.Free))
	}
	s := fmt.Sprintf("disk full at %s: cannot %s: %s free, %s needed", e.Path, e.Op, FormatBytes(e.Free), FormatBytes(e.Need))
	if e.Write > 0 {
		s += fmt.Sprintf(" (%s to write and %s kept free for the store's flushes and compactions)",
			FormatBytes(e.Write), FormatBytes(e.Need-e.Write))
	} else {
		s += " (kept free for the store's flushes and compactions)"
	}
	return s
}

// Is makes errors.Is(err, syscall.ENOSPC) hold for a DiskFullError.
func (e *DiskFullError) Is(target error) bool { return target == syscall.ENOSPC }

// FormatBytes prints a size in the largest binary unit that keeps it at
// least 1, as the store's messages do: "512 B", "1.5 MiB".
func FormatBytes(n uint64) string {
	const unit = 1 << 10
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// disk watches a store's file system: free space, writes waiting for it,
// and the failure Pebble cannot continue from.
type disk struct {
	dir     string
	fs      vfs.FS // without the wait on ENOSPC: asking for its usage never blocks
	minFree uint64
	poll    time.Duration
	log     *slog.Logger
	limit   limiter

	refused atomic.Pointer[DiskFullError] // the last write refused by a check, until one passes
	waiting atomic.Pointer[DiskFullError] // while a write waits for space

	opening    atomic.Bool
	fullOnOpen chan struct{} // closed when a write hits ENOSPC during Open
	fullOnce   sync.Once
	openFailed chan error  // a background error during Open
	abandoned  atomic.Bool // Open gave up on Pebble's open

	interrupt     chan struct{} // closed to stop waiting for space
	interruptOnce sync.Once

	failed   chan struct{} // closed on failure
	failOnce sync.Once
	failErr  error

	mu struct {
		sync.Mutex
		streak   int       // waits for space in a row
		lastWait time.Time // when the last one ended
	}
}

func newDisk(dir string, fs vfs.FS, minFree uint64, poll time.Duration, log *slog.Logger) *disk {
	return &disk{
		dir: dir, fs: fs, minFree: minFree, poll: poll, log: log, limit: limiter{every: 30 * time.Second},
		fullOnOpen: make(chan struct{}), openFailed: make(chan error, 1), interrupt: make(chan struct{}), failed: make(chan struct{}),
	}
}

// background handles an error of Pebble's background work, which Pebble
// retries at once. During Open it makes Open fail: Pebble's open waits for
// its flush, and a flush that cannot write (a read-only directory, an I/O
// error) would make it wait forever. An abandoned open's retries are slowed
// down until it finishes or the process exits.
func (d *disk) background(err error) {
	if d.opening.Load() {
		select {
		case d.openFailed <- err:
		default:
		}
	}
	if ok, repeats := d.limit.allow("background"); ok {
		d.log.Error("background error; Pebble retries", "err", err, "earlier_errors", repeats)
	}
	if d.abandoned.Load() {
		time.Sleep(time.Second)
	}
}

// free returns the space available in the store's file system, false when
// the file system does not say. A directory that does not exist yet is
// measured at its nearest existing parent.
func (d *disk) free() (uint64, bool) {
	for path := d.dir; ; {
		u, err := d.fs.GetDiskUsage(path)
		if err == nil {
			return u.AvailBytes, true
		}
		parent := d.fs.PathDir(path)
		if !errors.Is(err, os.ErrNotExist) || parent == path {
			return 0, false
		}
		path = parent
	}
}

// lacks returns why a write of the given size would leave less than the
// reserve free, nil when it would not or the file system does not say.
func (d *disk) lacks(op string, write uint64) *DiskFullError {
	free, ok := d.free()
	if !ok || free >= write+d.minFree {
		return nil
	}
	return &DiskFullError{Path: d.dir, Op: op, Free: free, Need: write + d.minFree, Write: write}
}

// check refuses a write of the given size that would leave less than the
// reserve free, and remembers it until a write passes.
func (d *disk) check(op string, write uint64) error {
	e := d.lacks(op, write)
	if e == nil {
		if prev := d.refused.Swap(nil); prev != nil {
			free, _ := d.free()
			d.log.Info("disk space is available again; writes resume", "free", FormatBytes(free))
		}
		return nil
	}
	if prev := d.refused.Swap(e); prev == nil {
		d.log.Error("disk full: the store refuses writes until space is freed", "err", e.Error())
	}
	return e
}

// full returns why the store cannot write, nil when it can.
func (d *disk) full() *DiskFullError {
	if e := d.waiting.Load(); e != nil {
		return e
	}
	return d.refused.Load()
}

// waitForSpace is Pebble's disk-full callback (vfs.OnDiskFull): it runs
// when a write fails with ENOSPC, while the store's other writes wait, and
// the write is retried once when it returns. It returns once the reserve is
// free again, or the store stops waiting. It always waits a little first,
// longer each time in a row, so that writes failing while the file system
// reports free space (a quota) do not spin.
func (d *disk) waitForSpace() {
	d.mu.Lock()
	if time.Since(d.mu.lastWait) > time.Minute {
		d.mu.streak = 0
	}
	delay := min(100*time.Millisecond<<min(d.mu.streak, 6), 5*time.Second)
	d.mu.streak++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.mu.lastWait = time.Now()
		d.mu.Unlock()
	}()

	free, _ := d.free()
	d.waiting.Store(&DiskFullError{Path: d.dir, Op: "write its files", Free: free, Need: d.minFree})
	defer d.waiting.Store(nil)
	if d.opening.Load() {
		d.fullOnce.Do(func() { close(d.fullOnOpen) })
	}
	if ok, repeats := d.limit.allow("wait"); ok {
		d.log.Error("disk full: the store's writes wait until space is freed", "err", d.waiting.Load().Error(), "earlier_waits", repeats)
	}
	for {
		select {
		case <-time.After(delay):
		case <-d.interrupt:
			return
		}
		free, ok := d.free()
		if !ok || free >= d.minFree {
			d.log.Info("disk space is available again; the store's writes resume", "free", FormatBytes(free))
			return
		}
		d.waiting.Store(&DiskFullError{Path: d.dir, Op: "write its files", Free: free, Need: d.minFree})
		delay = d.poll
	}
}

// stopWaiting makes writes waiting for space, and later ones, fail instead.
func (d *disk) stopWaiting() {
	d.interruptOnce.Do(func() { close(d.interrupt) })
}

// fail records the first failure the store cannot continue from.
func (d *disk) fail(cause error) error {
	d.failOnce.Do(func() {
		hint := "restart the process: it resumes from the last complete checkpoint"
		if errors.Is(cause, syscall.ENOSPC) || errors.Is(cause, syscall.EDQUOT) {
			free, _ := d.free()
			hint = fmt.Sprintf("%s free; free space on that file system and restart: the last complete checkpoint is intact", FormatBytes(free))
		}
		d.failErr = fmt.Errorf("the store at %s cannot continue after a failed write: %w; %s", d.dir, cause, hint)
		d.log.Error("the store failed", "err", d.failErr.Error())
		close(d.failed)
	})
	return d.failErr
}

// err returns the failure, nil while there is none.
func (d *disk) err() error {
	select {
	case <-d.failed:
		return d.failErr
	default:
		return nil
	}
}

// fatal is the panic with which Fatalf unwinds a guarded call.
type fatal struct{ err error }

// fatalError is what Pebble's Fatalf said, keeping the error it formatted
// as the cause, so that errors.Is finds ENOSPC in it.
type fatalError struct {
	msg   string
	cause error
}

func newFatalError(format string, args ...any) error {
	e := &fatalError{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			e.cause = err
			break
		}
	}
	return e
}

func (e *fatalError) Error() string { return e.msg }
func (e *fatalError) Unwrap() error { return e.cause }

// guardedCall runs f, a call into Pebble that may write, and turns a panic
// or Fatalf of Pebble's into the store's failure.
//
//go:noinline
func guardedCall(d *disk, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			var cause error
			switch r := r.(type) {
			case fatal:
				cause = r.err
			case error:
				cause = r
			default:
				cause = fmt.Errorf("%v", r)
			}
			err = d.fail(cause)
		}
	}()
	return f()
}

var guardedCallName = runtime.FuncForPC(reflect.ValueOf(guardedCall).Pointer()).Name()

// inGuardedCall reports whether the calling goroutine is inside guardedCall.
func inGuardedCall() bool {
	pcs := make([]uintptr, 512)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if f.Function == guardedCallName {
			return true
		}
		if !more {
			return false
		}
	}
}

// limiter lets a repeated log line through at most once per interval, and
// counts the ones it held back.
type limiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

// allow reports whether the line keyed key may be logged now, and how many
// were held back since the last one.
func (l *limiter) allow(key string) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := l.last[key]; ok && time.Since(t) < l.every {
		l.held[key]++
		return false, 0
	}
	n := l.held[key]
	l.last[key], l.held[key] = time.Now(), 0
	return true, n
}
