package sdk_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/sdk"
)

// State of the test functions.
var (
	count  = sdk.ValueSpec[int64]{Name: "count", Type: sdk.Int64Type}
	name   = sdk.ValueSpec[string]{Name: "name", Type: sdk.StringType, ExpiryMode: sdk.ExpireAfterWrite, ExpireAfter: time.Hour}
	visits = sdk.ValueSpec[int64]{Name: "visits", Type: sdk.Int64Type, ExpiryMode: sdk.ExpireAfterInvoke, ExpireAfter: 30 * time.Minute}
	tags   = sdk.ValueSpec[[]string]{Name: "tags", Type: sdk.JSONType[[]string]("test/Tags")}
)

// testFunctions is a registry of test functions and counts of their calls.
type testFunctions struct {
	reg            *sdk.Registry
	profileInvokes atomic.Int64
}

// newTestFunctions registers:
//
//   - test/counter (state count): an int64 message adds to count and sends
//     the new count to test/sink/<id>; a string message is a command
//     (see counterCommand).
//   - test/profile (states name, visits, tags): counts visits.
func newTestFunctions(t testing.TB) *testFunctions {
	t.Helper()
	f := &testFunctions{reg: sdk.NewRegistry()}
	must(t, f.reg.Register("test/counter", sdk.FunctionFunc(counter), count))
	must(t, f.reg.Register("test/profile", sdk.FunctionFunc(func(ctx sdk.Context, msg sdk.Message) error {
		f.profileInvokes.Add(1)
		n, _, err := visits.Get(ctx)
		if err != nil {
			return err
		}
		return visits.Set(ctx, n+1)
	}), name, visits, tags))
	return f
}

func counter(ctx sdk.Context, msg sdk.Message) error {
	if msg.Is(sdk.StringType.Typename()) {
		cmd, err := sdk.As(msg, sdk.StringType)
		if err != nil {
			return sdk.Terminal(err)
		}
		return counterCommand(ctx, cmd)
	}
	delta, err := sdk.As(msg, sdk.Int64Type)
	if err != nil {
		return sdk.Terminal(err)
	}
	n, _, err := count.Get(ctx)
	if err != nil {
		return err
	}
	n += delta
	if err := count.Set(ctx, n); err != nil {
		return err
	}
	return sdk.Send(ctx, sdk.Address{Type: "test/sink", ID: ctx.Self().ID}, sdk.Int64Type, n)
}

