package shard

import (
	"testing"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// TestKeyGroupsNotOwnedAreLeftAlone stores a due delayed message and a
// mailbox in key groups of a shard that owns none of them (a cluster
// worker's store from before it rejoined): the shard neither restores the
// mailbox nor fires the message.
func TestKeyGroupsNotOwnedAreLeftAlone(t *testing.T) {
	const k = 4
	store := memStore(t, k)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	target := &twinflowv1.Address{Type: "t/x", Id: "a"}
	kg := keygroup.Of("a", k)
	seed := state.NewOverlay()
	arg := &twinflowv1.TypedValue{Typename: "twinflow/bytes", Value: []byte("x")}
	if _, err := state.PutTimer(state.NewView(store, seed), seed, kg, &storagev1.Timer{Owner: target, Target: target, Argument: arg, DueUnixMillis: now.UnixMilli() - 1}); err != nil {
		t.Fatal(err)
	}
	if err := state.PutMailbox(seed, kg, &storagev1.Mailbox{Pending: []*storagev1.Pending{{Target: target, Argument: arg}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Commit([]*state.Overlay{seed}, nil); err != nil {
		t.Fatal(err)
	}
	for _, owned := range []bool{false, true} {
		env := newRecEnv()
		env.now = now
		cfg := testConfig(k, nil, nil)
		cfg.Owned = func(int) bool { return owned }
		core := newTestCore(t, cfg, env, store, nil)
		if err := core.Restore(); err != nil {
			t.Fatal(err)
		}
		if got := len(core.boxes); owned != (got > 0) {
			t.Errorf("owned %v: %d addresses with messages after the restore; want some only when owned", owned, got)
		}
		core.Tick()
		// A fired message goes to its mailbox, or to the owner elsewhere.
		if got := len(core.boxes) + len(core.remoteBuf); owned != (got > 0) {
			t.Errorf("owned %v: %d messages routed after a tick; want some only when owned", owned, got)
		}
	}
}
