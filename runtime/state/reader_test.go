package state

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestReaderMatchesReadAddress writes, deletes and commits at random, and
// after each step reads every address three ways: ReadAddress, a long-lived
// Reader (closed when a layer leaves the view, as a shard does), and
// ReadValues. All must agree.
func TestReaderMatchesReadAddress(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	rng := rand.New(rand.NewPCG(7, 8))
	names := []string{"a", "b", "c"}
	addrs := make([]Address, 20)
	for i := range addrs {
		addrs[i] = Address{"t/x", fmt.Sprint("id", i)}
	}
	const now = 1_700_000_000_000
	cur := NewOverlay()
	var committing []*Overlay
	v := NewView(s, cur)
	r := v.NewReader()
	defer func() { _ = r.Close() }()
	relayer := func() {
		v = NewView(s, append([]*Overlay{cur}, committing...)...)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		r = v.NewReader()
	}
	for step := range 600 {
		a := addrs[rng.IntN(len(addrs))]
		kg := len(a.ID) % 4
		name := names[rng.IntN(len(names))]
		switch x := rng.IntN(20); {
		case x < 10:
			val := Value{Typename: "t/v", Data: fmt.Appendf(nil, "%d", step)}
			if rng.IntN(4) == 0 { // expired already
				val = Value{Typename: "t/v", Expiry: afterWrite, ExpireAfterMillis: 1}.Refreshed(now - 10)
			}
			PutValue(cur, kg, a, name, val)
		case x < 14:
			DeleteValue(cur, kg, a, name)
		case x < 16: // snapshot: the overlay is handed off
			committing = append([]*Overlay{cur}, committing...)
			cur = NewOverlay()
			relayer()
		case x < 18 && len(committing) > 0: // the oldest handed-off overlay commits
			old := committing[len(committing)-1]
			commit(t, s, old)
			committing = committing[:len(committing)-1]
			relayer()
		}
		for _, a := range addrs {
			kg := len(a.ID) % 4
			want, wantExp, err := ReadAddress(v, kg, a, now)
			if err != nil {
				t.Fatal(err)
			}
			got, gotExp, err := r.ReadAddress(kg, a, now)
			if err != nil {
				t.Fatal(err)
			}
			check := func(how string, got map[string]Value, gotExp [][]byte) {
				t.Helper()
				if !maps.EqualFunc(got, want, func(x, y Value) bool { return string(x.Data) == string(y.Data) }) ||
					!slices.EqualFunc(gotExp, wantExp, func(x, y []byte) bool { return string(x) == string(y) }) {
					t.Fatalf("step %d, %s: %s = %v, expired %q; ReadAddress = %v, expired %q", step, a, how, got, gotExp, want, wantExp)
				}
			}
			check("Reader.ReadAddress", got, gotExp)
			got, gotExp, err = r.ReadValues(kg, a, names, now)
			if err != nil {
				t.Fatal(err)
			}
			check("Reader.ReadValues", got, gotExp)
			got, gotExp, err = ReadValues(v, kg, a, names, now)
			if err != nil {
				t.Fatal(err)
			}
			check("ReadValues", got, gotExp)
		}
	}
}
