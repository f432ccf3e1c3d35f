package state

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// InUseError reports that another process, or another open store of this
// process, holds the directory's lock.
type InUseError struct {
	Dir string
	Err error
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("state: %s is in use: another process, or another open store in this process, holds its lock (%v); "+
		"stop it first, or use another data directory", e.Dir, cause(e.Err))
}

func (e *InUseError) Unwrap() error { return e.Err }

// PermissionError reports that the process may not read or write the
// directory or one of its files.
type PermissionError struct {
	Dir string
	Err error
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("state: %s: %v: the process (user id %d) must be able to read and write the directory and its files, "+
		"on a file system mounted read-write", e.Dir, cause(e.Err), os.Geteuid())
}

// cause returns the file operation that failed in err, or the innermost
// error: the layers above it would repeat the directory.
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

func (e *PermissionError) Unwrap() error { return e.Err }

// classify tells a lock conflict and a permission problem from other
// errors of opening or verifying the store in dir; others are returned as
// they are.
func classify(err error, dir string) error {
	var inUse *InUseError
	var perm *PermissionError
	var full *DiskFullError
	switch {
	case err == nil || errors.As(err, &inUse) || errors.As(err, &perm) || errors.As(err, &full):
		return err
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		strings.Contains(err.Error(), "lock held by current process"):
		// Pebble's lock: fcntl's F_SETLK refuses a lock held elsewhere
		// with EAGAIN, and Pebble refuses a second lock of this process.
		return &InUseError{Dir: dir, Err: err}
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS):
		return &PermissionError{Dir: dir, Err: err}
	}
	return err
}
