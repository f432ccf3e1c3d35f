package suite_test

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/conformance/reference"
	"github.com/twinflow/twinflow/conformance/suite"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/sdk"
)

// TestGoReferencePasses runs the suite against the Go reference functions
// served by the Go SDK: every rule passes.
func TestGoReferencePasses(t *testing.T) {
	results := runSuite(t, suite.Config{Endpoint: serve(t, goHandler(t))})
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Rule.Name, r.Err)
		}
	}
	if len(results) != len(suite.Rules(false)) {
		t.Errorf("%d results for %d rules", len(results), len(suite.Rules(false)))
	}
}

// TestBrokenEndpointsAreRejected runs the suite against endpoints that
// each break one rule (the Go reference behind a proxy that spoils its
// requests or answers) and checks that exactly the rules broken fail, each
// with a message that says what went wrong.
func TestBrokenEndpointsAreRejected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ breakage
		// want maps each rule that must fail to a text its message holds.
		want map[string]string
	}{
		{
			name: "effects in reverse order",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for _, r := range resp.GetResults() {
					if e := r.GetEffects(); e != nil {
						slices.Reverse(e.Outgoing)
						slices.Reverse(e.Egress)
					}
				}
			}},
			want: map[string]string{
				"batch/in-order":            `result 0 (conformance/counter/a): outgoing[0] is to conformance/sink/a: twinflow/int64 16, want to conformance/sink/a: twinflow/int64 11`,
				"effects/order":             `result 0 (conformance/actor/order): outgoing[0] is to conformance/sink/a: twinflow/string "m3", want to conformance/sink/a: twinflow/string "m1"`,
				"effects/reply-and-forward": `result 0 (conformance/actor/request): outgoing[0] is to conformance/sink/s`,
				"codec/primitives":          `result 0 (conformance/codec/p): outgoing[0] is to conformance/sink/p: twinflow/bytes "", want to conformance/sink/p: twinflow/int64 4611686018427387906`,
				"codec/json-and-protobuf":   `outgoing[0] is to conformance/sink/j: proto/twinflow.v1.Address`,
			},
		},
		{
			name: "error kinds swapped",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for _, r := range resp.GetResults() {
					if e := r.GetError(); e != nil {
						e.Kind = 3 - e.Kind // RETRYABLE (1) <-> TERMINAL (2)
					}
				}
			}},
			want: map[string]string{
				"batch/several-addresses":   `result 1 (conformance/actor/x): error kind KIND_TERMINAL, want KIND_RETRYABLE (message "boom")`,
				"state/typename-mismatch":   `error kind KIND_TERMINAL, want KIND_RETRYABLE`,
				"effects/reply-and-forward": `result 2 (conformance/actor/reply-without-request): error kind KIND_RETRYABLE, want KIND_TERMINAL`,
				"effects/caller":            `result 1 (conformance/actor/uncalled): error kind KIND_RETRYABLE, want KIND_TERMINAL`,
				"errors/kinds":              `result 0 (conformance/actor/retryable): error kind KIND_TERMINAL, want KIND_RETRYABLE (message "try again later")`,
			},
		},
		{
			name:   "malformed requests accepted",
			break_: breakage{acceptMalformed: true},
			want: map[string]string{
				"malformed/invalid-argument": `a request with no batches: the call succeeded, want the invalid_argument code`,
			},
		},
		{
			name: "protocol version ignored",
			break_: breakage{request: func(req *twinflowv1.InvokeRequest) {
				req.ProtocolVersion = twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1
			}},
			want: map[string]string{
				"version/unsupported": `protocol version 0, a valid request: the call succeeded, want the failed_precondition code`,
			},
		},
		{
			name: "results in reverse order",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				slices.Reverse(resp.Results)
			}},
			want: map[string]string{
				"version/response":          `result 0 is for conformance/counter/r2, want conformance/counter/r1: results must be in the order of the batches`,
				"batch/several-addresses":   `result 0 is for conformance/counter/c, want conformance/counter/a`,
				"batch/many-addresses":      `result 0 is for conformance/counter/m099, want conformance/counter/m000`,
				"state/missing":             `result 0 is for conformance/counter/undeclared, want conformance/counter/none`,
				"state/mutations":           `result 0 is for conformance/counter/same, want conformance/counter/note`,
				"effects/cancel-in-batch":   `result 0 is for conformance/actor/no-token, want conformance/actor/later-invocation`,
				"effects/reply-and-forward": `result 0 is for conformance/actor/reply-without-request, want conformance/actor/request`,
				"effects/caller":            `result 0 is for conformance/actor/uncalled, want conformance/actor/called`,
				"errors/kinds":              `result 0 is for conformance/unknown/u, want conformance/actor/retryable`,
			},
		},
		{
			name: "cancellations dropped",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for _, r := range resp.GetResults() {
					if e := r.GetEffects(); e != nil {
						e.Cancellations = nil
					}
				}
			}},
			want: map[string]string{
				"effects/order":           `result 0 (conformance/actor/order): 0 cancellations, want 2: got none, want ["t-old"; "t-older"]`,
				"effects/cancel-in-batch": `result 0 (conformance/actor/later-invocation): 0 cancellations, want 1`,
			},
		},
		{
			name: "every declared spec reported missing",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for _, r := range resp.GetResults() {
					if m := r.GetMissingStates(); m != nil {
						m.Specs = []*twinflowv1.StateSpec{
							{Name: "count", Typename: "twinflow/int64"},
							{Name: "last", Typename: "twinflow/int64", ExpiryMode: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE, ExpireAfterMillis: 60_000},
							{Name: "note", Typename: "twinflow/string", ExpiryMode: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE, ExpireAfterMillis: 1_800_000},
						}
					}
				}
			}},
			want: map[string]string{
				"state/missing": `result 1 (conformance/counter/count-only): missing states name {name "count", typename "twinflow/int64", EXPIRY_MODE_NONE_UNSPECIFIED, 0ms}, which the request sent`,
			},
		},
		{
			name: "expiry in seconds",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for _, r := range resp.GetResults() {
					for _, s := range r.GetMissingStates().GetSpecs() {
						s.ExpireAfterMillis /= 1000
					}
				}
			}},
			want: map[string]string{
				"batch/several-addresses": `result 2 (conformance/counter/b): missing spec {name "last", typename "twinflow/int64", EXPIRY_MODE_AFTER_WRITE, 60ms}, want {name "last", typename "twinflow/int64", EXPIRY_MODE_AFTER_WRITE, 60000ms}`,
				"state/missing":           `result 0 (conformance/counter/none): missing spec {name "last", typename "twinflow/int64", EXPIRY_MODE_AFTER_WRITE, 60ms}`,
			},
		},
		{
			name: "every shipped state written back",
			break_: breakage{response: func(req *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for i, r := range resp.GetResults() {
					e := r.GetEffects()
					if e == nil {
						continue
					}
					for _, sv := range req.GetBatches()[i].GetState() {
						written := slices.ContainsFunc(e.StateMutations, func(m *twinflowv1.StateMutation) bool { return m.GetName() == sv.GetName() })
						if sv.GetValue() != nil && !written {
							e.StateMutations = append(e.StateMutations, &twinflowv1.StateMutation{Name: sv.GetName(), Kind: twinflowv1.StateMutation_KIND_SET, Value: sv.GetValue()})
						}
					}
				}
			}},
			want: map[string]string{
				"state/missing":           `result 0 (conformance/counter/all): the batch did not write state "retired" but its mutations set it`,
				"state/mutations":         `result 0 (conformance/counter/note): the batch did not write state "count" but its mutations set it`,
				"batch/several-addresses": `result 5 (conformance/counter/c): the batch did not write state "note" but its mutations set it`,
			},
		},
		{
			name: "int64 through a float",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for _, r := range resp.GetResults() {
					for _, m := range r.GetEffects().GetOutgoing() {
						if a := m.GetArgument(); a.GetTypename() == "twinflow/int64" {
							n, _ := strconv.ParseFloat(string(a.GetValue()), 64)
							a.Value = []byte(strconv.FormatFloat(n, 'g', -1, 64))
						}
					}
				}
			}},
			want: map[string]string{
				"codec/primitives": `outgoing[0] is to conformance/sink/p: twinflow/int64 4.611686018427388e+18, want to conformance/sink/p: twinflow/int64 4611686018427387906`,
			},
		},
		{
			name: "forward without the reply subject",
			break_: breakage{response: func(_ *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
				for _, r := range resp.GetResults() {
					for _, m := range r.GetEffects().GetOutgoing() {
						m.ReplyTo = ""
					}
				}
			}},
			want: map[string]string{
				"effects/reply-and-forward": `outgoing[0] is to conformance/counter/f: twinflow/string "f1", want to conformance/counter/f: twinflow/string "f1" (reply to "_INBOX.conformance.1")`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results := runSuite(t, suite.Config{Endpoint: serve(t, broken(t, tc.break_))})
			failed := make(map[string]error)
			for _, r := range suite.Failed(results) {
				failed[r.Rule.Name] = r.Err
			}
			for _, name := range slices.Sorted(maps.Keys(tc.want)) {
				err, ok := failed[name]
				if !ok {
					t.Errorf("rule %s passed, want it to fail with %q", name, tc.want[name])
					continue
				}
				if !strings.Contains(err.Error(), tc.want[name]) {
					t.Errorf("rule %s failed with\n  %v\nwant a message containing\n  %s", name, err, tc.want[name])
				}
			}
			for _, name := range slices.Sorted(maps.Keys(failed)) {
				if _, ok := tc.want[name]; !ok {
					t.Errorf("rule %s failed too: %v", name, failed[name])
				}
			}
		})
	}
}

