package shard

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// TestQueuedMessagesBoundIntake checks that a shard reports saturation once
// more than MaxQueued messages wait in its mailboxes and inbox, and not
// before, and that finished batches lift it.
func TestQueuedMessagesBoundIntake(t *testing.T) {
	store, err := state.Open(t.TempDir(), state.Options{KeyGroups: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	egresses, _ := router.NewEgresses(nil)
	ep := &Endpoint{URL: "x", MaxBatchAddresses: 100, MaxBatchMessages: 100, MaxInFlight: 1}
	env := &benchEnv{}
	cfg := Config{Index: 0, Shards: 1, KeyGroups: 16, KGLo: 0, KGHi: 16, Sources: 1,
		Locate:      func(id string) (int, int) { return 0, keygroup.Of(id, 16) },
		EndpointFor: func(string) (*Endpoint, bool) { return ep, true }, Egress: egresses,
		MaxAddressQueue: 1 << 20, MaxQueueBytes: 1 << 40, MaxOverlayBytes: 1 << 40, MaxQueued: 50,
		RetryBase: time.Millisecond, RetryMax: time.Second, RetryAttempts: 3}
	core := NewCore(cfg, env, store, NewSpecs(nil), NewMetrics(nil), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	defer core.Close()
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
