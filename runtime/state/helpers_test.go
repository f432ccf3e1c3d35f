package state

import (
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const testDir = "/data"

// openMem opens a store in a crashable in-memory file system.
func openMem(t testing.TB, fs *vfs.MemFS, k int) *Store {
	t.Helper()
	s, err := Open(testDir, Options{KeyGroups: k, FS: fs, CacheBytes: 16 << 20, MemTableBytes: 2 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func closeStore(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// crash returns a copy of fs holding only what was synced, as after a power
// loss.
func crash(fs *vfs.MemFS) *vfs.MemFS {
	return fs.CrashClone(vfs.CrashCloneCfg{})
}

func mustGet(t testing.TB, v View, key string) (string, bool) {
	t.Helper()
	val, ok, err := v.Get([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return string(val), ok
}

func scanAll(t testing.TB, v View, lo, hi []byte) []string {
	t.Helper()
	var out []string
	if err := v.Scan(lo, hi, func(k, val []byte) error {
		out = append(out, string(k)+"="+string(val))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func commit(t testing.TB, s *Store, overlays ...*Overlay) {
	t.Helper()
	for _, o := range overlays {
		o.Freeze()
	}
	if _, err := s.Commit(overlays, nil); err != nil {
		t.Fatal(err)
	}
}
