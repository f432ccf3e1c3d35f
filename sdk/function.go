package sdk

import (
	"errors"
	"fmt"
	"sync"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Function is the code of a function type. Invoke handles one message for
// the address ctx.Self(). Invocations of one address never run
// concurrently; invocations of different addresses may.
//
// A nil error commits the invocation's effects (state writes, messages,
// egress records) together with the rest of its batch. An error discards
// the effects of the whole batch; it is retried unless wrapped with
// [Terminal].
type Function interface {
	// Invoke handles msg for the address ctx.Self().
	Invoke(ctx Context, msg Message) error
}

// FunctionFunc adapts a plain func to a [Function], like http.HandlerFunc.
type FunctionFunc func(ctx Context, msg Message) error

// Invoke calls f(ctx, msg).
func (f FunctionFunc) Invoke(ctx Context, msg Message) error { return f(ctx, msg) }

// Registry maps function types to their code and declared state. It is
// safe for concurrent use: functions may be registered while a [Handler]
// serves it.
type Registry struct {
	mu struct {
		sync.RWMutex
		// functions is written only by Register, under the write lock.
		functions map[string]*function
	}
}

// function is a registered function type. It is immutable once built.
type function struct {
	typ        string
	fn         Function
	specs      []*twinflowv1.StateSpec // in declaration order
	stateIndex map[string]int          // name -> index in specs
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	r := &Registry{}
	r.mu.functions = make(map[string]*function)
	return r
}

// Register adds a function type ("namespace/name") with its code and the
// state it declares. It fails when the type is malformed or already
// registered, fn is nil, or a state declaration is invalid or repeats a
// name.
func (r *Registry) Register(functionType string, fn Function, states ...StateDecl) error {
	if err := validateFunctionType(functionType); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if fn == nil {
		return fmt.Errorf("register %s: function is nil", functionType)
	}
	f := &function{typ: functionType, fn: fn, stateIndex: make(map[string]int, len(states))}
	for _, d := range states {
		if d == nil {
			return fmt.Errorf("register %s: state declaration is nil", functionType)
		}
		spec, err := d.stateSpec()
		if err != nil {
			return fmt.Errorf("register %s: %w", functionType, err)
		}
		if _, dup := f.stateIndex[spec.GetName()]; dup {
			return fmt.Errorf("register %s: state %q is declared twice", functionType, spec.GetName())
		}
		f.stateIndex[spec.GetName()] = len(f.specs)
		f.specs = append(f.specs, spec)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.mu.functions[functionType]; dup {
		return fmt.Errorf("register %s: function type is already registered", functionType)
	}
	r.mu.functions[functionType] = f
	return nil
}

func (r *Registry) lookup(functionType string) *function {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.mu.functions[functionType]
}

// Terminal marks err as terminal: the runtime will not retry the batch but
// move it to the dead-letter subject and go on with the address's next
// messages. Use it for failures that no retry can fix, such as a message
// that cannot be parsed. Terminal(nil) is nil.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &terminalError{err: err}
}

// IsTerminal reports whether err or an error it wraps was marked with
// [Terminal].
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t)
}

type terminalError struct{ err error }

func (e *terminalError) Error() string { return e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }
