package frontdoor

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func addAll(t *testing.T, b *batcher[int], size int, now time.Time, vs ...int) {
	t.Helper()
	for _, v := range vs {
		if err := b.add(v, size, now); err != nil {
			t.Fatalf("add(%d): %v", v, err)
		}
	}
}

func wantTake(t *testing.T, b *batcher[int], held bool, want ...int) {
	t.Helper()
	got := b.take(held)
	if !slices.Equal(got, want) {
		t.Fatalf("take = %v, want %v", got, want)
	}
}

// What arrives while a write is in flight waits, and goes out together in
// the next write: one durable write for many messages.
func TestBatcherGroupsWhatArrivesDuringAWrite(t *testing.T) {
	b := newBatcher[int](Limits{})
	addAll(t, b, 10, at(0), 1)
	wantTake(t, b, false, 1)
	addAll(t, b, 10, at(1), 2, 3, 4)
	wantTake(t, b, false) // the write slot is taken
	b.written()
	wantTake(t, b, false, 2, 3, 4)
	wantTake(t, b, false)
	b.written()
	wantTake(t, b, false) // nothing waits
}

func TestBatcherBoundsAWrite(t *testing.T) {
	b := newBatcher[int](Limits{MaxItems: 3, MaxBytes: 100, MaxWrites: 4})
	addAll(t, b, 10, at(0), 1, 2, 3, 4, 5)
	wantTake(t, b, false, 1, 2, 3) // items
	addAll(t, b, 60, at(0), 6, 7)
	wantTake(t, b, false, 4, 5, 6) // 10+10+60 fit 100
	wantTake(t, b, false, 7)
	addAll(t, b, 500, at(0), 8) // larger than a write: alone
	addAll(t, b, 10, at(0), 9)
	wantTake(t, b, false, 8)
	wantTake(t, b, false) // four writes in flight
	b.written()
	wantTake(t, b, false, 9)
}

// Held writes keep messages waiting; the queue's bounds refuse more.
func TestBatcherHoldsAndBoundsTheQueue(t *testing.T) {
	b := newBatcher[int](Limits{MaxQueued: 3, MaxQueuedBytes: 100})
	addAll(t, b, 10, at(0), 1, 2, 3)
	wantTake(t, b, true)
	if err := b.add(4, 10, at(0)); !errors.Is(err, errQueueFull) {
		t.Fatalf("add beyond MaxQueued = %v, want errQueueFull", err)
	}
	wantTake(t, b, false, 1, 2, 3)
	b.written()
	addAll(t, b, 50, at(0), 5, 6)
	if err := b.add(7, 1, at(0)); !errors.Is(err, errQueueFull) {
		t.Fatalf("add beyond MaxQueuedBytes = %v, want errQueueFull", err)
	}
	if b.len() != 2 || b.bytes != 100 {
		t.Errorf("len %d, bytes %d; want 2, 100", b.len(), b.bytes)
	}
}

// Messages that waited too long leave the queue oldest first; flush empties
// it.
func TestBatcherExpiresTheOldest(t *testing.T) {
	b := newBatcher[int](Limits{})
	addAll(t, b, 10, at(0), 1, 2)
	addAll(t, b, 10, at(5), 3)
	addAll(t, b, 10, at(9), 4)
	if o, ok := b.oldest(); !ok || !o.Equal(at(0)) {
		t.Errorf("oldest = %v, %v", o, ok)
	}
	if got := b.expire(at(5)); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("expire(5ms) = %v, want [1 2]", got)
	}
	if got := b.expire(at(5)); got != nil {
		t.Errorf("expire again = %v, want nothing", got)
	}
	if got := b.flush(); !slices.Equal(got, []int{3, 4}) {
		t.Errorf("flush = %v, want [3 4]", got)
	}
	if _, ok := b.oldest(); ok || b.len() != 0 || b.bytes != 0 {
		t.Errorf("not empty after flush: len %d, bytes %d", b.len(), b.bytes)
	}
}

// A queue that never empties keeps its order and does not grow without
// bound.
func TestBatcherQueueThatNeverEmpties(t *testing.T) {
	b := newBatcher[int](Limits{MaxItems: 7, MaxWrites: 1})
	next, want := 0, 0
	for round := range 2000 {
		for range 8 {
			addAll(t, b, 1, at(round), next)
			next++
		}
		for _, v := range b.take(false) {
			if v != want {
				t.Fatalf("round %d: took %d, want %d", round, v, want)
			}
			want++
		}
		b.written()
	}
	if b.len() != next-want {
		t.Fatalf("len %d, want %d", b.len(), next-want)
	}
	if cap(b.queue) > 4*(b.len()+1024) {
		t.Errorf("queue capacity %d for %d waiting messages", cap(b.queue), b.len())
	}
}
