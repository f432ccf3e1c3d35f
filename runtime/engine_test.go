package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/sdk"
)

var count = sdk.ValueSpec[int64]{Name: "count", Type: sdk.Int64Type}

// last is the sequence number of the last message orderFn applied.
var last = sdk.ValueSpec[int64]{Name: "last", Type: sdk.Int64Type}

// orderFn takes messages numbered 1, 2, ... and fails terminally on a
// message out of order; it counts the messages.
func orderFn(ctx sdk.Context, msg sdk.Message) error {
	n, err := sdk.As(msg, sdk.Int64Type)
	if err != nil {
		return sdk.Terminal(err)
	}
	l, _, err := last.Get(ctx)
	if err != nil {
		return err
	}
	if n != l+1 {
		return sdk.Terminal(fmt.Errorf("message %d after %d: out of order", n, l))
	}
	c, _, err := count.Get(ctx)
	if err != nil {
		return err
	}
	if err := last.Set(ctx, n); err != nil {
		return err
	}
	return count.Set(ctx, c+1)
}

// counter adds each int64 message to its count and writes the new count to
// the "out" egress.
func counter(ctx sdk.Context, msg sdk.Message) error {
	n, err := sdk.As(msg, sdk.Int64Type)
	if err != nil {
		return sdk.Terminal(err)
	}
	c, _, err := count.Get(ctx)
	if err != nil {
		return err
	}
	c += n
	if err := count.Set(ctx, c); err != nil {
		return err
	}
	return sdk.Egress(ctx, "out", sdk.StringType, fmt.Sprintf("%s=%d", ctx.Self().ID, c))
}

func TestMessagesChangeStateAndEgress(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reg.Register("test/counter", sdk.FunctionFunc(counter), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))
	out := h.subscribe("test.out")

	const addresses, perAddress = 20, 10
	for i := 0; i < perAddress; i++ {
		for a := 0; a < addresses; a++ {
			h.sendInt("test/counter", fmt.Sprintf("a%d", a), 1)
		}
	}
	for a := 0; a < addresses; a++ {
		id := fmt.Sprintf("a%d", a)
		testwait.For(t, "count of "+id, func() bool { return h.stateInt("test/counter", id, "count") == perAddress })
	}
	testwait.For(t, "egress records", func() bool { return len(out.all()) == addresses*perAddress })
	seen := map[string]bool{}
	for _, m := range out.all() {
		var s string
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Errorf("egress record %q published twice", s)
		}
		seen[s] = true
		if got := m.Header.Get(router.SourceHeader); !strings.HasPrefix(got, "test/counter/a") {
			t.Errorf("source header = %q", got)
		}
	}
	// Once a checkpoint covers them, the ingress messages are trimmed.
	testwait.For(t, "the ingress stream trimmed", func() bool {
		s, err := h.ops.Stream(context.Background(), runtime.DirectStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
}

var received = sdk.ValueSpec[[]int64]{Name: "received", Type: sdk.JSONType[[]int64]("test/ints")}

// TestOrderPerSenderAndReceiver sends numbered messages from several senders
// (on both shards) to one receiver and checks that each sender's messages
// arrive in the order sent.
func TestOrderPerSenderAndReceiver(t *testing.T) {
	reg := sdk.NewRegistry()
	relay := func(ctx sdk.Context, msg sdk.Message) error {
		n, err := sdk.As(msg, sdk.Int64Type)
		if err != nil {
			return sdk.Terminal(err)
		}
		return sdk.Send(ctx, sdk.Address{Type: "test/sink", ID: "sink"}, sdk.Int64Type, n)
	}
	sink := func(ctx sdk.Context, msg sdk.Message) error {
		n, err := sdk.As(msg, sdk.Int64Type)
		if err != nil {
			return sdk.Terminal(err)
		}
		caller, _ := ctx.Caller()
		// Encode the sender in the value: sender index * 1e6 + sequence.
		idx, _ := strconv.Atoi(strings.TrimPrefix(caller.ID, "s"))
		list, _, err := received.Get(ctx)
		if err != nil {
			return err
		}
		return received.Set(ctx, append(list, int64(idx)*1e6+n))
	}
	if err := reg.Register("test/relay", sdk.FunctionFunc(relay)); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("test/sink", sdk.FunctionFunc(sink), received); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))
	const senders, each = 6, 50
	for i := 0; i < each; i++ {
		for s := 0; s < senders; s++ {
			h.sendInt("test/relay", fmt.Sprintf("s%d", s), int64(i))
		}
	}
	var list []int64
	testwait.For(t, "all messages at the sink", func() bool {
		raw := h.state("test/sink", "sink")["received"]
		list = nil
		if raw != nil {
			if err := json.Unmarshal(raw, &list); err != nil {
				t.Fatal(err)
			}
		}
		return len(list) == senders*each
	})
	next := make(map[int64]int64)
	for _, v := range list {
		s, n := v/1e6, v%1e6
		if n != next[s] {
			t.Fatalf("sender s%d: got message %d, want %d (order broken)", s, n, next[s])
		}
		next[s]++
	}
}

