package suite

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// The state specs the counter declares (conformance/README.md).
var counterSpecs = struct{ count, last, note *twinflowv1.StateSpec }{
	count: &twinflowv1.StateSpec{Name: "count", Typename: int64Type},
	last:  &twinflowv1.StateSpec{Name: "last", Typename: int64Type, ExpiryMode: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE, ExpireAfterMillis: 60_000},
	note:  &twinflowv1.StateSpec{Name: "note", Typename: stringType, ExpiryMode: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE, ExpireAfterMillis: 1_800_000},
}

func protocolRules() []Rule {
	return []Rule{
		{"version/unsupported", "a request of a protocol version other than PROTOCOL_VERSION_1 fails with failed_precondition naming the supported version, whatever it holds", checkUnsupportedVersion},
		{"version/response", "a response carries PROTOCOL_VERSION_1 and one result per batch, in order, each naming its batch's address", checkResponseVersion},
		{"batch/in-order", "the invocations of a batch run in order, each seeing the state the previous ones wrote", checkBatchOrder},
		{"batch/several-addresses", "one call carries batches for several addresses, each with its own state and outcome; the failure of one affects no other", checkSeveralAddresses},
		{"batch/many-addresses", "a call with 100 addresses answers each in request order", checkManyAddresses},
		{"state/missing", "a function declaring state the runtime did not send answers with exactly the missing specs (name, typename, expiry) and runs nothing; unset values count as sent, undeclared ones are ignored", checkMissingStates},
		{"state/mutations", "a batch mutates exactly the states it wrote, to their final values, deletes what it cleared, and reports a write even of an unchanged value", checkMutations},
		{"state/typename-mismatch", "a state value whose typename is not its spec's fails the invocation reading it, retryably", checkStateTypenameMismatch},
		{"effects/order", "outgoing messages, delayed messages, cancellations and egress records are listed in the order the batch's invocations made them", checkEffectOrder},
		{"effects/cancel-in-batch", "a delayed message that the same batch cancels later is dropped, the cancellation kept; one sent after the cancellation stays", checkCancelInBatch},
		{"effects/reply-and-forward", "a reply is a record of the \"reply\" egress with the request's reply subject; a forward passes the reply subject on, a send does not; replying without one fails terminally", checkReplyAndForward},
		{"effects/caller", "a function sees the caller of each invocation, and no caller when there is none", checkCaller},
		{"errors/kinds", "a failed invocation gives an error of its kind (retryable or terminal) with its index and message, and none of the batch's effects; an unknown function type fails the whole batch terminally (index -1)", checkErrorKinds},
		{"codec/primitives", "twinflow/int64 (exact to 64 bits), float64, string, bool and bytes values decode and encode as the Go SDK does", checkPrimitives},
		{"codec/json-and-protobuf", "JSON message types and protobuf ones (typename \"proto/\" + full name) decode and encode", checkJSONAndProtobuf},
		{"malformed/invalid-argument", "a malformed request is refused as a whole with invalid_argument, before any function runs", checkMalformed},
	}
}

func checkUnsupportedVersion(ctx context.Context, c *client) error {
	for _, v := range []twinflowv1.ProtocolVersion{twinflowv1.ProtocolVersion_PROTOCOL_VERSION_UNSPECIFIED, 2, 99} {
		for _, what := range []string{"a valid request", "a request with no batches"} {
			req := request(counterBatch("v", counterState(nil, nil, nil), inv(i64(1))))
			if what != "a valid request" {
				req = request()
			}
			req.ProtocolVersion = v
			_, err := c.call(ctx, req)
			if err := wantCode(err, connect.CodeFailedPrecondition); err != nil {
				return fmt.Errorf("protocol version %d, %s: %w", v, what, err)
			}
			var ce *connect.Error
			if errors.As(err, &ce) && !strings.Contains(ce.Message(), "PROTOCOL_VERSION_1") {
				return fmt.Errorf("protocol version %d: the error %q does not name the supported version PROTOCOL_VERSION_1", v, ce.Message())
			}
		}
	}
	return nil
}

func checkResponseVersion(ctx context.Context, c *client) error {
	_, err := c.invoke(ctx,
		counterBatch("r1", counterState(nil, nil, nil), inv(i64(1))),
		counterBatch("r2", counterState(nil, nil, nil), inv(i64(2))))
	return err
}

