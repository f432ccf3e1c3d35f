package sdktest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

var (
	total = sdk.ValueSpec[int64]{Name: "total", Type: sdk.Int64Type}
	label = sdk.ValueSpec[string]{Name: "label", Type: sdk.StringType, ExpiryMode: sdk.ExpireAfterInvoke, ExpireAfter: time.Minute}
)

// adder adds int64 messages to total; string messages are commands.
func adder(ctx sdk.Context, msg sdk.Message) error {
	if msg.Is(sdk.StringType.Typename()) {
		cmd, err := sdk.As(msg, sdk.StringType)
		if err != nil {
			return err
		}
		switch cmd {
		case "reset":
			total.Clear(ctx)
			return label.Set(ctx, "reset")
		case "report":
			n, _, err := total.Get(ctx)
			if err != nil {
				return err
			}
			if err := sdk.Reply(ctx, sdk.Int64Type, n); err != nil {
				return err
			}
			if err := sdk.Egress(ctx, "reports", sdk.Int64Type, n); err != nil {
				return err
			}
			if caller, ok := ctx.Caller(); ok {
				return sdk.Send(ctx, caller, sdk.Int64Type, n)
			}
			return nil
		case "remind":
			return sdk.SendAfter(ctx, time.Minute, ctx.Self(), sdk.StringType, "report", "reminder")
		case "forget":
			ctx.CancelDelayed("reminder")
			return nil
		}
		return sdk.Terminal(errors.New("unknown command " + cmd))
	}
	d, err := sdk.As(msg, sdk.Int64Type)
	if err != nil {
		return sdk.Terminal(err)
	}
	n, _, err := total.Get(ctx)
	if err != nil {
		return err
	}
	if err := total.Set(ctx, n+d); err != nil {
		return err
	}
	if n+d > 100 {
		return errors.New("total over 100")
	}
	return nil
}

func setup(t *testing.T) (*sdktest.Harness, sdk.Address) {
	t.Helper()
	reg := sdk.NewRegistry()
	if err := reg.Register("test/adder", sdk.FunctionFunc(adder), total, label); err != nil {
		t.Fatal(err)
	}
	return sdktest.New(reg), sdk.Address{Type: "test/adder", ID: "a"}
}

func encode[T any](t *testing.T, typ sdk.Type[T], v T) sdk.TypedValue {
	t.Helper()
	x, err := sdk.Encode(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func wantState[T comparable](t *testing.T, h *sdktest.Harness, a sdk.Address, spec sdk.ValueSpec[T], want T, wantOK bool) {
	t.Helper()
	got, ok, err := sdktest.StateOf(h, a, spec)
	if err != nil || got != want || ok != wantOK {
		t.Errorf("state %s = %v, %v, %v; want %v, %v, <nil>", spec.Name, got, ok, err, want, wantOK)
	}
}

func TestStateCarriesOverAndIsPerAddress(t *testing.T) {
	h, a := setup(t)
	b := sdk.Address{Type: "test/adder", ID: "b"}
	for _, d := range []int64{1, 2, 3} {
		if _, err := h.Invoke(a, encode(t, sdk.Int64Type, d)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Invoke(b, encode(t, sdk.Int64Type, 10)); err != nil {
		t.Fatal(err)
	}
	wantState(t, h, a, total, 6, true)
	wantState(t, h, b, total, 10, true)
	wantState(t, h, a, label, "", false)

	if _, err := h.Invoke(a, encode(t, sdk.StringType, "reset")); err != nil {
		t.Fatal(err)
	}
	wantState(t, h, a, total, 0, false)
	wantState(t, h, a, label, "reset", true)
}

func TestFailureChangesNothing(t *testing.T) {
	h, a := setup(t)
	if err := sdktest.SetState(h, a, total, 99); err != nil {
		t.Fatal(err)
	}
	_, err := h.Invoke(a, encode(t, sdk.Int64Type, 5))
	var e *sdktest.Error
	if !errors.As(err, &e) || e.Terminal || e.Message != "total over 100" || e.Index != 0 {
		t.Fatalf("got %#v, want a retryable error", err)
	}
	wantState(t, h, a, total, 99, true)

	_, err = h.Invoke(a, encode(t, sdk.StringType, "dance"))
	if !errors.As(err, &e) || !e.Terminal || !strings.Contains(err.Error(), "terminal error: unknown command dance") {
		t.Fatalf("got %v, want a terminal error", err)
	}
}

func TestEffects(t *testing.T) {
	h, a := setup(t)
	caller := sdk.Address{Type: "test/boss", ID: "1"}
	if err := sdktest.SetState(h, a, total, 7); err != nil {
		t.Fatal(err)
	}
	res, err := h.Invoke(a, encode(t, sdk.StringType, "report"), sdktest.WithCaller(caller), sdktest.WithReplyTo("_INBOX.42"))
	if err != nil {
		t.Fatal(err)
	}
	seven := encode(t, sdk.Int64Type, 7)
	if len(res.Replies) != 1 || res.Replies[0].ReplyTo != "_INBOX.42" || string(res.Replies[0].Value.Bytes) != "7" {
		t.Errorf("replies = %+v", res.Replies)
	}
	if len(res.Egress) != 1 || res.Egress[0].Egress != "reports" || res.Egress[0].Value.Typename != seven.Typename {
		t.Errorf("egress = %+v", res.Egress)
	}
	if len(res.Sent) != 1 || res.Sent[0].To != caller || string(res.Sent[0].Value.Bytes) != "7" {
		t.Errorf("sent = %+v", res.Sent)
	}

	res, err = h.Invoke(a, encode(t, sdk.StringType, "remind"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delayed) != 1 || res.Delayed[0].Delay != time.Minute || res.Delayed[0].CancellationToken != "reminder" || res.Delayed[0].To != a {
		t.Errorf("delayed = %+v", res.Delayed)
	}
	res, err = h.Invoke(a, encode(t, sdk.StringType, "forget"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cancelled) != 1 || res.Cancelled[0] != "reminder" {
		t.Errorf("cancelled = %v", res.Cancelled)
	}

	// Without a reply subject, Reply fails and so does the invocation.
	if _, err := h.Invoke(a, encode(t, sdk.StringType, "report")); err == nil || !strings.Contains(err.Error(), sdk.ErrNoReplyTo.Error()) {
		t.Errorf("got %v, want %v", err, sdk.ErrNoReplyTo)
	}
}

func TestStateOfOtherType(t *testing.T) {
	h, a := setup(t)
	h.SetRawState(a, "total", encode(t, sdk.StringType, "old"))
	if _, _, err := sdktest.StateOf(h, a, total); err == nil {
		t.Error("StateOf decoded a string as an int64")
	}
	_, err := h.Invoke(a, encode(t, sdk.Int64Type, 1))
	if err == nil || !strings.Contains(err.Error(), `holds a value of typename "twinflow/string", but its spec declares "twinflow/int64"`) {
		t.Errorf("got %v", err)
	}
	h.ClearState(a, "total")
	if _, err := h.Invoke(a, encode(t, sdk.Int64Type, 1)); err != nil {
		t.Fatal(err)
	}
	wantState(t, h, a, total, 1, true)
}

func TestUnregisteredType(t *testing.T) {
	h, _ := setup(t)
	_, err := h.Invoke(sdk.Address{Type: "test/none", ID: "1"}, encode(t, sdk.Int64Type, 1))
	var e *sdktest.Error
	if !errors.As(err, &e) || !e.Terminal || e.Index != -1 {
		t.Errorf("got %v, want a terminal error for the batch", err)
	}
}
