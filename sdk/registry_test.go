package sdk_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/sdk"
)

func TestRegisterValidates(t *testing.T) {
	nop := sdk.FunctionFunc(func(sdk.Context, sdk.Message) error { return nil })
	reg := sdk.NewRegistry()
	must(t, reg.Register("test/taken", nop))

	for _, tc := range []struct {
		name   string
		typ    string
		fn     sdk.Function
		states []sdk.StateDecl
		want   string
	}{
		{"no namespace", "counter", nop, nil, `"namespace/name"`},
		{"empty name", "test/", nop, nil, `"namespace/name"`},
		{"two slashes", "test/a/b", nop, nil, "exactly one '/'"},
		{"space", "test/a b", nop, nil, "space"},
		{"nil function", "test/f", nil, nil, "function is nil"},
		{"duplicate type", "test/taken", nop, nil, "already registered"},
		{"duplicate state", "test/f", nop, []sdk.StateDecl{count, sdk.ValueSpec[string]{Name: "count", Type: sdk.StringType}}, `state "count" is declared twice`},
		{"nil state", "test/f", nop, []sdk.StateDecl{nil}, "nil"},
		{"unnamed state", "test/f", nop, []sdk.StateDecl{sdk.ValueSpec[int64]{Type: sdk.Int64Type}}, "state name is empty"},
		{"state without type", "test/f", nop, []sdk.StateDecl{sdk.ValueSpec[int64]{Name: "n"}}, "Type is nil"},
		{"state with bad typename", "test/f", nop, []sdk.StateDecl{sdk.ValueSpec[int64]{Name: "n", Type: sdk.JSONType[int64]("int")}}, `typename "int"`},
		{"expiry without delay", "test/f", nop, []sdk.StateDecl{sdk.ValueSpec[int64]{Name: "n", Type: sdk.Int64Type, ExpiryMode: sdk.ExpireAfterWrite}}, "at least 1ms"},
		{"delay without expiry", "test/f", nop, []sdk.StateDecl{sdk.ValueSpec[int64]{Name: "n", Type: sdk.Int64Type, ExpireAfter: time.Second}}, "ExpireNever"},
		{"unknown expiry", "test/f", nop, []sdk.StateDecl{sdk.ValueSpec[int64]{Name: "n", Type: sdk.Int64Type, ExpiryMode: 7, ExpireAfter: time.Second}}, "ExpiryMode(7)"},
		{"interface proto type", "test/f", nop, []sdk.StateDecl{sdk.ValueSpec[proto.Message]{Name: "n", Type: sdk.ProtoType[proto.Message]()}}, `typename ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := reg.Register(tc.typ, tc.fn, tc.states...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestExpiryIsRoundedUpToMilliseconds(t *testing.T) {
	reg := sdk.NewRegistry()
	must(t, reg.Register("test/f", sdk.FunctionFunc(func(sdk.Context, sdk.Message) error { return nil }),
		sdk.ValueSpec[int64]{Name: "n", Type: sdk.Int64Type, ExpiryMode: sdk.ExpireAfterInvoke, ExpireAfter: 1500 * time.Microsecond}))
	res := reg.RunBatch(t.Context(), &twinflowv1.AddressBatch{Target: addr("test/f", "1")})
	wantProto(t, "missing", res.GetMissingStates(), &twinflowv1.MissingStates{Specs: []*twinflowv1.StateSpec{
		{Name: "n", Typename: "twinflow/int64", ExpiryMode: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE, ExpireAfterMillis: 2},
	}})
}

func TestTerminal(t *testing.T) {
	base := errors.New("base")
	if sdk.Terminal(nil) != nil {
		t.Error("Terminal(nil) != nil")
	}
	if sdk.IsTerminal(base) {
		t.Error("a plain error is terminal")
	}
	wrapped := fmt.Errorf("context: %w", sdk.Terminal(base))
	if !sdk.IsTerminal(wrapped) || !errors.Is(wrapped, base) || wrapped.Error() != "context: base" {
		t.Errorf("wrapped terminal error: terminal=%v is=%v msg=%q", sdk.IsTerminal(wrapped), errors.Is(wrapped, base), wrapped)
	}
}