func checkBatchOrder(ctx context.Context, c *client) error {
	r, err := c.invokeOne(ctx, counterBatch("a", counterState(i64(10), nil, nil), inv(i64(1)), inv(i64(2)), inv(i64(3))))
	if err != nil {
		return err
	}
	sink := addr(sinkFn, "a")
	return expectEffects(0, r, effects{
		state:    map[string]*twinflowv1.TypedValue{"count": i64(16), "last": i64(3)},
		outgoing: []*twinflowv1.OutgoingMessage{outgoing(sink, i64(11), ""), outgoing(sink, i64(13), ""), outgoing(sink, i64(16), "")},
	})
}

func checkSeveralAddresses(ctx context.Context, c *client) error {
	rs, err := c.invoke(ctx,
		counterBatch("a", counterState(i64(1), nil, nil), inv(i64(1))),
		batch(addr(actorFn, "x"), nil, inv(script(step{Op: "send", To: to(sinkFn, "x"), Value: "lost"})), inv(script(step{Op: "fail", Message: "boom"}))),
		counterBatch("b", nil, inv(i64(5))),
		batch(addr(unknownFn, "u"), nil, inv(i64(1))),
		batch(addr(codecFn, "c"), nil, inv(i64(41))),
		counterBatch("c", counterState(nil, i64(9), str("kept")), inv(i64(7))),
	)
	if err != nil {
		return err
	}
	return errors.Join(
		expectEffects(0, rs[0], effects{
			state:    map[string]*twinflowv1.TypedValue{"count": i64(2), "last": i64(1)},
			outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, "a"), i64(2), "")},
		}),
		expectError(1, rs[1], twinflowv1.InvocationError_KIND_RETRYABLE, 1, "boom"),
		expectMissing(2, rs[2], counterSpecs.count, counterSpecs.last, counterSpecs.note),
		expectError(3, rs[3], twinflowv1.InvocationError_KIND_TERMINAL, -1, ""),
		expectEffects(4, rs[4], effects{outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, "c"), i64(42), "")}}),
		expectEffects(5, rs[5], effects{
			state:    map[string]*twinflowv1.TypedValue{"count": i64(7), "last": i64(7)},
			outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, "c"), i64(7), "")},
		}),
	)
}

func checkManyAddresses(ctx context.Context, c *client) error {
	const n = 100
	batches := make([]*twinflowv1.AddressBatch, n)
	for i := range n {
		batches[i] = counterBatch(fmt.Sprintf("m%03d", i), counterState(i64(int64(i)), nil, nil), inv(i64(1)))
	}
	rs, err := c.invoke(ctx, batches...)
	if err != nil {
		return err
	}
	for i, r := range rs {
		if err := expectEffects(i, r, effects{
			state:    map[string]*twinflowv1.TypedValue{"count": i64(int64(i + 1)), "last": i64(1)},
			outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, fmt.Sprintf("m%03d", i)), i64(int64(i+1)), "")},
		}); err != nil {
			return err
		}
	}
	return nil
}

func checkMissingStates(ctx context.Context, c *client) error {
	s := counterSpecs
	rs, err := c.invoke(ctx,
		counterBatch("none", nil, inv(i64(1))),
		counterBatch("count-only", []*twinflowv1.StateValue{{Name: "count", Value: i64(3)}}, inv(i64(1))),
		counterBatch("count-note", []*twinflowv1.StateValue{{Name: "note"}, {Name: "count"}}, inv(i64(1))),
		counterBatch("undeclared", []*twinflowv1.StateValue{{Name: "retired", Value: str("old")}, {Name: "count"}}, inv(i64(1))),
	)
	if err != nil {
		return err
	}
	if err := errors.Join(
		expectMissing(0, rs[0], s.count, s.last, s.note),
		expectMissing(1, rs[1], s.last, s.note),
		expectMissing(2, rs[2], s.last),
		expectMissing(3, rs[3], s.last, s.note),
	); err != nil {
		return err
	}
	// With every spec sent (in another order, unset, plus one undeclared),
	// the batch runs and leaves the undeclared state alone.
	r, err := c.invokeOne(ctx, counterBatch("all", []*twinflowv1.StateValue{
		{Name: "note"}, {Name: "retired", Value: str("old")}, {Name: "last"}, {Name: "count"},
	}, inv(i64(4))))
	if err != nil {
		return err
	}
	return expectEffects(0, r, effects{
		state:    map[string]*twinflowv1.TypedValue{"count": i64(4), "last": i64(4)},
		outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, "all"), i64(4), "")},
	})
}

