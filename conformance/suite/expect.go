package suite

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// effects is what a batch is expected to do.
type effects struct {
	// state holds the final value of each state the batch writes, nil for
	// one it deletes. A state not listed must get no mutation.
	state         map[string]*twinflowv1.TypedValue
	outgoing      []*twinflowv1.OutgoingMessage
	delayed       []*twinflowv1.DelayedMessage
	cancellations []string
	egress        []*twinflowv1.EgressRecord
}

func outgoing(target *twinflowv1.Address, v *twinflowv1.TypedValue, replyTo string) *twinflowv1.OutgoingMessage {
	return &twinflowv1.OutgoingMessage{Target: target, Argument: v, ReplyTo: replyTo}
}

func delayed(target *twinflowv1.Address, v *twinflowv1.TypedValue, millis int64, token string) *twinflowv1.DelayedMessage {
	return &twinflowv1.DelayedMessage{Target: target, Argument: v, DelayMillis: millis, CancellationToken: token}
}

func egress(name, key string, v *twinflowv1.TypedValue) *twinflowv1.EgressRecord {
	return &twinflowv1.EgressRecord{Egress: name, Key: key, Value: v}
}

func reply(replyTo string, v *twinflowv1.TypedValue) *twinflowv1.EgressRecord {
	return &twinflowv1.EgressRecord{Egress: "reply", ReplyTo: replyTo, Value: v}
}

