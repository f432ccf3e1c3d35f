package state

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestWALNotPreallocated: the write-ahead log takes the disk it holds, not
// the memtable size Pebble would reserve for it.
func TestWALNotPreallocated(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{KeyGroups: 16, MemTableBytes: 64 << 20, CacheBytes: 256 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Pebble reserves the space when a write follows another in the log.
	for i := range 3 {
		if err := s.DeleteEgress(fmt.Sprintf("id-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(logs) == 0 {
		t.Fatal("no write-ahead log")
	}
	for _, name := range logs {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			t.Fatalf("%s: no block count", name)
		}
		if used := st.Blocks * 512; used > fi.Size()+1<<20 {
			t.Errorf("%s holds %d bytes and takes %d on disk", name, fi.Size(), used)
		}
	}
}