func checkMutations(ctx context.Context, c *client) error {
	rs, err := c.invoke(ctx,
		// Only the note is written.
		counterBatch("note", counterState(i64(3), i64(1), nil), inv(str("hello"))),
		// count and last are written; the note is not.
		counterBatch("add", counterState(i64(3), i64(1), str("n")), inv(i64(2))),
		// reset clears count and last.
		counterBatch("reset", counterState(i64(3), i64(1), str("n")), inv(str("reset"))),
		// The final value counts: written, then cleared.
		counterBatch("add-reset", counterState(i64(3), nil, nil), inv(i64(1)), inv(str("reset"))),
		// Cleared, then written again.
		counterBatch("reset-add", counterState(i64(3), i64(1), nil), inv(str("reset")), inv(i64(4))),
		// A write of the value the state already holds is still a write:
		// it restarts the state's expiry.
		counterBatch("same", counterState(nil, nil, str("same")), inv(str("same"))),
	)
	if err != nil {
		return err
	}
	st := func(kv ...any) map[string]*twinflowv1.TypedValue {
		m := make(map[string]*twinflowv1.TypedValue)
		for i := 0; i < len(kv); i += 2 {
			v, _ := kv[i+1].(*twinflowv1.TypedValue)
			m[kv[i].(string)] = v
		}
		return m
	}
	return errors.Join(
		expectEffects(0, rs[0], effects{state: st("note", str("hello"))}),
		expectEffects(1, rs[1], effects{state: st("count", i64(5), "last", i64(2)), outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, "add"), i64(5), "")}}),
		expectEffects(2, rs[2], effects{state: st("count", nil, "last", nil)}),
		expectEffects(3, rs[3], effects{state: st("count", nil, "last", nil), outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, "add-reset"), i64(4), "")}}),
		expectEffects(4, rs[4], effects{state: st("count", i64(4), "last", i64(4)), outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(sinkFn, "reset-add"), i64(4), "")}}),
		expectEffects(5, rs[5], effects{state: st("note", str("same"))}),
	)
}

func checkStateTypenameMismatch(ctx context.Context, c *client) error {
	r, err := c.invokeOne(ctx, counterBatch("mismatch", counterState(str("ten"), nil, nil), inv(str("fine")), inv(i64(1))))
	if err != nil {
		return err
	}
	return expectError(0, r, twinflowv1.InvocationError_KIND_RETRYABLE, 1, "")
}

func checkEffectOrder(ctx context.Context, c *client) error {
	a, b := addr(sinkFn, "a"), addr(sinkFn, "b")
	r, err := c.invokeOne(ctx, batch(addr(actorFn, "order"), nil,
		inv(script(
			step{Op: "egress", Egress: "alerts", Value: "e1"},
			step{Op: "send", To: to(sinkFn, "a"), Value: "m1"},
			step{Op: "sendAfter", To: to(sinkFn, "a"), Value: "d1", DelayMillis: 1500},
			step{Op: "egress", Egress: "alerts", Key: "k", Value: "e2"},
			step{Op: "send", To: to(sinkFn, "b"), Value: "m2"},
			step{Op: "cancel", Token: "t-old"},
			step{Op: "sendAfter", To: to(sinkFn, "b"), Value: "d2", DelayMillis: 10, Token: "t2"},
		)),
		inv(script(
			step{Op: "send", To: to(sinkFn, "a"), Value: "m3"},
			step{Op: "cancel", Token: "t-older"},
			step{Op: "egress", Egress: "audit", Value: "e3"},
			step{Op: "sendAfter", To: to(sinkFn, "a"), Value: "d3", DelayMillis: 0, Token: "t3"},
		)),
	))
	if err != nil {
		return err
	}
	return expectEffects(0, r, effects{
		outgoing:      []*twinflowv1.OutgoingMessage{outgoing(a, str("m1"), ""), outgoing(b, str("m2"), ""), outgoing(a, str("m3"), "")},
		delayed:       []*twinflowv1.DelayedMessage{delayed(a, str("d1"), 1500, ""), delayed(b, str("d2"), 10, "t2"), delayed(a, str("d3"), 0, "t3")},
		cancellations: []string{"t-old", "t-older"},
		egress:        []*twinflowv1.EgressRecord{egress("alerts", "", str("e1")), egress("alerts", "k", str("e2")), egress("audit", "", str("e3"))},
	})
}