func runSuite(t *testing.T, cfg suite.Config) []suite.Result {
	t.Helper()
	results, err := suite.Run(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return results
}

func goRegistry(t *testing.T) *sdk.Registry {
	t.Helper()
	reg := sdk.NewRegistry()
	if err := reference.Register(reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

func goHandler(t *testing.T) http.Handler { return sdk.Handler(goRegistry(t)) }

// serve serves h over loopback and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// breakage is a way for an endpoint to break the protocol.
type breakage struct {
	// request changes a request before the Go SDK sees it.
	request func(*twinflowv1.InvokeRequest)
	// response changes the Go SDK's response to a request.
	response func(*twinflowv1.InvokeRequest, *twinflowv1.InvokeResponse)
	// acceptMalformed runs the batches of a request that the Go SDK
	// refuses as malformed, each on its own.
	acceptMalformed bool
}

// broken returns the Go reference endpoint, broken as b says.
func broken(t *testing.T, b breakage) http.Handler {
	reg := goRegistry(t)
	h := sdk.Handler(reg)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := &twinflowv1.InvokeRequest{}
		decoded := proto.Unmarshal(body, req) == nil
		if decoded && b.request != nil {
			b.request(req)
			body = marshal(t, req)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		status, out := rec.Code, rec.Body.Bytes()
		switch {
		case status == http.StatusOK && decoded && b.response != nil:
			resp := &twinflowv1.InvokeResponse{}
			if err := proto.Unmarshal(out, resp); err != nil {
				t.Errorf("the Go SDK's response does not decode: %v", err)
			}
			b.response(req, resp)
			out = marshal(t, resp)
		case strings.Contains(rec.Body.String(), `"invalid_argument"`) && decoded && b.acceptMalformed:
			resp := &twinflowv1.InvokeResponse{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1}
			for _, batch := range req.GetBatches() {
				resp.Results = append(resp.Results, reg.RunBatch(r.Context(), batch))
			}
			status, out = http.StatusOK, marshal(t, resp)
			rec.Header().Set("Content-Type", "application/proto")
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		w.WriteHeader(status)
		w.Write(out)
	})
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newSigner(t *testing.T) *suite.Signer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := suite.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