// TestSlowFunctionGetsBacklogAsOneBatch holds the first invocation of an
// address while more messages arrive; they must come as the next batch, in
// order.
func TestSlowFunctionGetsBacklogAsOneBatch(t *testing.T) {
	release := make(chan struct{})
	var first atomic.Bool
	reg := sdk.NewRegistry()
	slow := func(ctx sdk.Context, msg sdk.Message) error {
		if first.CompareAndSwap(false, true) {
			<-release
		}
		return counter(ctx, msg)
	}
	if err := reg.Register("test/slow", sdk.FunctionFunc(slow), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))
	h.sendInt("test/slow", "x", 1)
	testwait.For(t, "the first call", first.Load)
	const backlog = 40
	for i := 0; i < backlog; i++ {
		h.sendInt("test/slow", "x", int64(i+2))
	}
	// The backlog is queued in the shard once the reader has delivered it.
	testwait.For(t, "the backlog read", func() bool { return h.metric("twinflow_ingress_messages_total") >= backlog+1 })
	close(release)
	testwait.For(t, "all applied", func() bool { return h.stateInt("test/slow", "x", "count") == int64(1+backlog*(backlog+3)/2) })

	var batches [][]int64
	for _, b := range ep.batches("test/slow", "x") {
		var vals []int64
		for _, inv := range b {
			n, _ := strconv.ParseInt(string(inv.GetArgument().GetValue()), 10, 64)
			vals = append(vals, n)
		}
		batches = append(batches, vals)
	}
	// The first batch is sent twice when state specs are first learnt.
	if len(batches) < 2 {
		t.Fatalf("batches = %v, want the held message then the backlog", batches)
	}
	last := batches[len(batches)-1]
	if len(last) != backlog {
		t.Fatalf("last batch has %d messages, want the whole backlog of %d: %v", len(last), backlog, batches)
	}
	for i, v := range last {
		if v != int64(i+2) {
			t.Fatalf("backlog out of order at %d: %v", i, last)
		}
	}
}

// TestFailingAddressIsIsolated makes one address fail every call, with an
// endpoint that allows 4 attempts: it ends in the dead-letter subject with
// the reason, and the others are processed.
func TestFailingAddressIsIsolated(t *testing.T) {
	reg := sdk.NewRegistry()
	flaky := func(ctx sdk.Context, msg sdk.Message) error {
		if ctx.Self().ID == "bad" {
			return errors.New("disk on fire")
		}
		return counter(ctx, msg)
	}
	if err := reg.Register("test/flaky", sdk.FunctionFunc(flaky), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	cfg := baseConfig(t, ep.url())
	cfg.Module.Endpoints[0].MaxAttempts = 4
	h := start(t, cfg)
	dlq := h.subscribe(router.FunctionDeadLetterSubject)
	h.sendInt("test/flaky", "bad", 1)
	for i := 0; i < 20; i++ {
		h.sendInt("test/flaky", fmt.Sprintf("good%d", i%4), 1)
	}
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("good%d", i)
		testwait.For(t, id, func() bool { return h.stateInt("test/flaky", id, "count") == 5 })
	}
	testwait.For(t, "dead letter", func() bool { return len(dlq.all()) == 1 })
	m := dlq.all()[0]
	reason := m.Header.Get(router.ErrorHeader)
	if !strings.Contains(reason, "disk on fire") || !strings.Contains(reason, "4 attempts") {
		t.Errorf("dead letter reason = %q, want the function's error and the attempts", reason)
	}
	if got := m.Header.Get(router.TargetHeader); got != "test/flaky/bad" {
		t.Errorf("dead letter target = %q", got)
	}
	if string(m.Data) != "1" {
		t.Errorf("dead letter payload = %q, want the original message", m.Data)
	}
	// The address carries on after the dead letter.
	h.sendInt("test/flaky", "bad", 1)
	testwait.For(t, "second dead letter", func() bool { return len(dlq.all()) == 2 })
}