func checkCancelInBatch(ctx context.Context, c *client) error {
	a := addr(sinkFn, "a")
	sendAfter := func(v, token string) step {
		return step{Op: "sendAfter", To: to(sinkFn, "a"), Value: v, DelayMillis: 1000, Token: token}
	}
	cancel := func(token string) step { return step{Op: "cancel", Token: token} }
	actor := func(id string, invs ...*twinflowv1.Invocation) *twinflowv1.AddressBatch {
		return batch(addr(actorFn, id), nil, invs...)
	}
	rs, err := c.invoke(ctx,
		// Sent, then cancelled by a later invocation of the batch.
		actor("later-invocation", inv(script(sendAfter("d1", "t"))), inv(script(cancel("t")))),
		// Sent, then cancelled by the same invocation; another token stays.
		actor("same-invocation", inv(script(sendAfter("d1", "t"), sendAfter("d2", "u"), cancel("t")))),
		// Cancelled, then sent: the runtime applies the cancellation first,
		// so the message stays pending.
		actor("cancel-then-send", inv(script(cancel("t"), sendAfter("d1", "t")))),
		// Sent, cancelled, sent again with the token.
		actor("send-cancel-send", inv(script(sendAfter("d1", "t"))), inv(script(cancel("t"), sendAfter("d2", "t")))),
		// A message without a token is never cancelled.
		actor("no-token", inv(script(sendAfter("d1", ""), cancel("t")))),
	)
	if err != nil {
		return err
	}
	d := func(v, token string) *twinflowv1.DelayedMessage { return delayed(a, str(v), 1000, token) }
	return errors.Join(
		expectEffects(0, rs[0], effects{cancellations: []string{"t"}}),
		expectEffects(1, rs[1], effects{delayed: []*twinflowv1.DelayedMessage{d("d2", "u")}, cancellations: []string{"t"}}),
		expectEffects(2, rs[2], effects{delayed: []*twinflowv1.DelayedMessage{d("d1", "t")}, cancellations: []string{"t"}}),
		expectEffects(3, rs[3], effects{delayed: []*twinflowv1.DelayedMessage{d("d2", "t")}, cancellations: []string{"t"}}),
		expectEffects(4, rs[4], effects{delayed: []*twinflowv1.DelayedMessage{d("d1", "")}, cancellations: []string{"t"}}),
	)
}

func checkReplyAndForward(ctx context.Context, c *client) error {
	const inbox = "_INBOX.conformance.1"
	withReply := &twinflowv1.Invocation{ReplyTo: inbox, Argument: script(
		step{Op: "reply", Value: "r1"},
		step{Op: "forward", To: to(counterFn, "f"), Value: "f1"},
		step{Op: "send", To: to(sinkFn, "s"), Value: "s1"},
	)}
	rs, err := c.invoke(ctx,
		batch(addr(actorFn, "request"), nil, withReply),
		batch(addr(actorFn, "no-request"), nil, inv(script(step{Op: "forward", To: to(counterFn, "f"), Value: "f2"}))),
		batch(addr(actorFn, "reply-without-request"), nil, inv(script(step{Op: "send", To: to(sinkFn, "s"), Value: "lost"})), inv(script(step{Op: "reply", Value: "r2"}))),
	)
	if err != nil {
		return err
	}
	return errors.Join(
		expectEffects(0, rs[0], effects{
			outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(counterFn, "f"), str("f1"), inbox), outgoing(addr(sinkFn, "s"), str("s1"), "")},
			egress:   []*twinflowv1.EgressRecord{reply(inbox, str("r1"))},
		}),
		expectEffects(1, rs[1], effects{outgoing: []*twinflowv1.OutgoingMessage{outgoing(addr(counterFn, "f"), str("f2"), "")}}),
		expectError(2, rs[2], twinflowv1.InvocationError_KIND_TERMINAL, 1, ""),
	)
}

func checkCaller(ctx context.Context, c *client) error {
	caller := addr(counterFn, "z")
	rs, err := c.invoke(ctx,
		batch(addr(actorFn, "called"), nil, &twinflowv1.Invocation{Caller: caller, Argument: script(step{Op: "toCaller", Value: "hi"})}),
		batch(addr(actorFn, "uncalled"), nil, inv(script(step{Op: "toCaller", Value: "hi"}))),
	)
	if err != nil {
		return err
	}
	return errors.Join(
		expectEffects(0, rs[0], effects{outgoing: []*twinflowv1.OutgoingMessage{outgoing(caller, str("hi"), "")}}),
		expectError(1, rs[1], twinflowv1.InvocationError_KIND_TERMINAL, 0, ""),
	)
}

