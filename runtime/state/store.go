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
	"time"

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
	// vfs.NewCrashableMem, and faultfs for a full or read-only disk.
	FS vfs.FS
	// MinFreeBytes is the space the store keeps free on its file system:
	// a write that would leave less is refused with a [DiskFullError], and
	// Open refuses to start with less. Pebble needs it to flush a memtable,
	// start a new write-ahead log (preallocated to a memtable's size) and
	// rewrite its MANIFEST. Default: 2×MemTableBytes + 16 MiB.
	MinFreeBytes int64
	// DiskPollInterval is how often a write waiting for disk space checks
	// whether space returned. Default 1s.
	DiskPollInterval time.Duration
	// Logger receives Pebble's log messages; nil means slog.Default().
	Logger *slog.Logger
}

// Defaults for [Options].
const (
	DefaultCacheBytes       = 256 << 20
	DefaultMemTableBytes    = 32 << 20
	DefaultDiskPollInterval = time.Second
)

// FormatMajorVersion is the Pebble format a data directory is kept in. It is
// set explicitly (Pebble's default is an old format), to the newest that
// this Pebble release supports; opening a directory upgrades it.
const FormatMajorVersion = pebble.FormatValueSeparation

// Store is a Pebble data directory laid out for the runtime. Its methods are
// safe for concurrent use.
type Store struct {
	db   *pebble.DB
	dir  string
	k    int
	disk *disk

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

// Open opens or creates the data directory dir. It fails at once with a
// [DiskFullError] when the file system has less than Options.MinFreeBytes
// free, and when a write hits a full disk while it opens; in the latter case
// Pebble's own open goes on in the background until space returns, and
// closes the directory again.
func Open(dir string, opts Options) (*Store, error) {
	if opts.KeyGroups != 0 {
		if err := keygroup.Validate(opts.KeyGroups); err != nil {
			return nil, fmt.Errorf("state: open %s: %w", dir, err)
		}
	}
	if opts.CacheBytes < 0 || opts.MemTableBytes < 0 || opts.MinFreeBytes < 0 {
		return nil, fmt.Errorf("state: open %s: negative cache (%d), memtable (%d) or free space (%d) size", dir, opts.CacheBytes, opts.MemTableBytes, opts.MinFreeBytes)
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
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = 2*opts.MemTableBytes + 16<<20
	}
	if opts.DiskPollInterval <= 0 {
		opts.DiskPollInterval = DefaultDiskPollInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	logger := opts.Logger.With("component", "pebble", "dir", dir)
	d := newDisk(dir, opts.FS, uint64(opts.MinFreeBytes), opts.DiskPollInterval, logger)
	if full := d.lacks("open the store", 0); full != nil {
		return nil, full
	}
	cache := pebble.NewCache(opts.CacheBytes)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:              cache,
		MemTableSize:       uint64(opts.MemTableBytes),
		FS:                 vfs.OnDiskFull(noPreallocFS{opts.FS}, d.waitForSpace),
		FormatMajorVersion: FormatMajorVersion,
		Logger:             pebbleLogger{logger, d},
		EventListener: &pebble.EventListener{
			BackgroundError: d.background,
			DiskSlow: func(info pebble.DiskSlowInfo) {
				if ok, repeats := d.limit.allow("slow"); ok {
					logger.Warn("slow disk", "op", info.OpType.String(), "path", info.Path, "duration", info.Duration, "earlier_warnings", repeats)
				}
			},
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				logger.Warn("write stall", "reason", info.Reason)
			},
			WriteStallEnd: func() { logger.Info("write stall ended") },
		},
	}
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := openPebble(dir, po, d)
	if err != nil {
		var full *DiskFullError
		if errors.As(err, &full) {
			return nil, err
		}
		return nil, classify(fmt.Errorf("state: open %s: %w", dir, err), dir)
	}
	s := &Store{db: db, dir: dir, disk: d}
	if err := s.init(opts.KeyGroups); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// openPebble opens Pebble, and gives up as soon as a write of the open
// hits a full disk or another error in the background: Pebble would wait
// for its flush until the write succeeds. The abandoned open then finishes
// in the background if it can, and closes the store.
func openPebble(dir string, po *pebble.Options, d *disk) (*pebble.DB, error) {
	type result struct {
		db  *pebble.DB
		err error
	}
	done := make(chan result, 1)
	d.opening.Store(true)
	go func() {
		var db *pebble.DB
		err := guardedCall(d, func() (err error) {
			db, err = pebble.Open(dir, po)
			return err
		})
		d.opening.Store(false)
		done <- result{db, err}
	}()
	abandon := func() {
		d.abandoned.Store(true)
		go func() {
			if r := <-done; r.db != nil {
				_ = guardedCall(d, r.db.Close)
			}
		}()
	}
	select {
	case r := <-done:
		return r.db, r.err
	case <-d.fullOnOpen:
		abandon()
		return nil, d.full()
	case err := <-d.openFailed:
		abandon()
		return nil, err
	}
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
		if err := s.write("record the layout", b); err != nil {
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

// Close closes the store. Views of it must not be used afterwards. Writes
// waiting for disk space give up. A store that failed ([Store.Err]), before
// or while it closes, is closed as far as Pebble allows within a few
// seconds: a background write that fails as Close stops its wait for
// space leaves Pebble unable to finish closing.
func (s *Store) Close() error {
	s.disk.stopWaiting()
	done := make(chan error, 1)
	go func() { done <- guardedCall(s.disk, s.db.Close) }()
	select {
	case err := <-done:
		if ferr := s.disk.err(); ferr != nil {
			return ferr
		}
		if err != nil {
			return fmt.Errorf("state: close %s: %w", s.dir, err)
		}
		return nil
	case <-s.disk.failed:
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.disk.log.Error("the failed store did not close; it stays open until the process exits")
	}
	return s.disk.err()
}

// StopWaiting makes writes that wait for disk space, and later ones that
// hit a full disk, fail instead; the store fails if one does. Close does
// it first; a caller that must stop goroutines writing to the store before
// it closes calls it before waiting for them.
func (s *Store) StopWaiting() { s.disk.stopWaiting() }

// DiskFull returns why the store cannot write now, nil when it can: a
// write refused because it would leave less than the reserve free, until a
// later one passes the check, or a write waiting for space.
func (s *Store) DiskFull() *DiskFullError { return s.disk.full() }

// Err returns the failure the store cannot continue from (see disk.go),
// nil while there is none. A failed store refuses every write; reads may
// still work. Its owner should close it and exit.
func (s *Store) Err() error { return s.disk.err() }

// Failed is closed when the store fails; Err then says why.
func (s *Store) Failed() <-chan struct{} { return s.disk.failed }

// write commits b, synced, after checking the free space for it, and turns
// what Pebble cannot continue from into the store's failure.
func (s *Store) write(op string, b *pebble.Batch) error {
	if err := s.disk.err(); err != nil {
		return err
	}
	if err := s.disk.check(op, uint64(b.Len())); err != nil {
		return err
	}
	return guardedCall(s.disk, func() error { return b.Commit(pebble.Sync) })
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
	if err := s.write("commit a checkpoint", b); err != nil {
		return 0, fmt.Errorf("state: commit %d bytes: %w", n, err)
	}
	return n, nil
}

// Savepoint writes a self-contained copy of the store's committed data into
// dir, which must not exist, using hard links where the file system allows.
// The copy is itself a data directory that [Open] accepts.
func (s *Store) Savepoint(dir string) error {
	if err := s.disk.err(); err != nil {
		return err
	}
	if err := s.disk.check("write a savepoint", 0); err != nil {
		return err
	}
	if err := guardedCall(s.disk, func() error { return s.db.Checkpoint(dir, pebble.WithFlushedWAL()) }); err != nil {
		return fmt.Errorf("state: savepoint of %s into %s: %w", s.dir, dir, err)
	}
	return nil
}

// Metrics returns Pebble's metrics, for export.
func (s *Store) Metrics() *pebble.Metrics { return s.db.Metrics() }

// pebbleLogger adapts slog to Pebble's logger. Pebble's informational
// messages (WAL recovery and the like) go to the debug level; its errors
// are logged at most once per interval for each format.
type pebbleLogger struct {
	l *slog.Logger
	d *disk
}

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if ok, repeats := p.d.limit.allow(format); ok {
		p.l.Error(fmt.Sprintf(format, args...), "earlier_repeats", repeats)
	}
}

// Fatalf is what Pebble calls when it cannot continue, expecting it not to
// return. The store fails; in a call of the store's the failure unwinds to
// the caller as an error, and a goroutine of Pebble's stops here for good,
// so that the process exits cleanly instead of crashing.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	err := newFatalError(format, args...)
	p.d.fail(err)
	if inGuardedCall() {
		panic(fatal{err})
	}
	select {}
}
