package sdk_test

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/sdk"
)

func roundTrip[T any](t *testing.T, typ sdk.Type[T], v T, wantTypename, wantBytes string) T {
	t.Helper()
	x, err := sdk.Encode(typ, v)
	must(t, err)
	if x.Typename != wantTypename {
		t.Errorf("typename %q, want %q", x.Typename, wantTypename)
	}
	if wantBytes != "" && string(x.Bytes) != wantBytes {
		t.Errorf("bytes %q, want %q", x.Bytes, wantBytes)
	}
	got, err := sdk.Decode(typ, x)
	must(t, err)
	return got
}

func TestTypesRoundTrip(t *testing.T) {
	if got := roundTrip(t, sdk.Int64Type, 42, "twinflow/int64", "42"); got != 42 {
		t.Errorf("int64: %v", got)
	}
	if got := roundTrip(t, sdk.Float64Type, 1.5, "twinflow/float64", "1.5"); got != 1.5 {
		t.Errorf("float64: %v", got)
	}
	if got := roundTrip(t, sdk.StringType, "x", "twinflow/string", `"x"`); got != "x" {
		t.Errorf("string: %v", got)
	}
	if got := roundTrip(t, sdk.BoolType, true, "twinflow/bool", "true"); !got {
		t.Errorf("bool: %v", got)
	}
	if got := roundTrip(t, sdk.BytesType, []byte{0, 1, 255}, "twinflow/bytes", "\x00\x01\xff"); !bytes.Equal(got, []byte{0, 1, 255}) {
		t.Errorf("bytes: %v", got)
	}
	type reading struct {
		Sensor string  `json:"sensor"`
		Value  float64 `json:"value"`
	}
	r := reading{"temp", 21.5}
	if got := roundTrip(t, sdk.JSONType[reading]("test/Reading"), r, "test/Reading", `{"sensor":"temp","value":21.5}`); got != r {
		t.Errorf("json: %v", got)
	}
	a := &twinflowv1.Address{Type: "test/x", Id: "1"}
	if got := roundTrip(t, sdk.ProtoType[*twinflowv1.Address](), a, "proto/twinflow.v1.Address", ""); !proto.Equal(got, a) {
		t.Errorf("proto: %v", got)
	}
}

func TestDecodeChecksTypename(t *testing.T) {
	v, err := sdk.Encode(sdk.StringType, "42")
	must(t, err)
	_, err = sdk.Decode(sdk.Int64Type, v)
	if err == nil || !strings.Contains(err.Error(), `"twinflow/string"`) || !strings.Contains(err.Error(), `"twinflow/int64"`) {
		t.Errorf("got %v, want an error naming both typenames", err)
	}
}

func TestAsChecksTypename(t *testing.T) {
	reg := sdk.NewRegistry()
	var asErr error
	must(t, reg.Register("test/f", sdk.FunctionFunc(func(ctx sdk.Context, msg sdk.Message) error {
		_, asErr = sdk.As(msg, sdk.Int64Type)
		return nil
	})))
	reg.RunBatch(t.Context(), &twinflowv1.AddressBatch{Target: addr("test/f", "1"), Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.StringType, "x"))}})
	if asErr == nil || !strings.Contains(asErr.Error(), `message: value has typename "twinflow/string", want "twinflow/int64"`) {
		t.Errorf("got %v", asErr)
	}
}

func TestEncodeRejectsBadTypes(t *testing.T) {
	if _, err := sdk.Encode(sdk.JSONType[int]("no-namespace"), 1); err == nil {
		t.Error("Encode accepted a typename without namespace")
	}
	if _, err := sdk.Encode[int](nil, 1); err == nil {
		t.Error("Encode accepted a nil type")
	}
	if _, err := sdk.Encode(sdk.JSONType[func()]("test/fn"), func() {}); err == nil {
		t.Error("Encode accepted an unencodable value")
	}
	if _, err := sdk.Decode(sdk.ProtoType[*twinflowv1.Address](), sdk.TypedValue{Typename: "proto/twinflow.v1.Address", Bytes: []byte{0xff}}); err == nil {
		t.Error("Decode accepted bad protobuf")
	}
}

func TestBytesTypeCopies(t *testing.T) {
	b := []byte("abc")
	x, err := sdk.Encode(sdk.BytesType, b)
	must(t, err)
	b[0] = 'X'
	if string(x.Bytes) != "abc" {
		t.Errorf("encoded bytes changed with the input: %q", x.Bytes)
	}
}

func TestAddress(t *testing.T) {
	a := sdk.Address{Type: "datacenter/server", ID: "srv-1"}
	if a.String() != "datacenter/server/srv-1" {
		t.Errorf("String() = %q", a.String())
	}
	if err := a.Validate(); err != nil {
		t.Error(err)
	}
	if err := (sdk.Address{Type: "datacenter/server", ID: "\xff"}).Validate(); err == nil {
		t.Error("invalid UTF-8 id accepted")
	}
}