var fired = sdk.ValueSpec[[]string]{Name: "fired", Type: sdk.JSONType[[]string]("test/strings")}

// timerFn understands commands as strings: "after <ms> <token> <label>",
// "cancel <token>", and "fire <label>" (what a delayed message carries).
func timerFn(ctx sdk.Context, msg sdk.Message) error {
	cmd, err := sdk.As(msg, sdk.StringType)
	if err != nil {
		return sdk.Terminal(err)
	}
	f := strings.Fields(cmd)
	switch f[0] {
	case "after":
		ms, _ := strconv.Atoi(f[1])
		tok := f[2]
		if tok == "-" {
			tok = ""
		}
		return sdk.SendAfter(ctx, time.Duration(ms)*time.Millisecond, ctx.Self(), sdk.StringType, "fire "+f[3], tok)
	case "cancel":
		ctx.CancelDelayed(f[1])
		return nil
	case "fire":
		list, _, err := fired.Get(ctx)
		if err != nil {
			return err
		}
		return fired.Set(ctx, append(list, f[1]))
	}
	return sdk.Terminal(fmt.Errorf("unknown command %q", cmd))
}

func (h *harness) sendString(functionType, id, s string) {
	v, _ := sdk.Encode(sdk.StringType, s)
	h.send(functionType, id, v.Typename, v.Bytes)
}

func (h *harness) fired(id string) []string {
	var list []string
	if raw := h.state("test/timer", id)["fired"]; raw != nil {
		if err := json.Unmarshal(raw, &list); err != nil {
			h.t.Fatal(err)
		}
	}
	return list
}

func TestDelayedMessages(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reg.Register("test/timer", sdk.FunctionFunc(timerFn), fired); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))

	// Fired in order of due time, not of sending.
	h.sendString("test/timer", "order", "after 300 - late")
	h.sendString("test/timer", "order", "after 100 - early")
	// Cancelled: never fires; cancelling twice is harmless.
	h.sendString("test/timer", "cancel", "after 200 tok never")
	h.sendString("test/timer", "cancel", "cancel tok")
	h.sendString("test/timer", "cancel", "cancel tok")
	h.sendString("test/timer", "cancel", "after 250 - marker")
	// A duplicate pending token replaces the earlier message.
	h.sendString("test/timer", "dup", "after 200 tok first")
	h.sendString("test/timer", "dup", "after 200 tok second")
	h.sendString("test/timer", "dup", "after 400 - marker")

	testwait.For(t, "order", func() bool { return len(h.fired("order")) == 2 })
	if got := h.fired("order"); got[0] != "early" || got[1] != "late" {
		t.Errorf("fired %v, want [early late]", got)
	}
	testwait.For(t, "cancel marker", func() bool { return len(h.fired("cancel")) >= 1 })
	if got := h.fired("cancel"); len(got) != 1 || got[0] != "marker" {
		t.Errorf("cancelled timer fired: %v", got)
	}
	testwait.For(t, "dup marker", func() bool { return len(h.fired("dup")) >= 2 })
	if got := h.fired("dup"); len(got) != 2 || got[0] != "second" || got[1] != "marker" {
		t.Errorf("duplicate token: fired %v, want [second marker]", got)
	}
}

