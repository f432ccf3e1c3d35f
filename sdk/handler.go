package sdk

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

// HandlerPath is the path prefix [Handler] serves, for mounting it on a mux:
//
//	mux.Handle(sdk.HandlerPath, sdk.Handler(reg))
//
// To serve under another prefix, strip it: the runtime's endpoint URL
// "http://host/fn" reaches
//
//	mux.Handle("/fn"+sdk.HandlerPath, http.StripPrefix("/fn", sdk.Handler(reg)))
const HandlerPath = "/" + twinflowv1connect.FunctionServiceName + "/"

// DefaultCompressMinBytes is the response size below which [Handler] does
// not compress, even when the client asks for gzip (connect-go clients do
// by default). Gzip cost 15–40% of the throughput of small calls (about a
// third for a 100-address batch in BenchmarkInvoke), and between a runtime
// and its endpoints bytes are cheaper than CPU. Responses this large still
// compress, for endpoints on slow links.
const DefaultCompressMinBytes = 64 << 10

// HandlerOption configures [Handler].
type HandlerOption interface {
	applyToHandler(*handlerConfig)
}

type handlerConfig struct {
	concurrency      int
	compressMinBytes int
	connectOptions   []connect.HandlerOption
	verify           func() ([]ed25519.PublicKey, error) // nil: calls are not verified
	now              func() time.Time
}

type handlerOptionFunc func(*handlerConfig)

func (f handlerOptionFunc) applyToHandler(c *handlerConfig) { f(c) }

// WithBatchConcurrency sets how many address batches of one request run at
// the same time. The default is GOMAXPROCS; 1 runs them one after the
// other. Values below 1 select the default. Results are always in request
// order.
func WithBatchConcurrency(n int) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.concurrency = n })
}

// WithCompressMinBytes sets the response size below which responses are not
// compressed; see [DefaultCompressMinBytes]. Compressed requests are always
// accepted.
func WithCompressMinBytes(n int) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.compressMinBytes = n })
}

// WithConnectOptions passes options to the underlying connect-go handler,
// e.g. connect.WithReadMaxBytes or interceptors. They apply after the SDK's
// own, so they can override WithCompressMinBytes.
func WithConnectOptions(opts ...connect.HandlerOption) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.connectOptions = append(c.connectOptions, opts...) })
}

// Handler returns an http.Handler serving the registry as the
// twinflow.v1.FunctionService, with the Connect, gRPC and gRPC-Web
// protocols. It serves the paths under [HandlerPath] and answers 404 to
// others, so it can be a server's root handler or be mounted on a mux.
//
// Connect and gRPC-Web work over HTTP/1.1, which costs less per call than
// HTTP/2 on a LAN; gRPC clients other than connect-go need HTTP/2, which
// between the runtime and an endpoint is plain-text h2c. Serve both, as
// [NewServer] does.
//
// Batches of one request run concurrently, at most GOMAXPROCS at a time
// (see [WithBatchConcurrency]), and small responses are not compressed
// (see [DefaultCompressMinBytes]).
//
// With [WithVerifyKeys], [WithLocalRuntimeKeys] or [VerifyFromEnv] it
// serves only calls the runtime signed; without, it serves every call, so
// anyone who reaches it can run its functions with any state: give it the
// runtime's key wherever others can reach it.
//
// A request with a protocol version other than PROTOCOL_VERSION_1 fails
// with the failed_precondition code; a malformed one (no batches, an
// invalid or repeated address, a state entry or invocation without a valid
// typename) with invalid_argument, and no batch runs. Otherwise each batch
// gets its own result, as [Registry.RunBatch] describes: the failure of
// one address never affects the others.
func Handler(reg *Registry, opts ...HandlerOption) http.Handler {
	cfg := handlerConfig{compressMinBytes: DefaultCompressMinBytes}
	for _, o := range opts {
		if o != nil {
			o.applyToHandler(&cfg)
		}
	}
	if cfg.concurrency < 1 {
		cfg.concurrency = runtime.GOMAXPROCS(0)
	}
	connectOpts := append([]connect.HandlerOption{connect.WithCompressMinBytes(cfg.compressMinBytes)}, cfg.connectOptions...)
	_, h := twinflowv1connect.NewFunctionServiceHandler(&service{reg: reg, concurrency: cfg.concurrency}, connectOpts...)
	if cfg.verify != nil {
		if cfg.now == nil {
			cfg.now = time.Now
		}
		return &verifier{next: h, keys: cfg.verify, now: cfg.now, errors: connect.NewErrorWriter(connectOpts...)}
	}
	return h
}

// NewServer returns an http.Server for addr that serves h over HTTP/1.1 and
// h2c (unencrypted HTTP/2, needed by gRPC clients), with a header read
// timeout so that idle half-open connections do not pile up. Use it as
//
//	srv := sdk.NewServer(":8000", sdk.Handler(reg))
//	err := srv.ListenAndServe()
//
// When you build your own server, enable h2c the same way: set
// http.Server.Protocols with SetHTTP1(true) and SetUnencryptedHTTP2(true).
func NewServer(addr string, h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
	}
}

type service struct {
	reg         *Registry
	concurrency int
}

func (s *service) Invoke(ctx context.Context, req *connect.Request[twinflowv1.InvokeRequest]) (*connect.Response[twinflowv1.InvokeResponse], error) {
	if s.reg == nil {
		return nil, connect.NewError(connect.CodeInternal, errors.New("the endpoint has no registry"))
	}
	m := req.Msg
	if v := m.GetProtocolVersion(); v != twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1 {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"unsupported protocol version %v (%d): this endpoint supports %v (%d)",
			v, int32(v), twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1, int32(twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1)))
	}
	if err := validateRequest(m); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	return connect.NewResponse(&twinflowv1.InvokeResponse{
		ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1,
		Results:         s.runAll(ctx, m.GetBatches()),
	}), nil
}

// runAll runs the batches, at most s.concurrency at a time, and returns
// their results in request order. Batches are independent (each address
// appears once per request), so running them concurrently is safe and lets
// functions that wait on I/O overlap.
func (s *service) runAll(ctx context.Context, batches []*twinflowv1.AddressBatch) []*twinflowv1.AddressResult {
	results := make([]*twinflowv1.AddressResult, len(batches))
	if s.concurrency == 1 || len(batches) == 1 {
		for i, b := range batches {
			results[i] = s.reg.runValidBatch(ctx, b)
		}
		return results
	}
	// A few workers take the batches in turn: a goroutine per batch cost
	// more than running a small function's batch.
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= len(batches) {
				return
			}
			results[i] = s.reg.runValidBatch(ctx, batches[i])
		}
	}
	var wg sync.WaitGroup
	for range min(s.concurrency, len(batches)) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return results
}

// validateRequest checks the request as a whole, so that a malformed
// request is rejected before any function runs.
func validateRequest(m *twinflowv1.InvokeRequest) error {
	if len(m.GetBatches()) == 0 {
		return errors.New("the request has no batches")
	}
	seen := make(map[Address]int, len(m.GetBatches()))
	for i, b := range m.GetBatches() {
		if err := validateBatch(b); err != nil {
			return fmt.Errorf("batch %d: %w", i, err)
		}
		a := addressFromProto(b.GetTarget())
		if j, dup := seen[a]; dup {
			return fmt.Errorf("batch %d: address %s already appears in batch %d", i, a, j)
		}
		seen[a] = i
	}
	return nil
}
