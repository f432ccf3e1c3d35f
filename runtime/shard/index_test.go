package shard

import (
	"slices"
	"testing"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// mutate answers every batch of a call with one mutation of the value "v":
// a set, or a delete when del is true.
func mutate(req *twinflowv1.InvokeRequest, del bool) *twinflowv1.InvokeResponse {
	resp := &twinflowv1.InvokeResponse{}
	for _, b := range req.GetBatches() {
		mu := &twinflowv1.StateMutation{Name: "v", Kind: twinflowv1.StateMutation_KIND_SET,
			Value: &twinflowv1.TypedValue{Typename: "twinflow/int64", Value: []byte("1")}}
		if del {
			mu = &twinflowv1.StateMutation{Name: "v", Kind: twinflowv1.StateMutation_KIND_DELETE}
		}
		resp.Results = append(resp.Results, &twinflowv1.AddressResult{Target: b.GetTarget(),
			Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{StateMutations: []*twinflowv1.StateMutation{mu}}}})
	}
	return resp
}

// TestAddressIndex checks that the core keeps the address index as
// functions write and delete state, also when the state of an address in a
// call expires and is swept while the call is in flight.
func TestAddressIndex(t *testing.T) {
	const k = 8
	store := memStore(t, k)
	env := newRecEnv()
	specs := NewSpecs(map[string][]*twinflowv1.StateSpec{"t/x": {{Name: "v", Typename: "twinflow/int64",
		ExpiryMode: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE, ExpireAfterMillis: 1000}}})
	ep := &Endpoint{URL: "e", MaxBatchAddresses: 16, MaxBatchMessages: 16, MaxInFlight: 4}
	layers := state.NewLayers(store, DefaultDedupWindow, quietLog)
	core := NewCore(testConfig(k, map[string]*Endpoint{"t/x": ep}, nil), env, layers, specs, NewMetrics(nil), quietLog)
	t.Cleanup(core.Close)
	all := keygroup.Range{Lo: 0, Hi: k}
	listed := func() []string {
		t.Helper()
		ids, err := layers.ListAddresses(all, "t/x", "", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	send := func(ids ...string) []*Call {
		for _, id := range ids {
			core.Deliver(Item{Source: 1, Msg: Envelope{Target: Address{Type: "t/x", ID: id}, Typename: "m", Payload: []byte("x")}})
		}
		core.Dispatch()
		return env.takeCalls()
	}
	complete := func(calls []*Call, del bool) {
		for _, c := range calls {
			core.Complete(c, mutate(c.Request, del), nil)
		}
	}

	complete(send("a", "b", "c"), false)
	if got := listed(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("index after the first writes: %v, want [a b c]", got)
	}
	complete(send("b"), true)
	if got := listed(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("index after b deleted its state: %v, want [a c]", got)
	}
	complete(send("a"), false) // an address with state writes again
	if got := listed(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("index after a wrote again: %v, want [a c]", got)
	}

	// c's call reads its value; while the call is out, the value expires
	// and the sweep deletes it, with c's index entry. The call's write
	// then brings both back.
	calls := send("c")
	env.now = env.now.Add(2 * time.Second)
	for range sweepEvery {
		core.Tick()
	}
	if got := listed(); slices.Contains(got, "c") {
		t.Fatalf("index after c's value expired and was swept: %v, want c gone", got)
	}
	complete(calls, false)
	if got := listed(); !slices.Contains(got, "c") {
		t.Fatalf("index after c wrote a value again: %v, want c in it", got)
	}
	if n, err := layers.CountAddresses(all, "t/x"); err != nil || n != int64(len(listed())) {
		t.Errorf("CountAddresses = %d, %v; want %d", n, err, len(listed()))
	}
}
