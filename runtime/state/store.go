// Package state is the runtime's storage layer: the Pebble layout of state
// values, delayed messages, mailbox snapshots and checkpoint metadata, and
// the write overlays that make checkpoints exactly-once.
//
// A shard never writes Pebble while it processes messages. It writes into
// an in-memory [Overlay]; at a checkpoint it freezes the overlay, hands it
// to the checkpoint coordinator and starts a new one. The coordinator
// commits the overlays of all shards and the checkpoint's metadata as one
// synced Pebble batch ([Store.Commit]). Pebble therefore always holds
// exactly the last complete checkpoint, and a crash loses only overlays.
// Until its handed-off overlay is committed, a shard reads through a [View]:
// current overlay, handed-off overlays, Pebble.
//
// The exceptions are metadata that is not part of any checkpoint and only
// ever grows or shrinks monotonically: registered state specs
// ([Store.SaveSpecs]) and the removal of published egress records
// ([Store.DeleteEgress]) are written and synced at once.
//
// Keys are laid out by key group (see keys.go); the typed helpers
// ([ReadAddress], [PutValue], [PutTimer], [DueTimers], ...) build on
// [View] and [Overlay].
package state

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

// Options configure a [Store]. The zero value is usable.
type Options struct {
	// KeyGroups is the number of key groups K of the deployment, a power of
	// two (see keygroup.Validate). A new data directory records it; opening
	// an existing one with another K fails. Zero means the K recorded in
	// the directory, or keygroup.DefaultK for a new one.
	KeyGroups int
	// CacheBytes is the size of Pebble's block cache. Pebble counts its
	// memtables (up to two full ones and one being flushed) against it, so
	// it must be at least 4×MemTableBytes; what remains caches blocks.
	// Default 256 MiB.
	CacheBytes int64
	// MemTableBytes is the size of one Pebble memtable. Default 32 MiB.
	MemTableBytes int64
	// FS is the file system; nil means the operating system's. Tests use
	// vfs.NewCrashableMem.
	FS vfs.FS
	// Logger receives Pebble's log messages; nil means slog.Default().
	Logger *slog.Logger
}

// Defaults for [Options].
const (
	DefaultCacheBytes    = 256 << 20
	DefaultMemTableBytes = 32 << 20
)

// FormatMajorVersion is the Pebble format a data directory is kept in. It is
// set explicitly (Pebble's default is an old format), to the newest that
// this Pebble release supports; opening a directory upgrades it.
const FormatMajorVersion = pebble.FormatValueSeparation

// Store is a Pebble data directory laid out for the runtime. Its methods are
// safe for concurrent use.
type Store struct {
	db  *pebble.DB
	dir string
	k   int

	// specsMu serializes the read-modify-write of SaveSpecs.
	specsMu sync.Mutex
}

// KeyGroupsMismatchError is returned by [Open] when the data directory was
// created with another number of key groups than requested.
type KeyGroupsMismatchError struct {
	Dir       string
	Stored    int
	Requested int
}

func (e *KeyGroupsMismatchError) Error() string {
	return fmt.Sprintf("state: open %s: the data directory has %d key groups but %d were requested; "+
		"the number of key groups cannot change: configure %d, or use a new data directory",
		e.Dir, e.Stored, e.Requested, e.Stored)
}

// Open opens or creates the data directory dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.KeyGroups != 0 {
		if err := keygroup.Validate(opts.KeyGroups); err != nil {
			return nil, fmt.Errorf("state: open %s: %w", dir, err)
		}
	}
	if opts.CacheBytes < 0 || opts.MemTableBytes < 0 {
		return nil, fmt.Errorf("state: open %s: negative cache (%d) or memtable (%d) size", dir, opts.CacheBytes, opts.MemTableBytes)
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.MemTableBytes == 0 {
		opts.MemTableBytes = DefaultMemTableBytes
	}
	if opts.CacheBytes < 4*opts.MemTableBytes {
		return nil, fmt.Errorf("state: open %s: a cache of %d bytes is too small for memtables of %d bytes: "+
			"Pebble counts memtables against the cache, so it must be at least 4 times the memtable size", dir, opts.CacheBytes, opts.MemTableBytes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	cache := pebble.NewCache(opts.CacheBytes)
	defer cache.Unref()
	logger := opts.Logger.With("component", "pebble", "dir", dir)
	po := &pebble.Options{
		Cache:              cache,
		MemTableSize:       uint64(opts.MemTableBytes),
		FS:                 opts.FS,
		FormatMajorVersion: FormatMajorVersion,
		Logger:             pebbleLogger{logger},
		EventListener: &pebble.EventListener{
			DiskSlow: func(info pebble.DiskSlowInfo) {
				logger.Warn("slow disk", "op", info.OpType.String(), "path", info.Path, "duration", info.Duration)
			},
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				logger.Warn("write stall", "reason", info.Reason)
			},
			WriteStallEnd: func() { logger.Info("write stall ended") },
		},
	}
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", dir, err)
	}
	s := &Store{db: db, dir: dir}
	if err := s.init(opts.KeyGroups); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return s, nil
}

