package shard

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// benchEnv completes calls in place with counter effects, so that the
// benchmark measures the core: mailboxes, batching, state reads and
// writes, and checkpoint snapshots, without a network.
type benchEnv struct {
	calls []*Call
	parts []*Part
}

func (e *benchEnv) Send(int, Item)                                  {}
func (e *benchEnv) Call(c *Call)                                    { e.calls = append(e.calls, c) }
func (e *benchEnv) PublishNow([]*storagev1.EgressRecord)            {}
func (e *benchEnv) Reply(*storagev1.EgressRecord)                   {}
func (e *benchEnv) Part(p *Part)                                    { e.parts = append(e.parts, p) }
func (e *benchEnv) WantCheckpoint()                                 {}
func (e *benchEnv) SaveSpecs(string, []*twinflowv1.StateSpec) error { return nil }

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
			defer store.Close()
			specs := NewSpecs(map[string][]*twinflowv1.StateSpec{"b/counter": {{Name: "count", Typename: "twinflow/int64"}}})
			egresses, _ := router.NewEgresses(nil)
			ep := &Endpoint{URL: "bench", MaxBatchAddresses: 256, MaxBatchMessages: 128, MaxInFlight: 1 << 20}
			env := &benchEnv{}
			cfg := Config{
				Index: 0, Shards: 1, KeyGroups: 128, KGLo: 0, KGHi: 128, Sources: 1,
				Locate:          func(id string) (int, int) { return 0, keygroup.Of(id, 128) },
				EndpointFor:     func(string) (*Endpoint, bool) { return ep, true },
				Egress:          egresses,
				MaxAddressQueue: 1 << 30, MaxQueueBytes: 1 << 40, MaxOverlayBytes: 1 << 40,
				RetryBase: time.Millisecond, RetryMax: time.Second, RetryAttempts: 3, TimerScanLimit: 64,
			}
			core := NewCore(cfg, env, store, specs, NewMetrics(nil), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
			defer core.Close()
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
						calls := env.calls
						env.calls = nil
						for _, c := range calls {
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
			defer store.Close()
			egresses, _ := router.NewEgresses(nil)
			env := &benchEnv{}
			cfg := Config{
				Index: 0, Shards: 1, KeyGroups: 128, KGLo: 0, KGHi: 128, Sources: 2,
				Locate:          func(id string) (int, int) { return 0, keygroup.Of(id, 128) },
				EndpointFor:     func(string) (*Endpoint, bool) { return nil, false },
				Egress:          egresses,
				MaxAddressQueue: 1 << 30, MaxQueueBytes: 1 << 40, MaxOverlayBytes: 1 << 40,
				RetryBase: time.Millisecond, RetryMax: time.Second, RetryAttempts: 3,
			}
			core := NewCore(cfg, env, store, NewSpecs(nil), NewMetrics(nil), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
			defer core.Close()
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
