// Package sdktest runs Twinflow functions in unit tests, without a runtime.
//
// A [Harness] keeps the state of each address in memory and invokes
// functions through the same batch executor that serves the runtime
// ([sdk.Registry.RunBatch]), so a function behaves here as it does in
// production: state specs are negotiated the same way, effects of a failed
// invocation are discarded, and misuse of the Context fails the same way.
//
//	h := sdktest.New(reg)
//	msg, _ := sdk.Encode(sdk.Int64Type, 5)
//	res, err := h.Invoke(sdk.Address{Type: "example/counter", ID: "a"}, msg)
//	n, ok, err := sdktest.StateOf(h, sdk.Address{Type: "example/counter", ID: "a"}, count)
//
// There is no clock: delayed messages are reported in [Result.Delayed] and
// a test delivers them with another Invoke when it wants to.
package sdktest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twinflow/twinflow/sdk"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Harness invokes the functions of a registry with in-memory state per
// address. It is not safe for concurrent use.
type Harness struct {
	reg *sdk.Registry
	// specs holds the state names learned per function type from the
	// executor's MissingStates answers, as the runtime records them.
	specs map[string][]string
	// state holds the values per address; an absent name is absent state.
	state map[sdk.Address]map[string]sdk.TypedValue
}

// New returns a harness for the functions of reg, with no state.
func New(reg *sdk.Registry) *Harness {
	return &Harness{
		reg:   reg,
		specs: make(map[string][]string),
		state: make(map[sdk.Address]map[string]sdk.TypedValue),
	}
}

// InvokeOption configures one [Harness.Invoke].
type InvokeOption interface {
	apply(*twinflowv1.Invocation)
}

type invokeOptionFunc func(*twinflowv1.Invocation)

func (f invokeOptionFunc) apply(inv *twinflowv1.Invocation) { f(inv) }

// WithCaller delivers the message as sent by the function at caller.
func WithCaller(caller sdk.Address) InvokeOption {
	return invokeOptionFunc(func(inv *twinflowv1.Invocation) {
		inv.Caller = &twinflowv1.Address{Type: caller.Type, Id: caller.ID}
	})
}

// WithReplyTo delivers the message as a NATS request with the given reply
// subject, which the function can answer with Reply.
func WithReplyTo(subject string) InvokeOption {
	return invokeOptionFunc(func(inv *twinflowv1.Invocation) { inv.ReplyTo = subject })
}

// Result holds the effects of one successful invocation other than state
// changes, which the harness applies and [StateOf] reads.
type Result struct {
	// Sent are the messages sent with Send and Forward, in order.
	Sent []Message
	// Delayed are the messages sent with SendAfter, in order.
	Delayed []Delayed
	// Cancelled are the tokens passed to CancelDelayed, in order.
	Cancelled []string
	// Egress are the records written to named egresses, in order.
	Egress []EgressRecord
	// Replies are the answers written with Reply, in order.
	Replies []Reply
}

// Message is a message to an address.
type Message struct {
	// To is the receiver.
	To sdk.Address
	// Value is the message.
	Value sdk.TypedValue
	// ReplyTo is the reply subject passed on with Forward, or "".
	ReplyTo string
}

// Delayed is a message to be delivered after a delay.
type Delayed struct {
	// To is the receiver.
	To sdk.Address
	// Value is the message.
	Value sdk.TypedValue
	// Delay is the delay, rounded up to whole milliseconds as on the wire.
	Delay time.Duration
	// CancellationToken is the token, or "" for none.
	CancellationToken string
}

// EgressRecord is a value written to a named egress.
type EgressRecord struct {
	// Egress is the egress name.
	Egress string
	// Key is the key given with EgressKeyed, or "".
	Key string
	// Value is the record.
	Value sdk.TypedValue
}

// Reply is an answer to a NATS request.
type Reply struct {
	// ReplyTo is the reply subject of the request.
	ReplyTo string
	// Value is the answer.
	Value sdk.TypedValue
}

// Error is the failure of an invocation, as the runtime would see it.
type Error struct {
	// Terminal is true when the runtime would dead-letter the message
	// rather than retry it.
	Terminal bool
	// Message is the function's error message.
	Message string
	// Index is the failed invocation's index in its batch: 0 for a failed
	// Invoke, -1 when the batch failed as a whole (e.g. an unregistered
	// function type).
	Index int
}

// Error returns the message with its kind.
func (e *Error) Error() string {
	kind := "retryable"
	if e.Terminal {
		kind = "terminal"
	}
	return fmt.Sprintf("%s error: %s", kind, e.Message)
}

