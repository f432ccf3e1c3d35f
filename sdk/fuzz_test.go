package sdk_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/sdk"
)

// FuzzInvokeDecode posts arbitrary bytes to the handler as a Connect
// protobuf request, and runs every batch they decode to through the
// executor directly. Neither may panic; the handler must answer either a
// result per batch or invalid_argument / failed_precondition; the executor
// must always return an outcome.
//
//	go test -run '^$' -fuzz FuzzInvokeDecode -fuzztime 30s ./sdk
func FuzzInvokeDecode(f *testing.F) {
	seeds := []*twinflowv1.InvokeRequest{
		request(counterBatch("a", tv(f, sdk.Int64Type, 10),
			inv(tv(f, sdk.Int64Type, 1)), inv(tv(f, sdk.Int64Type, 2)), inv(tv(f, sdk.Int64Type, 3)))),
		request(
			counterBatch("a", nil, inv(tv(f, sdk.Int64Type, 1))),
			&twinflowv1.AddressBatch{
				Target:      addr("test/profile", "p"),
				State:       []*twinflowv1.StateValue{{Name: "visits", Value: tv(f, sdk.Int64Type, 1)}},
				Invocations: []*twinflowv1.Invocation{inv(tv(f, sdk.StringType, "hi"))},
			},
			counterBatch("b", tv(f, sdk.StringType, "mismatch"), inv(tv(f, sdk.Int64Type, 1))),
			&twinflowv1.AddressBatch{Target: addr("test/unknown", "u"), Invocations: []*twinflowv1.Invocation{inv(tv(f, sdk.Int64Type, 1))}},
		),
		request(counterBatch("c", nil,
			&twinflowv1.Invocation{Argument: tv(f, sdk.StringType, "echo-caller"), Caller: addr("test/caller", "c")},
			&twinflowv1.Invocation{Argument: tv(f, sdk.StringType, "reply"), ReplyTo: "_INBOX.x"},
			inv(tv(f, sdk.StringType, "delay")), inv(tv(f, sdk.StringType, "cancel")),
			inv(tv(f, sdk.StringType, "egress")), inv(tv(f, sdk.StringType, "panic")))),
		request(counterBatch("d", nil, inv(tv(f, sdk.StringType, "bad-send")))),
		request(counterBatch("a", nil), counterBatch("a", nil)),
		{ProtocolVersion: 2, Batches: []*twinflowv1.AddressBatch{counterBatch("a", nil)}},
		{},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})

	fns := newTestFunctions(f)
	h := sdk.Handler(fns.reg)
	f.Fuzz(func(t *testing.T, data []byte) {
		req := httptest.NewRequest(http.MethodPost, twinflowv1connect.FunctionServiceInvokeProcedure, bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/proto")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		var decoded twinflowv1.InvokeRequest
		decodeErr := proto.Unmarshal(data, &decoded)
		if rec.Code != http.StatusOK {
			var e struct{ Code string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("status %d with a body that is no Connect error: %q", rec.Code, rec.Body.Bytes())
			}
			if e.Code != connect.CodeInvalidArgument.String() && e.Code != connect.CodeFailedPrecondition.String() {
				t.Fatalf("status %d, code %q: want invalid_argument or failed_precondition", rec.Code, e.Code)
			}
		} else {
			if decodeErr != nil {
				t.Fatalf("bytes that do not decode were accepted: %v", decodeErr)
			}
			var resp twinflowv1.InvokeResponse
			if err := proto.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("response does not decode: %v", err)
			}
			if len(resp.GetResults()) != len(decoded.GetBatches()) {
				t.Fatalf("%d results for %d batches", len(resp.GetResults()), len(decoded.GetBatches()))
			}
			for i, r := range resp.GetResults() {
				if r.GetOutcome() == nil || !proto.Equal(r.GetTarget(), decoded.GetBatches()[i].GetTarget()) {
					t.Fatalf("result %d: %v", i, r)
				}
			}
		}
		if decodeErr != nil {
			return
		}
		for _, b := range decoded.GetBatches() {
			if r := fns.reg.RunBatch(t.Context(), b); r.GetOutcome() == nil {
				t.Fatalf("RunBatch returned no outcome for %v", b)
			}
		}
	})
}
