package shard

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
)

// Limits bound what a function's results may hold. A result beyond them is
// refused as a whole (nothing of it applies) and its batch dead-lettered
// with the reason: an endpoint is another program, and the runtime checks
// what it is given.
type Limits struct {
	// MaxPayload bounds a sent or delayed message; default 1 MiB, the
	// ingress's bound. (An egress record NATS cannot take is dead-lettered
	// when it is published.)
	MaxPayload int
	// MaxValue bounds one state value; default 16 MiB.
	MaxValue int
	// MaxDelay bounds the delay of a delayed message; default 10 years.
	MaxDelay time.Duration
	// MaxToken bounds a cancellation token; default 1 KiB.
	MaxToken int
}

// Default limits.
const (
	DefaultMaxPayload = 1 << 20
	DefaultMaxValue   = 16 << 20
	DefaultMaxDelay   = 10 * 365 * 24 * time.Hour
	DefaultMaxToken   = 1 << 10
)

func (l *Limits) setDefaults() {
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxValue <= 0 {
		l.MaxValue = DefaultMaxValue
	}
	if l.MaxDelay <= 0 {
		l.MaxDelay = DefaultMaxDelay
	}
	if l.MaxToken <= 0 {
		l.MaxToken = DefaultMaxToken
	}
}

// checkEffects returns why the effects of b's batch cannot be applied, or
// "" when they can: state only as declared, valid addresses and typenames,
// sizes and delays within the limits, replies only to the batch's own
// requests.
func (c *Core) checkEffects(b *mailbox, eff *twinflowv1.Effects, now time.Time) string {
	lim := c.cfg.Limits
	specs := c.specs.Of(b.addr.Type)
	for i, mu := range eff.GetStateMutations() {
		at := fmt.Sprintf("state mutation %d", i)
		s := specByName(specs, mu.GetName())
		if s == nil {
			return fmt.Sprintf("%s: state %s is not declared by %s (declared: %s)", at, quote(mu.GetName()), b.addr.Type, specNames(specs))
		}
		switch mu.GetKind() {
		case twinflowv1.StateMutation_KIND_DELETE:
			continue
		case twinflowv1.StateMutation_KIND_SET:
		default:
			return fmt.Sprintf("%s: unknown kind %d", at, mu.GetKind())
		}
		v := mu.GetValue()
		if err := router.ValidateTypename(v.GetTypename()); err != nil {
			return fmt.Sprintf("%s: state %s: %v", at, quote(s.GetName()), err)
		}
		if want := s.GetTypename(); want != "" && v.GetTypename() != want {
			return fmt.Sprintf("%s: state %s is declared as %s but the value is %s", at, quote(s.GetName()), want, v.GetTypename())
		}
		if n := len(v.GetValue()); n > lim.MaxValue {
			return fmt.Sprintf("%s: state %s is %d bytes, more than the limit of %d", at, quote(s.GetName()), n, lim.MaxValue)
		}
	}
	for i, o := range eff.GetOutgoing() {
		at := fmt.Sprintf("outgoing message %d", i)
		if why := checkMessage(o.GetTarget(), o.GetArgument(), lim); why != "" {
			return at + ": " + why
		}
		if r := o.GetReplyTo(); r != "" && !b.hasReplyTo(r) {
			return fmt.Sprintf("%s: reply subject %s is not one of the batch's requests", at, quote(r))
		}
	}
	for i, d := range eff.GetDelayed() {
		at := fmt.Sprintf("delayed message %d", i)
		if why := checkMessage(d.GetTarget(), d.GetArgument(), lim); why != "" {
			return at + ": " + why
		}
		ms := d.GetDelayMillis()
		if ms < 0 || ms > lim.MaxDelay.Milliseconds() {
			return fmt.Sprintf("%s: delay of %d ms is outside [0, %d] ms (%s)", at, ms, lim.MaxDelay.Milliseconds(), lim.MaxDelay)
		}
		if why := checkToken(d.GetCancellationToken(), true, lim); why != "" {
			return at + ": " + why
		}
	}
	for i, cn := range eff.GetCancellations() {
		if why := checkToken(cn.GetCancellationToken(), false, lim); why != "" {
			return fmt.Sprintf("cancellation %d: %s", i, why)
		}
	}
	for i, e := range eff.GetEgress() {
		// An egress record that cannot be published (an unknown egress, a
		// reply subject the runtime must not answer, a record larger than
		// NATS takes) is dead-lettered by itself, and the rest applies:
		// the request, not the function, may be at fault. A reply to a
		// subject that none of the batch's requests carried is the
		// function's doing.
		if e.GetEgress() == router.ReplyEgress && !b.hasReplyTo(e.GetReplyTo()) {
			return fmt.Sprintf("egress record %d: reply subject %s is not one of the batch's requests", i, quote(e.GetReplyTo()))
		}
	}
	return ""
}

