package suite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// The typenames the suite sends and expects (conformance/README.md).
const (
	int64Type   = "twinflow/int64"
	float64Type = "twinflow/float64"
	stringType  = "twinflow/string"
	boolType    = "twinflow/bool"
	bytesType   = "twinflow/bytes"
	scriptType  = "conformance/Script"
	pairType    = "conformance/Pair"
	sumType     = "conformance/Sum"
	addressType = "proto/twinflow.v1.Address"
)

// The reference function types.
const (
	counterFn = "conformance/counter"
	actorFn   = "conformance/actor"
	codecFn   = "conformance/codec"
	sinkFn    = "conformance/sink"
	unknownFn = "conformance/unknown"
)

func addr(typ, id string) *twinflowv1.Address { return &twinflowv1.Address{Type: typ, Id: id} }

func addrString(a *twinflowv1.Address) string {
	if a == nil {
		return "(no address)"
	}
	return a.GetType() + "/" + a.GetId()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only the suite's own values are encoded
	}
	return b
}

func i64(n int64) *twinflowv1.TypedValue {
	return &twinflowv1.TypedValue{Typename: int64Type, Value: []byte(strconv.FormatInt(n, 10))}
}

func str(s string) *twinflowv1.TypedValue {
	return &twinflowv1.TypedValue{Typename: stringType, Value: mustJSON(s)}
}

func raw(typename string, b []byte) *twinflowv1.TypedValue {
	return &twinflowv1.TypedValue{Typename: typename, Value: b}
}

// step is one step of a conformance/Script.
type step struct {
	Op          string         `json:"op"`
	To          *scriptAddress `json:"to,omitempty"`
	Value       string         `json:"value,omitempty"`
	DelayMillis int64          `json:"delayMillis,omitempty"`
	Token       string         `json:"token,omitempty"`
	Egress      string         `json:"egress,omitempty"`
	Key         string         `json:"key,omitempty"`
	Message     string         `json:"message,omitempty"`
}

type scriptAddress struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

func to(typ, id string) *scriptAddress { return &scriptAddress{Type: typ, ID: id} }

func script(steps ...step) *twinflowv1.TypedValue {
	return &twinflowv1.TypedValue{Typename: scriptType, Value: mustJSON(struct {
		Steps []step `json:"steps"`
	}{steps})}
}

func inv(arg *twinflowv1.TypedValue) *twinflowv1.Invocation {
	return &twinflowv1.Invocation{Argument: arg}
}

func request(batches ...*twinflowv1.AddressBatch) *twinflowv1.InvokeRequest {
	return &twinflowv1.InvokeRequest{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1, Batches: batches}
}

func batch(target *twinflowv1.Address, state []*twinflowv1.StateValue, invs ...*twinflowv1.Invocation) *twinflowv1.AddressBatch {
	return &twinflowv1.AddressBatch{Target: target, State: state, Invocations: invs}
}

// counterState ships the counter's three states: count, last and note,
// nil for absent.
func counterState(count, last, note *twinflowv1.TypedValue) []*twinflowv1.StateValue {
	return []*twinflowv1.StateValue{{Name: "count", Value: count}, {Name: "last", Value: last}, {Name: "note", Value: note}}
}

func counterBatch(id string, state []*twinflowv1.StateValue, invs ...*twinflowv1.Invocation) *twinflowv1.AddressBatch {
	return batch(addr(counterFn, id), state, invs...)
}

// jsonTypenames are the typenames whose values the suite compares as JSON
// documents: SDKs may encode the same value with different bytes (the Go
// SDK escapes <, > and & in strings, JavaScript does not).
var jsonTypenames = map[string]bool{
	int64Type: true, float64Type: true, stringType: true, boolType: true,
	"twinflow/json": true, scriptType: true, pairType: true, sumType: true,
}

