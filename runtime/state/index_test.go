package state

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/twinflow/twinflow/runtime/keygroup"
)

// indexed lists the index entries of a function type in every key group,
// sorted, read straight from the index keys.
func indexed(t *testing.T, v View, k int, functionType string) []string {
	t.Helper()
	var out []string
	for kg := 0; kg < k; kg++ {
		lo := appendIndexPrefix(nil, kg, functionType)
		n := len(lo)
		if err := v.Scan(lo, prefixEnd(lo), func(key, _ []byte) error {
			out = append(out, string(key[n:]))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(out)
	return out
}

func count(t *testing.T, v View, k int, functionType string) int64 {
	t.Helper()
	n, err := CountAddresses(v, keygroup.Range{Lo: 0, Hi: k}, functionType)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIndexFollowsState(t *testing.T) {
	const k = 8
	s := openMem(t, vfs.NewCrashableMem(), k)
	defer closeStore(t, s)
	l := NewLayers(s, 10*time.Minute, nil)
	defer l.Close()
	srv := Address{"dc/server", "s1"}
	kg := keygroup.Of(srv.ID, k)

	l.PutValue(kg, srv, "a", Value{Typename: "t", Data: []byte("1")})
	l.PutValue(kg, srv, "b", Value{Typename: "t", Data: []byte("2")})
	for range 2 { // a second time changes nothing
		if err := l.IndexAddress(kg, srv); err != nil {
			t.Fatal(err)
		}
	}
	if got := indexed(t, l.View(), k, srv.Type); !slices.Equal(got, []string{"s1"}) || count(t, l.View(), k, srv.Type) != 1 {
		t.Fatalf("index after the first write: %v, count %d; want [s1], 1", got, count(t, l.View(), k, srv.Type))
	}
	// Committed, then one value deleted: the address keeps its entry.
	commit(t, s, l.HandOff())
	l.DeleteValue(kg, srv, "a")
	if err := l.UnindexIfEmpty(kg, srv); err != nil {
		t.Fatal(err)
	}
	if got := indexed(t, l.View(), k, srv.Type); len(got) != 1 || l.Unindexed() != 0 {
		t.Fatalf("index with one value left: %v (unindexed %d)", got, l.Unindexed())
	}
	// The last one deleted: the entry and the count go.
	l.DeleteValue(kg, srv, "b")
	if err := l.UnindexIfEmpty(kg, srv); err != nil {
		t.Fatal(err)
	}
	if got := indexed(t, l.View(), k, srv.Type); len(got) != 0 || count(t, l.View(), k, srv.Type) != 0 || l.Unindexed() != 1 {
		t.Fatalf("index without state: %v, count %d, unindexed %d; want nothing, 0, 1", got, count(t, l.View(), k, srv.Type), l.Unindexed())
	}
	if _, ok := mustGet(t, l.View(), string(indexCountKey(kg, srv.Type))); ok {
		t.Error("a count of zero is kept; want it deleted")
	}
}

func TestIndexOfExpiredState(t *testing.T) {
	const k = 4
	const t0 = 1_700_000_000_000
	s := openMem(t, vfs.NewCrashableMem(), k)
	defer closeStore(t, s)
	l := NewLayers(s, 10*time.Minute, nil)
	defer l.Close()
	put := func(id string, ms int64, other bool) Address {
		a := Address{"dc/server", id}
		kg := keygroup.Of(id, k)
		l.PutValue(kg, a, "w", Value{Typename: "t", Expiry: afterWrite, ExpireAfterMillis: ms}.Refreshed(t0))
		if other {
			l.PutValue(kg, a, "forever", Value{Typename: "t"})
		}
		if err := l.IndexAddress(kg, a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	read := put("read", 10, false)
	swept := put("swept", 10, false)
	kept := put("kept", 10, true)
	put("young", 1_000_000, false)
	commit(t, s, l.HandOff())

	// A read that finds the only value expired deletes it and the entry.
	if vals, err := l.ReadValues(keygroup.Of(read.ID, k), read, nil, t0+20); err != nil || len(vals) != 0 {
		t.Fatalf("ReadValues = %v, %v", vals, err)
	}
	if got := indexed(t, l.View(), k, read.Type); slices.Contains(got, "read") {
		t.Errorf("index after the read found every value expired: %v", got)
	}
	// A sweep deletes the rest that expired, and the entries of the
	// addresses it left without state.
	var cursor []byte
	for first := true; first || cursor != nil; first = false {
		var err error
		if cursor, err = l.SweepExpired(keygroup.Range{Lo: 0, Hi: k}, cursor, t0+20, 1); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := indexed(t, l.View(), k, swept.Type), []string{"kept", "young"}; !slices.Equal(got, want) {
		t.Errorf("index after the sweep: %v, want %v", got, want)
	}
	if n := count(t, l.View(), k, kept.Type); n != 2 || l.Unindexed() != 2 {
		t.Errorf("count %d and unindexed %d after the sweep; want 2 and 2", n, l.Unindexed())
	}
}

// TestListAddresses pages through the index with random ids, prefixes and
// page sizes, and compares each page with the sorted list.
func TestListAddresses(t *testing.T) {
	const k = 16
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	s := openMem(t, vfs.NewCrashableMem(), k)
	defer closeStore(t, s)
	l := NewLayers(s, 10*time.Minute, nil)
	defer l.Close()
	var ids []string
	add := func(typ, id string) {
		a := Address{typ, id}
		kg := keygroup.Of(id, k)
		l.PutValue(kg, a, "v", Value{Typename: "t"})
		if err := l.IndexAddress(kg, a); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3000 {
		id := fmt.Sprintf("%c-%d", 'a'+rng.IntN(4), rng.IntN(100000))
		if i%3 == 0 {
			id += "\xff" // bytes beyond ASCII sort last
		}
		add("dc/server", id)
		ids = append(ids, id)
		add("dc/serve", id+"x") // a type whose name is a prefix of the other's
		if i == 1500 {
			commit(t, s, l.HandOff()) // half in Pebble, half in the overlay
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	r := keygroup.Range{Lo: 0, Hi: k}
	if n := count(t, l.View(), k, "dc/server"); n != int64(len(ids)) {
		t.Fatalf("count %d, want %d", n, len(ids))
	}
	for _, prefix := range []string{"", "a", "b-1", "c-99", "z", "d-1\xff"} {
		var want []string
		for _, id := range ids {
			if strings.HasPrefix(id, prefix) {
				want = append(want, id)
			}
		}
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			limit := 1 + rng.IntN(300)
			page, read, err := listAddresses(l.View(), r, "dc/server", prefix, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			if read > (limit+1)*k {
				t.Fatalf("a page of %d read %d index entries; want at most %d per key group", limit, read, limit+1)
			}
			if len(page) > limit || pages > len(ids) {
				t.Fatalf("page of %d ids for limit %d", len(page), limit)
			}
			got = append(got, page...)
			if len(page) < limit {
				break
			}
			after = page[len(page)-1]
		}
		if !slices.Equal(got, want) {
			t.Errorf("prefix %q: paged %d ids, want %d (first difference at %d)", prefix, len(got), len(want), firstDiff(got, want))
		}
	}
	// A cursor before the prefix starts at the prefix.
	page, err := ListAddresses(l.View(), r, "dc/server", "b", "a-5", 1)
	if first := firstWithPrefix(ids, "b"); err != nil || len(page) != 1 || page[0] != first {
		t.Errorf("ListAddresses(prefix b, after a-5) = %v, %v; want [%s]", page, err, first)
	}
	if page, err := ListAddresses(l.View(), r, "nobody/here", "", "", 10); err != nil || len(page) != 0 {
		t.Errorf("ListAddresses of a type without state = %v, %v", page, err)
	}
}

// TestListingReadsAPage lists pages among 100k addresses in 128 key
// groups: each page reads at most limit+1 index entries per key group, not
// the whole index, and the count is read, not counted.
func TestListingReadsAPage(t *testing.T) {
	const k, total, limit = 128, 100_000, 50
	s := openMem(t, vfs.NewCrashableMem(), k)
	defer closeStore(t, s)
	o := NewOverlay()
	for i := range total {
		a := Address{"dc/server", fmt.Sprintf("srv-%07d", i)}
		kg := keygroup.Of(a.ID, k)
		PutValue(o, kg, a, "v", Value{Typename: "t"})
		if err := AddIndex(NewView(nil, o), o, kg, a); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, s, o)
	v := NewView(s)
	r := keygroup.Range{Lo: 0, Hi: k}
	for _, c := range []struct{ prefix, after, first string }{
		{"", "", "srv-0000000"},
		{"", "srv-0050000", "srv-0050001"},
		{"srv-0075", "", "srv-0075000"},
	} {
		ids, read, err := listAddresses(v, r, "dc/server", c.prefix, c.after, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != limit || ids[0] != c.first {
			t.Errorf("page after %q with prefix %q: %d ids from %q, want %d from %s", c.after, c.prefix, len(ids), ids[0], limit, c.first)
		}
		if read > (limit+1)*k {
			t.Errorf("a page read %d of the %d index entries; want at most %d", read, total, (limit+1)*k)
		}
	}
	if n := count(t, v, k, "dc/server"); n != total {
		t.Errorf("count %d, want %d", n, total)
	}
}

func firstWithPrefix(ids []string, prefix string) string {
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			return id
		}
	}
	return ""
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestUpgradeBuildsIndex opens a data directory of layout version 1, which
// has no index: the index is built and the version recorded.
func TestUpgradeBuildsIndex(t *testing.T) {
	const k = 8
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, k)
	o := NewOverlay()
	var want []string
	for i := range 50 {
		id := fmt.Sprintf("s%02d", i)
		want = append(want, id)
		a := Address{"dc/server", id}
		PutValue(o, keygroup.Of(id, k), a, "x", Value{Typename: "t"})
		PutValue(o, keygroup.Of(id, k), a, "y", Value{Typename: "t"})
	}
	PutValue(o, 3, Address{"dc/rack", "r1"}, "x", Value{Typename: "t"})
	o.Set(metaKey(metaVersion), uvarint(layoutVersionNoIndex))
	commit(t, s, o)
	closeStore(t, s)

	s = openMem(t, fs, k)
	defer closeStore(t, s)
	v := NewView(s)
	if got := indexed(t, v, k, "dc/server"); !slices.Equal(got, want) {
		t.Errorf("index after the upgrade: %v, want %v", got, want)
	}
	if n, m := count(t, v, k, "dc/server"), count(t, v, k, "dc/rack"); n != 50 || m != 1 {
		t.Errorf("counts after the upgrade: %d servers and %d racks, want 50 and 1", n, m)
	}
	if version, _, err := getUvarint(v, metaKey(metaVersion)); err != nil || version != layoutVersion {
		t.Errorf("layout version after the upgrade: %d, %v; want %d", version, err, layoutVersion)
	}
}

// BenchmarkListAddresses lists pages of 50 addresses of one function type
// among a million, through the index, with and without an id prefix.
func BenchmarkListAddresses(b *testing.B) {
	const k = 128
	const total = 1_000_000
	s, err := Open(b.TempDir(), Options{KeyGroups: k})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for lo := 0; lo < total; lo += 100_000 {
		o := NewOverlay()
		for i := lo; i < lo+100_000; i++ {
			a := Address{"dc/server", fmt.Sprintf("srv-%07d", i)}
			kg := keygroup.Of(a.ID, k)
			PutValue(o, kg, a, "health", Value{Typename: "t", Data: []byte(`{"ok":true}`)})
			o.Set(IndexKey(kg, a), []byte{})
		}
		if _, err := s.Commit([]*Overlay{o}, nil); err != nil {
			b.Fatal(err)
		}
	}
	r := keygroup.Range{Lo: 0, Hi: k}
	for _, c := range []struct{ name, prefix, after string }{
		{"first-page", "", ""},
		{"middle-page", "", "srv-0500000"},
		{"prefix", "srv-07", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			v := NewView(s)
			var read int
			for b.Loop() {
				ids, n, err := listAddresses(v, r, "dc/server", c.prefix, c.after, 50)
				if err != nil || len(ids) != 50 {
					b.Fatal(len(ids), err)
				}
				read = n
			}
			b.ReportMetric(float64(read), "entries/page")
		})
	}
	b.Run("count", func(b *testing.B) {
		v := NewView(s)
		for b.Loop() {
			if n, err := CountAddresses(v, r, "dc/server"); err != nil || n != 0 {
				// The benchmark writes no counts: it measures the reads.
				b.Fatal(n, err)
			}
		}
	})
}

// BenchmarkIndexNewAddress measures what the index adds to the first write
// of an address: the value alone, against the value and the index entry
// (a read of the entry, and of the type's count in its key group), among
// 100k addresses already in Pebble.
func BenchmarkIndexNewAddress(b *testing.B) {
	const k = 128
	s, err := Open(b.TempDir(), Options{KeyGroups: k})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	o := NewOverlay()
	for i := range 100_000 {
		a := Address{"dc/server", fmt.Sprintf("old-%07d", i)}
		kg := keygroup.Of(a.ID, k)
		PutValue(o, kg, a, "v", Value{Typename: "t", Data: []byte(`{"ok":true}`)})
		if _, err := PutIndex(NewView(s, o), o, kg, a); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.Commit([]*Overlay{o}, nil); err != nil {
		b.Fatal(err)
	}
	for _, index := range []bool{false, true} {
		name := "value"
		if index {
			name = "value+index"
		}
		b.Run(name, func(b *testing.B) {
			ids := make([]Address, b.N)
			for i := range ids {
				ids[i] = Address{"dc/server", fmt.Sprintf("new-%s-%09d", name, i)}
			}
			o := NewOverlay()
			v := NewView(s, o)
			b.ResetTimer()
			for i := range b.N {
				kg := keygroup.Of(ids[i].ID, k)
				PutValue(o, kg, ids[i], "v", Value{Typename: "t", Data: []byte(`{"ok":true}`)})
				if index {
					if _, err := PutIndex(v, o, kg, ids[i]); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