// checkMessage checks a message a function sends.
func checkMessage(target *twinflowv1.Address, arg *twinflowv1.TypedValue, lim Limits) string {
	if err := router.ValidateAddress(target.GetType(), target.GetId()); err != nil {
		return "target " + err.Error()
	}
	if err := router.ValidateTypename(arg.GetTypename()); err != nil {
		return err.Error()
	}
	if n := len(arg.GetValue()); n > lim.MaxPayload {
		return fmt.Sprintf("%d bytes, more than the limit of %d", n, lim.MaxPayload)
	}
	return ""
}

// checkToken checks a cancellation token; empty is allowed where optional.
func checkToken(tok string, optional bool, lim Limits) string {
	switch {
	case tok == "" && optional:
		return ""
	case tok == "":
		return "empty cancellation token"
	case len(tok) > lim.MaxToken:
		return fmt.Sprintf("cancellation token of %d bytes, more than the limit of %d", len(tok), lim.MaxToken)
	case !utf8.ValidString(tok):
		return fmt.Sprintf("cancellation token %s is not valid UTF-8", quote(tok))
	}
	return ""
}

// checkSpecs checks the specs an endpoint says are missing: valid names
// and typenames, and none that the batch carried.
func checkSpecs(missing []*twinflowv1.StateSpec, sent *twinflowv1.AddressBatch) string {
	if len(missing) == 0 {
		return "the endpoint reports missing state but names none"
	}
	for i, s := range missing {
		at := fmt.Sprintf("missing state spec %d", i)
		if why := checkStateName(s.GetName()); why != "" {
			return at + ": " + why
		}
		if t := s.GetTypename(); t != "" {
			if err := router.ValidateTypename(t); err != nil {
				return fmt.Sprintf("%s: state %s: %v", at, quote(s.GetName()), err)
			}
		}
		if s.GetExpireAfterMillis() < 0 {
			return fmt.Sprintf("%s: state %s: negative expiry of %d ms", at, quote(s.GetName()), s.GetExpireAfterMillis())
		}
		for _, st := range sent.GetState() {
			if st.GetName() == s.GetName() {
				return fmt.Sprintf("%s: state %s is reported missing although it was sent", at, quote(s.GetName()))
			}
		}
	}
	return ""
}

// maxStateName bounds the name of a state value.
const maxStateName = 256

// checkStateName checks the name of a declared state value: non-empty
// valid UTF-8 without control characters, at most maxStateName bytes.
func checkStateName(name string) string {
	switch {
	case name == "":
		return "empty state name"
	case len(name) > maxStateName:
		return fmt.Sprintf("state name of %d bytes, more than the limit of %d", len(name), maxStateName)
	case !utf8.ValidString(name):
		return fmt.Sprintf("state name %s is not valid UTF-8", quote(name))
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Sprintf("state name %s contains a control character", quote(name))
	}
	return ""
}

// hasReplyTo reports whether r is the reply subject of a message of b's
// batch: a function may answer only the requests it was given.
func (b *mailbox) hasReplyTo(r string) bool {
	if r == "" {
		return false
	}
	return slices.ContainsFunc(b.inflight, func(e Envelope) bool { return e.ReplyTo == r })
}

func specNames(specs []*twinflowv1.StateSpec) string {
	if len(specs) == 0 {
		return "none"
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = quote(s.GetName())
	}
	return strings.Join(names, ", ")
}

// quote quotes s for an error message, cut to a readable length.
func quote(s string) string {
	const max = 200
	if len(s) > max {
		return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}
