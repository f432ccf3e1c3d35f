package state

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

func timer(ownerType, ownerID, token string, due int64) *storagev1.Timer {
	return &storagev1.Timer{
		Owner:         &twinflowv1.Address{Type: ownerType, Id: ownerID},
		Token:         token,
		Target:        &twinflowv1.Address{Type: "dc/rack", Id: "r1"},
		Argument:      &twinflowv1.TypedValue{Typename: "t", Value: []byte(ownerID)},
		DueUnixMillis: due,
	}
}

func dueIDs(t *testing.T, v View, r keygroup.Range, now int64, limit int) []string {
	t.Helper()
	var out []string
	if err := DueTimers(v, r, now, limit, func(_ []byte, tm *storagev1.Timer) error {
		out = append(out, tm.GetOwner().GetId())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDueTimersOrder(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	o := NewOverlay()
	v := NewView(s, o)
	put := func(kg int, id string, due int64) {
		t.Helper()
		if _, err := PutTimer(v, o, kg, timer("dc/server", id, "", due)); err != nil {
			t.Fatal(err)
		}
	}
	put(1, "kg1@30", 30)
	put(2, "kg2@10", 10)
	put(3, "kg3@20", 20)
	put(1, "kg1@5", 5)
	put(2, "kg2@30", 30)
	put(5, "kg5@1", 1) // outside the range
	put(3, "kg3@99", 99)
	put(2, "kg2@20a", 20)
	put(2, "kg2@20b", 20) // same millisecond: creation order
	commit(t, s, o)

	o = NewOverlay()
	v = NewView(s, o)
	put(1, "kg1@25", 25) // in the overlay, merged with the store
	r := keygroup.Range{Lo: 1, Hi: 4}
	want := []string{"kg1@5", "kg2@10", "kg2@20a", "kg2@20b", "kg3@20", "kg1@25", "kg1@30", "kg2@30"}
	if got := dueIDs(t, v, r, 30, 0); !slices.Equal(got, want) {
		t.Errorf("DueTimers(now 30) = %v, want %v", got, want)
	}
	if got := dueIDs(t, v, r, 30, 3); !slices.Equal(got, want[:3]) {
		t.Errorf("DueTimers(limit 3) = %v, want %v", got, want[:3])
	}
	if got := dueIDs(t, v, r, 4, 0); len(got) != 0 {
		t.Errorf("DueTimers(now 4) = %v, want none", got)
	}
	due, ok, err := NextTimerDue(v, r)
	if err != nil || !ok || due != 5 {
		t.Errorf("NextTimerDue = %d, %v, %v, want 5", due, ok, err)
	}
	if _, ok, _ := NextTimerDue(v, keygroup.Range{Lo: 6, Hi: 8}); ok {
		t.Error("NextTimerDue of key groups without timers reports one")
	}

	// Firing deletes: fn may write to the overlay.
	if err := DueTimers(v, r, 20, 0, func(key []byte, tm *storagev1.Timer) error {
		return DeleteTimer(v, o, key, tm)
	}); err != nil {
		t.Fatal(err)
	}
	if got := dueIDs(t, v, r, 1000, 0); !slices.Equal(got, []string{"kg1@25", "kg1@30", "kg2@30", "kg3@99"}) {
		t.Errorf("after firing up to 20: %v", got)
	}
}

func TestTimerTokens(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	owner := Address{"dc/server", "s1"}
	o := NewOverlay()
	v := NewView(s, o)
	k1, err := PutTimer(v, o, 4, timer(owner.Type, owner.ID, "tok", 100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PutTimer(v, o, 4, timer(owner.Type, "s2", "tok", 100)); err != nil { // another owner's token
		t.Fatal(err)
	}
	commit(t, s, o)

	o = NewOverlay()
	v = NewView(s, o)
	// A new timer with the same token replaces the pending one.
	k2, err := PutTimer(v, o, 4, timer(owner.Type, owner.ID, "tok", 200))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(k1, k2) {
		t.Fatal("replacement reused the key")
	}
	key, tm, ok, err := TimerByToken(v, 4, owner, "tok")
	if err != nil || !ok || !slices.Equal(key, k2) || tm.GetDueUnixMillis() != 200 {
		t.Fatalf("TimerByToken = %x, %v, %v, %v", key, tm, ok, err)
	}
	if got := dueIDs(t, v, keygroup.Range{Lo: 4, Hi: 5}, 1000, 0); !slices.Equal(got, []string{"s2", "s1"}) {
		t.Errorf("timers after replacement = %v", got)
	}
	// Deleting the replaced timer's key (say it was already collected as due)
	// keeps the index of the new one.
	if err := DeleteTimer(v, o, k1, timer(owner.Type, owner.ID, "tok", 100)); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := TimerByToken(v, 4, owner, "tok"); !ok {
		t.Error("deleting the replaced timer dropped the new one's token")
	}
	// Cancel.
	if ok, err := CancelTimer(v, o, 4, owner, "tok"); err != nil || !ok {
		t.Fatalf("CancelTimer = %v, %v", ok, err)
	}
	if ok, err := CancelTimer(v, o, 4, owner, "tok"); err != nil || ok {
		t.Errorf("second CancelTimer = %v, %v", ok, err)
	}
	if _, _, ok, _ := TimerByToken(v, 4, owner, "tok"); ok {
		t.Error("token still indexed after cancel")
	}
	if got := dueIDs(t, v, keygroup.Range{Lo: 4, Hi: 5}, 1000, 0); !slices.Equal(got, []string{"s2"}) {
		t.Errorf("timers after cancel = %v", got)
	}
	// Firing deletes the token too.
	commit(t, s, o)
	o = NewOverlay()
	v = NewView(s, o)
	if err := DueTimers(v, keygroup.Range{Lo: 4, Hi: 5}, 1000, 0, func(key []byte, tm *storagev1.Timer) error {
		return DeleteTimer(v, o, key, tm)
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := TimerByToken(v, 4, Address{owner.Type, "s2"}, "tok"); ok {
		t.Error("token still indexed after the timer fired")
	}
	if o.Len() != 2 {
		t.Errorf("firing wrote %d keys, want the timer and its token", o.Len())
	}

	if _, err := PutTimer(v, NewOverlay(), 4, timer("a", "b", "", 1)); err == nil {
		t.Error("PutTimer into an overlay that is not the view's newest layer succeeded")
	}
	if _, err := PutTimer(v, o, 4, &storagev1.Timer{Token: "t"}); err == nil {
		t.Error("PutTimer with a token and no owner succeeded")
	}
}

// TestTimerSequenceRestored checks that timer keys stay unique across a
// crash: the sequence is restored with the timers it numbered.
func TestTimerSequenceRestored(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 8)
	o := NewOverlay()
	v := NewView(s, o)
	for range 3 {
		if _, err := PutTimer(v, o, 0, timer("a", "committed", "", 50)); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, s, o)
	o = NewOverlay()
	if _, err := PutTimer(NewView(s, o), o, 0, timer("a", "lost", "", 50)); err != nil {
		t.Fatal(err)
	}
	fs2 := crash(fs)
	closeStore(t, s)
	s = openMem(t, fs2, 8)
	defer closeStore(t, s)
	o = NewOverlay()
	v = NewView(s, o)
	if _, err := PutTimer(v, o, 0, timer("a", "new", "", 50)); err != nil {
		t.Fatal(err)
	}
	if got := dueIDs(t, v, keygroup.Range{Lo: 0, Hi: 1}, 50, 0); !slices.Equal(got, []string{"committed", "committed", "committed", "new"}) {
		t.Errorf("timers after restore = %v", got)
	}
}

// TestDueTimersModel compares DueTimers with sorting all timers, for random
// timers in the store and two overlays and random limits.
func TestDueTimersModel(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	s := openMem(t, vfs.NewCrashableMem(), 16)
	defer closeStore(t, s)
	type want struct {
		due int64
		kg  int
		seq int
		id  string
	}
	var all []want
	seq := 0
	fill := func(o *Overlay, v View, n int) {
		for range n {
			kg, due := rng.IntN(16), int64(rng.IntN(50))
			id := fmt.Sprint("t", seq)
			if _, err := PutTimer(v, o, kg, timer("a", id, "", due)); err != nil {
				t.Fatal(err)
			}
			all = append(all, want{due, kg, seq, id})
			seq++
		}
	}
	o := NewOverlay()
	fill(o, NewView(s, o), 200)
	commit(t, s, o)
	old := NewOverlay()
	fill(old, NewView(s, old), 100)
	cur := NewOverlay()
	fill(cur, NewView(s, cur, old), 100)
	slices.SortFunc(all, func(a, b want) int {
		if a.due != b.due {
			return int(a.due - b.due)
		}
		if a.kg != b.kg {
			return a.kg - b.kg
		}
		return a.seq - b.seq
	})
	v := NewView(s, cur, old)
	for range 50 {
		lo := rng.IntN(16)
		r := keygroup.Range{Lo: lo, Hi: lo + rng.IntN(17-lo)}
		now, limit := int64(rng.IntN(60)-5), rng.IntN(40)
		var exp []string
		for _, w := range all {
			if r.Contains(w.kg) && w.due <= now && (limit <= 0 || len(exp) < limit) {
				exp = append(exp, w.id)
			}
		}
		if got := dueIDs(t, v, r, now, limit); !slices.Equal(got, exp) {
			t.Fatalf("DueTimers(%v, now %d, limit %d) = %v, want %v", r, now, limit, got, exp)
		}
	}
}
