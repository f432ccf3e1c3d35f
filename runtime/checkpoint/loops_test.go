package checkpoint_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/checkpoint"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

const counterType = "t/counter"

// loopEnv connects a real shard loop to its peers, the coordinator and a
// counter function answered in process: each message adds one to the
// address's "count" and writes its payload to the exactly-once egress
// "out", keyed by the address's id.
type loopEnv struct {
	index int
	loops []*shard.Loop
	coord *checkpoint.Coordinator
}

func (e *loopEnv) Now() time.Time                                  { return time.Now() }
func (e *loopEnv) Wall() time.Time                                 { return time.Now() }
func (e *loopEnv) Send(to int, it shard.Item)                      { e.loops[to].Inbox().Push(it) }
func (e *loopEnv) PublishNow([]*storagev1.EgressRecord) bool       { return false }
func (e *loopEnv) Reply(*storagev1.EgressRecord)                   {}
func (e *loopEnv) Part(p *shard.Part)                              { e.coord.Part(p) }
func (e *loopEnv) SaveSpecs(string, []*twinflowv1.StateSpec) error { return nil }
func (e *loopEnv) WantCheckpoint()                                 { e.coord.Want() }

func (e *loopEnv) Call(c *shard.Call) {
	resp := &twinflowv1.InvokeResponse{}
	for _, b := range c.Request.GetBatches() {
		var count int64
		for _, st := range b.GetState() {
			if st.GetName() == "count" && st.GetValue() != nil {
				count, _ = strconv.ParseInt(string(st.GetValue().GetValue()), 10, 64)
			}
		}
		eff := &twinflowv1.Effects{}
		for _, inv := range b.GetInvocations() {
			count++
			eff.Egress = append(eff.Egress, &twinflowv1.EgressRecord{Egress: "out", Key: b.GetTarget().GetId(), Value: inv.GetArgument()})
		}
		eff.StateMutations = []*twinflowv1.StateMutation{{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET,
			Value: &twinflowv1.TypedValue{Typename: "twinflow/int64", Value: strconv.AppendInt(nil, count, 10)}}}
		resp.Results = append(resp.Results, &twinflowv1.AddressResult{Target: b.GetTarget(), Outcome: &twinflowv1.AddressResult_Effects{Effects: eff}})
	}
	// The outcome comes back through the loop, as from a remote endpoint.
	go e.loops[e.index].Completed(c, resp, nil)
}

