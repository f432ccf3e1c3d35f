package sdk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// ReplyEgress is the name of the built-in egress that answers the NATS
// request a message came with. [Context.Reply] writes to it.
const ReplyEgress = "reply"

// ErrNoReplyTo is returned by [Context.Reply] when the current message did
// not come with a reply subject.
var ErrNoReplyTo = errors.New("the message has no reply subject to answer")

// Message is one message delivered to a function. Read it with [As].
type Message interface {
	// Typename returns the message's typename.
	Typename() string
	// Bytes returns the encoded message. It must not be modified.
	Bytes() []byte
	// Is reports whether the message has the given typename.
	Is(typename string) bool
	// ReplyTo returns the reply subject of the NATS request that carried
	// the message, or "" when there is none.
	ReplyTo() string
}

// As decodes msg with typ. It fails, naming both typenames, when msg is
// not of typ's typename.
func As[T any](msg Message, typ Type[T]) (T, error) {
	if msg == nil {
		var zero T
		return zero, errors.New("message is nil")
	}
	v, err := Decode(typ, TypedValue{Typename: msg.Typename(), Bytes: msg.Bytes()})
	if err != nil {
		return v, fmt.Errorf("message: %w", err)
	}
	return v, nil
}

type message struct {
	v       *twinflowv1.TypedValue
	replyTo string
}

func (m *message) Typename() string        { return m.v.GetTypename() }
func (m *message) Bytes() []byte           { return m.v.GetValue() }
func (m *message) Is(typename string) bool { return m.v.GetTypename() == typename }
func (m *message) ReplyTo() string         { return m.replyTo }

// Context is what a function gets for one invocation: the RPC's
// context.Context (cancelled when the runtime gives up on the call), the
// invoked address, and the effects the function can produce. The effects
// take place only if the whole batch succeeds.
//
// A Context is valid until Invoke returns; effects requested after that are
// dropped. Its methods are safe for concurrent use by goroutines the
// function waits for.
//
// Methods without an error result record misuse (an invalid address or
// typename, a negative delay, an empty token) and fail the invocation with
// a terminal error when it returns: such a mistake is a bug that no retry
// can fix, and dropping the effect silently would lose data. The typed
// helpers ([Send], [SendAfter], [Egress], [Reply]) return these errors
// instead.
//
// Context is sealed: only the SDK implements it.
type Context interface {
	context.Context

	// Self returns the invoked address.
	Self() Address
	// Caller returns the sending function's address, and false when the
	// message came from an ingress or from no function.
	Caller() (Address, bool)

	// Send sends v to the address to.
	Send(to Address, v TypedValue)
	// Forward sends v to the address to and passes on the reply subject of
	// the current message, so that the receiver can Reply to the request.
	// Without a reply subject it is Send.
	Forward(to Address, v TypedValue)
	// SendAfter sends v to the address to after delay. A non-empty
	// cancellationToken, scoped to this address, lets CancelDelayed cancel
	// it; a new message with the token of a pending one replaces it. ""
	// means no token.
	SendAfter(delay time.Duration, to Address, v TypedValue, cancellationToken string)
	// CancelDelayed cancels this address's pending delayed message with the
	// token. Cancelling a token that is not pending does nothing.
	CancelDelayed(cancellationToken string)
	// Egress writes v to the named egress of the module spec.
	Egress(egress string, v TypedValue)
	// EgressKeyed writes v to the named egress with a key, which the egress
	// appends to its subject as a last token.
	EgressKeyed(egress, key string, v TypedValue)
	// Reply answers the request the current message came with, through the
	// built-in "reply" egress. It returns ErrNoReplyTo when the message
	// has no reply subject.
	Reply(v TypedValue) error

	invocation() *invocation
}

// invocation is the Context of one invocation in a batch.
type invocation struct {
	context.Context
	batch  *batch
	self   Address
	caller *twinflowv1.Address
	msg    message
	// done and misused are guarded by batch.mu.
	done    bool
	misused error
}

var _ Context = (*invocation)(nil)

func (c *invocation) invocation() *invocation { return c }

func (c *invocation) Self() Address { return c.self }

func (c *invocation) Caller() (Address, bool) {
	if c.caller == nil {
		return Address{}, false
	}
	return addressFromProto(c.caller), true
}

func (c *invocation) Send(to Address, v TypedValue) { c.misuse(c.send(to, v, "")) }

func (c *invocation) Forward(to Address, v TypedValue) { c.misuse(c.send(to, v, c.msg.replyTo)) }

func (c *invocation) SendAfter(delay time.Duration, to Address, v TypedValue, token string) {
	c.misuse(c.sendAfter(delay, to, v, token))
}

func (c *invocation) CancelDelayed(token string) { c.misuse(c.cancelDelayed(token)) }

func (c *invocation) Egress(egress string, v TypedValue) { c.misuse(c.egress(egress, "", v)) }

func (c *invocation) EgressKeyed(egress, key string, v TypedValue) {
	c.misuse(c.egress(egress, key, v))
}

func (c *invocation) Reply(v TypedValue) error {
	if c.msg.replyTo == "" {
		return ErrNoReplyTo
	}
	if err := validateTypename(v.Typename); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	return c.record(func(e *twinflowv1.Effects) {
		e.Egress = append(e.Egress, &twinflowv1.EgressRecord{Egress: ReplyEgress, Value: v.toProto(), ReplyTo: c.msg.replyTo})
	})
}

