package sdk_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/sdk"
)

func TestContextEffects(t *testing.T) {
	f := newTestFunctions(t)
	caller := addr("test/caller", "c")

	res := f.reg.RunBatch(t.Context(), counterBatch("a", tv(t, sdk.Int64Type, 5),
		&twinflowv1.Invocation{Argument: tv(t, sdk.StringType, "echo-caller"), Caller: caller},
		inv(tv(t, sdk.StringType, "delay")),
		inv(tv(t, sdk.StringType, "cancel")),
		inv(tv(t, sdk.StringType, "egress")),
		&twinflowv1.Invocation{Argument: tv(t, sdk.StringType, "reply"), ReplyTo: "_INBOX.1"},
		&twinflowv1.Invocation{Argument: tv(t, sdk.StringType, "forward"), ReplyTo: "_INBOX.2"},
		inv(tv(t, sdk.StringType, "clear")),
	))

	wantProto(t, "effects", effects(t, res), &twinflowv1.Effects{
		StateMutations: []*twinflowv1.StateMutation{{Name: "count", Kind: twinflowv1.StateMutation_KIND_DELETE}},
		Outgoing: []*twinflowv1.OutgoingMessage{
			{Target: caller, Argument: tv(t, sdk.StringType, "hello test/caller/c")},
			{Target: addr("test/counter", "other"), Argument: tv(t, sdk.StringType, "reply"), ReplyTo: "_INBOX.2"},
		},
		// "cancel" cancelled the message "delay" sent in the same batch: it
		// is not sent, and the cancellation covers one of earlier batches.
		Cancellations: []*twinflowv1.DelayedCancellation{{CancellationToken: "tick-token"}},
		Egress: []*twinflowv1.EgressRecord{
			{Egress: "totals", Key: "a", Value: tv(t, sdk.Int64Type, 5)},
			{Egress: "reply", ReplyTo: "_INBOX.1", Value: tv(t, sdk.Int64Type, 5)},
		},
	})
}

// TestCancelThenSendAfterInOneBatch checks the order the runtime relies
// on: it applies cancellations before delayed messages, so a message sent
// after a cancellation of its token in the same batch must stay.
func TestCancelThenSendAfterInOneBatch(t *testing.T) {
	f := newTestFunctions(t)
	res := f.reg.RunBatch(t.Context(), counterBatch("a", nil,
		inv(tv(t, sdk.StringType, "delay")), inv(tv(t, sdk.StringType, "cancel")), inv(tv(t, sdk.StringType, "delay"))))
	wantProto(t, "effects", effects(t, res), &twinflowv1.Effects{
		Delayed: []*twinflowv1.DelayedMessage{
			{Target: addr("test/counter", "a"), Argument: tv(t, sdk.StringType, "tick"), DelayMillis: 1500, CancellationToken: "tick-token"},
		},
		Cancellations: []*twinflowv1.DelayedCancellation{{CancellationToken: "tick-token"}},
	})
}

func TestReplyWithoutReplySubject(t *testing.T) {
	f := newTestFunctions(t)
	res := f.reg.RunBatch(t.Context(), counterBatch("a", nil, inv(tv(t, sdk.StringType, "reply"))))
	e := invocationError(t, res)
	if !strings.Contains(e.GetMessage(), sdk.ErrNoReplyTo.Error()) {
		t.Errorf("got %v, want %v", e, sdk.ErrNoReplyTo)
	}
}

