package state

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const testWindow = 10 * time.Minute

// waitCovered checks key kg once (which starts the read of its stored
// marks) and waits until the seen filter covers it.
func waitCovered(t *testing.T, l *Layers, kg int, now int64) {
	t.Helper()
	if _, err := l.Seen(kg, Address{"t/x", "probe"}, "probe", now); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.seen.mu.Lock()
		s := l.seen.kgs[kg]
		ready := s != nil && s.ready
		l.seen.mu.Unlock()
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the seen filter does not cover key group %d after 10s", kg)
		}
		time.Sleep(time.Millisecond)
	}
}

// The filter never hides a mark: marks stored before the layers existed
// (a restart), marks written through them, and marks a key group received
// from elsewhere (a restore when it joins) are all seen; and a new key is
// answered without reading the store, but for the filter's rare false
// positives.
func TestSeenFilterHidesNoMark(t *testing.T) {
	s := openMem(t, vfs.NewMem(), 8)
	defer closeStore(t, s)
	now := time.Now().UnixMilli()
	addr := func(i int) Address { return Address{"t/x", fmt.Sprint("a", i%50)} }
	key := func(kind string, i int) string { return fmt.Sprint(kind, i) }

	// Marks of an earlier run, committed.
	before := NewLayers(s, testWindow, nil)
	for i := range 2000 {
		before.MarkSeen(3, addr(i), key("old", i), now+testWindow.Milliseconds())
	}
	commit(t, s, before.HandOff())
	before.Close()

	l := NewLayers(s, testWindow, nil)
	defer l.Close()
	seen := func(i int, k string) bool {
		t.Helper()
		ok, err := l.Seen(3, addr(i), k, now)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	waitCovered(t, l, 3, now)
	for i := range 2000 {
		if !seen(i, key("old", i)) {
			t.Fatalf("stored mark %d not seen once the filter covers its key group", i)
		}
	}

	reads := l.seenReads
	for i := range 10000 {
		if seen(i, key("new", i)) {
			t.Fatalf("new key %d seen", i)
		}
	}
	if got := l.seenReads - reads; got > 300 {
		t.Errorf("%d of 10000 new keys read the store, want about 1%%", got)
	}
	for i := range 1000 {
		l.MarkSeen(3, addr(i), key("new", i), now+testWindow.Milliseconds())
	}
	for i := range 1000 {
		if !seen(i, key("new", i)) {
			t.Fatalf("key %d not seen after MarkSeen", i)
		}
	}

	// Key group 3 joins again: another worker's marks are restored into
	// the store under the running layers.
	other := NewLayers(s, testWindow, nil)
	for i := range 500 {
		other.MarkSeen(3, addr(i), key("restored", i), now+testWindow.Milliseconds())
	}
	commit(t, s, other.HandOff())
	other.Close()
	l.KeyGroupRestored(3)
	for i := range 500 {
		if !seen(i, key("restored", i)) {
			t.Fatalf("restored mark %d not seen before the filter read it", i)
		}
	}
	waitCovered(t, l, 3, now)
	for i := range 500 {
		if !seen(i, key("restored", i)) {
			t.Fatalf("restored mark %d not seen once the filter read it", i)
		}
	}
}

// Generations of marks are dropped once all their marks expired, so the
// filter holds about one and a half windows of marks.
func TestSeenFilterForgetsExpiredMarks(t *testing.T) {
	s := openMem(t, vfs.NewMem(), 8)
	defer closeStore(t, s)
	l := NewLayers(s, testWindow, nil)
	defer l.Close()
	t0 := time.Now().UnixMilli()
	w := testWindow.Milliseconds()
	waitCovered(t, l, 1, t0)
	for i := range 100000 {
		l.MarkSeen(1, Address{"t/x", "a"}, fmt.Sprint(i), t0+w)
	}
	full := l.SeenFilterBytes()
	if full < 100000*bloomBitsPerMark/8 || full > 4*100000*bloomBitsPerMark/8 {
		t.Fatalf("filter of 100000 marks takes %d bytes, want about %d", full, 100000*bloomBitsPerMark/8)
	}
	// Half a window later nothing has expired yet; after the window and a
	// generation, everything has.
	if _, err := l.Seen(1, Address{"t/x", "a"}, "0", t0+w/2); err != nil || l.SeenFilterBytes() != full {
		t.Fatalf("filter shrank to %d bytes before its marks expired (err %v)", l.SeenFilterBytes(), err)
	}
	ok, err := l.Seen(1, Address{"t/x", "a"}, "0", t0+2*w)
	if err != nil || ok {
		t.Fatalf("expired mark: seen %v, err %v", ok, err)
	}
	if got := l.SeenFilterBytes(); got != 0 {
		t.Fatalf("filter holds %d bytes after every mark expired", got)
	}
}

// The blocked Bloom filter has no false negatives and about 1% false
// positives at its capacity.
func TestMarkFilterRates(t *testing.T) {
	const n = 100000
	f := newMarkFilter(n)
	r := rand.New(rand.NewPCG(1, 2))
	added := make([]uint64, n)
	for i := range added {
		added[i] = r.Uint64()
		f.add(added[i])
	}
	for _, h := range added {
		if !f.mayHold(h) {
			t.Fatalf("added hash %x not held", h)
		}
	}
	fp := 0
	for range n {
		if f.mayHold(r.Uint64()) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.02 {
		t.Fatalf("false positive rate %.3f at capacity, want about 0.01", rate)
	}
}