func TestDelayedMessagesSurviveRestart(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reg.Register("test/timer", sdk.FunctionFunc(timerFn), fired); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))
	h.sendString("test/timer", "r", "after 1500 - survived")
	h.sendString("test/timer", "r", "after 1 - ready")
	testwait.For(t, "the first timer", func() bool { return len(h.fired("r")) == 1 })
	h.restart()
	testwait.For(t, "the timer after restart", func() bool { return len(h.fired("r")) == 2 })
	if got := h.fired("r"); got[1] != "survived" {
		t.Errorf("fired %v", got)
	}
}

// TestExpiryWithInjectedClock moves a fake clock past a value's expiry.
func TestExpiryWithInjectedClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	written := sdk.ValueSpec[int64]{Name: "w", Type: sdk.Int64Type, ExpiryMode: sdk.ExpireAfterWrite, ExpireAfter: time.Minute}
	touched := sdk.ValueSpec[int64]{Name: "i", Type: sdk.Int64Type, ExpiryMode: sdk.ExpireAfterInvoke, ExpireAfter: time.Minute}
	reg := sdk.NewRegistry()
	fn := func(ctx sdk.Context, msg sdk.Message) error {
		cmd, _ := sdk.As(msg, sdk.StringType)
		if cmd == "write" {
			if err := written.Set(ctx, 1); err != nil {
				return err
			}
			return touched.Set(ctx, 1)
		}
		return nil // a plain invocation keeps after-invoke values alive
	}
	if err := reg.Register("test/ttl", sdk.FunctionFunc(fn), written, touched); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	cfg := baseConfig(t, ep.url())
	cfg.Now = clock
	h := start(t, cfg)
	h.sendString("test/ttl", "a", "write")
	testwait.For(t, "write", func() bool { return len(h.state("test/ttl", "a")) == 2 })
	advance(40 * time.Second)
	h.sendString("test/ttl", "a", "touch")
	// Applied, not only received by the endpoint: the touch's time is taken
	// when its result is applied.
	testwait.For(t, "touch applied", func() bool { return h.metric(`twinflow_invocations_total{function_type="test/ttl"}`) == 2 })
	advance(40 * time.Second) // 80s after the write, 40s after the touch
	st := h.state("test/ttl", "a")
	if _, ok := st["w"]; ok {
		t.Error("after-write value still there 80s after a 1m expiry")
	}
	if _, ok := st["i"]; !ok {
		t.Error("after-invoke value expired although the address was invoked 40s ago")
	}
	advance(time.Minute)
	if st := h.state("test/ttl", "a"); len(st) != 0 {
		t.Errorf("values still there after expiry: %v", st)
	}
}

// TestBackpressureBoundsQueues blocks a function while far more messages
// than an address may hold in memory are published: the backlog spills to
// the store, intake goes on, and once the function resumes every message is
// applied, in order.
func TestHotAddressBacklogSpills(t *testing.T) {
	release := make(chan struct{})
	reg := sdk.NewRegistry()
	blocked := func(ctx sdk.Context, msg sdk.Message) error {
		<-release
		return orderFn(ctx, msg)
	}
	if err := reg.Register("test/blocked", sdk.FunctionFunc(blocked), last, count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	cfg := baseConfig(t, ep.url())
	cfg.MaxAddressQueue = 100
	h := start(t, cfg)
	const total = 3000
	for i := 0; i < total; i++ {
		h.sendInt("test/blocked", "hot", int64(i+1))
	}
	testwait.For(t, "every message read while the function is blocked", func() bool {
		return h.metric("twinflow_ingress_messages_total") == total
	})
	if n := h.metric("twinflow_spilled_messages_total"); n < total-2*100-256 {
		t.Fatalf("%v messages spilled, want all but those in memory and in the call", n)
	}
	close(release)
	testwait.For(t, "every message applied", func() bool { return h.stateInt("test/blocked", "hot", "count") == total })
	if got := h.stateInt("test/blocked", "hot", "last"); got != total {
		t.Fatalf("last message applied %d, want %d", got, total)
	}
}

// TestStateSpecsAreNotRenegotiatedAfterRestart checks that after a restart
// the first call already ships the declared state.
func TestStateSpecsAreNotRenegotiatedAfterRestart(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reg.Register("test/counter", sdk.FunctionFunc(counter), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))
	h.sendInt("test/counter", "a", 1)
	testwait.For(t, "count", func() bool { return h.stateInt("test/counter", "a", "count") == 1 })
	if n := len(ep.requestsFor("test/counter")); n != 2 {
		t.Fatalf("%d batches before restart, want 2 (missing state, then the real call)", n)
	}
	h.restart()
	h.sendInt("test/counter", "b", 1)
	testwait.For(t, "count b", func() bool { return h.stateInt("test/counter", "b", "count") == 1 })
	batches := ep.requestsFor("test/counter")
	if n := len(batches); n != 3 {
		t.Fatalf("%d batches in all, want 3: specs were negotiated again after restart", n)
	}
	if len(batches[2].GetState()) != 1 || batches[2].GetState()[0].GetName() != "count" {
		t.Errorf("batch after restart shipped state %v, want the count spec", batches[2].GetState())
	}
}