func checkErrorKinds(ctx context.Context, c *client) error {
	sendFirst := inv(script(step{Op: "send", To: to(sinkFn, "e"), Value: "discarded"}, step{Op: "egress", Egress: "alerts", Value: "discarded"}))
	rs, err := c.invoke(ctx,
		batch(addr(actorFn, "retryable"), nil, sendFirst, inv(script(step{Op: "fail", Message: "try again later"}))),
		batch(addr(actorFn, "terminal"), nil, sendFirst, inv(script(step{Op: "failTerminal", Message: "never works"}))),
		batch(addr(actorFn, "first"), nil, inv(script(step{Op: "failTerminal", Message: "at once"})), sendFirst),
		counterBatch("unknown-message", counterState(nil, nil, nil), inv(raw("conformance/Unknown", []byte("{}")))),
		batch(addr(codecFn, "undecodable"), nil, inv(raw(int64Type, []byte(`"seven"`)))),
		batch(addr(unknownFn, "u"), nil, inv(i64(1)), inv(i64(2))),
	)
	if err != nil {
		return err
	}
	return errors.Join(
		expectError(0, rs[0], twinflowv1.InvocationError_KIND_RETRYABLE, 1, "try again later"),
		expectError(1, rs[1], twinflowv1.InvocationError_KIND_TERMINAL, 1, "never works"),
		expectError(2, rs[2], twinflowv1.InvocationError_KIND_TERMINAL, 0, "at once"),
		expectError(3, rs[3], twinflowv1.InvocationError_KIND_TERMINAL, 0, ""),
		expectError(4, rs[4], twinflowv1.InvocationError_KIND_TERMINAL, 0, ""),
		expectError(5, rs[5], twinflowv1.InvocationError_KIND_TERMINAL, -1, unknownFn),
	)
}

func checkPrimitives(ctx context.Context, c *client) error {
	const big = int64(1)<<62 + 1
	text := `<a & b> "é" 🚀 \`
	f := func(x float64) *twinflowv1.TypedValue {
		return raw(float64Type, []byte(strconv.FormatFloat(x, 'g', -1, 64)))
	}
	b := func(v bool) *twinflowv1.TypedValue { return raw(boolType, []byte(strconv.FormatBool(v))) }
	r, err := c.invokeOne(ctx, batch(addr(codecFn, "p"), nil,
		inv(i64(big)), inv(i64(-7)), inv(i64(math.MinInt64+1)),
		inv(f(1.5)), inv(f(1e-7)), inv(f(-2.5e300)),
		inv(str(text)), inv(str("")),
		inv(b(true)), inv(b(false)),
		inv(raw(bytesType, []byte{0, 1, 2, 0xff})), inv(raw(bytesType, nil)),
	))
	if err != nil {
		return err
	}
	sink := addr(sinkFn, "p")
	return expectEffects(0, r, effects{outgoing: []*twinflowv1.OutgoingMessage{
		outgoing(sink, i64(big+1), ""), outgoing(sink, i64(-6), ""), outgoing(sink, i64(math.MinInt64+2), ""),
		outgoing(sink, f(3), ""), outgoing(sink, f(2e-7), ""), outgoing(sink, f(-5e300), ""),
		outgoing(sink, str(text+"!"), ""), outgoing(sink, str("!"), ""),
		outgoing(sink, b(false), ""), outgoing(sink, b(true), ""),
		outgoing(sink, raw(bytesType, []byte{0xff, 2, 1, 0}), ""), outgoing(sink, raw(bytesType, nil), ""),
	}})
}

func checkJSONAndProtobuf(ctx context.Context, c *client) error {
	a, err := proto.Marshal(addr("x/y", "z"))
	if err != nil {
		return err
	}
	swapped, err := proto.Marshal(addr("z", "x/y"))
	if err != nil {
		return err
	}
	r, err := c.invokeOne(ctx, batch(addr(codecFn, "j"), nil,
		inv(raw(pairType, []byte(`{"a": 2, "b": 40}`))),
		inv(raw(addressType, a)),
	))
	if err != nil {
		return err
	}
	sink := addr(sinkFn, "j")
	return expectEffects(0, r, effects{outgoing: []*twinflowv1.OutgoingMessage{
		outgoing(sink, raw(sumType, []byte(`{"sum":42}`)), ""),
		outgoing(sink, raw(addressType, swapped), ""),
	}})
}