// init checks or records the layout version and the number of key groups.
func (s *Store) init(k int) error {
	v := NewView(s)
	version, ok, err := getUvarint(v, metaKey(metaVersion))
	if err != nil {
		return fmt.Errorf("state: open %s: %w", s.dir, err)
	}
	if !ok {
		empty := true
		if err := v.Scan(nil, nil, func(key, _ []byte) error {
			empty = false
			return errStop
		}); err != nil && !errors.Is(err, errStop) {
			return fmt.Errorf("state: open %s: %w", s.dir, err)
		}
		if !empty {
			return fmt.Errorf("state: open %s: the directory holds Pebble data without a twinflow layout version; it is not a twinflow data directory", s.dir)
		}
		if k == 0 {
			k = keygroup.DefaultK
		}
		b := s.db.NewBatch()
		defer b.Close()
		_ = b.Set(metaKey(metaVersion), uvarint(layoutVersion), nil)
		_ = b.Set(metaKey(metaKeyGroups), uvarint(uint64(k)), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("state: open %s: record layout: %w", s.dir, err)
		}
		s.k = k
		return nil
	}
	if version != layoutVersion && version != layoutVersionNoIndex {
		return fmt.Errorf("state: open %s: storage layout version %d; this build reads versions %d and %d only", s.dir, version, layoutVersionNoIndex, layoutVersion)
	}
	stored, ok, err := getUvarint(v, metaKey(metaKeyGroups))
	if err != nil || !ok || keygroup.Validate(int(stored)) != nil {
		return fmt.Errorf("state: open %s: number of key groups missing or corrupt (%d, %v)", s.dir, stored, err)
	}
	if k != 0 && int(stored) != k {
		return &KeyGroupsMismatchError{Dir: s.dir, Stored: int(stored), Requested: k}
	}
	s.k = int(stored)
	if version == layoutVersionNoIndex {
		return s.upgradeIndex()
	}
	return nil
}

// upgradeIndex upgrades a data directory of layout version 1: it builds the
// address index and records version 2, in one synced batch.
func (s *Store) upgradeIndex() error {
	o := NewOverlay()
	if _, err := buildIndex(NewView(s), s.k, o); err != nil {
		return fmt.Errorf("state: open %s: %w", s.dir, err)
	}
	meta := NewOverlay()
	meta.Set(metaKey(metaVersion), uvarint(layoutVersion))
	if _, err := s.Commit([]*Overlay{o}, meta); err != nil {
		return fmt.Errorf("state: open %s: upgrading to layout version %d: %w", s.dir, layoutVersion, err)
	}
	return nil
}

var errStop = errors.New("stop")

// KeyGroups returns the number of key groups K of the data directory.
func (s *Store) KeyGroups() int { return s.k }

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Close closes the store. Views of it must not be used afterwards.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("state: close %s: %w", s.dir, err)
	}
	return nil
}

// Commit writes the overlays and then meta as one atomic Pebble batch and
// syncs it. The overlays are applied in slice order, so a key written by
// several of them ends with the value of the last; pass them oldest first.
// meta may be nil. It returns the size of the batch in bytes.
//
// The overlays must not be written to during the call; freeze them first.
func (s *Store) Commit(overlays []*Overlay, meta *Overlay) (bytes int64, err error) {
	all := make([]*Overlay, 0, len(overlays)+1)
	size := 0
	for _, o := range overlays {
		if o != nil {
			all = append(all, o)
			size += int(o.Bytes())
		}
	}
	if meta != nil {
		all = append(all, meta)
		size += int(meta.Bytes())
	}
	b := s.db.NewBatchWithSize(size)
	defer b.Close()
	for _, o := range all {
		o.each(func(k string, v []byte) {
			key := unsafeBytes(k)
			if v == nil {
				_ = b.Delete(key, nil)
			} else {
				_ = b.Set(key, v, nil)
			}
		})
	}
	n := int64(b.Len())
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("state: commit %d bytes to %s: %w", n, s.dir, err)
	}
	return n, nil
}

// Savepoint writes a self-contained copy of the store's committed data into
// dir, which must not exist, using hard links where the file system allows.
// The copy is itself a data directory that [Open] accepts.
func (s *Store) Savepoint(dir string) error {
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("state: savepoint of %s into %s: %w", s.dir, dir, err)
	}
	return nil
}

// Metrics returns Pebble's metrics, for export.
func (s *Store) Metrics() *pebble.Metrics { return s.db.Metrics() }

// pebbleLogger adapts slog to Pebble's logger. Pebble's informational
// messages (WAL recovery and the like) go to the debug level.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf logs and panics: Pebble calls it on corruption it cannot continue
// from, and expects it not to return.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "fatal", true)
	panic("pebble: " + msg)
}