// expectEffects checks that result i has the wanted effects. State
// mutations are checked by what applying them in order yields: an SDK may
// list a state more than once, as long as the last mutation wins, but must
// not mutate a state the batch did not write (that would restart its
// expiry).
func expectEffects(i int, r *twinflowv1.AddressResult, w effects) error {
	where := fmt.Sprintf("result %d (%s)", i, addrString(r.GetTarget()))
	e := r.GetEffects()
	if e == nil {
		return fmt.Errorf("%s: %s, want effects", where, outcomeString(r))
	}
	final := make(map[string]*twinflowv1.TypedValue)
	for j, m := range e.GetStateMutations() {
		switch m.GetKind() {
		case twinflowv1.StateMutation_KIND_SET:
			if m.GetValue() == nil {
				return fmt.Errorf("%s: state_mutations[%d] sets %q without a value", where, j, m.GetName())
			}
			final[m.GetName()] = m.GetValue()
		case twinflowv1.StateMutation_KIND_DELETE:
			final[m.GetName()] = nil
		default:
			return fmt.Errorf("%s: state_mutations[%d] of %q has kind %v, want KIND_SET or KIND_DELETE", where, j, m.GetName(), m.GetKind())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(final)) {
		wv, wrote := w.state[name]
		if !wrote {
			return fmt.Errorf("%s: the batch did not write state %q but its mutations %s it", where, name, setOrDelete(final[name]))
		}
		if !sameValue(final[name], wv) {
			return fmt.Errorf("%s: state %q ends %s, want %s", where, name, stateString(final[name]), stateString(wv))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(w.state)) {
		if _, ok := final[name]; !ok {
			return fmt.Errorf("%s: no mutation of state %q, want it %s", where, name, stateString(w.state[name]))
		}
	}
	if err := sameList(where, "outgoing", e.GetOutgoing(), w.outgoing, outgoingString, func(a, b *twinflowv1.OutgoingMessage) bool {
		return sameAddr(a.GetTarget(), b.GetTarget()) && sameValue(a.GetArgument(), b.GetArgument()) && a.GetReplyTo() == b.GetReplyTo()
	}); err != nil {
		return err
	}
	if err := sameList(where, "delayed", e.GetDelayed(), w.delayed, delayedString, func(a, b *twinflowv1.DelayedMessage) bool {
		return sameAddr(a.GetTarget(), b.GetTarget()) && sameValue(a.GetArgument(), b.GetArgument()) &&
			a.GetDelayMillis() == b.GetDelayMillis() && a.GetCancellationToken() == b.GetCancellationToken()
	}); err != nil {
		return err
	}
	var tokens []string
	for _, c := range e.GetCancellations() {
		tokens = append(tokens, c.GetCancellationToken())
	}
	if err := sameList(where, "cancellations", tokens, w.cancellations, func(s string) string { return fmt.Sprintf("%q", s) },
		func(a, b string) bool { return a == b }); err != nil {
		return err
	}
	return sameList(where, "egress", e.GetEgress(), w.egress, egressString, func(a, b *twinflowv1.EgressRecord) bool {
		return a.GetEgress() == b.GetEgress() && a.GetKey() == b.GetKey() && a.GetReplyTo() == b.GetReplyTo() && sameValue(a.GetValue(), b.GetValue())
	})
}

func setOrDelete(v *twinflowv1.TypedValue) string {
	if v == nil {
		return "delete"
	}
	return "set"
}

func stateString(v *twinflowv1.TypedValue) string {
	if v == nil {
		return "deleted"
	}
	return "as " + valueString(v)
}

func sameAddr(a, b *twinflowv1.Address) bool {
	return a.GetType() == b.GetType() && a.GetId() == b.GetId()
}

// sameList compares a list of effects with the wanted one, in order, and
// names the first difference.
func sameList[T any](where, what string, got, want []T, str func(T) string, same func(a, b T) bool) error {
	for j := range min(len(got), len(want)) {
		if !same(got[j], want[j]) {
			return fmt.Errorf("%s: %s[%d] is %s, want %s (all %s: %s, want %s)",
				where, what, j, str(got[j]), str(want[j]), what, listString(got, str), listString(want, str))
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d %s, want %d: got %s, want %s", where, len(got), what, len(want), listString(got, str), listString(want, str))
	}
	return nil
}

// expectError checks that result i is an error of the kind, at the
// invocation index, whose message contains text.
func expectError(i int, r *twinflowv1.AddressResult, kind twinflowv1.InvocationError_Kind, index int32, text string) error {
	where := fmt.Sprintf("result %d (%s)", i, addrString(r.GetTarget()))
	e := r.GetError()
	if e == nil {
		return fmt.Errorf("%s: %s, want a %v error at invocation %d", where, outcomeString(r), kind, index)
	}
	if e.GetKind() != kind {
		return fmt.Errorf("%s: error kind %v, want %v (message %q)", where, e.GetKind(), kind, e.GetMessage())
	}
	if e.GetInvocationIndex() != index {
		return fmt.Errorf("%s: error at invocation_index %d, want %d (message %q)", where, e.GetInvocationIndex(), index, e.GetMessage())
	}
	if !strings.Contains(e.GetMessage(), text) {
		return fmt.Errorf("%s: error message %q does not contain %q", where, e.GetMessage(), text)
	}
	return nil
}

// expectMissing checks that result i asks for exactly the specs, in any
// order.
func expectMissing(i int, r *twinflowv1.AddressResult, want ...*twinflowv1.StateSpec) error {
	where := fmt.Sprintf("result %d (%s)", i, addrString(r.GetTarget()))
	m := r.GetMissingStates()
	if m == nil {
		return fmt.Errorf("%s: %s, want missing states %s", where, outcomeString(r), listString(want, specString))
	}
	got := make(map[string]*twinflowv1.StateSpec)
	for _, spec := range m.GetSpecs() {
		if _, dup := got[spec.GetName()]; dup {
			return fmt.Errorf("%s: missing states name %q twice", where, spec.GetName())
		}
		got[spec.GetName()] = spec
	}
	wanted := make(map[string]*twinflowv1.StateSpec)
	for _, spec := range want {
		wanted[spec.GetName()] = spec
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		w, ok := wanted[name]
		if !ok {
			return fmt.Errorf("%s: missing states name %s, which the request sent or the function does not declare (want %s)",
				where, specString(got[name]), listString(want, specString))
		}
		if g := got[name]; g.GetTypename() != w.GetTypename() || g.GetExpiryMode() != w.GetExpiryMode() || g.GetExpireAfterMillis() != w.GetExpireAfterMillis() {
			return fmt.Errorf("%s: missing spec %s, want %s", where, specString(g), specString(w))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(wanted)) {
		if _, ok := got[name]; !ok {
			return fmt.Errorf("%s: missing states do not name %s, which the request did not send", where, specString(wanted[name]))
		}
	}
	return nil
}
