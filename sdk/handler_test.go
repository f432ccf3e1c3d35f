package sdk_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/sdk"
)

func TestBatchAppliesInvocationsInOrder(t *testing.T) {
	f := newTestFunctions(t)
	c := startServer(t, f.reg).client(t)

	results := invoke(t, c, request(counterBatch("a", tv(t, sdk.Int64Type, 10),
		inv(tv(t, sdk.Int64Type, 1)),
		inv(tv(t, sdk.Int64Type, 2)),
		inv(tv(t, sdk.Int64Type, 3)),
	)))

	sink := addr("test/sink", "a")
	wantProto(t, "effects", effects(t, results[0]), &twinflowv1.Effects{
		// One mutation with the final value, after the three writes.
		StateMutations: []*twinflowv1.StateMutation{
			{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET, Value: tv(t, sdk.Int64Type, 16)},
		},
		// Each invocation saw the previous one's write.
		Outgoing: []*twinflowv1.OutgoingMessage{
			{Target: sink, Argument: tv(t, sdk.Int64Type, 11)},
			{Target: sink, Argument: tv(t, sdk.Int64Type, 13)},
			{Target: sink, Argument: tv(t, sdk.Int64Type, 16)},
		},
	})
	wantProto(t, "target", results[0].GetTarget(), addr("test/counter", "a"))
}

func TestBatchesForSeveralAddresses(t *testing.T) {
	f := newTestFunctions(t)
	c := startServer(t, f.reg).client(t)

	results := invoke(t, c, request(
		counterBatch("a", nil, inv(tv(t, sdk.Int64Type, 1))),
		&twinflowv1.AddressBatch{
			Target: addr("test/profile", "p"),
			State: []*twinflowv1.StateValue{
				{Name: "name"}, {Name: "visits", Value: tv(t, sdk.Int64Type, 41)}, {Name: "tags"},
			},
			Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.StringType, "hi"))},
		},
		// Fails at its second invocation: the first one's effects go too.
		counterBatch("b", tv(t, sdk.Int64Type, 100),
			inv(tv(t, sdk.Int64Type, 5)),
			inv(tv(t, sdk.StringType, "fail"))),
		&twinflowv1.AddressBatch{Target: addr("test/unknown", "u"), Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.Int64Type, 1))}},
		counterBatch("c", tv(t, sdk.Int64Type, 7), inv(tv(t, sdk.Int64Type, 1))),
	))

	wantTargets := []*twinflowv1.Address{
		addr("test/counter", "a"), addr("test/profile", "p"), addr("test/counter", "b"), addr("test/unknown", "u"), addr("test/counter", "c"),
	}
	for i, r := range results {
		wantProto(t, fmt.Sprintf("target of result %d", i), r.GetTarget(), wantTargets[i])
	}
	wantProto(t, "counter/a", effects(t, results[0]), &twinflowv1.Effects{
		StateMutations: []*twinflowv1.StateMutation{{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET, Value: tv(t, sdk.Int64Type, 1)}},
		Outgoing:       []*twinflowv1.OutgoingMessage{{Target: addr("test/sink", "a"), Argument: tv(t, sdk.Int64Type, 1)}},
	})
	wantProto(t, "profile/p", effects(t, results[1]), &twinflowv1.Effects{
		StateMutations: []*twinflowv1.StateMutation{{Name: "visits", Kind: twinflowv1.StateMutation_KIND_SET, Value: tv(t, sdk.Int64Type, 42)}},
	})
	wantProto(t, "counter/b", invocationError(t, results[2]), &twinflowv1.InvocationError{
		Kind: twinflowv1.InvocationError_KIND_RETRYABLE, Message: "asked to fail", InvocationIndex: 1,
	})
	e := invocationError(t, results[3])
	if e.GetKind() != twinflowv1.InvocationError_KIND_TERMINAL || e.GetInvocationIndex() != -1 || !strings.Contains(e.GetMessage(), `"test/unknown"`) {
		t.Errorf("unknown function type: got %v, want a terminal error for the whole batch naming the type", e)
	}
	wantProto(t, "counter/c", effects(t, results[4]), &twinflowv1.Effects{
		StateMutations: []*twinflowv1.StateMutation{{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET, Value: tv(t, sdk.Int64Type, 8)}},
		Outgoing:       []*twinflowv1.OutgoingMessage{{Target: addr("test/sink", "c"), Argument: tv(t, sdk.Int64Type, 8)}},
	})
}

