package sdk

import (
	"errors"
	"fmt"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// ExpiryMode says when a state value expires. The runtime, not the SDK,
// expires values: an expired value is simply absent in the next call.
type ExpiryMode int

const (
	// ExpireNever keeps the value until it is cleared.
	ExpireNever ExpiryMode = iota
	// ExpireAfterWrite expires the value ExpireAfter after its last write.
	ExpireAfterWrite
	// ExpireAfterInvoke expires the value ExpireAfter after the address was
	// last invoked or the value last written.
	ExpireAfterInvoke
)

// String returns the mode's name.
func (m ExpiryMode) String() string {
	switch m {
	case ExpireNever:
		return "ExpireNever"
	case ExpireAfterWrite:
		return "ExpireAfterWrite"
	case ExpireAfterInvoke:
		return "ExpireAfterInvoke"
	}
	return fmt.Sprintf("ExpiryMode(%d)", int(m))
}

// StateDecl is a state declaration passed to [Registry.Register]. Every
// [ValueSpec] is one; the interface is sealed.
type StateDecl interface {
	stateSpec() (*twinflowv1.StateSpec, error)
}

// ValueSpec declares one named state value of type T. Declare specs as
// package variables, pass them to [Registry.Register], and use them in the
// function to read and write the value:
//
//	var seen = sdk.ValueSpec[int64]{Name: "seen", Type: sdk.Int64Type}
//
//	n, ok, err := seen.Get(ctx)
//
// Get, Set and Clear work on the in-memory copy of the state shipped with
// the batch: later invocations of a batch see earlier writes, and the final
// value of each written state is returned to the runtime when the batch
// succeeds.
type ValueSpec[T any] struct {
	// Name is unique within the function type.
	Name string
	// Type is the value's typename and codec.
	Type Type[T]
	// ExpiryMode says when the value expires; the zero value is ExpireNever.
	ExpiryMode ExpiryMode
	// ExpireAfter is the expiry delay, at least a millisecond when
	// ExpiryMode is not ExpireNever, and zero otherwise. It is rounded up to
	// whole milliseconds.
	ExpireAfter time.Duration
}

var _ StateDecl = ValueSpec[int64]{}

func (s ValueSpec[T]) stateSpec() (*twinflowv1.StateSpec, error) {
	if s.Name == "" {
		return nil, errors.New("state name is empty")
	}
	if s.Type == nil {
		return nil, fmt.Errorf("state %q: Type is nil", s.Name)
	}
	typename := s.Type.Typename()
	if err := validateTypename(typename); err != nil {
		return nil, fmt.Errorf("state %q: %w", s.Name, err)
	}
	spec := &twinflowv1.StateSpec{Name: s.Name, Typename: typename}
	switch s.ExpiryMode {
	case ExpireNever:
		if s.ExpireAfter != 0 {
			return nil, fmt.Errorf("state %q: ExpireAfter is %v but ExpiryMode is ExpireNever", s.Name, s.ExpireAfter)
		}
		return spec, nil
	case ExpireAfterWrite:
		spec.ExpiryMode = twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE
	case ExpireAfterInvoke:
		spec.ExpiryMode = twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE
	default:
		return nil, fmt.Errorf("state %q: unknown %v", s.Name, s.ExpiryMode)
	}
	if s.ExpireAfter < time.Millisecond {
		return nil, fmt.Errorf("state %q: ExpireAfter is %v, want at least 1ms with %v", s.Name, s.ExpireAfter, s.ExpiryMode)
	}
	spec.ExpireAfterMillis = ceilMillis(s.ExpireAfter)
	return spec, nil
}

// Get returns the value and true, or the zero value and false when the
// state is absent (never written, cleared, or expired). It fails when the
// function did not declare the state, when the stored value's typename is
// not the spec's (the type of a state changed without a migration), or when
// decoding fails.
func (s ValueSpec[T]) Get(ctx Context) (T, bool, error) {
	var zero T
	inv, i, err := s.storage(ctx)
	if err != nil {
		return zero, false, err
	}
	v := inv.getState(i)
	if v == nil {
		return zero, false, nil
	}
	if want := s.Type.Typename(); v.GetTypename() != want {
		return zero, false, fmt.Errorf("state %q of %s holds a value of typename %q, but its spec declares %q",
			s.Name, inv.self, v.GetTypename(), want)
	}
	x, err := s.Type.Decode(v.GetValue())
	if err != nil {
		return zero, false, fmt.Errorf("state %q of %s: %w", s.Name, inv.self, err)
	}
	return x, true, nil
}

// Set writes v. It fails when the function did not declare the state or
// encoding fails.
func (s ValueSpec[T]) Set(ctx Context, v T) error {
	inv, i, err := s.storage(ctx)
	if err != nil {
		return err
	}
	b, err := s.Type.Encode(v)
	if err != nil {
		return fmt.Errorf("state %q of %s: %w", s.Name, inv.self, err)
	}
	return inv.setState(i, &twinflowv1.TypedValue{Typename: s.Type.Typename(), Value: b})
}

// Clear deletes the value. Clearing a state the function did not declare
// is a misuse that fails the invocation with a terminal error once the
// function returns (Clear itself has nothing to report in the usual case).
func (s ValueSpec[T]) Clear(ctx Context) {
	inv, i, err := s.storage(ctx)
	if err == nil {
		err = inv.setState(i, nil)
	}
	if err != nil && ctx != nil {
		ctx.invocation().misuse(err)
	}
}

// storage returns the invocation behind ctx and the state's index, after
// checking that the function declared this spec with this typename: a
// second spec of the same name but another type would otherwise write
// values the registered spec cannot read.
func (s ValueSpec[T]) storage(ctx Context) (*invocation, int, error) {
	if ctx == nil {
		return nil, -1, fmt.Errorf("state %q: nil Context", s.Name)
	}
	inv := ctx.invocation()
	fn := inv.batch.fn
	i, ok := fn.stateIndex[s.Name]
	if !ok {
		return nil, -1, fmt.Errorf("state %q is not declared by function type %s: pass its ValueSpec to Register",
			s.Name, fn.typ)
	}
	if s.Type == nil {
		return nil, -1, fmt.Errorf("state %q: Type is nil", s.Name)
	}
	if got, want := s.Type.Typename(), fn.specs[i].GetTypename(); got != want {
		return nil, -1, fmt.Errorf("state %q of %s: this ValueSpec has typename %q but the registered one has %q",
			s.Name, inv.self, got, want)
	}
	return inv, i, nil
}

// ceilMillis rounds d up to whole milliseconds, so that nothing happens
// earlier than asked.
func ceilMillis(d time.Duration) int64 {
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return int64(ms)
}
