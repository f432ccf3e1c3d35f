// Package faultfs is a file system for tests of storage faults. It wraps a
// Pebble vfs.FS and, on demand, behaves like a disk that has filled up
// (writes fail with ENOSPC and the free space it reports drops), like a
// disk that refuses writes while it reports free space (a quota, or a disk
// that filled between a check and a write), or like a read-only directory
// (writes fail with EACCES). Faults are injected with Pebble's vfs/errorfs;
// the package exists because a small real disk (a tmpfs) needs privileges
// that tests do not have.
package faultfs

import (
	"os"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// FS is a vfs.FS with switchable faults. Its methods are safe for
// concurrent use.
type FS struct {
	*errorfs.FS
	// errno is the error writes fail with, 0 for none.
	errno atomic.Uintptr
	// free is the available space GetDiskUsage reports, or -1 for what the
	// wrapped file system reports.
	free atomic.Int64
}

// New wraps base, which behaves normally until a fault is switched on.
func New(base vfs.FS) *FS {
	f := &FS{}
	f.free.Store(-1)
	f.FS = errorfs.Wrap(base, errorfs.InjectorFunc(f.inject))
	return f
}

// Fill makes the disk full: writes of data fail with ENOSPC, as they do on
// a real full disk (creating, renaming and removing files still works), and
// GetDiskUsage reports only free bytes available.
func (f *FS) Fill(free uint64) {
	f.free.Store(int64(free))
	f.errno.Store(uintptr(syscall.ENOSPC))
}

// ReportFree makes GetDiskUsage report only free bytes available while
// writes still succeed: a disk about to fill up.
func (f *FS) ReportFree(free uint64) { f.free.Store(int64(free)) }

// FailWrites makes writes fail with errno while GetDiskUsage keeps
// reporting what the wrapped file system has. With syscall.ENOSPC it is a
// disk that fills between a check of its free space and a write; with
// syscall.EACCES or syscall.EROFS, a directory the process may not write,
// which creating, renaming, linking and removing files also fail on.
func (f *FS) FailWrites(errno syscall.Errno) { f.errno.Store(uintptr(errno)) }

// Heal switches every fault off: space returns.
func (f *FS) Heal() {
	f.errno.Store(0)
	f.free.Store(-1)
}

// GetDiskUsage reports the wrapped file system's usage, with the available
// space of a full disk while one is simulated.
func (f *FS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	u, err := f.FS.GetDiskUsage(path)
	if free := f.free.Load(); free >= 0 {
		u.AvailBytes = uint64(free)
		err = nil
	}
	return u, err
}

func (f *FS) inject(op errorfs.Op) error {
	errno := syscall.Errno(f.errno.Load())
	if errno == 0 {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFilePreallocate:
	case errorfs.OpCreate, errorfs.OpLink, errorfs.OpRemove, errorfs.OpRemoveAll, errorfs.OpRename,
		errorfs.OpReuseForWrite, errorfs.OpMkdirAll, errorfs.OpLock:
		if errno == syscall.ENOSPC {
			return nil
		}
	default:
		return nil
	}
	return &os.PathError{Op: opName(op.Kind), Path: op.Path, Err: errno}
}

func opName(k errorfs.OpKind) string {
	switch k {
	case errorfs.OpCreate:
		return "open"
	case errorfs.OpLink:
		return "link"
	case errorfs.OpRemove, errorfs.OpRemoveAll:
		return "remove"
	case errorfs.OpRename:
		return "rename"
	case errorfs.OpMkdirAll:
		return "mkdir"
	case errorfs.OpLock:
		return "lock"
	case errorfs.OpFilePreallocate:
		return "fallocate"
	}
	return "write"
}
