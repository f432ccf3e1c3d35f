// Package reference is the Go implementation of the conformance reference
// functions, written with the Go SDK. conformance/README.md states what
// each function does; every SDK implements the same functions, and the
// conformance suite (conformance/suite) checks an endpoint serving them
// through the wire protocol alone.
package reference

import (
	"errors"
	"fmt"
	"slices"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/sdk"
)

// The function types of the reference functions.
const (
	// CounterFunction adds numbers in expiring state and reports the sum.
	CounterFunction = "conformance/counter"
	// ActorFunction runs a script of effects and failures.
	ActorFunction = "conformance/actor"
	// CodecFunction decodes a value, changes it and sends it on.
	CodecFunction = "conformance/codec"
	// SinkFunction receives what the others send; it is never invoked.
	SinkFunction = "conformance/sink"
)

// The state of CounterFunction, in declaration order.
var (
	Count = sdk.ValueSpec[int64]{Name: "count", Type: sdk.Int64Type}
	Last  = sdk.ValueSpec[int64]{Name: "last", Type: sdk.Int64Type, ExpiryMode: sdk.ExpireAfterWrite, ExpireAfter: time.Minute}
	Note  = sdk.ValueSpec[string]{Name: "note", Type: sdk.StringType, ExpiryMode: sdk.ExpireAfterInvoke, ExpireAfter: 30 * time.Minute}
)

// Script is the message of ActorFunction: steps run in order.
type Script struct {
	Steps []Step `json:"steps"`
}

// Step is one step of a [Script]; Op says which fields it uses.
type Step struct {
	Op          string   `json:"op"`
	To          *Address `json:"to,omitempty"`
	Value       string   `json:"value,omitempty"`
	DelayMillis int64    `json:"delayMillis,omitempty"`
	Token       string   `json:"token,omitempty"`
	Egress      string   `json:"egress,omitempty"`
	Key         string   `json:"key,omitempty"`
	Message     string   `json:"message,omitempty"`
}

// Address is an address in a [Step].
type Address struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Pair is a message of CodecFunction; Sum is what it sends for it.
type Pair struct {
	A int64 `json:"a"`
	B int64 `json:"b"`
}

// Sum is the sum of a [Pair].
type Sum struct {
	Sum int64 `json:"sum"`
}

// The JSON and protobuf message types of the reference functions.
var (
	ScriptType  = sdk.JSONType[Script]("conformance/Script")
	PairType    = sdk.JSONType[Pair]("conformance/Pair")
	SumType     = sdk.JSONType[Sum]("conformance/Sum")
	AddressType = sdk.ProtoType[*twinflowv1.Address]()
)

// Register adds the reference functions to reg.
func Register(reg *sdk.Registry) error {
	return errors.Join(
		reg.Register(CounterFunction, sdk.FunctionFunc(counter), Count, Last, Note),
		reg.Register(ActorFunction, sdk.FunctionFunc(actor)),
		reg.Register(CodecFunction, sdk.FunctionFunc(codec)),
	)
}

func sink(ctx sdk.Context) sdk.Address { return sdk.Address{Type: SinkFunction, ID: ctx.Self().ID} }

func counter(ctx sdk.Context, msg sdk.Message) error {
	switch msg.Typename() {
	case sdk.Int64Type.Typename():
		n, err := sdk.As(msg, sdk.Int64Type)
		if err != nil {
			return sdk.Terminal(err)
		}
		count, _, err := Count.Get(ctx)
		if err != nil {
			return err
		}
		count += n
		if err := Count.Set(ctx, count); err != nil {
			return err
		}
		if err := Last.Set(ctx, n); err != nil {
			return err
		}
		return sdk.Send(ctx, sink(ctx), sdk.Int64Type, count)
	case sdk.StringType.Typename():
		s, err := sdk.As(msg, sdk.StringType)
		if err != nil {
			return sdk.Terminal(err)
		}
		if s == "reset" {
			Count.Clear(ctx)
			Last.Clear(ctx)
			return nil
		}
		return Note.Set(ctx, s)
	}
	return sdk.Terminal(fmt.Errorf("%s does not handle %s", CounterFunction, msg.Typename()))
}