// sameValue reports whether two typed values are the same value: same
// typename, and the same JSON document, protobuf message or bytes.
func sameValue(got, want *twinflowv1.TypedValue) bool {
	if (got == nil) != (want == nil) {
		return false
	}
	if got == nil {
		return true
	}
	if got.GetTypename() != want.GetTypename() {
		return false
	}
	switch {
	case got.GetTypename() == int64Type:
		// Exactly, as integers: no detour through a float.
		g, ok1 := new(big.Int).SetString(strings.TrimSpace(string(got.GetValue())), 10)
		w, ok2 := new(big.Int).SetString(strings.TrimSpace(string(want.GetValue())), 10)
		return ok1 && ok2 && g.Cmp(w) == 0
	case jsonTypenames[got.GetTypename()]:
		return sameJSON(got.GetValue(), want.GetValue())
	case got.GetTypename() == addressType:
		var g, w twinflowv1.Address
		return proto.Unmarshal(got.GetValue(), &g) == nil && proto.Unmarshal(want.GetValue(), &w) == nil && proto.Equal(&g, &w)
	}
	return bytes.Equal(got.GetValue(), want.GetValue())
}

// sameJSON compares two JSON documents, numbers by their exact value.
func sameJSON(a, b []byte) bool {
	x, err1 := decodeJSON(a)
	y, err2 := decodeJSON(b)
	return err1 == nil && err2 == nil && reflect.DeepEqual(x, y)
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return normalizeNumbers(v), nil
}

// normalizeNumbers replaces json.Numbers by the exact rational they
// denote, so that 3, 3.0 and 3e0 compare equal.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		r, ok := new(big.Rat).SetString(string(x))
		if !ok {
			return x
		}
		return r.RatString()
	case []any:
		for i := range x {
			x[i] = normalizeNumbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normalizeNumbers(x[k])
		}
	}
	return v
}

// valueString renders a typed value for a message: JSON as it is, a known
// protobuf message as text, other bytes quoted.
func valueString(v *twinflowv1.TypedValue) string {
	if v == nil {
		return "(no value)"
	}
	switch {
	case jsonTypenames[v.GetTypename()] && json.Valid(v.GetValue()):
		return v.GetTypename() + " " + string(v.GetValue())
	case v.GetTypename() == addressType:
		var a twinflowv1.Address
		if proto.Unmarshal(v.GetValue(), &a) == nil {
			return v.GetTypename() + " {" + prototext.MarshalOptions{}.Format(&a) + "}"
		}
	}
	return fmt.Sprintf("%s %q", v.GetTypename(), v.GetValue())
}

func outgoingString(m *twinflowv1.OutgoingMessage) string {
	s := "to " + addrString(m.GetTarget()) + ": " + valueString(m.GetArgument())
	if m.GetReplyTo() != "" {
		s += fmt.Sprintf(" (reply to %q)", m.GetReplyTo())
	}
	return s
}

func delayedString(m *twinflowv1.DelayedMessage) string {
	return fmt.Sprintf("to %s after %dms with token %q: %s", addrString(m.GetTarget()), m.GetDelayMillis(), m.GetCancellationToken(), valueString(m.GetArgument()))
}

func egressString(e *twinflowv1.EgressRecord) string {
	s := fmt.Sprintf("egress %q", e.GetEgress())
	if e.GetKey() != "" {
		s += fmt.Sprintf(" key %q", e.GetKey())
	}
	if e.GetReplyTo() != "" {
		s += fmt.Sprintf(" reply to %q", e.GetReplyTo())
	}
	return s + ": " + valueString(e.GetValue())
}

func specString(s *twinflowv1.StateSpec) string {
	return fmt.Sprintf("{name %q, typename %q, %v, %dms}", s.GetName(), s.GetTypename(), s.GetExpiryMode(), s.GetExpireAfterMillis())
}

func outcomeString(r *twinflowv1.AddressResult) string {
	switch o := r.GetOutcome().(type) {
	case *twinflowv1.AddressResult_Effects:
		return "effects"
	case *twinflowv1.AddressResult_MissingStates:
		var specs []string
		for _, s := range o.MissingStates.GetSpecs() {
			specs = append(specs, s.GetName())
		}
		return fmt.Sprintf("missing states %v", specs)
	case *twinflowv1.AddressResult_Error:
		return fmt.Sprintf("a %v error at invocation %d: %q", o.Error.GetKind(), o.Error.GetInvocationIndex(), o.Error.GetMessage())
	}
	return "no outcome"
}

func listString[T any](items []T, f func(T) string) string {
	if len(items) == 0 {
		return "none"
	}
	parts := make([]string, len(items))
	for i, x := range items {
		parts[i] = f(x)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}