// TestCrashLosesUncheckpointedWriteAndReplaysInput processes a message,
// crashes before any checkpoint covers it, and restarts: the write is gone,
// the message is processed again, and its effect counts once.
func TestCrashLosesUncheckpointedWriteAndReplaysInput(t *testing.T) {
	var calls atomic.Int64
	reg := sdk.NewRegistry()
	fn := func(ctx sdk.Context, msg sdk.Message) error {
		calls.Add(1)
		return counter(ctx, msg)
	}
	if err := reg.Register("test/counter", sdk.FunctionFunc(fn), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	cfg := baseConfig(t, ep.url())
	cfg.CheckpointInterval = time.Hour
	h := start(t, cfg)
	if _, err := h.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.sendInt("test/counter", "a", 7)
	testwait.For(t, "the write", func() bool { return h.stateInt("test/counter", "a", "count") == 7 })
	before := calls.Load()

	// Restart without the input being processed: a fresh registry-less engine
	// would show the write is gone; here the replay re-applies it once.
	h.crash()
	testwait.For(t, "the replay", func() bool { return calls.Load() > before })
	testwait.For(t, "the count", func() bool { return h.stateInt("test/counter", "a", "count") == 7 })
	if got := h.stateInt("test/counter", "a", "count"); got != 7 {
		t.Fatalf("count = %d after crash and replay, want 7 (effect applied exactly once)", got)
	}
}

func TestConfigRejectsBudgetThatDoesNotFit(t *testing.T) {
	cfg := runtime.Config{DataDir: t.TempDir(), Memory: runtime.Memory{Total: 1 << 30, BlockCache: 0.6, Queues: 0.5}}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "block cache 0.60") || !strings.Contains(err.Error(), "queues 0.50") {
		t.Fatalf("err = %v, want the parts named", err)
	}
	cfg = runtime.Config{DataDir: t.TempDir(), Memory: runtime.Memory{Total: 64 << 20}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "runtime reserve") {
		t.Fatalf("err = %v, want the reserve named as too small", err)
	}
}

// TestFailedRequestIsAnsweredWithTheError sends a request to a function
// that fails terminally: the requester gets the error at once rather than
// waiting out its timeout.
func TestFailedRequestIsAnsweredWithTheError(t *testing.T) {
	reg := sdk.NewRegistry()
	broken := func(ctx sdk.Context, msg sdk.Message) error {
		return sdk.Terminal(errors.New("no such rack"))
	}
	if err := reg.Register("test/broken", sdk.FunctionFunc(broken)); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))
	subject, err := router.DirectSubject("test/broken", "x")
	if err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{}
	hdr.Set(router.TypenameHeader, sdk.StringType.Typename())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reply, err := natsbus.Request(ctx, h.js, subject, hdr, []byte(`"hi"`))
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if e := reply.Header.Get(router.ErrorHeader); !strings.Contains(e, "no such rack") {
		t.Fatalf("reply error header = %q, want the function's error", e)
	}
}