func actor(ctx sdk.Context, msg sdk.Message) error {
	script, err := sdk.As(msg, ScriptType)
	if err != nil {
		return sdk.Terminal(err)
	}
	for i, s := range script.Steps {
		switch s.Op {
		case "fail":
			return errors.New(s.Message)
		case "failTerminal":
			return sdk.Terminal(errors.New(s.Message))
		}
		if err := step(ctx, s); err != nil {
			return sdk.Terminal(fmt.Errorf("step %d (%s): %w", i, s.Op, err))
		}
	}
	return nil
}

func step(ctx sdk.Context, s Step) error {
	to := func() (sdk.Address, error) {
		if s.To == nil {
			return sdk.Address{}, errors.New(`"to" is missing`)
		}
		return sdk.Address{Type: s.To.Type, ID: s.To.ID}, nil
	}
	value := func() (sdk.TypedValue, error) { return sdk.Encode(sdk.StringType, s.Value) }
	switch s.Op {
	case "send", "forward", "sendAfter":
		a, err := to()
		if err != nil {
			return err
		}
		v, err := value()
		if err != nil {
			return err
		}
		switch s.Op {
		case "send":
			ctx.Send(a, v)
		case "forward":
			ctx.Forward(a, v)
		default:
			ctx.SendAfter(time.Duration(s.DelayMillis)*time.Millisecond, a, v, s.Token)
		}
		return nil
	case "cancel":
		ctx.CancelDelayed(s.Token)
		return nil
	case "egress":
		v, err := value()
		if err != nil {
			return err
		}
		if s.Key == "" {
			ctx.Egress(s.Egress, v)
		} else {
			ctx.EgressKeyed(s.Egress, s.Key, v)
		}
		return nil
	case "reply":
		return sdk.Reply(ctx, sdk.StringType, s.Value)
	case "toCaller":
		caller, ok := ctx.Caller()
		if !ok {
			return errors.New("the message has no caller")
		}
		return sdk.Send(ctx, caller, sdk.StringType, s.Value)
	}
	return fmt.Errorf("unknown op %q", s.Op)
}

func codec(ctx sdk.Context, msg sdk.Message) error {
	if err := recode(ctx, msg); err != nil {
		return sdk.Terminal(err)
	}
	return nil
}

// recode decodes msg, changes it and sends it to the sink.
func recode(ctx sdk.Context, msg sdk.Message) error {
	to := sink(ctx)
	switch msg.Typename() {
	case sdk.Int64Type.Typename():
		return sendChanged(ctx, to, msg, sdk.Int64Type, func(n int64) int64 { return n + 1 })
	case sdk.Float64Type.Typename():
		return sendChanged(ctx, to, msg, sdk.Float64Type, func(x float64) float64 { return x * 2 })
	case sdk.StringType.Typename():
		return sendChanged(ctx, to, msg, sdk.StringType, func(s string) string { return s + "!" })
	case sdk.BoolType.Typename():
		return sendChanged(ctx, to, msg, sdk.BoolType, func(b bool) bool { return !b })
	case sdk.BytesType.Typename():
		return sendChanged(ctx, to, msg, sdk.BytesType, func(b []byte) []byte { slices.Reverse(b); return b })
	case PairType.Typename():
		p, err := sdk.As(msg, PairType)
		if err != nil {
			return err
		}
		return sdk.Send(ctx, to, SumType, Sum{Sum: p.A + p.B})
	case AddressType.Typename():
		return sendChanged(ctx, to, msg, AddressType, func(a *twinflowv1.Address) *twinflowv1.Address {
			return &twinflowv1.Address{Type: a.GetId(), Id: a.GetType()}
		})
	}
	return fmt.Errorf("%s does not handle %s", CodecFunction, msg.Typename())
}

func sendChanged[T any](ctx sdk.Context, to sdk.Address, msg sdk.Message, typ sdk.Type[T], change func(T) T) error {
	v, err := sdk.As(msg, typ)
	if err != nil {
		return err
	}
	return sdk.Send(ctx, to, typ, change(v))
}