func TestMissingStatesListsExactlyTheUndeclared(t *testing.T) {
	f := newTestFunctions(t)
	c := startServer(t, f.reg).client(t)

	results := invoke(t, c, request(
		&twinflowv1.AddressBatch{
			Target: addr("test/profile", "p"),
			// visits is sent (absent), an old undeclared spec too; name
			// and tags are not.
			State:       []*twinflowv1.StateValue{{Name: "visits"}, {Name: "retired", Value: tv(t, sdk.StringType, "x")}},
			Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.StringType, "hi"))},
		},
		counterBatch("a", nil, inv(tv(t, sdk.Int64Type, 1))),
	))

	wantProto(t, "missing states", results[0], &twinflowv1.AddressResult{
		Target: addr("test/profile", "p"),
		Outcome: &twinflowv1.AddressResult_MissingStates{MissingStates: &twinflowv1.MissingStates{Specs: []*twinflowv1.StateSpec{
			{Name: "name", Typename: "twinflow/string", ExpiryMode: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE, ExpireAfterMillis: 3_600_000},
			{Name: "tags", Typename: "test/Tags"},
		}}},
	})
	if n := f.profileInvokes.Load(); n != 0 {
		t.Errorf("the function ran %d times with missing state, want 0", n)
	}
	effects(t, results[1]) // the other address is unaffected

	// A batch for a function that got no state at all lists every spec.
	results = invoke(t, c, request(&twinflowv1.AddressBatch{
		Target:      addr("test/profile", "q"),
		Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.StringType, "hi"))},
	}))
	if got := len(results[0].GetMissingStates().GetSpecs()); got != 3 {
		t.Errorf("got %d missing specs, want all 3: %v", got, results[0])
	}
}

func TestStateTypenameMismatchIsAClearError(t *testing.T) {
	f := newTestFunctions(t)
	c := startServer(t, f.reg).client(t)

	results := invoke(t, c, request(counterBatch("a", tv(t, sdk.StringType, "ten"), inv(tv(t, sdk.Int64Type, 1)))))

	e := invocationError(t, results[0])
	for _, want := range []string{`state "count"`, "test/counter/a", `"twinflow/string"`, `"twinflow/int64"`} {
		if !strings.Contains(e.GetMessage(), want) {
			t.Errorf("error %q does not mention %s", e.GetMessage(), want)
		}
	}
	if e.GetInvocationIndex() != 0 {
		t.Errorf("invocation index = %d, want 0", e.GetInvocationIndex())
	}
}

func TestErrorKinds(t *testing.T) {
	f := newTestFunctions(t)
	c := startServer(t, f.reg).client(t)

	for _, tc := range []struct {
		cmd     string
		kind    twinflowv1.InvocationError_Kind
		message string
	}{
		{"fail", twinflowv1.InvocationError_KIND_RETRYABLE, "asked to fail"},
		{"fatal", twinflowv1.InvocationError_KIND_TERMINAL, "asked to fail for good"},
		{"panic", twinflowv1.InvocationError_KIND_TERMINAL, "function test/counter panicked: boom"},
		{"bad-send", twinflowv1.InvocationError_KIND_TERMINAL, "misuse of the Context: send to no-slash/x"},
		{"no-such-command", twinflowv1.InvocationError_KIND_TERMINAL, "unknown command"},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			// The first invocation succeeds; its effects must be discarded
			// with the batch.
			results := invoke(t, c, request(counterBatch("a", nil,
				inv(tv(t, sdk.Int64Type, 1)),
				inv(tv(t, sdk.StringType, tc.cmd)))))
			e := invocationError(t, results[0])
			if e.GetKind() != tc.kind || e.GetInvocationIndex() != 1 || !strings.HasPrefix(e.GetMessage(), tc.message) {
				t.Errorf("got %v, want kind %v, index 1, message starting with %q", e, tc.kind, tc.message)
			}
		})
	}
}