func counterCommand(ctx sdk.Context, cmd string) error {
	self := ctx.Self()
	switch cmd {
	case "fail":
		return errors.New("asked to fail")
	case "fatal":
		return sdk.Terminal(errors.New("asked to fail for good"))
	case "panic":
		panic("boom")
	case "bad-send":
		ctx.Send(sdk.Address{Type: "no-slash", ID: "x"}, sdk.TypedValue{Typename: "test/x"})
		return nil
	case "clear":
		count.Clear(ctx)
		return nil
	case "delay":
		return sdk.SendAfter(ctx, 1500*time.Millisecond, self, sdk.StringType, "tick", "tick-token")
	case "cancel":
		ctx.CancelDelayed("tick-token")
		return nil
	case "egress":
		n, _, err := count.Get(ctx)
		if err != nil {
			return err
		}
		v, err := sdk.Encode(sdk.Int64Type, n)
		if err != nil {
			return err
		}
		ctx.EgressKeyed("totals", self.ID, v)
		return nil
	case "reply":
		n, _, err := count.Get(ctx)
		if err != nil {
			return err
		}
		return sdk.Reply(ctx, sdk.Int64Type, n)
	case "forward":
		ctx.Forward(sdk.Address{Type: "test/counter", ID: "other"}, sdk.TypedValue{Typename: sdk.StringType.Typename(), Bytes: []byte(`"reply"`)})
		return nil
	case "echo-caller":
		caller, ok := ctx.Caller()
		if !ok {
			return sdk.Terminal(errors.New("no caller"))
		}
		return sdk.Send(ctx, caller, sdk.StringType, "hello "+caller.String())
	}
	return sdk.Terminal(errors.New("unknown command " + cmd))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tv encodes v or fails the test.
func tv[T any](t testing.TB, typ sdk.Type[T], v T) *twinflowv1.TypedValue {
	t.Helper()
	x, err := sdk.Encode(typ, v)
	must(t, err)
	return &twinflowv1.TypedValue{Typename: x.Typename, Value: x.Bytes}
}

func addr(typ, id string) *twinflowv1.Address { return &twinflowv1.Address{Type: typ, Id: id} }

func inv(arg *twinflowv1.TypedValue) *twinflowv1.Invocation {
	return &twinflowv1.Invocation{Argument: arg}
}

func request(batches ...*twinflowv1.AddressBatch) *twinflowv1.InvokeRequest {
	return &twinflowv1.InvokeRequest{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1, Batches: batches}
}

// counterBatch is a batch for test/counter/<id> with count shipped as
// state (nil = absent).
func counterBatch(id string, state *twinflowv1.TypedValue, invs ...*twinflowv1.Invocation) *twinflowv1.AddressBatch {
	return &twinflowv1.AddressBatch{
		Target:      addr("test/counter", id),
		State:       []*twinflowv1.StateValue{{Name: "count", Value: state}},
		Invocations: invs,
	}
}

// server is a loopback HTTP server speaking HTTP/1.1 and h2c.
type server struct {
	url string
	mu  struct {
		sync.Mutex
		protos []string // HTTP protocol of each request, e.g. "HTTP/2.0"
	}
}

func startServer(t testing.TB, reg *sdk.Registry, opts ...sdk.HandlerOption) *server {
	t.Helper()
	s := &server{}
	h := sdk.Handler(reg, opts...)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.mu.protos = append(s.mu.protos, r.Proto)
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	ts.Config.Protocols = sdk.NewServer("", nil).Protocols
	ts.Start()
	t.Cleanup(ts.Close)
	s.url = ts.URL
	return s
}

func (s *server) protos() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.mu.protos...)
}

// httpClient returns a client that speaks only HTTP/1.1 or only h2c.
func httpClient(t testing.TB, h2c bool) *http.Client {
	p := new(http.Protocols)
	if h2c {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (s *server) client(t testing.TB, opts ...connect.ClientOption) twinflowv1connect.FunctionServiceClient {
	return twinflowv1connect.NewFunctionServiceClient(httpClient(t, false), s.url, opts...)
}

// invoke calls the server and returns the results, failing on an RPC error.
func invoke(t testing.TB, c twinflowv1connect.FunctionServiceClient, req *twinflowv1.InvokeRequest) []*twinflowv1.AddressResult {
	t.Helper()
	resp, err := c.Invoke(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if got := resp.Msg.GetProtocolVersion(); got != twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1 {
		t.Fatalf("response protocol version = %v, want PROTOCOL_VERSION_1", got)
	}
	if got, want := len(resp.Msg.GetResults()), len(req.GetBatches()); got != want {
		t.Fatalf("%d results for %d batches", got, want)
	}
	return resp.Msg.GetResults()
}

func wantProto(t testing.TB, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\ngot:  %s\nwant: %s", what, prototext.Format(got), prototext.Format(want))
	}
}

func effects(t testing.TB, r *twinflowv1.AddressResult) *twinflowv1.Effects {
	t.Helper()
	e := r.GetEffects()
	if e == nil {
		t.Fatalf("result for %v has no effects: %v", r.GetTarget(), prototext.Format(r))
	}
	return e
}

func invocationError(t testing.TB, r *twinflowv1.AddressResult) *twinflowv1.InvocationError {
	t.Helper()
	e := r.GetError()
	if e == nil {
		t.Fatalf("result for %v is not an error: %v", r.GetTarget(), prototext.Format(r))
	}
	return e
}
