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
	got, _ := b.take(held, at(0))
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
	b.written(0, at(0))
	wantTake(t, b, false, 2, 3, 4)
	wantTake(t, b, false)
	b.written(0, at(0))
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
	b.written(0, at(0))
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
	b.written(0, at(0))
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
		got, _ := b.take(false, at(round))
		for _, v := range got {
			if v != want {
				t.Fatalf("round %d: took %d, want %d", round, v, want)
			}
			want++
		}
		b.written(0, at(0))
	}
	if b.len() != next-want {
		t.Fatalf("len %d, want %d", b.len(), next-want)
	}
	if cap(b.queue) > 4*(b.len()+1024) {
		t.Errorf("queue capacity %d for %d waiting messages", cap(b.queue), b.len())
	}
}

// After a write that acknowledged senders, the next write waits a little
// for them to send again, so that it carries them all; never longer than
// Linger, and not at all for a lone sender or after calls.
func TestBatcherLingersForTheAcknowledgedSenders(t *testing.T) {
	b := newBatcher[int](Limits{Linger: 2 * time.Millisecond})
	addAll(t, b, 10, at(0), 1, 2, 3)
	if got, _ := b.take(false, at(0)); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("first take = %v", got)
	}
	addAll(t, b, 10, at(1), 4) // arrived during the write
	b.written(3, at(5))
	// Three senders were acknowledged and one waits: the write waits for
	// four messages, until Linger.
	got, retry := b.take(false, at(5))
	if got != nil || !retry.Equal(at(7)) {
		t.Fatalf("take right after the write = %v, retry %v; want nothing until %v", got, retry, at(7))
	}
	addAll(t, b, 10, at(5), 5, 6)
	if got, _ := b.take(false, at(6)); got != nil {
		t.Fatalf("take with 3 of 4 waiting = %v, want nothing yet", got)
	}
	addAll(t, b, 10, at(6), 7)
	if got, _ := b.take(false, at(6)); !slices.Equal(got, []int{4, 5, 6, 7}) {
		t.Fatalf("take with all four = %v, want [4 5 6 7]", got)
	}

	// A sender that does not come back delays the write until the
	// linger ends.
	b.written(4, at(10))
	addAll(t, b, 10, at(10), 8, 9, 10)
	if got, retry := b.take(false, at(11)); got != nil || !retry.Equal(at(12)) {
		t.Fatalf("take with 3 of 4 = %v, retry %v; want nothing until %v", got, retry, at(12))
	}
	wantTakeAt(t, b, at(12), 8, 9, 10)

	// A lone sender: its next message goes at once.
	b.written(1, at(20))
	addAll(t, b, 10, at(20), 11)
	wantTakeAt(t, b, at(20), 11)

	// Calls: their senders wait for replies, not for the write.
	b.written(0, at(30))
	addAll(t, b, 10, at(30), 12)
	wantTakeAt(t, b, at(30), 12)

	// A negative Linger never waits.
	nb := newBatcher[int](Limits{Linger: -1})
	addAll(t, nb, 10, at(0), 1)
	wantTakeAt(t, nb, at(0), 1)
	nb.written(50, at(1))
	addAll(t, nb, 10, at(1), 2)
	wantTakeAt(t, nb, at(1), 2)
}

func wantTakeAt(t *testing.T, b *batcher[int], now time.Time, want ...int) {
	t.Helper()
	got, _ := b.take(false, now)
	if !slices.Equal(got, want) {
		t.Fatalf("take at %v = %v, want %v", now.Sub(t0), got, want)
	}
	b.written(0, now)
}
