package suite

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// malformedRequest is a request an endpoint must refuse as a whole: either
// a message, or raw bytes for what a protobuf library will not encode.
type malformedRequest struct {
	name string
	req  *twinflowv1.InvokeRequest
	raw  []byte
}

func malformedRequests() []malformedRequest {
	ok := i64(1)
	valid := func(id string) *twinflowv1.AddressBatch {
		return counterBatch(id, counterState(nil, nil, nil), inv(ok))
	}
	withTarget := func(typ, id string) *twinflowv1.InvokeRequest {
		return request(batch(addr(typ, id), counterState(nil, nil, nil), inv(ok)))
	}
	withState := func(state ...*twinflowv1.StateValue) *twinflowv1.InvokeRequest {
		return request(counterBatch("a", state, inv(ok)))
	}
	withInvocation := func(i *twinflowv1.Invocation) *twinflowv1.InvokeRequest {
		return request(counterBatch("a", counterState(nil, nil, nil), i))
	}
	return []malformedRequest{
		{name: "no batches", req: request()},
		{name: "a batch without a target", req: request(batch(nil, nil, inv(ok)))},
		{name: "an empty function type", req: withTarget("", "a")},
		{name: `a function type without a namespace ("counter")`, req: withTarget("counter", "a")},
		{name: `a function type with two slashes ("a/b/c")`, req: withTarget("a/b/c", "a")},
		{name: `a function type with an empty name ("conformance/")`, req: withTarget("conformance/", "a")},
		{name: "a function type with a space", req: withTarget("conformance/coun ter", "a")},
		{name: "a function type with a control character", req: withTarget("conformance/count\x7fer", "a")},
		{name: "an empty id", req: withTarget(counterFn, "")},
		{name: "an id that is not UTF-8", raw: invalidUTF8IDRequest()},
		{name: "the same address twice", req: request(valid("a"), valid("a"))},
		{name: "a state without a name", req: withState(&twinflowv1.StateValue{Value: ok})},
		{name: "a state named twice", req: withState(&twinflowv1.StateValue{Name: "count"}, &twinflowv1.StateValue{Name: "count"})},
		{name: "a state value without a typename", req: withState(&twinflowv1.StateValue{Name: "count", Value: &twinflowv1.TypedValue{Value: []byte("1")}})},
		{name: "an invocation without an argument", req: withInvocation(&twinflowv1.Invocation{})},
		{name: "an argument without a typename", req: withInvocation(inv(&twinflowv1.TypedValue{Value: []byte("1")}))},
		{name: `an argument whose typename has no namespace ("int64")`, req: withInvocation(inv(raw("int64", []byte("1"))))},
		{name: "an argument whose typename has a space", req: withInvocation(inv(raw("twinflow/in t64", []byte("1"))))},
		{name: "a caller with an empty id", req: withInvocation(&twinflowv1.Invocation{Argument: ok, Caller: addr(actorFn, "")})},
		{name: `a caller with an invalid function type ("nobody")`, req: withInvocation(&twinflowv1.Invocation{Argument: ok, Caller: addr("nobody", "x")})},
		{name: "a malformed second batch", req: request(valid("a"), batch(addr(counterFn, ""), nil, inv(ok)))},
		{name: "bytes that are not protobuf (ff ff ff)", raw: []byte{0xff, 0xff, 0xff}},
		{name: `bytes that are not protobuf ("not protobuf")`, raw: []byte("not protobuf")},
		{name: "a truncated message", raw: []byte{0x12, 0x05, 0x0a}},
	}
}

// invalidUTF8IDRequest encodes by hand a request whose only address has the
// id "\xff": protobuf libraries refuse to encode invalid UTF-8 in a
// string field, and must refuse to decode it.
func invalidUTF8IDRequest() []byte {
	var target []byte
	target = protowire.AppendTag(target, 1, protowire.BytesType)
	target = protowire.AppendString(target, counterFn)
	target = protowire.AppendTag(target, 2, protowire.BytesType)
	target = protowire.AppendBytes(target, []byte{0xff})
	var arg []byte
	arg = protowire.AppendTag(arg, 1, protowire.BytesType)
	arg = protowire.AppendString(arg, int64Type)
	arg = protowire.AppendTag(arg, 2, protowire.BytesType)
	arg = protowire.AppendBytes(arg, []byte("1"))
	var invocation []byte
	invocation = protowire.AppendTag(invocation, 2, protowire.BytesType)
	invocation = protowire.AppendBytes(invocation, arg)
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, target)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, invocation)
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.VarintType)
	req = protowire.AppendVarint(req, uint64(twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1))
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, b)
	return req
}

func checkMalformed(ctx context.Context, c *client) error {
	for _, m := range malformedRequests() {
		if m.req != nil {
			_, err := c.call(ctx, m.req)
			if err := wantCode(err, connect.CodeInvalidArgument); err != nil {
				return fmt.Errorf("a request with %s: %w", m.name, err)
			}
			continue
		}
		resp, err := c.post(ctx, m.raw)
		if err != nil {
			return fmt.Errorf("a request with %s: %w", m.name, err)
		}
		if resp.code != connect.CodeInvalidArgument.String() {
			return fmt.Errorf("a request with %s: %s, want the invalid_argument code", m.name, resp)
		}
	}
	return nil
}
