package shard

import (
	"io"
	"log/slog"
	"testing"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// TestExpiredValuesAreDeletedWithoutBeingRead stores values that expire,
// never reads them, and checks that the shard's ticks delete them.
func TestExpiredValuesAreDeletedWithoutBeingRead(t *testing.T) {
	store, err := state.Open(t.TempDir(), state.Options{KeyGroups: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
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
	egresses, _ := router.NewEgresses(nil)
	env := &benchEnv{}
	cfg := Config{Index: 0, Shards: 1, KeyGroups: 16, KGLo: 0, KGHi: 16, Sources: 1,
		Locate:      func(id string) (int, int) { return 0, keygroup.Of(id, 16) },
		EndpointFor: func(string) (*Endpoint, bool) { return nil, false }, Egress: egresses,
		MaxAddressQueue: 10, MaxQueueBytes: 1 << 20, MaxOverlayBytes: 1 << 30, RetryAttempts: 1, TimerScanLimit: 8}
	core := NewCore(cfg, env, store, NewSpecs(nil), NewMetrics(nil), slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })
	defer core.Close()

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
	now = now.Add(2 * time.Second)
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
