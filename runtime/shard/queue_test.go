package shard

import (
	"fmt"
	"testing"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// TestQueuedMessagesBoundIntake checks that a shard reports saturation once
// more than MaxQueued messages wait in its mailboxes and inbox, and not
// before, and that finished batches lift it.
func TestQueuedMessagesBoundIntake(t *testing.T) {
	ep := &Endpoint{URL: "x", MaxBatchAddresses: 100, MaxBatchMessages: 100, MaxInFlight: 1}
	env := newRecEnv()
	cfg := testConfig(16, map[string]*Endpoint{"t/x": ep}, nil)
	cfg.MaxQueued = 50
	core := newTestCore(t, cfg, env, memStore(t, 16), nil)
	for i := range 40 {
		core.Deliver(Item{Source: 1, Msg: Envelope{Target: Address{Type: "t/x", ID: fmt.Sprint(i)}, Typename: "t/m", Payload: []byte("x")}})
	}
	if sat, why := core.Saturated(0, 10); sat {
		t.Fatalf("saturated with 50 messages queued: %s", why)
	}
	if sat, _ := core.Saturated(0, 11); !sat {
		t.Fatal("not saturated with 51 messages queued")
	}
	core.Dispatch()
	if len(env.calls) != 1 || len(env.calls[0].Request.GetBatches()) != 40 {
		t.Fatalf("calls %d", len(env.calls))
	}
	// In-flight messages still count; applied ones do not.
	if sat, _ := core.Saturated(0, 11); !sat {
		t.Fatal("not saturated with 51 messages queued or in flight")
	}
	resp := &twinflowv1.InvokeResponse{}
	for range env.calls[0].Request.GetBatches() {
		resp.Results = append(resp.Results, &twinflowv1.AddressResult{Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{}}})
	}
	core.Complete(env.calls[0], resp, nil)
	if sat, why := core.Saturated(0, 11); sat {
		t.Fatalf("saturated after the batches finished: %s", why)
	}
}
