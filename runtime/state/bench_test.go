package state

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

// Benchmarks of the storage hot paths. Results are recorded in
// docs/benchmarks.md; run them with
//
//	go test -run '^$' -bench . -benchmem ./runtime/state/

func benchAddress(i int) (int, Address) {
	id := fmt.Sprintf("srv-%07d", i)
	return keygroup.Of(id, keygroup.DefaultK), Address{Type: "datacenter/server", ID: id}
}

var benchNames = [...]string{"metrics", "config", "alerts"}

func benchValue(rng *rand.Rand) Value {
	data := make([]byte, 100)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return Value{Typename: "twinflow/json", Data: data}
}

func openBench(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkReadAddress reads one address with 3 values out of 100k
// addresses, from Pebble's SSTables (flushed and compacted), through two
// overlays of unrelated writes, and for addresses without state: with a
// scan of the address's prefix (ReadAddress), with a scan through a reused
// iterator (Reader), and by key (ReadValues).
func BenchmarkReadAddress(b *testing.B) {
	const addresses = 100_000
	s := openBench(b)
	rng := rand.New(rand.NewPCG(1, 2))
	for lo := 0; lo < addresses; lo += 10_000 {
		o := NewOverlay()
		for i := lo; i < lo+10_000; i++ {
			kg, addr := benchAddress(i)
			for _, name := range benchNames {
				PutValue(o, kg, addr, name, benchValue(rng))
			}
		}
		commit(b, s, o)
	}
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := s.db.Compact(b.Context(), []byte{0}, []byte{0xFF, 0xFF}, true); err != nil {
		b.Fatal(err)
	}

	// read reads one address and returns how many values it has.
	type read func(kg int, addr Address) (int, error)
	run := func(b *testing.B, absent bool, read read) {
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			i, want := rng.IntN(addresses), 3
			if absent { // an address that was never written
				i, want = addresses+i, 0
			}
			kg, addr := benchAddress(i)
			got, err := read(kg, addr)
			if err != nil || got != want {
				b.Fatalf("read %v: %d values, want %d, %v", addr, got, want, err)
			}
			n++
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "addresses/s")
	}
	scan := func(v View) read {
		return func(kg int, addr Address) (int, error) {
			vals, _, err := ReadAddress(v, kg, addr, 0)
			return len(vals), err
		}
	}
	names := benchNames[:]
	values := func(v View) read {
		return func(kg int, addr Address) (int, error) {
			vals, _, err := ReadValues(v, kg, addr, names, 0)
			return len(vals), err
		}
	}
	// One Reader for all reads, as a shard could read the addresses of a
	// dispatch round.
	reader := func(b *testing.B, v View) read {
		r := v.NewReader()
		b.Cleanup(func() { _ = r.Close() })
		return func(kg int, addr Address) (int, error) {
			vals, _, err := r.ReadAddress(kg, addr, 0)
			return len(vals), err
		}
	}
	readerValues := func(b *testing.B, v View) read {
		r := v.NewReader()
		b.Cleanup(func() { _ = r.Close() })
		return func(kg int, addr Address) (int, error) {
			vals, _, err := r.ReadValues(kg, addr, names, 0)
			return len(vals), err
		}
	}
	store := NewView(s, NewOverlay())
	// Two layers of 10k unrelated writes above the store.
	cur, old := NewOverlay(), NewOverlay()
	for i := range 10_000 {
		kg, addr := benchAddress(2*addresses + i)
		PutValue(cur, kg, addr, "metrics", benchValue(rng))
		kg, addr = benchAddress(3*addresses + i)
		PutValue(old, kg, addr, "metrics", benchValue(rng))
	}
	overlays := NewView(s, cur, old)
	b.Run("scan", func(b *testing.B) { run(b, false, scan(store)) })
	b.Run("scan/overlays", func(b *testing.B) { run(b, false, scan(overlays)) })
	b.Run("scan/absent", func(b *testing.B) { run(b, true, scan(store)) })
	b.Run("reader", func(b *testing.B) { run(b, false, reader(b, store)) })
	b.Run("reader/absent", func(b *testing.B) { run(b, true, reader(b, store)) })
	b.Run("values", func(b *testing.B) { run(b, false, values(store)) })
	b.Run("values/overlays", func(b *testing.B) { run(b, false, values(overlays)) })
	b.Run("values/absent", func(b *testing.B) { run(b, true, values(store)) })
	b.Run("reader/values", func(b *testing.B) { run(b, false, readerValues(b, store)) })
	b.Run("reader/values/absent", func(b *testing.B) { run(b, true, readerValues(b, store)) })
	// The addresses were written since the last checkpoint: the overlay
	// holds their values, and Pebble is not read.
	o := NewOverlay()
	for i := range addresses {
		kg, addr := benchAddress(i)
		for _, name := range benchNames {
			PutValue(o, kg, addr, name, benchValue(rng))
		}
	}
	b.Run("reader/values/written", func(b *testing.B) { run(b, false, readerValues(b, NewView(s, o))) })
	b.Run("reader/written", func(b *testing.B) { run(b, false, reader(b, NewView(s, o))) })
}

