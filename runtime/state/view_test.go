package state

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestViewLayers(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)

	base := NewOverlay()
	base.Set([]byte("a"), []byte("store"))
	base.Set([]byte("b"), []byte("store"))
	base.Set([]byte("c"), []byte("store"))
	base.Set([]byte("e"), []byte("store"))
	commit(t, s, base)

	old, cur := NewOverlay(), NewOverlay()
	old.Set([]byte("b"), []byte("old"))
	old.Delete([]byte("c"))
	old.Set([]byte("d"), []byte("old"))
	old.Set([]byte("f"), []byte("old"))
	cur.Set([]byte("c"), []byte("cur")) // set again after an older delete
	cur.Set([]byte("d"), []byte("cur"))
	cur.Delete([]byte("e"))
	cur.Delete([]byte("f"))
	cur.Delete([]byte("zz")) // delete of a key that exists nowhere
	v := NewView(s, cur, old)

	for key, want := range map[string]string{"a": "store", "b": "old", "c": "cur", "d": "cur", "e": "", "f": "", "zz": "", "q": ""} {
		got, ok := mustGet(t, v, key)
		if got != want || ok != (want != "") {
			t.Errorf("Get(%q) = %q, %v, want %q", key, got, ok, want)
		}
	}
	want := []string{"a=store", "b=old", "c=cur", "d=cur"}
	// The committed data lies under the metadata keys, so bound the scan.
	if got := scanAll(t, v, []byte("a"), []byte("z")); !slices.Equal(got, want) {
		t.Errorf("Scan = %v, want %v", got, want)
	}
	if got := scanAll(t, v, []byte("b"), []byte("d")); !slices.Equal(got, want[1:3]) {
		t.Errorf("Scan [b,d) = %v, want %v", got, want[1:3])
	}
	// Without the store.
	if got := scanAll(t, NewView(nil, cur, old), nil, nil); !slices.Equal(got, []string{"b=old", "c=cur", "d=cur"}) {
		t.Errorf("Scan of overlays = %v", got)
	}
	// After committing old, the view without it reads the same.
	old.Freeze()
	if _, err := s.Commit([]*Overlay{old}, nil); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, NewView(s, cur), []byte("a"), []byte("z")); !slices.Equal(got, want) {
		t.Errorf("Scan after commit = %v, want %v", got, want)
	}
}

func TestScanStopsOnError(t *testing.T) {
	o := NewOverlay()
	for i := range 10 {
		o.Set(fmt.Appendf(nil, "k%d", i), nil)
	}
	n := 0
	stop := fmt.Errorf("enough")
	err := NewView(nil, o).Scan(nil, nil, func(_, _ []byte) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Errorf("Scan = %v after %d keys, want %v after 3", err, n, stop)
	}
}

func TestOverlayAccounting(t *testing.T) {
	o := NewOverlay()
	o.Set([]byte("key"), make([]byte, 100))
	if got, want := o.Bytes(), int64(3+100+entryOverhead); got != want {
		t.Errorf("Bytes = %d, want %d", got, want)
	}
	o.Set([]byte("key"), make([]byte, 10))
	o.Delete([]byte("other"))
	if got, want := o.Bytes(), int64(3+10+5+2*entryOverhead); got != want || o.Len() != 2 {
		t.Errorf("Bytes, Len = %d, %d, want %d, 2", got, o.Len(), want)
	}
	// Set copies its arguments.
	k, val := []byte("k2"), []byte("v")
	o.Set(k, val)
	k[0], val[0] = 'x', 'x'
	if got, ok := mustGet(t, NewView(nil, o), "k2"); !ok || got != "v" {
		t.Errorf("Get after caller's write = %q, %v", got, ok)
	}
	o.Freeze()
	defer func() {
		if recover() == nil {
			t.Error("Set on a frozen overlay did not panic")
		}
	}()
	o.Set([]byte("k3"), nil)
}

// TestViewModel checks Get and Scan of random layers against a map.
func TestViewModel(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)

	model := map[string]string{}
	key := func() string { return fmt.Sprintf("k%03d", rng.IntN(200)) }
	write := func(o *Overlay, n int) {
		for range n {
			k := key()
			if rng.IntN(3) == 0 {
				o.Delete([]byte(k))
				delete(model, k)
			} else {
				v := fmt.Sprint(rng.Int())
				o.Set([]byte(k), []byte(v))
				model[k] = v
			}
		}
	}
	var layers []*Overlay // newest first
	for round := range 30 {
		o := NewOverlay()
		write(o, rng.IntN(100))
		layers = append([]*Overlay{o}, layers...)
		if len(layers) > 3 || rng.IntN(4) == 0 {
			// Commit the oldest.
			oldest := layers[len(layers)-1]
			layers = layers[:len(layers)-1]
			commit(t, s, oldest)
		}
		v := NewView(s, layers...)
		for k := range 200 {
			k := fmt.Sprintf("k%03d", k)
			got, ok := mustGet(t, v, k)
			want, wantOK := model[k]
			if got != want || ok != wantOK {
				t.Fatalf("round %d: Get(%s) = %q, %v, want %q, %v", round, k, got, ok, want, wantOK)
			}
		}
		lo, hi := key(), key()
		if hi < lo {
			lo, hi = hi, lo
		}
		var want []string
		for k, v := range model {
			if k >= lo && k < hi {
				want = append(want, k+"="+v)
			}
		}
		sort.Strings(want)
		if got := scanAll(t, v, []byte(lo), []byte(hi)); !slices.Equal(got, want) {
			t.Fatalf("round %d: Scan [%s,%s) = %v, want %v", round, lo, hi, got, want)
		}
	}
}
