// Package suite is the protocol conformance suite of Twinflow function
// endpoints. It drives an endpoint serving the reference functions
// (conformance/README.md) through the wire protocol alone: Connect unary
// calls of twinflow.v1.FunctionService/Invoke over HTTP/1.1 with the
// binary protobuf codec, as the runtime makes them, plus raw HTTP requests
// for what a well-behaved client never sends. It imports no SDK, so it
// judges the Go SDK as it judges any other.
//
// Each [Rule] checks one rule of the protocol and reports the first
// difference it finds, naming the request, the result and the field.
package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

// Config says which endpoint to check and how.
type Config struct {
	// Endpoint is the endpoint's base URL, as in a module spec, e.g.
	// "http://127.0.0.1:9000".
	Endpoint string
	// Signer signs every call. When nil, calls are unsigned and the
	// signature rules are not run.
	Signer *Signer
	// Timeout bounds each call. Default 10s.
	Timeout time.Duration
	// Now is the clock of signatures. Default time.Now.
	Now func() time.Time
}

// Rule is one rule of the protocol and its check.
type Rule struct {
	// Name identifies the rule, e.g. "effects/order".
	Name string
	// Doc says what the rule requires, in one sentence.
	Doc string
	// check returns nil when the endpoint follows the rule, else what it
	// did wrong.
	check func(ctx context.Context, c *client) error
}

// Result is the outcome of one rule.
type Result struct {
	Rule Rule
	// Err is nil when the endpoint follows the rule, else the first
	// difference found.
	Err error
}

// Rules returns the rules in the order they run; the signature rules only
// when signing is true.
func Rules(signing bool) []Rule {
	rules := protocolRules()
	if signing {
		rules = append(rules, signatureRules()...)
	}
	return rules
}

// Run checks every rule against the endpoint, in order, and calls report
// with each result as soon as it is known. It returns all results.
func Run(ctx context.Context, cfg Config, report func(Result)) ([]Result, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	defer c.plain.CloseIdleConnections()
	var results []Result
	for _, r := range Rules(cfg.Signer != nil) {
		err := r.check(ctx, c)
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
		res := Result{Rule: r, Err: err}
		results = append(results, res)
		if report != nil {
			report(res)
		}
	}
	return results, nil
}

// Failed returns the results whose rule the endpoint broke.
func Failed(results []Result) []Result {
	var out []Result
	for _, r := range results {
		if r.Err != nil {
			out = append(out, r)
		}
	}
	return out
}

// client calls the endpoint under test.
type client struct {
	cfg Config
	url string
	// http signs its requests when the suite signs; plain never does.
	http  *http.Client
	plain *http.Client
	fn    twinflowv1connect.FunctionServiceClient
}

func newClient(cfg Config) (*client, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("no endpoint URL given")
	}
	if !strings.HasPrefix(cfg.Endpoint, "http://") && !strings.HasPrefix(cfg.Endpoint, "https://") {
		return nil, fmt.Errorf("endpoint %q: want an http:// or https:// URL", cfg.Endpoint)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// HTTP/1.1 without compression, as the runtime's client.
	plain := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: cfg.Timeout}
	c := &client{cfg: cfg, url: strings.TrimSuffix(cfg.Endpoint, "/"), http: plain, plain: plain}
	if cfg.Signer != nil {
		c.http = &http.Client{Transport: &signingTransport{base: plain.Transport, signer: cfg.Signer, now: cfg.Now}, Timeout: cfg.Timeout}
	}
	c.fn = twinflowv1connect.NewFunctionServiceClient(c.http, c.url, connect.WithAcceptCompression("gzip", nil, nil))
	return c, nil
}

// call makes one Invoke call and returns its response or error.
func (c *client) call(ctx context.Context, req *twinflowv1.InvokeRequest) (*twinflowv1.InvokeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	resp, err := c.fn.Invoke(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// invoke calls the endpoint with the batches and checks what every answer
// must be: the protocol version, one result per batch in order, each for
// its batch's address and with an outcome.
func (c *client) invoke(ctx context.Context, batches ...*twinflowv1.AddressBatch) ([]*twinflowv1.AddressResult, error) {
	resp, err := c.call(ctx, request(batches...))
	if err != nil {
		return nil, fmt.Errorf("the call failed: %w", err)
	}
	if v := resp.GetProtocolVersion(); v != twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1 {
		return nil, fmt.Errorf("the response's protocol_version is %v, want PROTOCOL_VERSION_1", v)
	}
	results := resp.GetResults()
	if len(results) != len(batches) {
		return nil, fmt.Errorf("%d results for %d batches, want one per batch", len(results), len(batches))
	}
	for i, r := range results {
		if got, want := r.GetTarget(), batches[i].GetTarget(); got.GetType() != want.GetType() || got.GetId() != want.GetId() {
			return nil, fmt.Errorf("result %d is for %s, want %s: results must be in the order of the batches", i, addrString(got), addrString(want))
		}
		if r.GetOutcome() == nil {
			return nil, fmt.Errorf("result %d (%s) has no outcome", i, addrString(r.GetTarget()))
		}
	}
	return results, nil
}

// invokeOne calls the endpoint with one batch and returns its result.
func (c *client) invokeOne(ctx context.Context, b *twinflowv1.AddressBatch) (*twinflowv1.AddressResult, error) {
	rs, err := c.invoke(ctx, b)
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// rawResponse is the answer to a raw HTTP request.
type rawResponse struct {
	status int
	// code and message are the Connect error's, when the body is one.
	code    string
	message string
	body    []byte
}

func (r rawResponse) String() string {
	if r.code != "" {
		return fmt.Sprintf("HTTP %d, Connect error %s: %q", r.status, r.code, r.message)
	}
	return fmt.Sprintf("HTTP %d with %d bytes of body", r.status, len(r.body))
}

// post sends body as a Connect unary Invoke request with the protobuf
// codec, signed when the suite signs, and returns the answer.
func (c *client) post(ctx context.Context, body []byte) (rawResponse, error) {
	return c.send(ctx, c.http, twinflowv1connect.FunctionServiceInvokeProcedure, body, nil)
}

// send posts body to path with the client hc and the extra header.
func (c *client) send(ctx context.Context, hc *http.Client, path string, body []byte, header http.Header) (rawResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+path, bytes.NewReader(body))
	if err != nil {
		return rawResponse{}, err
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Connect-Protocol-Version", "1")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return rawResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return rawResponse{}, err
	}
	out := rawResponse{status: resp.StatusCode, body: b}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &e) == nil {
			out.code, out.message = e.Code, e.Message
		}
	}
	return out, nil
}

// wantCode checks that err is a Connect error with the code.
func wantCode(err error, code connect.Code) error {
	if err == nil {
		return fmt.Errorf("the call succeeded, want the %s code", code)
	}
	if got := connect.CodeOf(err); got != code {
		return fmt.Errorf("the call failed with %v, want the %s code", err, code)
	}
	return nil
}
