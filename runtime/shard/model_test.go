package shard_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/checkpoint"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

var modelSeed = flag.Uint64("model.seed", 0, "seed for TestCoresAgainstModel (0: random)")

// TestCoresAgainstModel steps two shard cores and the checkpoint
// coordinator's core through random interleavings of ingress reads (some
// of them repeats of earlier messages, with the same idempotency key),
// cross-shard deliveries, function calls that succeed, fail transiently or
// permanently, delayed messages, checkpoints and crashes, with a real
// Pebble store. Shards spill backlogs to the store when an address holds
// more than a few messages. The test plays the ingress reader, the
// coordinator's driver and the function. At the end every message must have affected
// state exactly once, or have been dead-lettered exactly once.
func TestCoresAgainstModel(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -model.seed=%d)", seed, seed)
	spilled, repeats := 0, 0
	for round := 0; round < 4; round++ {
		w := newWorld(t, seed+uint64(round))
		w.run(3000)
		w.drain()
		w.check()
		spilled += w.spilled
		repeats += w.repeats
	}
	if spilled == 0 {
		t.Error("no backlog ever spilled: the model did not exercise spilling")
	}
	if repeats == 0 {
		t.Error("no message was ever repeated: the model did not exercise idempotency keys")
	}
}

// node is a message of the generated workload: it increments its target's
// count and may send children, now or after a delay. Targets named "bad-*"
// always fail terminally, so their messages must be dead-lettered.
type node struct {
	ID       int    `json:"id"`
	To       string `json:"to"`
	Delay    int64  `json:"delay,omitempty"` // ms, for a child sent after a delay
	Children []node `json:"children,omitempty"`
}

const (
	modelShards = 2
	modelK      = 16
	counterType = "m/counter"
)

type world struct {
	t     *testing.T
	rng   *rand.Rand
	store *state.Store
	specs *shard.Specs
	now   time.Time

	cores   []*shard.Core
	inboxes [][]shard.Item
	calls   []*shard.Call

	log     []node // the ingress stream
	readPos int    // next log entry to read

	coord         *checkpoint.Core
	ckpt          uint64 // in progress, 0 when none
	readerBarrier uint64 // asked of the reader, not yet emitted
	parts         []*shard.Part
	published     map[string]*storagev1.EgressRecord // by message id, as JetStream dedups

	spilled int // most messages seen spilled at once
	repeats int // messages the log holds twice

	expect map[string]int64 // good address → count
	bad    map[int]bool     // ids of nodes that must be dead-lettered
	nextID int
}

func newWorld(t *testing.T, seed uint64) *world {
	store, err := state.Open(t.TempDir(), state.Options{KeyGroups: modelK})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	w := &world{
		t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), store: store,
		now:       time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		published: map[string]*storagev1.EgressRecord{},
		expect:    map[string]int64{}, bad: map[int]bool{},
	}
	for i := 0; i < 300; i++ {
		w.log = append(w.log, w.genNode(0))
	}
	w.boot()
	t.Cleanup(func() { // before the store closes
		for _, c := range w.cores {
			c.Close()
		}
	})
	return w
}

func (w *world) genNode(depth int) node {
	w.nextID++
	n := node{ID: w.nextID, To: fmt.Sprintf("a%d", w.rng.IntN(24))}
	if w.rng.IntN(12) == 0 {
		n.To = fmt.Sprintf("bad-%d", w.rng.IntN(3))
	}
	if n.To[0] == 'b' {
		w.bad[n.ID] = true
	} else {
		w.expect[n.To]++
	}
	for depth < 2 && w.rng.IntN(3) == 0 {
		c := w.genNode(depth + 1)
		if w.rng.IntN(2) == 0 {
			c.Delay = int64(w.rng.IntN(200))
		}
		if w.bad[n.ID] {
			// A dead-lettered message sends nothing: its children never exist.
			w.forget(c)
			continue
		}
		n.Children = append(n.Children, c)
	}
	return n
}