func (c *invocation) send(to Address, v TypedValue, replyTo string) error {
	if err := to.Validate(); err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	if err := validateTypename(v.Typename); err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	return c.record(func(e *twinflowv1.Effects) {
		e.Outgoing = append(e.Outgoing, &twinflowv1.OutgoingMessage{Target: to.toProto(), Argument: v.toProto(), ReplyTo: replyTo})
	})
}

func (c *invocation) sendAfter(delay time.Duration, to Address, v TypedValue, token string) error {
	if delay < 0 {
		return fmt.Errorf("send to %s after %v: negative delay", to, delay)
	}
	if err := to.Validate(); err != nil {
		return fmt.Errorf("send to %s after %v: %w", to, delay, err)
	}
	if err := validateTypename(v.Typename); err != nil {
		return fmt.Errorf("send to %s after %v: %w", to, delay, err)
	}
	return c.record(func(e *twinflowv1.Effects) {
		e.Delayed = append(e.Delayed, &twinflowv1.DelayedMessage{
			Target:            to.toProto(),
			Argument:          v.toProto(),
			DelayMillis:       ceilMillis(delay),
			CancellationToken: token,
		})
	})
}

func (c *invocation) cancelDelayed(token string) error {
	if token == "" {
		return errors.New("cancel delayed message: empty cancellation token")
	}
	return c.record(func(e *twinflowv1.Effects) {
		// The runtime applies cancellations before delayed messages: they
		// cancel messages of earlier batches. One sent earlier in this
		// batch is cancelled here, by not sending it.
		e.Delayed = slices.DeleteFunc(e.Delayed, func(d *twinflowv1.DelayedMessage) bool {
			return d.GetCancellationToken() == token
		})
		e.Cancellations = append(e.Cancellations, &twinflowv1.DelayedCancellation{CancellationToken: token})
	})
}

func (c *invocation) egress(egress, key string, v TypedValue) error {
	switch egress {
	case "":
		return errors.New("egress: empty egress name")
	case ReplyEgress:
		// A reply record needs the reply subject, which only Reply knows.
		return errors.New(`egress "reply" is written with Reply`)
	}
	if err := validateTypename(v.Typename); err != nil {
		return fmt.Errorf("egress %q: %w", egress, err)
	}
	return c.record(func(e *twinflowv1.Effects) {
		e.Egress = append(e.Egress, &twinflowv1.EgressRecord{Egress: egress, Value: v.toProto(), Key: key})
	})
}

// errInvocationDone is returned to effects requested after Invoke returned.
var errInvocationDone = errors.New("the invocation is over: its Context is no longer valid")

// record adds an effect to the batch unless the invocation is over.
func (c *invocation) record(add func(*twinflowv1.Effects)) error {
	b := c.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.done {
		return errInvocationDone
	}
	add(&b.mu.effects)
	return nil
}

// misuse remembers the first misuse of the Context; see Context.
func (c *invocation) misuse(err error) {
	if err == nil {
		return
	}
	b := c.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.misused == nil && !c.done {
		c.misused = err
	}
}

func (c *invocation) getState(i int) *twinflowv1.TypedValue {
	b := c.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.values[i]
}

func (c *invocation) setState(i int, v *twinflowv1.TypedValue) error {
	b := c.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.done {
		return errInvocationDone
	}
	b.mu.values[i] = v
	b.mu.touched[i] = true
	return nil
}

// Send encodes v with typ and sends it to the address to. See
// [Context.Send].
func Send[T any](ctx Context, to Address, typ Type[T], v T) error {
	tv, err := Encode(typ, v)
	if err != nil {
		return err
	}
	c, err := invocationOf(ctx)
	if err != nil {
		return err
	}
	return c.send(to, tv, "")
}

// SendAfter encodes v with typ and sends it to the address to after delay.
// See [Context.SendAfter].
func SendAfter[T any](ctx Context, delay time.Duration, to Address, typ Type[T], v T, cancellationToken string) error {
	tv, err := Encode(typ, v)
	if err != nil {
		return err
	}
	c, err := invocationOf(ctx)
	if err != nil {
		return err
	}
	return c.sendAfter(delay, to, tv, cancellationToken)
}

// Egress encodes v with typ and writes it to the named egress. See
// [Context.Egress].
func Egress[T any](ctx Context, egress string, typ Type[T], v T) error {
	tv, err := Encode(typ, v)
	if err != nil {
		return err
	}
	c, err := invocationOf(ctx)
	if err != nil {
		return err
	}
	return c.egress(egress, "", tv)
}

// Reply encodes v with typ and answers the request the current message came
// with. See [Context.Reply].
func Reply[T any](ctx Context, typ Type[T], v T) error {
	c, err := invocationOf(ctx)
	if err != nil {
		return err
	}
	tv, err := Encode(typ, v)
	if err != nil {
		return err
	}
	return c.Reply(tv)
}

func invocationOf(ctx Context) (*invocation, error) {
	if ctx == nil {
		return nil, errors.New("nil Context")
	}
	return ctx.invocation(), nil
}
