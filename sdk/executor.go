package sdk

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"unicode/utf8"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// maxPanicStack bounds the stack trace kept in the error of a panicking
// function: enough to find the line, small enough for a dead-letter reason.
const maxPanicStack = 4 << 10

// RunBatch runs one address batch and returns its result. It is the core of
// [Handler], exported so that the [github.com/twinflow/twinflow/sdk/sdktest]
// harness and in-process embedders run functions through the same code.
//
// The result is one of:
//   - MissingStates, listing exactly the declared specs absent from
//     b.State; no invocation runs;
//   - Effects of all invocations, run in order over an in-memory copy of
//     b.State, with one mutation per written state holding its final value;
//   - an InvocationError when an invocation failed, with the effects of the
//     whole batch discarded: RETRYABLE unless the error was marked with
//     [Terminal]. A panic in the function, misuse of its Context, an
//     unknown function type and a malformed batch are TERMINAL; an unknown
//     type or malformed batch has invocation_index -1.
//
// RunBatch never panics on any input and never returns nil. State values in
// b that the function does not declare are ignored and left alone.
func (r *Registry) RunBatch(ctx context.Context, b *twinflowv1.AddressBatch) *twinflowv1.AddressResult {
	if err := validateBatch(b); err != nil {
		return errorResult(b.GetTarget(), twinflowv1.InvocationError_KIND_TERMINAL, "malformed batch: "+err.Error(), -1)
	}
	return r.runValidBatch(ctx, b)
}

