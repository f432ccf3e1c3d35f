package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinflow/twinflow/internal/testwait"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
)

// These tests run the CLI's commands in-process against a running engine
// with its embedded NATS server, which requires the data dir's
// credentials. The runtime file is written as twinflow run writes it, and
// the per-user pointer goes to a temporary XDG_RUNTIME_DIR.

type addMsg struct {
	Add int64 `json:"add"`
}

type totals struct {
	N int64 `json:"n"`
}

var (
	jsonMsg    = sdk.JSONType[addMsg]("twinflow/json")
	totalsType = sdk.JSONType[totals]("cli/Totals")
	totalsSpec = sdk.ValueSpec[totals]{Name: "totals", Type: totalsType}
	// A protobuf message linked into this binary, used as state.
	lastSpec = sdk.ValueSpec[*twinflowv1.Address]{Name: "last", Type: sdk.ProtoType[*twinflowv1.Address]()}
	// Raw bytes: one that is not JSON, one that happens to parse as JSON.
	rawSpec    = sdk.ValueSpec[[]byte]{Name: "raw", Type: sdk.BytesType}
	digitsSpec = sdk.ValueSpec[[]byte]{Name: "digits", Type: sdk.BytesType}
	rawValue   = []byte{0xff, 0x00, 'x'}
)

// counter adds to its totals, remembers its address as a protobuf value and
// raw bytes, and writes its totals to the "out" egress.
func counter(ctx sdk.Context, msg sdk.Message) error {
	m, err := sdk.As(msg, jsonMsg)
	if err != nil {
		return sdk.Terminal(err)
	}
	t, _, err := totalsSpec.Get(ctx)
	if err != nil {
		return err
	}
	t.N += m.Add
	for _, err := range []error{
		totalsSpec.Set(ctx, t),
		lastSpec.Set(ctx, &twinflowv1.Address{Type: ctx.Self().Type, Id: ctx.Self().ID}),
		rawSpec.Set(ctx, rawValue),
		digitsSpec.Set(ctx, []byte("42")),
	} {
		if err != nil {
			return err
		}
	}
	return sdk.Egress(ctx, "out", totalsType, t)
}

// echo answers a JSON request with {"echo": request, "id": id}.
func echo(ctx sdk.Context, msg sdk.Message) error {
	v, err := sdk.As(msg, sdk.JSONType[any]("twinflow/json"))
	if err != nil {
		return sdk.Terminal(err)
	}
	return sdk.Reply(ctx, sdk.JSONType[map[string]any]("twinflow/json"), map[string]any{"echo": v, "id": ctx.Self().ID})
}

type cli struct {
	t        *testing.T
	e        *runtime.Engine
	data     string
	endpoint string
}

func startCLI(t *testing.T) *cli {
	t.Helper()
	return startCLIIn(t, t.TempDir())
}

