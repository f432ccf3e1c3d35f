package state

import "github.com/cockroachdb/pebble/v2/vfs"

// noPreallocFS keeps Pebble from reserving disk ahead of its write-ahead
// logs. Pebble reserves 110% of the memtable size (fallocate) for every WAL
// it writes, and keeps MemTableStopWritesThreshold+1 used ones to recycle:
// with the default memory budget that is five files of 57 MB on disk for a
// few hundred KB of log. Reserving space saves file-size updates when a WAL
// is synced often; the store syncs it once per checkpoint, so the
// reservation buys nothing measurable here, while the disk it takes is
// real. The logs still grow to what they hold, and are still recycled.
type noPreallocFS struct{ vfs.FS }

func (fs noPreallocFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return wrap(fs.FS.Create(name, category))
}

func (fs noPreallocFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return wrap(fs.FS.ReuseForWrite(oldname, newname, category))
}

// Unwrap lets Pebble see the file system underneath (for disk-full
// detection and the like).
func (fs noPreallocFS) Unwrap() vfs.FS { return fs.FS }

func wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return noPreallocFile{f}, nil
}

type noPreallocFile struct{ vfs.File }

func (noPreallocFile) Preallocate(offset, length int64) error { return nil }