// BenchmarkCommit commits overlays of 1k and 10k value writes (about 150
// bytes each) as one synced batch, to disk.
func BenchmarkCommit(b *testing.B) {
	for _, size := range []int{1_000, 10_000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			s := openBench(b)
			rng := rand.New(rand.NewPCG(3, 4))
			b.ReportAllocs()
			var bytes int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				o := NewOverlay()
				for j := range size {
					kg, addr := benchAddress(rng.IntN(1_000_000))
					PutValue(o, kg, addr, benchNames[j%3], benchValue(rng))
				}
				o.Freeze()
				b.StartTimer()
				n, err := s.Commit([]*Overlay{o}, nil)
				if err != nil {
					b.Fatal(err)
				}
				bytes += n
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "keys/s")
			b.SetBytes(bytes / int64(b.N))
		})
	}
}

// BenchmarkOverlaySet writes state values into an overlay (copying key and
// value), starting a new overlay every 100k writes.
func BenchmarkOverlaySet(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	keys := make([][]byte, 100_000)
	for i := range keys {
		kg, addr := benchAddress(rng.IntN(10_000_000))
		keys[i] = ValueKey(kg, addr, benchNames[i%3])
	}
	val := encodeValue(nil, benchValue(rng))
	b.ReportAllocs()
	o := NewOverlay()
	for i := 0; b.Loop(); i++ {
		if i%len(keys) == 0 {
			o = NewOverlay()
		}
		o.Set(keys[i%len(keys)], val)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkDueTimers reads due timers out of 10k spread over 128 key
// groups: the first 100 of a backlog where all are due, and the 10 that are
// due out of a calendar where the rest are not.
func BenchmarkDueTimers(b *testing.B) {
	s := openBench(b)
	o := NewOverlay()
	v := NewView(s, o)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 10_000 {
		kg, _ := benchAddress(i)
		if _, err := PutTimer(v, o, kg, timer("datacenter/server", fmt.Sprint(i), "", 1+int64(rng.IntN(1_000_000)))); err != nil {
			b.Fatal(err)
		}
	}
	commit(b, s, o)
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	v = NewView(s, NewOverlay())
	r := keygroup.Range{Lo: 0, Hi: keygroup.DefaultK}
	for _, bc := range []struct {
		name       string
		now        int64
		limit, due int
	}{
		{"backlog", 1_000_000, 100, 100},
		{"calendar", 1_000, 1000, 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if err := DueTimers(v, r, bc.now, bc.limit, func([]byte, *storagev1.Timer) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
			}
			if n/b.N < bc.due/2 || n/b.N > bc.due*2 {
				b.Fatalf("%d timers due per call, want about %d", n/b.N, bc.due)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "timers/s")
		})
	}
}
