package shard

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
)

// TestRecentActivity checks what the core keeps of an address's recent
// messages: the last few each way, payloads cut to a preview, dead letters
// with their reason, and only the addresses active last.
func TestRecentActivity(t *testing.T) {
	env := newRecEnv()
	ep := &Endpoint{URL: "e", MaxBatchAddresses: 16, MaxBatchMessages: 4, MaxInFlight: 4}
	cfg := testConfig(8, map[string]*Endpoint{"t/x": ep}, []router.EgressRule{{Name: "out", Subject: "out.s", Delivery: router.AtLeastOnce}})
	cfg.RecentAddresses = 2
	core := newTestCore(t, cfg, env, memStore(t, 8), nil)
	a := Address{Type: "t/x", ID: "a"}
	big := bytes.Repeat([]byte("p"), 1000)
	respond := func(req *twinflowv1.InvokeRequest) *twinflowv1.InvokeResponse {
		resp := &twinflowv1.InvokeResponse{}
		for _, b := range req.GetBatches() {
			if b.GetTarget().GetId() == "peer" { // the peer only listens
				resp.Results = append(resp.Results, &twinflowv1.AddressResult{Target: b.GetTarget(),
					Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{}}})
				continue
			}
			resp.Results = append(resp.Results, &twinflowv1.AddressResult{Target: b.GetTarget(), Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{
				Outgoing: []*twinflowv1.OutgoingMessage{{Target: &twinflowv1.Address{Type: "t/x", Id: "peer"},
					Argument: &twinflowv1.TypedValue{Typename: "m/out", Value: []byte("hello")}}},
				Delayed: []*twinflowv1.DelayedMessage{{Target: b.GetTarget(), DelayMillis: 1500,
					Argument: &twinflowv1.TypedValue{Typename: "m/later", Value: []byte("x")}}},
				Egress: []*twinflowv1.EgressRecord{{Egress: "out", Value: &twinflowv1.TypedValue{Typename: "m/rec", Value: []byte("r")}}},
			}}})
		}
		return resp
	}
	for i := range 10 {
		core.Deliver(Item{Source: 1, Msg: Envelope{Target: a, Caller: Address{Type: "t/y", ID: fmt.Sprint(i)}, Typename: "m/in", Payload: big}})
	}
	for !core.Idle() {
		core.Dispatch()
		for _, c := range env.takeCalls() {
			core.Complete(c, respond(c.Request), nil)
		}
	}
	got, ok := core.Activity(a)
	if !ok {
		t.Fatal("no activity of a")
	}
	if len(got.Received) != recentPerWay {
		t.Fatalf("%d received entries, want the last %d", len(got.Received), recentPerWay)
	}
	for i, e := range got.Received {
		if want := fmt.Sprint(i + 2); e.Kind != Received || e.Peer.ID != want || e.Size != len(big) || len(e.Preview) != recentPreview || e.Typename != "m/in" {
			t.Errorf("received[%d] = %v from %s, %d bytes with a preview of %d; want a message from t/y/%s of %d bytes with a preview of %d",
				i, e.Kind, e.Peer, e.Size, len(e.Preview), want, len(big), recentPreview)
		}
	}
	// Three calls of up to 4 messages: three of each sent kind.
	var kinds []string
	for _, e := range got.Sent {
		kinds = append(kinds, e.Kind.String())
	}
	if want := strings.Repeat("sent delayed egress ", 3); strings.Join(kinds, " ")+" " != want[len(want)-len(strings.Join(kinds, " "))-1:] || len(kinds) != recentPerWay {
		t.Errorf("sent kinds %v; want the last %d of %q", kinds, recentPerWay, want)
	}
	if last := got.Sent[len(got.Sent)-1]; last.Egress != "out" || string(last.Preview) != "r" {
		t.Errorf("last sent entry %+v; want the egress record", last)
	}

	// A dead letter is recorded with its reason.
	core.Deliver(Item{Source: 1, Msg: Envelope{Target: a, Typename: "m/bad", Payload: []byte("b")}})
	core.Dispatch()
	for _, c := range env.takeCalls() {
		core.Complete(c, &twinflowv1.InvokeResponse{Results: []*twinflowv1.AddressResult{{Target: &twinflowv1.Address{Type: "t/x", Id: "a"},
			Outcome: &twinflowv1.AddressResult_Error{Error: &twinflowv1.InvocationError{Kind: twinflowv1.InvocationError_KIND_TERMINAL, Message: "no good"}}}}}, nil)
	}
	got, _ = core.Activity(a)
	if last := got.Received[len(got.Received)-1]; last.Kind != DeadLettered || !strings.Contains(last.Note, "no good") || last.Peer != (Address{}) {
		t.Errorf("last received entry %+v; want the dead letter with its reason, from no caller", last)
	}

	// With room for two addresses, the least recently active goes first:
	// each address sends to the peer, which is then active too.
	for _, id := range []string{"b", "a", "c"} {
		core.Deliver(Item{Source: 1, Msg: Envelope{Target: Address{Type: "t/x", ID: id}, Typename: "m/in", Payload: []byte("x")}})
		core.Dispatch()
		for _, c := range env.takeCalls() {
			core.Complete(c, respond(c.Request), nil)
		}
	}
	for id, want := range map[string]bool{"a": false, "b": false, "c": true, "peer": true} {
		if _, ok := core.Activity(Address{Type: "t/x", ID: id}); ok != want {
			t.Errorf("activity of %s kept: %v, want %v", id, ok, want)
		}
	}
}

// TestRecentEvictsLeastRecentlyUsed: an address used again stays.
func TestRecentEvictsLeastRecentlyUsed(t *testing.T) {
	r := newRecent(2)
	a, b, c := Address{Type: "t/x", ID: "a"}, Address{Type: "t/x", ID: "b"}, Address{Type: "t/x", ID: "c"}
	r.of(a)
	r.of(b)
	r.of(a)
	r.of(c)
	_, hasA := r.byKey[a]
	_, hasB := r.byKey[b]
	if !hasA || hasB || len(r.byKey) != 2 {
		t.Errorf("after a, b, a, c with room for two: a kept %v, b kept %v, %d kept; want a and c", hasA, hasB, len(r.byKey))
	}
}

// TestLastKeepsWhatARingKeeps: of a list longer than a ring, the ring keeps
// the tail, so only the tail is recorded.
func TestLastKeepsWhatARingKeeps(t *testing.T) {
	for _, n := range []int{0, 3, recentPerWay, recentPerWay + 12} {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		var g ring
		for _, v := range s {
			g.add(time.Time{}, Received, Address{ID: fmt.Sprint(v)}, "", "", nil, "")
		}
		want := g.list()
		var h ring
		for _, v := range last(s) {
			h.add(time.Time{}, Received, Address{ID: fmt.Sprint(v)}, "", "", nil, "")
		}
		if got := h.list(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%d entries: the tail recorded %v, all of them %v", n, got, want)
		}
	}
}