// runValidBatch is RunBatch for a batch that passed validateBatch.
func (r *Registry) runValidBatch(ctx context.Context, b *twinflowv1.AddressBatch) *twinflowv1.AddressResult {
	target := b.GetTarget()
	fn := r.lookup(target.GetType())
	if fn == nil {
		return errorResult(target, twinflowv1.InvocationError_KIND_TERMINAL,
			fmt.Sprintf("function type %q is not registered at this endpoint", target.GetType()), -1)
	}
	if missing := fn.missingStates(b.GetState()); len(missing) > 0 {
		return &twinflowv1.AddressResult{
			Target:  target,
			Outcome: &twinflowv1.AddressResult_MissingStates{MissingStates: &twinflowv1.MissingStates{Specs: missing}},
		}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	self := addressFromProto(target)
	exec := newBatch(fn, b)
	for i, inv := range b.GetInvocations() {
		if err := ctx.Err(); err != nil {
			return errorResult(target, twinflowv1.InvocationError_KIND_RETRYABLE,
				"batch interrupted before this invocation: "+err.Error(), i)
		}
		if err := exec.invoke(ctx, self, inv); err != nil {
			kind := twinflowv1.InvocationError_KIND_RETRYABLE
			if IsTerminal(err) {
				kind = twinflowv1.InvocationError_KIND_TERMINAL
			}
			return errorResult(target, kind, err.Error(), i)
		}
	}
	return &twinflowv1.AddressResult{
		Target:  target,
		Outcome: &twinflowv1.AddressResult_Effects{Effects: exec.effects()},
	}
}

func errorResult(target *twinflowv1.Address, kind twinflowv1.InvocationError_Kind, msg string, index int) *twinflowv1.AddressResult {
	return &twinflowv1.AddressResult{
		Target: target,
		Outcome: &twinflowv1.AddressResult_Error{Error: &twinflowv1.InvocationError{
			Kind:            kind,
			Message:         msg,
			InvocationIndex: int32(index),
		}},
	}
}

// missingStates returns the declared specs that have no entry in shipped.
func (f *function) missingStates(shipped []*twinflowv1.StateValue) []*twinflowv1.StateSpec {
	if len(f.specs) == 0 {
		return nil
	}
	present := make([]bool, len(f.specs))
	for _, sv := range shipped {
		if i, ok := f.stateIndex[sv.GetName()]; ok {
			present[i] = true
		}
	}
	var missing []*twinflowv1.StateSpec
	for i, ok := range present {
		if !ok {
			missing = append(missing, f.specs[i])
		}
	}
	return missing
}

// batch is one address batch while it runs: the in-memory copy of the
// address's state and the effects so far.
type batch struct {
	fn *function
	mu struct {
		// Invocations of a batch run one after the other, but a function
		// may use its Context from goroutines it starts, so everything
		// below, and invocation.done and .misused, is guarded by this.
		sync.Mutex
		values  []*twinflowv1.TypedValue // by spec index; nil = absent
		touched []bool                   // by spec index: written or cleared
		effects twinflowv1.Effects       // all but state_mutations
	}
}

func newBatch(fn *function, b *twinflowv1.AddressBatch) *batch {
	exec := &batch{fn: fn}
	exec.mu.values = make([]*twinflowv1.TypedValue, len(fn.specs))
	exec.mu.touched = make([]bool, len(fn.specs))
	for _, sv := range b.GetState() {
		if i, ok := fn.stateIndex[sv.GetName()]; ok {
			exec.mu.values[i] = sv.GetValue()
		}
	}
	return exec
}

// invoke runs one invocation. A panic becomes a terminal error: a panic is
// a bug that retrying the same message reproduces, so retrying would only
// delay the dead letter, and the SDK keeps no log in which a retried panic
// could be seen. The stack trace goes into the error message for the same
// reason.
func (b *batch) invoke(ctx context.Context, self Address, inv *twinflowv1.Invocation) (err error) {
	c := &invocation{
		Context: ctx,
		batch:   b,
		self:    self,
		caller:  inv.GetCaller(),
		msg:     message{v: inv.GetArgument(), replyTo: inv.GetReplyTo()},
	}
	defer func() {
		if p := recover(); p != nil {
			stack := debug.Stack()
			if len(stack) > maxPanicStack {
				stack = stack[:maxPanicStack]
			}
			err = Terminal(fmt.Errorf("function %s panicked: %v\n%s", b.fn.typ, p, stack))
		}
		b.mu.Lock()
		c.done = true
		misused := c.misused
		b.mu.Unlock()
		if err == nil && misused != nil {
			err = Terminal(fmt.Errorf("misuse of the Context: %w", misused))
		}
	}()
	return b.fn.fn.Invoke(c, &c.msg)
}

// effects returns the batch's effects, with one mutation per written state
// in declaration order. Every write is reported even when the value did not
// change, because a write restarts an ExpireAfterWrite clock.
func (b *batch) effects() *twinflowv1.Effects {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := &twinflowv1.Effects{
		Outgoing:      b.mu.effects.Outgoing,
		Delayed:       b.mu.effects.Delayed,
		Cancellations: b.mu.effects.Cancellations,
		Egress:        b.mu.effects.Egress,
	}
	for i, touched := range b.mu.touched {
		if !touched {
			continue
		}
		m := &twinflowv1.StateMutation{Name: b.fn.specs[i].GetName(), Kind: twinflowv1.StateMutation_KIND_DELETE}
		if v := b.mu.values[i]; v != nil {
			m.Kind, m.Value = twinflowv1.StateMutation_KIND_SET, v
		}
		e.StateMutations = append(e.StateMutations, m)
	}
	return e
}

// validateBatch checks one batch for what makes it malformed, as opposed to
// failing: a bad address, state entry or invocation.
func validateBatch(b *twinflowv1.AddressBatch) error {
	if b == nil {
		return errors.New("batch is nil")
	}
	if b.GetTarget() == nil {
		return errors.New("target address is missing")
	}
	if err := addressFromProto(b.GetTarget()).Validate(); err != nil {
		return fmt.Errorf("target address: %w", err)
	}
	names := make(map[string]struct{}, len(b.GetState()))
	for i, sv := range b.GetState() {
		name := sv.GetName()
		if name == "" {
			return fmt.Errorf("state %d: empty name", i)
		}
		if !utf8.ValidString(name) {
			return fmt.Errorf("state %d: name is not valid UTF-8", i)
		}
		if _, dup := names[name]; dup {
			return fmt.Errorf("state %q appears more than once", name)
		}
		names[name] = struct{}{}
		if v := sv.GetValue(); v != nil {
			if err := validateTypename(v.GetTypename()); err != nil {
				return fmt.Errorf("state %q: %w", name, err)
			}
		}
	}
	for i, inv := range b.GetInvocations() {
		if inv == nil {
			return fmt.Errorf("invocation %d is nil", i)
		}
		if inv.GetArgument() == nil {
			return fmt.Errorf("invocation %d: argument is missing", i)
		}
		if err := validateTypename(inv.GetArgument().GetTypename()); err != nil {
			return fmt.Errorf("invocation %d: argument: %w", i, err)
		}
		if c := inv.GetCaller(); c != nil {
			if err := addressFromProto(c).Validate(); err != nil {
				return fmt.Errorf("invocation %d: caller: %w", i, err)
			}
		}
	}
	return nil
}