// Invoke delivers msg to the address to, applies the state changes when
// the function succeeds, and returns the other effects. When the function
// fails it returns an *Error and changes nothing.
func (h *Harness) Invoke(to sdk.Address, msg sdk.TypedValue, opts ...InvokeOption) (*Result, error) {
	inv := &twinflowv1.Invocation{Argument: &twinflowv1.TypedValue{Typename: msg.Typename, Value: msg.Bytes}}
	for _, o := range opts {
		if o != nil {
			o.apply(inv)
		}
	}
	// The first call for a function type ships no state and learns the
	// specs from the MissingStates answer, as the runtime does; the second
	// ships them. A third answer of MissingStates cannot happen unless the
	// registry changed in between.
	for range 2 {
		res := h.reg.RunBatch(context.Background(), &twinflowv1.AddressBatch{
			Target:      &twinflowv1.Address{Type: to.Type, Id: to.ID},
			State:       h.shippedState(to),
			Invocations: []*twinflowv1.Invocation{inv},
		})
		switch o := res.GetOutcome().(type) {
		case *twinflowv1.AddressResult_MissingStates:
			for _, spec := range o.MissingStates.GetSpecs() {
				h.specs[to.Type] = append(h.specs[to.Type], spec.GetName())
			}
		case *twinflowv1.AddressResult_Error:
			return nil, &Error{
				Terminal: o.Error.GetKind() == twinflowv1.InvocationError_KIND_TERMINAL,
				Message:  o.Error.GetMessage(),
				Index:    int(o.Error.GetInvocationIndex()),
			}
		case *twinflowv1.AddressResult_Effects:
			return h.apply(to, o.Effects), nil
		default:
			return nil, errors.New("sdktest: the executor returned no outcome")
		}
	}
	return nil, fmt.Errorf("sdktest: %s still reports missing states after they were sent", to.Type)
}

// shippedState lists every learned spec of the address's function type,
// with its value or unset, as the runtime ships state.
func (h *Harness) shippedState(a sdk.Address) []*twinflowv1.StateValue {
	values := h.state[a]
	var out []*twinflowv1.StateValue
	for _, name := range h.specs[a.Type] {
		sv := &twinflowv1.StateValue{Name: name}
		if v, ok := values[name]; ok {
			sv.Value = &twinflowv1.TypedValue{Typename: v.Typename, Value: v.Bytes}
		}
		out = append(out, sv)
	}
	return out
}

func (h *Harness) apply(a sdk.Address, e *twinflowv1.Effects) *Result {
	for _, m := range e.GetStateMutations() {
		switch m.GetKind() {
		case twinflowv1.StateMutation_KIND_SET:
			h.put(a, m.GetName(), typedValue(m.GetValue()))
		case twinflowv1.StateMutation_KIND_DELETE:
			delete(h.state[a], m.GetName())
		}
	}
	res := &Result{}
	for _, m := range e.GetOutgoing() {
		res.Sent = append(res.Sent, Message{To: address(m.GetTarget()), Value: typedValue(m.GetArgument()), ReplyTo: m.GetReplyTo()})
	}
	for _, m := range e.GetDelayed() {
		res.Delayed = append(res.Delayed, Delayed{
			To:                address(m.GetTarget()),
			Value:             typedValue(m.GetArgument()),
			Delay:             time.Duration(m.GetDelayMillis()) * time.Millisecond,
			CancellationToken: m.GetCancellationToken(),
		})
	}
	for _, c := range e.GetCancellations() {
		res.Cancelled = append(res.Cancelled, c.GetCancellationToken())
	}
	for _, r := range e.GetEgress() {
		if r.GetEgress() == sdk.ReplyEgress {
			res.Replies = append(res.Replies, Reply{ReplyTo: r.GetReplyTo(), Value: typedValue(r.GetValue())})
			continue
		}
		res.Egress = append(res.Egress, EgressRecord{Egress: r.GetEgress(), Key: r.GetKey(), Value: typedValue(r.GetValue())})
	}
	return res
}

func (h *Harness) put(a sdk.Address, name string, v sdk.TypedValue) {
	if h.state[a] == nil {
		h.state[a] = make(map[string]sdk.TypedValue)
	}
	h.state[a][name] = v
}

// StateOf returns the value of the state spec at address a, and false when
// it is absent. It fails like [sdk.ValueSpec.Get] when the stored value has
// another typename than the spec.
func StateOf[T any](h *Harness, a sdk.Address, spec sdk.ValueSpec[T]) (T, bool, error) {
	var zero T
	v, ok := h.state[a][spec.Name]
	if !ok {
		return zero, false, nil
	}
	x, err := sdk.Decode(spec.Type, v)
	if err != nil {
		return zero, false, fmt.Errorf("state %q of %s: %w", spec.Name, a, err)
	}
	return x, true, nil
}

// SetState sets the value of the state spec at address a, as if an earlier
// invocation had written it.
func SetState[T any](h *Harness, a sdk.Address, spec sdk.ValueSpec[T], v T) error {
	tv, err := sdk.Encode(spec.Type, v)
	if err != nil {
		return fmt.Errorf("state %q of %s: %w", spec.Name, a, err)
	}
	h.put(a, spec.Name, tv)
	return nil
}

// SetRawState stores a typed value under a state name at address a, for
// testing how a function handles values it did not write, such as a value
// of an older type.
func (h *Harness) SetRawState(a sdk.Address, name string, v sdk.TypedValue) {
	h.put(a, name, v)
}

// ClearState removes the state name at address a, as if it had expired.
func (h *Harness) ClearState(a sdk.Address, name string) {
	delete(h.state[a], name)
}

func typedValue(v *twinflowv1.TypedValue) sdk.TypedValue {
	return sdk.TypedValue{Typename: v.GetTypename(), Bytes: v.GetValue()}
}

func address(a *twinflowv1.Address) sdk.Address {
	return sdk.Address{Type: a.GetType(), ID: a.GetId()}
}