// The coordinator with real shard loops: the barrier protocol runs between
// them, and what the functions did is in the store and published once the
// checkpoint is complete.
func TestCheckpointOfShardLoops(t *testing.T) {
	const (
		k      = 16
		shards = 2
		source = shards // the reader's barrier source number
	)
	store := memStore(t)
	egresses, err := router.NewEgresses([]router.EgressRule{{Name: "out", Subject: "twin.out", Delivery: router.ExactlyOnce}})
	if err != nil {
		t.Fatal(err)
	}
	specs := shard.NewSpecs(map[string][]*twinflowv1.StateSpec{counterType: {{Name: "count", Typename: "twinflow/int64"}}})
	ep := &shard.Endpoint{URL: "in-process", MaxBatchAddresses: 4, MaxBatchMessages: 2, MaxInFlight: 2}
	locate := func(id string) (int, int) {
		kg := keygroup.Of(id, k)
		return keygroup.ShardOf(kg, k, shards), kg
	}
	ranges := keygroup.Assign(k, shards)
	loops := make([]*shard.Loop, shards)
	envs := make([]*loopEnv, shards)
	for i := range loops {
		cfg := shard.Config{
			Index: i, Shards: shards, KeyGroups: k, KGLo: ranges[i].Lo, KGHi: ranges[i].Hi,
			Sources: 2, // the reader and the coordinator
			Locate:  locate, EndpointFor: func(string) (*shard.Endpoint, bool) { return ep, true },
			Egress: egresses, MaxQueueBytes: 1 << 30, MaxOverlayBytes: 1 << 30, TimerScanLimit: 64,
		}
		envs[i] = &loopEnv{index: i, loops: loops}
		loops[i] = shard.NewLoop(shard.NewCore(cfg, envs[i], state.NewLayers(store, shard.DefaultDedupWindow, quietLog), specs, shard.NewMetrics(nil), quietLog), shard.NewInbox(), time.Millisecond)
	}
	reader := &loopReader{loops: loops, source: source}
	pub := &fakePublisher{}
	completed := make(chan *storagev1.Manifest, 4)
	coordShards := make([]checkpoint.Shard, shards)
	for i, l := range loops {
		coordShards[i] = l
	}
	coord := checkpoint.New(checkpoint.Config{Interval: time.Hour, DeploymentID: "dep", OnComplete: func(m *storagev1.Manifest) { completed <- m }},
		store, coordShards, []checkpoint.Reader{reader}, pub, checkpoint.NewMetrics(nil), quietLog)
	reader.coord = coord
	for _, e := range envs {
		e.coord = coord
	}
	if coord.Source() != source+1 {
		t.Fatalf("coordinator source %d, want %d", coord.Source(), source+1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Go(func() { l.Run(ctx) })
	}
	wg.Go(func() { _ = coord.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	ids := []string{"a", "b", "c", "d", "e", "f"}
	sent := map[string][]string{} // payloads by id, in order
	for round := 1; round <= 2; round++ {
		for n := range 3 * round {
			for _, id := range ids {
				p := fmt.Sprintf("%s%d.%d", id, round, n)
				reader.deliver(locate, shard.Envelope{Target: shard.Address{Type: counterType, ID: id}, Typename: "t/msg", Payload: []byte(p)})
				sent[id] = append(sent[id], p)
			}
		}
		waitDone(t, loops)
		m, err := coord.Checkpoint(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		if m.GetId() != uint64(round) || m.GetReaderSequences()["in"] != reader.delivered() {
			t.Errorf("round %d: manifest %v, want checkpoint %d with reader in at %d", round, m, round, reader.delivered())
		}
		if done := receive(t, completed, "OnComplete"); done.GetId() != m.GetId() {
			t.Errorf("OnComplete with %v, want %d", done, m.GetId())
		}
		for _, id := range ids {
			_, kg := locate(id)
			vals, _, err := state.ReadAddress(state.NewView(store), kg, state.Address{Type: counterType, ID: id}, time.Now().UnixMilli())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(vals["count"].Data), strconv.Itoa(len(sent[id])); got != want {
				t.Errorf("round %d: stored count of %s = %q, want %s", round, id, got, want)
			}
		}
	}

	// Every record once, each address's in the order of its messages, in
	// message id order, and none left pending.
	published := pub.published()
	got := map[string][]string{}
	for i, r := range published {
		id := strings.TrimPrefix(r.GetSubject(), "twin.out.")
		got[id] = append(got[id], string(r.GetData()))
		if i > 0 && r.GetMsgId() <= published[i-1].GetMsgId() {
			t.Errorf("record %d published as %s after %s", i, r.GetMsgId(), published[i-1].GetMsgId())
		}
	}
	for _, id := range ids {
		if !slices.Equal(got[id], sent[id]) {
			t.Errorf("published for %s: %v, want %v", id, got[id], sent[id])
		}
	}
	if p := pendingData(t, store); len(p) != 0 {
		t.Errorf("still pending: %v", p)
	}
}

// loopReader plays an ingress reader in front of shard loops: the test
// delivers messages through it, and it emits barriers in line with them.
type loopReader struct {
	loops  []*shard.Loop
	source int
	coord  *checkpoint.Coordinator
	mu     sync.Mutex
	seq    uint64
}

func (r *loopReader) Name() string { return "in" }

func (r *loopReader) deliver(locate func(string) (int, int), e shard.Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, _ := locate(e.Target.ID)
	r.loops[s].Inbox().Push(shard.Item{Source: r.source, Msg: e})
	r.seq++
}

func (r *loopReader) delivered() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}

func (r *loopReader) RequestBarrier(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.loops {
		l.Inbox().Push(shard.Item{Source: r.source, Barrier: id})
	}
	r.coord.ReaderBarrier(id, r.Name(), r.seq)
}

// waitDone waits until every loop has taken its inbox and finished all its
// work. It asks the loops themselves, so it needs no sleep.
func waitDone(t *testing.T, loops []*shard.Loop) {
	t.Helper()
	ctx := testContext(t)
	for _, l := range loops {
		for {
			done := false
			if err := l.Do(ctx, func(c *shard.Core) { done = l.Inbox().Len() == 0 && c.Idle() }); err != nil {
				t.Fatalf("waiting for the shards to finish: %v", err)
			}
			if done {
				break
			}
		}
	}
}
