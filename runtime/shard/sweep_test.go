package shard

import (
	"testing"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// TestExpiredValuesAreDeletedWithoutBeingRead stores values that expire,
// never reads them, and checks that the shard's ticks delete them.
func TestExpiredValuesAreDeletedWithoutBeingRead(t *testing.T) {
	store := memStore(t, 16)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	seed := state.NewOverlay()
	const n = 2000
	for i := 0; i < n; i++ {
		id := "a" + string(rune('0'+i%10)) + time.Duration(i).String()
		v := state.Value{Typename: "twinflow/int64", Data: []byte("1"),
			Expiry: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE, ExpireAfterMillis: 1000}
		state.PutValue(seed, keygroup.Of(id, 16), state.Address{Type: "t/x", ID: id}, "v", v.Refreshed(now.UnixMilli()))
	}
	if _, err := store.Commit([]*state.Overlay{seed}, nil); err != nil {
		t.Fatal(err)
	}
	env := newRecEnv()
	env.now = now
	core := newTestCore(t, testConfig(16, nil, nil), env, store, nil)

	count := func() int {
		k := 0
		lo := []byte{0, 0}
		hi := []byte{0xff}
		if err := state.NewView(store).Scan(lo, hi, func(key, _ []byte) error {
			if _, _, _, err := state.DecodeValueKey(key); err == nil {
				k++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return k
	}
	if got := count(); got != n {
		t.Fatalf("%d values stored, want %d", got, n)
	}
	env.now = now.Add(2 * time.Second)
	for i := 0; i < sweepEvery*(n/sweepLimit+2); i++ {
		core.Tick()
	}
	core.Deliver(Item{Source: 1, Barrier: 1})
	for _, p := range env.parts {
		if _, err := store.Commit([]*state.Overlay{p.Overlay}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(); got != 0 {
		t.Fatalf("%d expired values left after the sweep, want 0", got)
	}
}
