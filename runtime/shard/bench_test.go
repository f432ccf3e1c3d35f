package shard

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/state"
)

func counterResponse(req *twinflowv1.InvokeRequest) *twinflowv1.InvokeResponse {
	resp := &twinflowv1.InvokeResponse{Results: make([]*twinflowv1.AddressResult, len(req.GetBatches()))}
	for i, b := range req.GetBatches() {
		var n int64
		if v := b.GetState()[0].GetValue(); v != nil {
			n, _ = strconv.ParseInt(string(v.GetValue()), 10, 64)
		}
		n += int64(len(b.GetInvocations()))
		resp.Results[i] = &twinflowv1.AddressResult{Target: b.GetTarget(), Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{
			StateMutations: []*twinflowv1.StateMutation{{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET,
				Value: &twinflowv1.TypedValue{Typename: "twinflow/int64", Value: strconv.AppendInt(nil, n, 10)}}},
		}}}
	}
	return resp
}

// BenchmarkCore measures messages per second through one shard core with
// the function answering in place, for several numbers of addresses. A
// checkpoint is committed every 64k messages.
func BenchmarkCore(b *testing.B) {
	for _, addresses := range []int{1, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("addresses=%d", addresses), func(b *testing.B) {
			store, err := state.Open(b.TempDir(), state.Options{KeyGroups: 128})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { store.Close() })
			specs := NewSpecs(map[string][]*twinflowv1.StateSpec{"b/counter": {{Name: "count", Typename: "twinflow/int64"}}})
			ep := &Endpoint{URL: "bench", MaxBatchAddresses: 256, MaxBatchMessages: 128, MaxInFlight: 1 << 20}
			env := newRecEnv()
			cfg := testConfig(128, map[string]*Endpoint{"b/counter": ep}, nil)
			cfg.MaxAddressQueue, cfg.MaxQueued = 1<<30, 1<<30
			core := newTestCore(b, cfg, env, store, specs)
			ids := make([]string, min(addresses, 1<<16))
			for i := range ids {
				ids[i] = "addr-" + strconv.Itoa(i)
			}
			payload := []byte("1")
			var ckpt uint64
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := ids[i%len(ids)]
				if addresses > len(ids) {
					id = "addr-" + strconv.Itoa(i%addresses)
				}
				core.Deliver(Item{Source: 1, Msg: Envelope{Target: Address{Type: "b/counter", ID: id}, Typename: "twinflow/int64", Payload: payload}})
				if i%1024 == 1023 || i == b.N-1 {
					for len(env.calls) > 0 || !core.Idle() {
						core.Dispatch()
						for _, c := range env.takeCalls() {
							core.Complete(c, counterResponse(c.Request), nil)
						}
					}
				}
				if i%65536 == 65535 {
					ckpt++
					core.Deliver(Item{Source: 1, Barrier: ckpt})
					for _, p := range env.parts {
						if _, err := store.Commit([]*state.Overlay{p.Overlay}, nil); err != nil {
							b.Fatal(err)
						}
						core.Committed(p)
					}
					env.parts = nil
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkSnapshot measures a shard's side of checkpoints with messages
// queued in its mailboxes, and reports the pause (pause-ns: what the shard
// does when the first barrier arrives) apart from the rest (the other
// barriers, and encoding the mailboxes into the part).
func BenchmarkSnapshot(b *testing.B) {
	for _, queued := range []int{1000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("queued=%d", queued), func(b *testing.B) {
			store, err := state.Open(b.TempDir(), state.Options{KeyGroups: 128})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { store.Close() })
			env := newRecEnv()
			cfg := testConfig(128, nil, nil)
			cfg.Sources = 2
			cfg.MaxAddressQueue, cfg.MaxQueued = 1<<30, 1<<30
			core := newTestCore(b, cfg, env, store, nil)
			payload := make([]byte, 100)
			for i := range queued {
				core.Deliver(Item{Source: 1, Msg: Envelope{Target: Address{Type: "b/counter", ID: "addr-" + strconv.Itoa(i)}, Typename: "b/m", Payload: payload}})
			}
			var pause time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := uint64(i + 1)
				core.Deliver(Item{Source: 1, Barrier: id})
				core.Deliver(Item{Source: 2, Barrier: id})
				for _, p := range env.parts {
					pause += p.Pause
					core.Committed(p)
				}
				env.parts = nil
			}
			b.ReportMetric(float64(pause.Nanoseconds())/float64(b.N), "pause-ns")
		})
	}
}