func TestContextMisuse(t *testing.T) {
	other := sdk.ValueSpec[string]{Name: "other", Type: sdk.StringType}
	countAsString := sdk.ValueSpec[string]{Name: "count", Type: sdk.StringType}
	valid := sdk.TypedValue{Typename: "test/x"}
	for _, tc := range []struct {
		name string
		fn   func(ctx sdk.Context) error
		want string
	}{
		{"undeclared get", func(ctx sdk.Context) error { _, _, err := other.Get(ctx); return err }, `state "other" is not declared by function type test/f`},
		{"undeclared set", func(ctx sdk.Context) error { return other.Set(ctx, "x") }, `state "other" is not declared`},
		{"undeclared clear", func(ctx sdk.Context) error { other.Clear(ctx); return nil }, `state "other" is not declared`},
		{"spec with another type", func(ctx sdk.Context) error { return countAsString.Set(ctx, "x") }, `this ValueSpec has typename "twinflow/string" but the registered one has "twinflow/int64"`},
		{"send to invalid address", func(ctx sdk.Context) error { ctx.Send(sdk.Address{Type: "test/x"}, valid); return nil }, "address id is empty"},
		{"send invalid typename", func(ctx sdk.Context) error {
			ctx.Send(sdk.Address{Type: "test/x", ID: "1"}, sdk.TypedValue{})
			return nil
		}, `typename ""`},
		{"negative delay", func(ctx sdk.Context) error { ctx.SendAfter(-1, ctx.Self(), valid, ""); return nil }, "negative delay"},
		{"empty token", func(ctx sdk.Context) error { ctx.CancelDelayed(""); return nil }, "empty cancellation token"},
		{"empty egress", func(ctx sdk.Context) error { ctx.Egress("", valid); return nil }, "empty egress name"},
		{"reply through Egress", func(ctx sdk.Context) error { ctx.Egress("reply", valid); return nil }, "written with Reply"},
		{"typed send returns the error", func(ctx sdk.Context) error {
			return sdk.Send(ctx, sdk.Address{Type: "bad", ID: "1"}, sdk.StringType, "x")
		}, `function type "bad"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := sdk.NewRegistry()
			must(t, reg.Register("test/f", sdk.FunctionFunc(func(ctx sdk.Context, _ sdk.Message) error {
				ctx.Send(sdk.Address{Type: "test/sink", ID: "1"}, valid) // discarded with the failure
				return tc.fn(ctx)
			}), count))
			res := reg.RunBatch(t.Context(), &twinflowv1.AddressBatch{
				Target:      addr("test/f", "1"),
				State:       []*twinflowv1.StateValue{{Name: "count"}},
				Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.StringType, "go"))},
			})
			if e := invocationError(t, res); !strings.Contains(e.GetMessage(), tc.want) {
				t.Errorf("got %q, want it to contain %q", e.GetMessage(), tc.want)
			}
		})
	}
}

func TestContextIsInvalidAfterInvoke(t *testing.T) {
	var kept sdk.Context
	reg := sdk.NewRegistry()
	must(t, reg.Register("test/f", sdk.FunctionFunc(func(ctx sdk.Context, _ sdk.Message) error {
		kept = ctx
		return nil
	}), count))
	b := &twinflowv1.AddressBatch{
		Target:      addr("test/f", "1"),
		State:       []*twinflowv1.StateValue{{Name: "count"}},
		Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.StringType, "go"))},
	}
	wantProto(t, "effects", effects(t, reg.RunBatch(t.Context(), b)), &twinflowv1.Effects{})
	if err := count.Set(kept, 1); err == nil {
		t.Error("Set after the invocation returned succeeded")
	}
	if err := sdk.Send(kept, kept.Self(), sdk.Int64Type, 1); err == nil {
		t.Error("Send after the invocation returned succeeded")
	}
}

func TestContextFromSeveralGoroutines(t *testing.T) {
	reg := sdk.NewRegistry()
	must(t, reg.Register("test/f", sdk.FunctionFunc(func(ctx sdk.Context, _ sdk.Message) error {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_ = sdk.Send(ctx, ctx.Self(), sdk.Int64Type, 1)
				_ = count.Set(ctx, 1)
			})
		}
		wg.Wait()
		return nil
	}), count))
	res := reg.RunBatch(t.Context(), &twinflowv1.AddressBatch{
		Target:      addr("test/f", "1"),
		State:       []*twinflowv1.StateValue{{Name: "count"}},
		Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.StringType, "go"))},
	})
	if got := len(effects(t, res).GetOutgoing()); got != 8 {
		t.Errorf("%d messages, want 8", got)
	}
}

func TestCancelledContextStopsTheBatch(t *testing.T) {
	f := newTestFunctions(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res := f.reg.RunBatch(ctx, counterBatch("a", nil, inv(tv(t, sdk.Int64Type, 1))))
	if e := invocationError(t, res); e.GetKind() != twinflowv1.InvocationError_KIND_RETRYABLE {
		t.Errorf("got %v, want a retryable error", e)
	}
}

func TestRunBatchRejectsMalformedBatch(t *testing.T) {
	f := newTestFunctions(t)
	badTypename := func(typename string) *twinflowv1.AddressBatch {
		return counterBatch("a", nil, inv(&twinflowv1.TypedValue{Typename: typename}))
	}
	for _, b := range []*twinflowv1.AddressBatch{
		nil, {}, {Target: addr("x", "1")}, {Target: addr("test/counter", "\xff")},
		badTypename("test/\xff"), badTypename("test/a\tb"), badTypename("test/a\u00a0b"), badTypename("test/a\x7fb"), badTypename("/a"),
	} {
		e := invocationError(t, f.reg.RunBatch(t.Context(), b))
		if e.GetKind() != twinflowv1.InvocationError_KIND_TERMINAL || e.GetInvocationIndex() != -1 {
			t.Errorf("batch %v: got %v, want a terminal error for the whole batch", b, e)
		}
	}
}

func TestEmptyBatchOnlyChecksState(t *testing.T) {
	f := newTestFunctions(t)
	res := f.reg.RunBatch(t.Context(), &twinflowv1.AddressBatch{Target: addr("test/counter", "a")})
	if res.GetMissingStates() == nil {
		t.Errorf("got %v, want missing states", res)
	}
	res = f.reg.RunBatch(t.Context(), counterBatch("a", nil))
	wantProto(t, "effects", effects(t, res), &twinflowv1.Effects{})
}
