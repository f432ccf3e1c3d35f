package runtime_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
	"google.golang.org/protobuf/proto"
)

// harness runs an engine with its embedded NATS server in a temp dir, and
// function endpoints on loopback. Its NATS connection is the client
// identity's, as publishers and the command line have; ops is the
// runtime's own, for looking into streams the client may not read.
type harness struct {
	t     *testing.T
	cfg   runtime.Config
	e     *runtime.Engine
	nc    *nats.Conn
	js    jetstream.JetStream
	ops   jetstream.JetStream
	admin twinflowv1connect.AdminServiceClient
}

// endpoint serves a registry over loopback HTTP, counting requests.
type endpoint struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests []*twinflowv1.InvokeRequest
}

func serve(t *testing.T, reg *sdk.Registry) *endpoint {
	t.Helper()
	ep := &endpoint{}
	h := sdk.Handler(reg)
	ep.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Record the request: the runtime's client speaks the Connect
		// protocol with uncompressed binary protobuf bodies.
		body, err := io.ReadAll(r.Body)
		if err == nil {
			req := &twinflowv1.InvokeRequest{}
			if proto.Unmarshal(body, req) == nil {
				ep.mu.Lock()
				ep.requests = append(ep.requests, req)
				ep.mu.Unlock()
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ep.srv.Close)
	return ep
}

// batches returns the invocations each address batch carried, in the order
// the requests arrived, for one address.
func (ep *endpoint) batches(functionType, id string) [][]*twinflowv1.Invocation {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	var out [][]*twinflowv1.Invocation
	for _, r := range ep.requests {
		for _, b := range r.GetBatches() {
			if b.GetTarget().GetType() == functionType && b.GetTarget().GetId() == id {
				out = append(out, b.GetInvocations())
			}
		}
	}
	return out
}

// requestsFor returns every address batch sent for a function type.
func (ep *endpoint) requestsFor(functionType string) []*twinflowv1.AddressBatch {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	var out []*twinflowv1.AddressBatch
	for _, r := range ep.requests {
		for _, b := range r.GetBatches() {
			if b.GetTarget().GetType() == functionType {
				out = append(out, b)
			}
		}
	}
	return out
}

func (ep *endpoint) url() string { return ep.srv.URL }

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// module returns a module whose "test/*" functions are served by url,
// with an exactly-once egress "out" on subject "test.out".
func module(url string) *spec.Module {
	return &spec.Module{
		Endpoints: []spec.Endpoint{{
			Functions: "test/*", URL: url, Timeout: 5 * time.Second,
			MaxBatchAddresses: 64, MaxBatchMessages: 256, MaxInFlight: 8,
		}},
		Egresses: []router.EgressRule{{Name: "out", Subject: "test.out", Delivery: router.ExactlyOnce}},
	}
}

func baseConfig(t *testing.T, url string) runtime.Config {
	return runtime.Config{
		DataDir:            t.TempDir(),
		Module:             module(url),
		NATSPort:           -1,
		NATSSyncInterval:   time.Minute, // tests need no fsync per write
		AdminAddr:          "127.0.0.1:0",
		IngressAddr:        "127.0.0.1:0",
		Shards:             2,
		KeyGroups:          16,
		CheckpointInterval: 50 * time.Millisecond,
		RetryBase:          5 * time.Millisecond,
		RetryMax:           50 * time.Millisecond,
		Memory:             runtime.Memory{Total: 256 << 20},
		Logger:             testLogger(t),
	}
}

func start(t *testing.T, cfg runtime.Config) *harness {
	t.Helper()
	e, err := runtime.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	h := &harness{t: t, cfg: cfg, e: e}
	if cfg.NATSURL != "" && e.NATSURL() != cfg.NATSURL {
		t.Fatalf("engine connected to %s, want the external server %s", e.NATSURL(), cfg.NATSURL)
	}
	h.connect()
	t.Cleanup(func() { h.nc.Close(); h.ops.Conn().Close(); e.Kill() })
	return h
}

// access is how a client reaches the engine: with an external server, as
// the client identity of the data dir's keys, which the server was given.
func (h *harness) access() runinfo.Info {
	info := h.e.Access()
	if info.NATSCreds == "" {
		info.NATSCreds = filepath.Join(h.cfg.DataDir, "secrets", "client.nk")
		info.NATSInboxPrefix = runtime.ClientInboxPrefix
	}
	return info
}

func (h *harness) connect() {
	info := h.access()
	nc, js, err := info.ConnectNATS("test-client", testLogger(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	h.nc, h.js = nc, js
	_, h.ops, err = natsbus.Connect(natsbus.ConnOptions{URL: info.NATSURL, Name: "test-ops", Logger: testLogger(h.t), CAFile: info.NATSCA,
		CredsFile: filepath.Join(h.cfg.DataDir, "secrets", "runtime.nk"), InboxPrefix: runtime.RuntimeInboxPrefix})
	if err != nil {
		h.t.Fatal(err)
	}
	hc, err := info.AdminHTTPClient()
	if err != nil {
		h.t.Fatal(err)
	}
	h.admin = twinflowv1connect.NewAdminServiceClient(hc, h.e.AdminURL())
}

// restart stops the engine cleanly and starts it again on the same data
// dir (and so the same embedded NATS store).
func (h *harness) restart() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.e.Stop(ctx, ""); err != nil {
		h.t.Fatalf("stop: %v", err)
	}
	h.nc.Close()
	h.ops.Conn().Close()
	h.reopen()
}

// crash stops the engine without a checkpoint and starts it again.
func (h *harness) crash() {
	h.t.Helper()
	h.e.Kill()
	h.nc.Close()
	h.ops.Conn().Close()
	h.reopen()
}

func (h *harness) reopen() {
	h.t.Helper()
	e, err := runtime.Start(context.Background(), h.cfg)
	if err != nil {
		h.t.Fatalf("restart: %v", err)
	}
	h.e = e
	h.connect()
	h.t.Cleanup(func() { h.nc.Close(); h.ops.Conn().Close(); e.Kill() })
}

// send publishes a message to the direct ingress and waits for the ack.
func (h *harness) send(functionType, id, typename string, payload []byte) {
	h.t.Helper()
	subject, err := router.DirectSubject(functionType, id)
	if err != nil {
		h.t.Fatal(err)
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(router.TypenameHeader, typename)
	msg.Data = payload
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		h.t.Fatalf("publish: %v", err)
	}
}

func (h *harness) sendInt(functionType, id string, v int64) {
	h.send(functionType, id, sdk.Int64Type.Typename(), []byte(strconv.FormatInt(v, 10)))
}

// state reads an address's values through the query API.
func (h *harness) state(functionType, id string) map[string][]byte {
	h.t.Helper()
	resp, err := h.admin.GetState(context.Background(), connect.NewRequest(&twinflowv1.GetStateRequest{
		Address: &twinflowv1.Address{Type: functionType, Id: id},
	}))
	if err != nil {
		h.t.Fatalf("get state: %v", err)
	}
	out := map[string][]byte{}
	for _, v := range resp.Msg.GetValues() {
		out[v.GetName()] = v.GetValue().GetValue()
	}
	return out
}

func (h *harness) stateInt(functionType, id, name string) int64 {
	h.t.Helper()
	b, ok := h.state(functionType, id)[name]
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		h.t.Fatalf("state %s of %s/%s: %v", name, functionType, id, err)
	}
	return n
}

// metric reads one unlabelled value from /metrics.
func (h *harness) metric(name string) float64 {
	h.t.Helper()
	resp, err := http.Get(h.e.AdminURL() + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				h.t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// subscribe collects the messages on a subject.
type collector struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (h *harness) subscribe(subject string) *collector {
	h.t.Helper()
	c := &collector{}
	sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (c *collector) all() []*nats.Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*nats.Msg(nil), c.msgs...)
}
