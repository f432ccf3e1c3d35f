package state

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func kgKey(kg int, suffix string) []byte { return append(appendKG(nil, kg, kindValue), suffix...) }

// TestOverlayKeyGroup checks that an overlay's writes of one key group come
// out in key order with their deletes, and nothing of its neighbours or of
// the metadata.
func TestOverlayKeyGroup(t *testing.T) {
	o := NewOverlay()
	o.Set(kgKey(6, "a"), []byte("6a"))
	o.Set(kgKey(7, "b"), []byte("7b"))
	o.Delete(kgKey(7, "a"))
	o.Set(timerSeqKey(7), []byte("seq"))
	o.Set(kgKey(8, "a"), []byte("8a"))
	o.Set(kgKey(0xFF, "x"), []byte("255")) // 0x00FF: its second byte is 0xFF
	PutPosition(o, 7, Position{Seq: 1, Epoch: 1})
	o.Freeze()
	var got []string
	for k, v := range o.KeyGroup(7) {
		if v == nil {
			got = append(got, fmt.Sprintf("%x deleted", k))
			continue
		}
		got = append(got, fmt.Sprintf("%x=%s", k, v))
	}
	want := []string{
		fmt.Sprintf("%x deleted", kgKey(7, "a")),
		fmt.Sprintf("%x=7b", kgKey(7, "b")),
		fmt.Sprintf("%x=seq", timerSeqKey(7)),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("writes of key group 7:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	n := 0
	for range o.KeyGroup(0xFF) {
		n++
	}
	if n != 1 {
		t.Fatalf("key group 255 has %d writes, want 1", n)
	}
}

// TestLoadKeyGroup checks a whole load (clear) and an incremental one: the
// key group ends with exactly the loaded keys, its neighbours untouched,
// and its position recorded.
func TestLoadKeyGroup(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 16)
	defer closeStore(t, s)
	o := NewOverlay()
	o.Set(kgKey(2, "old"), []byte("x"))
	o.Set(kgKey(3, "old"), []byte("x"))
	o.Set(kgKey(4, "keep"), []byte("x"))
	commit(t, s, o)

	l := s.LoadKeyGroup(3, true)
	for i := range 3 {
		if err := l.Set(kgKey(3, fmt.Sprint(i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Set(kgKey(4, "intruder"), []byte("x")); err == nil {
		t.Fatal("a key of key group 4 was accepted into a load of key group 3")
	}
	if err := l.Finish(Position{Seq: 10, Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(t, s, 3); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Fatalf("key group 3 holds %v after a whole load", got)
	}
	for _, kg := range []int{2, 4} {
		if got := keysOf(t, s, kg); len(got) != 1 {
			t.Fatalf("key group %d holds %v: a load of key group 3 touched it", kg, got)
		}
	}
	if p, ok, err := s.Position(3); err != nil || !ok || p != (Position{10, 2}) {
		t.Fatalf("position %v %v %v, want {10 2}", p, ok, err)
	}

	l = s.LoadKeyGroup(3, false)
	if err := l.Delete(kgKey(3, "1")); err != nil {
		t.Fatal(err)
	}
	if err := l.Set(kgKey(3, "3"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := l.Finish(Position{Seq: 12, Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(t, s, 3); !slices.Equal(got, []string{"0", "2", "3"}) {
		t.Fatalf("key group 3 holds %v after applying changes", got)
	}
}

// TestLoadKeyGroupUnfinished checks that a load cut short by a crash after
// it wrote a batch leaves the key group without a position, so that it is
// loaded again in whole, and that a synced load survives a crash.
func TestLoadKeyGroupUnfinished(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 16)
	l := s.LoadKeyGroup(1, true)
	if err := l.Set(kgKey(1, "a"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := l.Finish(Position{Seq: 5, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	l = s.LoadKeyGroup(1, true)
	big := make([]byte, 1<<20)
	for i := range 5 { // more than one batch
		if err := l.Set(kgKey(1, fmt.Sprint(i)), big); err != nil {
			t.Fatal(err)
		}
	}
	l.Abort()
	if _, ok, err := s.Position(1); err != nil || ok {
		t.Fatalf("an unfinished load left a position (%v, %v)", ok, err)
	}
	closeStore(t, s)

	fs = vfs.NewCrashableMem()
	s = openMem(t, fs, 16)
	l = s.LoadKeyGroup(1, true)
	if err := l.Set(kgKey(1, "a"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := l.Finish(Position{Seq: 5, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	crashed := crash(fs)
	closeStore(t, s)
	s = openMem(t, crashed, 16)
	defer closeStore(t, s)
	if p, ok, err := s.Position(1); err != nil || !ok || p.Seq != 5 {
		t.Fatalf("after a crash the position is %v %v %v, want seq 5", p, ok, err)
	}
}

// TestScanKeyGroup checks that a scan sees one moment: a commit during it
// changes neither the keys seen nor the position returned.
func TestScanKeyGroup(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 16)
	defer closeStore(t, s)
	o := NewOverlay()
	for i := range 4 {
		o.Set(kgKey(5, fmt.Sprint(i)), []byte("v1"))
	}
	PutPosition(o, 5, Position{Seq: 3, Epoch: 1})
	commit(t, s, o)
	var seen []string
	p, ok, err := s.ScanKeyGroup(5, func(key, val []byte) error {
		if len(seen) == 0 {
			o := NewOverlay()
			o.Set(kgKey(5, "9"), []byte("v2"))
			o.Set(kgKey(5, "3"), []byte("v2"))
			PutPosition(o, 5, Position{Seq: 4, Epoch: 1})
			commit(t, s, o)
		}
		seen = append(seen, string(key[3:])+"="+string(val))
		return nil
	})
	if err != nil || !ok || p.Seq != 3 {
		t.Fatalf("scan: position %v %v %v, want seq 3", p, ok, err)
	}
	if want := []string{"0=v1", "1=v1", "2=v1", "3=v1"}; !slices.Equal(seen, want) {
		t.Fatalf("scan saw %v, want %v", seen, want)
	}
}

// keysOf returns the state value key suffixes of key group kg in the store.
func keysOf(t *testing.T, s *Store, kg int) []string {
	t.Helper()
	var out []string
	if _, _, err := s.ScanKeyGroup(kg, func(key, _ []byte) error {
		out = append(out, string(key[3:]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
