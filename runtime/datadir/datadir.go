// Package datadir keeps a data directory to one process at a time. The
// process that uses a directory holds an flock(2) lock on <dir>/LOCK and
// writes its pid into the file, so that a second process can name the one
// in its way. The operating system drops the lock when the holder exits,
// however it exits: a crashed process never leaves a lock that blocks.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/gofrs/flock"
)

// LockFile is the name of the lock file in a data directory.
const LockFile = "LOCK"

// Lock is a held lock on a data directory.
type Lock struct {
	f *flock.Flock
}

// InUseError reports that another process holds the directory's lock.
type InUseError struct {
	Dir string
	PID int // 0 when the holder has not written its pid (yet)
}

func (e *InUseError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data dir %s is in use by %s (it holds %s): stop that process first (twinflow stop), or use another data dir",
		e.Dir, holder, filepath.Join(e.Dir, LockFile))
}

// PermissionError reports that the process may not write the directory.
type PermissionError struct {
	Dir string
	Err error
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("data dir %s: %v: the process (user id %d) must be able to create and write files in it, "+
		"on a file system mounted read-write", e.Dir, e.Err, os.Geteuid())
}

func (e *PermissionError) Unwrap() error { return e.Err }

// Acquire creates dir if needed and locks it for this process, or fails
// with an [InUseError] naming the process that holds it, or a
// [PermissionError]. The lock is held until [Lock.Release] or the end of
// the process. A second Acquire of the same directory in this process
// fails too.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, wrap(dir, err)
	}
	path := filepath.Join(dir, LockFile)
	f := flock.New(path, flock.SetPermissions(0o644))
	ok, err := f.TryLock()
	if err != nil {
		return nil, wrap(dir, err)
	}
	if !ok {
		return nil, &InUseError{Dir: dir, PID: holder(path)}
	}
	// The lock belongs to the open file that flock holds; writing through
	// another descriptor leaves it in place.
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, errors.Join(wrap(dir, err), f.Close())
	}
	return &Lock{f: f}, nil
}

// Release lets go of the directory. The pid stays in the file; it means
// nothing without the lock.
func (l *Lock) Release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("data dir: releasing %s: %w", l.f.Path(), err)
	}
	return nil
}

// holder reads the pid a lock file holds, 0 when it holds none.
func holder(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

func wrap(dir string, err error) error {
	if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return &PermissionError{Dir: dir, Err: err}
	}
	return fmt.Errorf("data dir %s: %w", dir, err)
}