// startCLIIn starts the engine on data dir data, and writes its runtime
// file and the pointer to it.
func startCLIIn(t *testing.T, data string) *cli {
	t.Helper()
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, v := range []string{"TWINFLOW_DATA", "TWINFLOW_NATS", "TWINFLOW_ADMIN", "TWINFLOW_CREDS", "TWINFLOW_ADMIN_TOKEN", "TWINFLOW_INBOX_PREFIX"} {
		t.Setenv(v, "")
	}
	reg := sdk.NewRegistry()
	if err := reg.Register("cli/counter", sdk.FunctionFunc(counter), totalsSpec, lastSpec, rawSpec, digitsSpec); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("cli/echo", sdk.FunctionFunc(echo)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sdk.Handler(reg))
	t.Cleanup(srv.Close)
	e, err := runtime.Start(context.Background(), runtime.Config{
		DataDir: data,
		Module: &spec.Module{
			Endpoints: []spec.Endpoint{{Functions: "cli/*", URL: srv.URL, Timeout: 5 * time.Second,
				MaxBatchAddresses: 64, MaxBatchMessages: 64, MaxInFlight: 4}},
			Egresses: []router.EgressRule{{Name: "out", Subject: "cli.out", Delivery: router.AtLeastOnce}},
			// A NATS identity that may only read the egress.
			Users: []spec.User{{Name: "reader", Egresses: []string{"out"}}},
		},
		NATSPort:           -1,
		NATSSyncInterval:   time.Minute,
		AdminAddr:          "127.0.0.1:0",
		IngressAddr:        "127.0.0.1:0",
		Shards:             2,
		KeyGroups:          16,
		CheckpointInterval: time.Hour, // the tests take checkpoints themselves
		Memory:             runtime.Memory{Total: 256 << 20},
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Kill)
	if err := runinfo.Write(e.Access()); err != nil {
		t.Fatal(err)
	}
	return &cli{t: t, e: e, data: data, endpoint: srv.URL}
}

// run runs a client command with the engine's --data.
func (c *cli) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(c.with(args)...)
	if err != nil {
		c.t.Fatalf("twinflow %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// try runs a command as it is given.
func (c *cli) try(args ...string) (string, error) {
	var out bytes.Buffer
	err := dispatch(context.Background(), args, &out)
	return out.String(), err
}

func (c *cli) with(args []string) []string {
	return append(append([]string(nil), args...), "--data-dir", c.data)
}

// state runs "state get" and decodes its output; no state is an empty
// document.
func (c *cli) state(args ...string) stateDoc {
	c.t.Helper()
	out, err := c.try(c.with(append([]string{"state", "get"}, args...))...)
	if exitCode(err) == exitNoState {
		return stateDoc{}
	} else if err != nil {
		c.t.Fatalf("twinflow state get %s: %v", strings.Join(args, " "), err)
	}
	var doc stateDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		c.t.Fatalf("state get output is not JSON: %v\n%s", err, out)
	}
	return doc
}

func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func TestSendThenStateGet(t *testing.T) {
	c := startCLI(t)
	out := c.run("send", "cli/counter", "a", "--json", `{"add": 2}`)
	if !strings.Contains(out, "published to twinflow.in.cli.counter.a") || !strings.Contains(out, "sequence 1") {
		t.Errorf("send printed %q", out)
	}
	c.run("send", "cli/counter", "a", "--json", `{"add": 3}`)
	var doc stateDoc
	testwait.For(t, "the totals", func() bool {
		doc = c.state("cli/counter", "a")
		return compact(doc.Values["totals"].Value) == `{"n":5}`
	})
	if doc.Address != "cli/counter/a" {
		t.Errorf("address %q", doc.Address)
	}
	if got := doc.Values["totals"].Typename; got != "cli/Totals" {
		t.Errorf("totals typename %q", got)
	}
	// A protobuf value of a type linked into the binary, as protobuf JSON.
	last := doc.Values["last"]
	if last.Typename != "proto/twinflow.v1.Address" {
		t.Errorf("last typename %q", last.Typename)
	}
	var addr map[string]string
	if err := json.Unmarshal(last.Value, &addr); err != nil || addr["type"] != "cli/counter" || addr["id"] != "a" {
		t.Errorf("protobuf value %s (%v), want the address as JSON", last.Value, err)
	}
	// Raw bytes, as base64: also those that happen to parse as JSON.
	for name, want := range map[string][]byte{"raw": rawValue, "digits": []byte("42")} {
		var s string
		if err := json.Unmarshal(doc.Values[name].Value, &s); err != nil {
			t.Errorf("%s: %s is not a base64 string: %v", name, doc.Values[name].Value, err)
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(s); err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s: %q decodes to %q (%v), want %q", name, s, b, err, want)
		}
	}

	// One value by name.
	doc = c.state("cli/counter", "a", "totals")
	if len(doc.Values) != 1 || compact(doc.Values["totals"].Value) != `{"n":5}` {
		t.Errorf("state get NAME: %+v", doc.Values)
	}
}

func TestRequestPrintsReply(t *testing.T) {
	c := startCLI(t)
	out := c.run("request", "cli/echo", "e-1", "--json", `{"q": [1, 2]}`)
	typename, value, ok := strings.Cut(strings.TrimSpace(out), " ")
	if !ok || typename != "twinflow/json" {
		t.Fatalf("request printed %q", out)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(value), &got); err != nil {
		t.Fatalf("reply %q: %v", value, err)
	}
	if got["id"] != "e-1" || !strings.Contains(value, `"q":[1,2]`) {
		t.Errorf("reply %s", value)
	}
}

func TestFunctionsAndCheckpoints(t *testing.T) {
	c := startCLI(t)
	c.run("send", "cli/counter", "f", "--json", `{"add": 1}`)
	testwait.For(t, "the first call", func() bool { return len(c.state("cli/counter", "f").Values) > 0 })

	c.run("request", "cli/echo", "e-2", "--json", `{}`)
	out := c.run("functions")
	if !strings.Contains(out, "cli/counter\t"+c.endpoint+"\n") {
		t.Errorf("functions does not list cli/counter with its endpoint:\n%s", out)
	}
	// A stateless type has no specs, but it was invoked.
	if !strings.Contains(out, "cli/echo\t"+c.endpoint+"\n") {
		t.Errorf("functions does not list the stateless cli/echo:\n%s", out)
	}
	for _, want := range []string{"  totals\tcli/Totals", "  last\tproto/twinflow.v1.Address", "  raw\ttwinflow/bytes"} {
		if !strings.Contains(out, want) {
			t.Errorf("functions does not list the state spec %q:\n%s", want, out)
		}
	}

	now := c.run("checkpoint", "now")
	lines := strings.Split(strings.TrimSpace(now), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "COMPLETED") {
		t.Fatalf("checkpoint now printed:\n%s", now)
	}
	id := strings.Fields(lines[1])[0]
	c.run("checkpoint", "now")
	list := c.run("checkpoint", "list")
	lines = strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("checkpoint list printed:\n%s", list)
	}
	var ids []string
	for _, l := range lines[1:] {
		ids = append(ids, strings.Fields(l)[0])
	}
	if !containsString(ids, id) {
		t.Errorf("checkpoint list %v does not hold checkpoint %s", ids, id)
	}
	status := c.run("checkpoint", "status")
	if !strings.HasPrefix(status, "ID") {
		t.Errorf("checkpoint status printed:\n%s", status)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// lockedBuffer is written by tail's subscription and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tail runs "tail" until stop is called, which returns its output.
func (c *cli) tail(args ...string) (out *lockedBuffer, stop func() string) {
	ctx, cancel := context.WithCancel(context.Background())
	out = &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- dispatch(ctx, c.with(append([]string{"tail"}, args...)), out) }()
	return out, func() string {
		cancel()
		if err := <-done; err != nil {
			c.t.Errorf("tail: %v", err)
		}
		return out.String()
	}
}

func TestTailPrintsEgressRecords(t *testing.T) {
	c := startCLI(t)
	// New records only: send until one arrives, since tail cannot say when
	// it has subscribed.
	out, stop := c.tail("cli.out")
	want := "cli.out cli/counter/t cli/Totals "
	var n int
	last := time.Time{}
	testwait.For(t, "a record in tail's output", func() bool {
		if time.Since(last) > 100*time.Millisecond {
			c.run("send", "cli/counter", "t", "--json", `{"add": 1}`)
			n++
			last = time.Now()
		}
		return strings.Contains(out.String(), want)
	})
	printed := stop()
	line, _, _ := strings.Cut(printed[strings.Index(printed, want):], "\n")
	var v totals
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, want)), &v); err != nil || v.N < 1 || v.N > int64(n) {
		t.Errorf("tail printed %q (%v)", line, err)
	}

	// With --all, the stored records too, in order.
	out, stop = c.tail("cli.out", "--all")
	testwait.For(t, "the stored records", func() bool { return strings.Count(out.String(), want) >= n })
	lines := strings.Split(strings.TrimSpace(stop()), "\n")
	if lines[0] != want+`{"n":1}` {
		t.Errorf("tail --all first line %q, want the first record", lines[0])
	}
}