// forget removes a node that will never be sent from the expectations.
func (w *world) forget(n node) {
	if w.bad[n.ID] {
		delete(w.bad, n.ID)
	} else {
		w.expect[n.To]--
	}
	for _, c := range n.Children {
		w.forget(c)
	}
}

// boot builds the cores from what the store holds, as after a restart.
func (w *world) boot() {
	w.specs = shard.NewSpecs(must(w.store.LoadSpecs()))
	egresses, err := router.NewEgresses(nil)
	if err != nil {
		w.t.Fatal(err)
	}
	ranges := keygroup.Assign(modelK, modelShards)
	ep := &shard.Endpoint{URL: "model", MaxBatchAddresses: 4, MaxBatchMessages: 3, MaxInFlight: 2}
	for _, c := range w.cores {
		c.Close() // the crashed process's
	}
	w.cores = make([]*shard.Core, modelShards)
	w.inboxes = make([][]shard.Item, modelShards)
	w.calls = nil
	w.ckpt, w.readerBarrier, w.parts = 0, 0, nil
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range w.cores {
		cfg := shard.Config{
			Index: i, Shards: modelShards, KeyGroups: modelK, KGLo: ranges[i].Lo, KGHi: ranges[i].Hi,
			Sources: 2, // the reader, then the coordinator
			Locate: func(id string) (int, int) {
				kg := keygroup.Of(id, modelK)
				return keygroup.ShardOf(kg, modelK, modelShards), kg
			},
			EndpointFor: func(string) (*shard.Endpoint, bool) { return ep, true },
			Egress:      egresses,
			// Backlogs of more than a few messages spill, so spilling is
			// crossed with everything else.
			MaxAddressQueue: 4, MaxQueueBytes: 1 << 30, MaxOverlayBytes: 1 << 30,
			Retry:          backoff.Policy{Base: time.Millisecond, Max: 10 * time.Millisecond},
			Probe:          backoff.Policy{Base: time.Millisecond, Max: 10 * time.Millisecond},
			TimerScanLimit: 16,
		}
		w.cores[i] = shard.NewCore(cfg, &modelEnv{w: w, i: i}, state.NewLayers(w.store, shard.DefaultDedupWindow, log), w.specs, shard.NewMetrics(nil), log)
		if err := w.cores[i].Restore(); err != nil {
			w.t.Fatal(err)
		}
	}
	man, ok, err := w.store.LatestManifest()
	if err != nil {
		w.t.Fatal(err)
	}
	w.readPos = 0
	if ok {
		w.readPos = int(man.GetReaderSequences()["r"])
	}
	w.coord = checkpoint.NewCore(modelShards, []string{"r"}, "model", 10, man)
	w.publishPending()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type modelEnv struct {
	w *world
	i int
}

func (e *modelEnv) Send(to int, it shard.Item) { e.w.inboxes[to] = append(e.w.inboxes[to], it) }
func (e *modelEnv) Call(c *shard.Call)         { e.w.calls = append(e.w.calls, c) }
func (e *modelEnv) Now() time.Time             { return e.w.now }
func (e *modelEnv) Wall() time.Time            { return e.w.now }
func (e *modelEnv) PublishNow([]*storagev1.EgressRecord) bool {
	e.w.t.Fatal("no at-least-once egress in the model")
	return false
}
func (e *modelEnv) Reply(*storagev1.EgressRecord) { e.w.t.Fatal("no replies in the model") }
func (e *modelEnv) Part(p *shard.Part)            { e.w.parts = append(e.w.parts, p) }
func (e *modelEnv) WantCheckpoint()               {}
func (e *modelEnv) SaveSpecs(ft string, s []*twinflowv1.StateSpec) error {
	_, err := e.w.store.SaveSpecs(ft, s)
	return err
}

// run takes n random steps, crashes included.
func (w *world) run(n int) {
	for i := 0; i < n; i++ {
		w.step(true)
	}
}

func (w *world) step(crashes bool) {
	switch r := w.rng.IntN(100); {
	case r < 20:
		w.read(1 + w.rng.IntN(5))
	case r < 50:
		w.deliver(w.rng.IntN(modelShards))
	case r < 75:
		w.complete()
	case r < 85:
		w.now = w.now.Add(time.Duration(w.rng.IntN(60)) * time.Millisecond)
		for _, c := range w.cores {
			c.Tick()
		}
	case r < 95:
		w.checkpoint()
	case crashes && r < 97:
		w.boot() // a crash: everything not committed is gone
	}
	for _, c := range w.cores {
		c.Dispatch()
		w.spilled = max(w.spilled, c.Status().SpilledMessages)
	}
	w.finishCheckpoint()
}

// read plays the ingress reader.
// read plays the ingress reader: it reads up to k messages, and emits the
// barrier of the checkpoint in progress, if it was asked for one, in line
// after them.
func (w *world) read(k int) {
	for ; k > 0 && w.readPos < len(w.log); k-- {
		n := w.log[w.readPos]
		w.readPos++
		w.route(modelShards, n, shard.Address{})
		// Now and then a publisher repeats a message it published before,
		// as after a lost acknowledgement: the stream holds it twice, and
		// the repeat must have no effect.
		if w.rng.IntN(20) == 0 {
			w.log = append(w.log, w.log[w.rng.IntN(w.readPos)])
			w.repeats++
		}
	}
	if id := w.readerBarrier; id != 0 {
		w.readerBarrier = 0
		w.coord.AddReader(id, "r", uint64(w.readPos))
		for s := range w.inboxes {
			w.inboxes[s] = append(w.inboxes[s], shard.Item{Source: modelShards, Barrier: id})
		}
	}
}

func (w *world) route(source int, n node, caller shard.Address) {
	b, _ := json.Marshal(n)
	env := shard.Envelope{Target: shard.Address{Type: counterType, ID: n.To}, Caller: caller, Typename: "m/node", Payload: b}
	if caller == (shard.Address{}) {
		// Ingress messages carry their id as idempotency key.
		env.Key = strconv.Itoa(n.ID)
	}
	s := keygroup.ShardOf(keygroup.Of(n.To, modelK), modelK, modelShards)
	w.inboxes[s] = append(w.inboxes[s], shard.Item{Source: source, Msg: env})
}

func (w *world) deliver(s int) {
	k := 1 + w.rng.IntN(4)
	for ; k > 0 && len(w.inboxes[s]) > 0; k-- {
		it := w.inboxes[s][0]
		w.inboxes[s] = w.inboxes[s][1:]
		w.cores[s].Deliver(it)
	}
}

// complete answers a random outstanding call, playing the function.
func (w *world) complete() {
	if len(w.calls) == 0 {
		return
	}
	i := w.rng.IntN(len(w.calls))
	call := w.calls[i]
	w.calls = slices.Delete(w.calls, i, i+1)
	core := w.cores[ownerOf(call)]
	if w.rng.IntN(10) == 0 {
		core.Complete(call, nil, fmt.Errorf("connection refused"))
		return
	}
	resp := &twinflowv1.InvokeResponse{}
	for _, b := range call.Request.GetBatches() {
		resp.Results = append(resp.Results, w.invoke(b))
	}
	core.Complete(call, resp, nil)
}

func ownerOf(c *shard.Call) int {
	return keygroup.ShardOf(keygroup.Of(c.Request.GetBatches()[0].GetTarget().GetId(), modelK), modelK, modelShards)
}

// count is the number of messages an address received; last is the id of
// the last ingress message it received, which must grow: the ingress is one
// sender, whose messages to one address arrive in order, whatever spilled
// and however often the shards crashed.
var (
	countSpec = &twinflowv1.StateSpec{Name: "count", Typename: "twinflow/int64"}
	lastSpec  = &twinflowv1.StateSpec{Name: "last", Typename: "twinflow/int64"}
)

func stateInt(b *twinflowv1.AddressBatch, name string) int64 {
	for _, st := range b.GetState() {
		if st.GetName() == name && st.GetValue() != nil {
			n, _ := strconv.ParseInt(string(st.GetValue().GetValue()), 10, 64)
			return n
		}
	}
	return 0
}

func intValue(n int64) *twinflowv1.TypedValue {
	return &twinflowv1.TypedValue{Typename: "twinflow/int64", Value: []byte(strconv.FormatInt(n, 10))}
}

func (w *world) invoke(b *twinflowv1.AddressBatch) *twinflowv1.AddressResult {
	res := &twinflowv1.AddressResult{Target: b.GetTarget()}
	if len(b.GetState()) == 0 {
		res.Outcome = &twinflowv1.AddressResult_MissingStates{MissingStates: &twinflowv1.MissingStates{Specs: []*twinflowv1.StateSpec{countSpec, lastSpec}}}
		return res
	}
	if b.GetTarget().GetId()[0] == 'b' {
		res.Outcome = &twinflowv1.AddressResult_Error{Error: &twinflowv1.InvocationError{Kind: twinflowv1.InvocationError_KIND_TERMINAL, Message: "bad address"}}
		return res
	}
	if w.rng.IntN(8) == 0 {
		res.Outcome = &twinflowv1.AddressResult_Error{Error: &twinflowv1.InvocationError{Kind: twinflowv1.InvocationError_KIND_RETRYABLE, Message: "flaky"}}
		return res
	}
	count, last := stateInt(b, "count"), stateInt(b, "last")
	eff := &twinflowv1.Effects{}
	for _, inv := range b.GetInvocations() {
		var n node
		if err := json.Unmarshal(inv.GetArgument().GetValue(), &n); err != nil {
			w.t.Fatal(err)
		}
		count++
		if inv.GetCaller() == nil {
			if int64(n.ID) <= last {
				w.t.Errorf("%s received ingress message %d after %d: out of order", b.GetTarget().GetId(), n.ID, last)
			}
			last = int64(n.ID)
		}
		for _, c := range n.Children {
			cb, _ := json.Marshal(c)
			arg := &twinflowv1.TypedValue{Typename: "m/node", Value: cb}
			to := &twinflowv1.Address{Type: counterType, Id: c.To}
			if c.Delay > 0 {
				eff.Delayed = append(eff.Delayed, &twinflowv1.DelayedMessage{Target: to, Argument: arg, DelayMillis: c.Delay})
			} else {
				eff.Outgoing = append(eff.Outgoing, &twinflowv1.OutgoingMessage{Target: to, Argument: arg})
			}
		}
	}
	eff.StateMutations = []*twinflowv1.StateMutation{
		{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET, Value: intValue(count)},
		{Name: "last", Kind: twinflowv1.StateMutation_KIND_SET, Value: intValue(last)},
	}
	res.Outcome = &twinflowv1.AddressResult_Effects{Effects: eff}
	return res
}

// checkpoint plays the coordinator's driver and the reader: barrier n goes
// to every shard from the reader (in line with its messages) and from the
// coordinator.
func (w *world) checkpoint() {
	if w.ckpt != 0 {
		return
	}
	id, err := w.coord.Begin()
	if err != nil {
		w.t.Fatal(err)
	}
	w.ckpt = id
	w.readerBarrier = id
	for s := range w.inboxes {
		w.inboxes[s] = append(w.inboxes[s], shard.Item{Source: modelShards + 1, Barrier: id})
	}
}

// finishCheckpoint commits what the coordinator's core seals once every
// part came, as the driver does.
func (w *world) finishCheckpoint() {
	if w.ckpt == 0 {
		return
	}
	for _, p := range w.parts {
		if err := w.coord.AddPart(p); err != nil {
			w.t.Fatal(err)
		}
	}
	w.parts = nil
	if !w.coord.Ready() {
		return
	}
	cm, err := w.coord.Seal(w.now, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.store.Commit(cm.Overlays, cm.Meta); err != nil {
		w.t.Fatal(err)
	}
	for _, p := range cm.Parts {
		w.cores[p.Shard].Committed(p)
	}
	w.coord.Done()
	w.ckpt = 0
	// A crash may come between the commit and the publication.
	if w.rng.IntN(3) > 0 {
		w.publishPending()
	}
}

func (w *world) publishPending() {
	recs, err := w.store.PendingEgress("", 0)
	if err != nil {
		w.t.Fatal(err)
	}
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		if _, dup := w.published[r.GetMsgId()]; !dup {
			w.published[r.GetMsgId()] = r
		}
		ids = append(ids, r.GetMsgId())
	}
	if err := w.store.DeleteEgress(ids...); err != nil {
		w.t.Fatal(err)
	}
}

// drain runs without crashes until all work is done and checkpointed.
func (w *world) drain() {
	for i := 0; ; i++ {
		if i > 200000 {
			w.t.Fatalf("no quiescence after %d steps", i)
		}
		w.step(false)
		if w.readPos < len(w.log) || len(w.calls) > 0 || w.ckpt != 0 {
			continue
		}
		busy := false
		for s, c := range w.cores {
			busy = busy || !c.Idle() || len(w.inboxes[s]) > 0
		}
		if busy {
			continue
		}
		// Let delayed messages come due.
		w.now = w.now.Add(time.Second)
		pending := false
		for _, c := range w.cores {
			c.Tick()
			c.Dispatch()
			pending = pending || !c.Idle()
		}
		if pending {
			continue
		}
		w.checkpoint()
		for w.ckpt != 0 {
			w.step(false)
		}
		// The steps that completed the checkpoint may have done work after
		// a shard's snapshot (fired a delayed message, say): that work is
		// in no checkpoint yet, so drain again.
		if w.quiet() {
			w.publishPending()
			return
		}
	}
}

// quiet reports whether nothing is left to do and every shard's writes and
// egress are in a committed checkpoint.
func (w *world) quiet() bool {
	if w.readPos < len(w.log) || len(w.calls) > 0 || w.ckpt != 0 {
		return false
	}
	for s, c := range w.cores {
		if !c.Settled() || len(w.inboxes[s]) > 0 {
			return false
		}
	}
	return true
}

func (w *world) check() {
	v := state.NewView(w.store)
	for id, want := range w.expect {
		kg := keygroup.Of(id, modelK)
		vals, _, err := state.ReadAddress(v, kg, state.Address{Type: counterType, ID: id}, w.now.UnixMilli())
		if err != nil {
			w.t.Fatal(err)
		}
		var got int64
		if val, ok := vals["count"]; ok {
			got, _ = strconv.ParseInt(string(val.Data), 10, 64)
		}
		if got != want {
			w.t.Errorf("%s: count %d, want %d", id, got, want)
		}
	}
	dead := map[int]int{}
	for _, r := range w.published {
		if r.GetSubject() != router.FunctionDeadLetterSubject {
			w.t.Errorf("unexpected egress on %s", r.GetSubject())
			continue
		}
		var n node
		if err := json.Unmarshal(r.GetData(), &n); err != nil {
			w.t.Fatal(err)
		}
		dead[n.ID]++
	}
	for id := range w.bad {
		if dead[id] != 1 {
			w.t.Errorf("message %d dead-lettered %d times, want once", id, dead[id])
		}
	}
	for id, n := range dead {
		if !w.bad[id] {
			w.t.Errorf("message %d dead-lettered %d times, want never", id, n)
		}
	}
}