func TestMalformedRequestIsInvalidArgument(t *testing.T) {
	f := newTestFunctions(t)
	srv := startServer(t, f.reg)
	c := srv.client(t)
	ok := tv(t, sdk.Int64Type, 1)

	for _, tc := range []struct {
		name string
		req  *twinflowv1.InvokeRequest
	}{
		{"no batches", request()},
		{"nil target", request(&twinflowv1.AddressBatch{Invocations: []*twinflowv1.Invocation{inv(ok)}})},
		{"empty type", request(&twinflowv1.AddressBatch{Target: addr("", "a")})},
		{"type without namespace", request(&twinflowv1.AddressBatch{Target: addr("counter", "a")})},
		{"type with two slashes", request(&twinflowv1.AddressBatch{Target: addr("a/b/c", "a")})},
		{"type with a space", request(&twinflowv1.AddressBatch{Target: addr("test/coun ter", "a")})},
		{"empty id", request(&twinflowv1.AddressBatch{Target: addr("test/counter", "")})},
		{"repeated address", request(counterBatch("a", nil, inv(ok)), counterBatch("a", nil, inv(ok)))},
		{"state without name", request(&twinflowv1.AddressBatch{Target: addr("test/counter", "a"), State: []*twinflowv1.StateValue{{Value: ok}}})},
		{"state twice", request(&twinflowv1.AddressBatch{Target: addr("test/counter", "a"), State: []*twinflowv1.StateValue{{Name: "count"}, {Name: "count"}}})},
		{"state value without typename", request(counterBatch("a", &twinflowv1.TypedValue{Value: []byte("1")}, inv(ok)))},
		{"invocation without argument", request(counterBatch("a", nil, &twinflowv1.Invocation{}))},
		{"argument with invalid typename", request(counterBatch("a", nil, inv(&twinflowv1.TypedValue{Typename: "int64", Value: []byte("1")})))},
		{"invalid caller", request(counterBatch("a", nil, &twinflowv1.Invocation{Argument: ok, Caller: addr("test/x", "")}))},
		{"second batch malformed", request(counterBatch("a", nil, inv(ok)), &twinflowv1.AddressBatch{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Invoke(t.Context(), connect.NewRequest(tc.req))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("got %v, want invalid_argument", err)
			}
		})
	}

	t.Run("bytes that are not a request", func(t *testing.T) {
		for _, body := range [][]byte{{0xff, 0xff, 0xff}, []byte("not protobuf"), {0x12, 0x05, 0x0a}} {
			resp, err := httpClient(t, false).Post(srv.url+twinflowv1connect.FunctionServiceInvokeProcedure, "application/proto", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct{ Code string }
			if err := json.Unmarshal(b, &e); err != nil || e.Code != connect.CodeInvalidArgument.String() {
				t.Errorf("body %x: status %d, error %s, want invalid_argument", body, resp.StatusCode, b)
			}
		}
	})

	// The counter ran nothing in all of that.
	results := invoke(t, c, request(counterBatch("a", nil, inv(ok))))
	wantProto(t, "after malformed requests", effects(t, results[0]).GetStateMutations()[0].GetValue(), ok)
}

func TestUnsupportedProtocolVersion(t *testing.T) {
	f := newTestFunctions(t)
	c := startServer(t, f.reg).client(t)

	for _, v := range []twinflowv1.ProtocolVersion{twinflowv1.ProtocolVersion_PROTOCOL_VERSION_UNSPECIFIED, 2} {
		req := request(counterBatch("a", nil, inv(tv(t, sdk.Int64Type, 1))))
		req.ProtocolVersion = v
		_, err := c.Invoke(t.Context(), connect.NewRequest(req))
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "supports PROTOCOL_VERSION_1") {
			t.Errorf("version %v: got %v, want failed_precondition naming PROTOCOL_VERSION_1", v, err)
		}
	}
}

func TestProtocolsAndTransports(t *testing.T) {
	f := newTestFunctions(t)
	srv := startServer(t, f.reg)

	for _, transport := range []struct {
		name  string
		h2c   bool
		proto string
	}{
		{"HTTP/1.1", false, "HTTP/1.1"},
		{"h2c", true, "HTTP/2.0"},
	} {
		for _, protocol := range []struct {
			name string
			opts []connect.ClientOption
		}{
			{"Connect", nil},
			{"Connect+JSON", []connect.ClientOption{connect.WithProtoJSON()}},
			{"gRPC", []connect.ClientOption{connect.WithGRPC()}},
			{"gRPC-Web", []connect.ClientOption{connect.WithGRPCWeb()}},
		} {
			t.Run(transport.name+"/"+protocol.name, func(t *testing.T) {
				before := len(srv.protos())
				c := twinflowv1connect.NewFunctionServiceClient(httpClient(t, transport.h2c), srv.url, protocol.opts...)
				results := invoke(t, c, request(counterBatch("a", tv(t, sdk.Int64Type, 1), inv(tv(t, sdk.Int64Type, 2)))))
				wantProto(t, "state", effects(t, results[0]).GetStateMutations()[0].GetValue(), tv(t, sdk.Int64Type, 3))
				if got := srv.protos()[before:]; len(got) != 1 || got[0] != transport.proto {
					t.Errorf("server saw %v, want one %s request", got, transport.proto)
				}
			})
		}
	}
}

func TestConcurrentBatchesKeepRequestOrder(t *testing.T) {
	f := newTestFunctions(t)
	c := startServer(t, f.reg, sdk.WithBatchConcurrency(4)).client(t)

	var batches []*twinflowv1.AddressBatch
	for i := range 64 {
		batches = append(batches, counterBatch(fmt.Sprint(i), tv(t, sdk.Int64Type, int64(i)), inv(tv(t, sdk.Int64Type, 1))))
	}
	for i, r := range invoke(t, c, request(batches...)) {
		wantProto(t, "target", r.GetTarget(), addr("test/counter", fmt.Sprint(i)))
		wantProto(t, "state", effects(t, r).GetStateMutations()[0].GetValue(), tv(t, sdk.Int64Type, int64(i+1)))
	}
}

func TestSmallResponsesAreNotCompressed(t *testing.T) {
	f := newTestFunctions(t)
	srv := startServer(t, f.reg)
	body, err := proto.Marshal(request(counterBatch("a", nil, inv(tv(t, sdk.Int64Type, 1)))))
	must(t, err)
	req, err := http.NewRequest(http.MethodPost, srv.url+twinflowv1connect.FunctionServiceInvokeProcedure, bytes.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := httpClient(t, false).Do(req)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		t.Errorf("small response has Content-Encoding %q, want none", enc)
	}
}
