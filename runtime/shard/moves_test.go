package shard

import (
	"slices"
	"testing"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// TestKeyGroupMovesAtBarrier moves a key group out of a running shard at
// checkpoint 1's barrier and back in at checkpoint 2's, while an address
// of another key group keeps working. The checkpoint that ends the key
// group here holds its batch in flight and the message recorded from a
// source whose barrier came later; the outcome of the call in flight is
// dropped; a later message, and its delayed message, are not processed
// here; once back, its mailbox is restored from the store.
func TestKeyGroupMovesAtBarrier(t *testing.T) {
	const k = 8
	// Two addresses in different key groups.
	mover, stayer := "", ""
	for i := 0; mover == "" || stayer == ""; i++ {
		id := string(rune('a' + i))
		switch {
		case mover == "":
			mover = id
		case keygroup.Of(id, k) != keygroup.Of(mover, k):
			stayer = id
		}
	}
	moving := keygroup.Of(mover, k)
	store := memStore(t, k)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	arg := &twinflowv1.TypedValue{Typename: "twinflow/bytes", Value: []byte("x")}
	to := func(id string) *twinflowv1.Address { return &twinflowv1.Address{Type: "t/x", Id: id} }
	// A delayed message of the moving key group, due.
	seed := state.NewOverlay()
	if _, err := state.PutTimer(state.NewView(store, seed), seed, moving, &storagev1.Timer{Owner: to(mover), Target: to(mover), Argument: arg, DueUnixMillis: now.UnixMilli() - 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Commit([]*state.Overlay{seed}, nil); err != nil {
		t.Fatal(err)
	}

	env := newRecEnv()
	env.now = now
	ep := &Endpoint{URL: "e", MaxBatchAddresses: 16, MaxBatchMessages: 16, MaxInFlight: 4}
	cfg := testConfig(k, map[string]*Endpoint{"t/x": ep}, nil)
	cfg.Sources = 2 // two readers: 1 and 2
	cfg.Owned = func(kg int) bool { return kg != moving }
	moves := map[uint64][2][]int{1: {nil, {moving}}, 2: {{moving}, nil}, 3: {nil, {moving}}}
	cfg.Moves = func(id uint64) ([]int, []int) { return moves[id][0], moves[id][1] }
	core := newTestCore(t, cfg, env, store, nil)
	restored := &restoreRecorder{Store: core.store}
	core.store = restored
	msg := func(src int, id, payload string) {
		core.Deliver(Item{Source: src, Msg: Envelope{Target: Address{Type: "t/x", ID: id}, Typename: "twinflow/bytes", Payload: []byte(payload)}})
	}
	barrier := func(id uint64) {
		for src := 1; src <= 2; src++ {
			core.Deliver(Item{Source: src, Barrier: id})
		}
	}

	// Not owned yet: the delayed message stays in the store.
	core.Tick()
	if len(core.boxes)+len(core.remoteBuf) != 0 {
		t.Fatalf("a delayed message of a key group not owned was fired")
	}
	// Checkpoint 1 brings it in: the timer fires, and the key group works;
	// the layers are told that its stored state came from elsewhere.
	barrier(1)
	if !slices.Equal(restored.kgs, []int{moving}) {
		t.Fatalf("key groups the store was told were restored: %v, want [%d]", restored.kgs, moving)
	}
	core.Tick()
	msg(1, mover, "m1")
	msg(1, stayer, "s1")
	core.Dispatch()
	calls := env.takeCalls()
	if len(calls) != 1 || len(calls[0].boxes) != 2 {
		t.Fatalf("calls after the move in: %d, want one for both addresses", len(calls))
	}

	// Checkpoint 2 takes it out: reader 1's barrier comes first, then a
	// message from reader 2 (before its barrier: recorded), then the call's
	// outcome, then reader 1's next message.
	core.Deliver(Item{Source: 1, Barrier: 2})
	msg(2, mover, "m2")
	if core.boxes[Address{Type: "t/x", ID: mover}] != nil {
		t.Fatalf("a message of a key group that left was queued")
	}
	resp := &twinflowv1.InvokeResponse{}
	for _, b := range calls[0].boxes {
		resp.Results = append(resp.Results, &twinflowv1.AddressResult{Target: to(b.addr.ID),
			Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{
				Outgoing: []*twinflowv1.OutgoingMessage{{Target: to(b.addr.ID + "-out-of-" + b.addr.ID), Argument: arg}},
			}}})
	}
	core.Complete(calls[0], resp, nil)
	core.Deliver(Item{Source: 2, Barrier: 2})
	msg(1, mover, "m3")

	if len(env.parts) != 2 {
		t.Fatalf("%d parts, want 2", len(env.parts))
	}
	mb := storedMailbox(t, env.parts[1].Overlay, moving)
	var got []string
	for _, p := range mb.GetPending() {
		got = append(got, string(p.GetArgument().GetValue()))
	}
	if len(got) != 3 || got[0] == "m2" || got[2] != "m2" {
		t.Errorf("checkpoint 2 holds the key group's mailbox %v; want the timer's message and m1 (in the call), then m2", got)
	}
	// Only the outcome for the address that stayed was applied.
	outs := 0
	for addr := range core.boxes {
		if len(addr.ID) > 1 {
			outs++
			if addr.ID != stayer+"-out-of-"+stayer {
				t.Errorf("the outcome of a call for a key group that left was applied: %s", addr.ID)
			}
		}
	}
	for _, e := range core.remoteBuf {
		if e.Payload != nil && string(e.Payload) != "m3" {
			t.Errorf("the outcome of a call for a key group that left was sent on: to %s", e.Target.ID)
		}
	}
	if outs+len(core.remoteBuf) == 0 {
		t.Fatalf("the outcome of the call for the address that stayed was dropped")
	}
	if len(core.remoteBuf) != 1 || string(core.remoteBuf[0].Payload) != "m3" {
		t.Errorf("after the barriers, a message of the key group that left went to %d owners elsewhere; want m3 once", len(core.remoteBuf))
	}

	// Checkpoint 3 brings it back, from the store where checkpoint 2 left it.
	if _, err := store.Commit([]*state.Overlay{env.parts[1].Overlay}, nil); err != nil {
		t.Fatal(err)
	}
	core.Committed(env.parts[1])
	barrier(3)
	b := core.boxes[Address{Type: "t/x", ID: mover}]
	if b == nil || len(b.queue) != 3 {
		t.Fatalf("the key group's mailbox was not restored when it came back: %v", b)
	}
	// Checkpoint 3 holds nothing of it; the next one holds its mailbox as
	// it is then: emptied, once its messages are done.
	if n := len(storedMailboxOrNil(t, env.parts[2].Overlay, moving)); n != 0 {
		t.Errorf("the checkpoint the key group joined at wrote its mailbox (%d entries)", n)
	}
	core.Dispatch()
	calls = env.takeCalls()
	core.Complete(calls[0], &twinflowv1.InvokeResponse{Results: []*twinflowv1.AddressResult{{Target: to(mover),
		Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{}}}}}, nil)
	barrier(4)
	if got := storedMailboxOrNil(t, env.parts[3].Overlay, moving); got == nil || len(got[0].GetPending()) != 0 {
		t.Errorf("the checkpoint after the key group's messages were done holds %v; want its mailbox, empty", got)
	}
}

// storedMailboxOrNil returns key group kg's mailbox written in an
// overlay, if one is.
func storedMailboxOrNil(t *testing.T, o *state.Overlay, kg int) []*storagev1.Mailbox {
	t.Helper()
	n := 0
	for range o.KeyGroup(kg) {
		n++
	}
	if n == 0 {
		return nil
	}
	return []*storagev1.Mailbox{storedMailbox(t, o, kg)}
}

// storedMailbox reads key group kg's mailbox from an overlay.
func storedMailbox(t *testing.T, o *state.Overlay, kg int) *storagev1.Mailbox {
	t.Helper()
	mb, err := state.LoadMailbox(state.NewView(nil, o), kg)
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

// restoreRecorder records the key groups a core tells its store were
// restored.
type restoreRecorder struct {
	Store
	kgs []int
}

func (r *restoreRecorder) KeyGroupRestored(kg int) {
	r.kgs = append(r.kgs, kg)
	r.Store.KeyGroupRestored(kg)
}
