package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/client"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/frontdoor"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
)

var count = sdk.ValueSpec[int64]{Name: "count", Type: sdk.Int64Type}

// tally adds each int64 message to its address's count and answers a
// request with the new count.
func tally(ctx sdk.Context, msg sdk.Message) error {
	n, err := sdk.As(msg, sdk.Int64Type)
	if err != nil {
		return sdk.Terminal(err)
	}
	c, _, err := count.Get(ctx)
	if err != nil {
		return err
	}
	if err := count.Set(ctx, c+n); err != nil {
		return err
	}
	if msg.ReplyTo() != "" {
		return sdk.Reply(ctx, sdk.Int64Type, c+n)
	}
	return nil
}

// platform is a runtime with its embedded NATS server, serving test/tally
// from an endpoint on loopback, and a client connection to it.
type platform struct {
	t   *testing.T
	cfg runtime.Config
	e   *runtime.Engine
	nc  *nats.Conn
}

func start(t *testing.T) *platform {
	t.Helper()
	reg := sdk.NewRegistry()
	if err := reg.Register("test/tally", sdk.FunctionFunc(tally), count); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sdk.Handler(reg))
	t.Cleanup(srv.Close)
	p := &platform{t: t, cfg: runtime.Config{
		DataDir: t.TempDir(),
		Module: &spec.Module{Endpoints: []spec.Endpoint{{
			Functions: "test/*", URL: srv.URL, Timeout: 5 * time.Second, MaxBatchAddresses: 64, MaxBatchMessages: 256, MaxInFlight: 8,
		}}},
		NATSPort:           -1,
		NATSSyncInterval:   time.Minute,
		AdminAddr:          "127.0.0.1:0",
		IngressAddr:        runtime.IngressOff,
		Shards:             2,
		KeyGroups:          16,
		CheckpointInterval: 50 * time.Millisecond,
		Memory:             runtime.Memory{Total: 256 << 20},
		Logger:             slog.New(slog.DiscardHandler),
	}}
	p.open()
	return p
}

// open starts the engine on the platform's data dir and connects to it.
func (p *platform) open() {
	p.t.Helper()
	e, err := runtime.Start(context.Background(), p.cfg)
	if err != nil {
		p.t.Fatalf("start: %v", err)
	}
	nc, _, err := e.Access().ConnectNATS("client-test", p.cfg.Logger)
	if err != nil {
		e.Kill()
		p.t.Fatal(err)
	}
	p.e, p.nc = e, nc
	p.t.Cleanup(func() { nc.Close(); e.Kill() })
}

// crash kills the engine, without a checkpoint, and starts it again.
func (p *platform) crash() {
	p.t.Helper()
	p.nc.Close()
	p.e.Kill()
	p.open()
}

func (p *platform) client(opts client.Options) *client.Client {
	p.t.Helper()
	c, err := client.New(p.nc, opts)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// countOf asks the address for its count with a request of 0.
func countOf(t *testing.T, c *client.Client, id string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	typename, reply, err := c.Call(ctx, tallyAt(id), "twinflow/int64", []byte("0"))
	if err != nil {
		t.Fatalf("call %s: %v", id, err)
	}
	if typename != "twinflow/int64" {
		t.Fatalf("call %s: reply of type %q, want twinflow/int64", id, typename)
	}
	n, err := strconv.ParseInt(string(reply), 10, 64)
	if err != nil {
		t.Fatalf("call %s: reply %q: %v", id, reply, err)
	}
	return n
}

func tallyAt(id string) router.Address { return router.Address{Type: "test/tally", ID: id} }

func reasonOf(err error) router.Reason {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// TestSendAndCall: a send is acknowledged once stored, with its key; a
// repeat of a key is applied once; a call gets the function's reply, a
// repeated call is refused as a duplicate, and one whose function fails
// says so; bad messages are refused before anything is sent; a sender
// that stops waiting gets the key to repeat its message with; a closed
// client says so.
func TestSendAndCall(t *testing.T) {
	p := start(t)
	c := p.client(client.Options{Logger: p.cfg.Logger})
	ctx := context.Background()

	for i, key := range []string{"k1", "k1", "k2"} {
		ack, err := c.Send(ctx, tallyAt("a"), "twinflow/int64", []byte("1"), client.WithKey(key))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if ack.Stream != router.DirectStream || ack.Seq == 0 || ack.Key != key {
			t.Fatalf("send %d: ack %+v, want stream %s, a sequence and key %s", i, ack, router.DirectStream, key)
		}
	}
	ack, err := c.Send(ctx, tallyAt("a"), "twinflow/int64", []byte("1"))
	if err != nil || ack.Key == "" {
		t.Fatalf("send without a key: %+v %v, want a generated key", ack, err)
	}
	if got := countOf(t, c, "a"); got != 3 {
		t.Fatalf("count %d after 4 sends with 3 distinct keys, want 3", got)
	}

	if _, reply, err := c.Call(ctx, tallyAt("a"), "twinflow/int64", []byte("10"), client.WithKey("c1")); err != nil || string(reply) != "13" {
		t.Fatalf("call: %s %v, want 13", reply, err)
	}
	_, _, err = c.Call(ctx, tallyAt("a"), "twinflow/int64", []byte("10"), client.WithKey("c1"))
	if reasonOf(err) != router.ReasonDuplicate || !strings.Contains(err.Error(), "c1") {
		t.Fatalf("call repeated with its key: %v, want a duplicate naming the key", err)
	}

	for _, tc := range []struct {
		name     string
		to       router.Address
		typename string
		payload  []byte
		want     router.Reason
	}{
		{"bad id", router.Address{Type: "test/tally", ID: "a\x00"}, "twinflow/int64", []byte("1"), router.ReasonBadID},
		{"bad type", router.Address{Type: "tally", ID: "a"}, "twinflow/int64", []byte("1"), router.ReasonBadID},
		{"bad typename", tallyAt("a"), "int64", []byte("1"), router.ReasonBadTypename},
		{"oversized", tallyAt("a"), "twinflow/int64", make([]byte, router.DefaultMaxPayload+1), router.ReasonOversized},
	} {
		_, err := c.Send(ctx, tc.to, tc.typename, tc.payload)
		if reasonOf(err) != tc.want {
			t.Errorf("send, %s: %v, want reason %s", tc.name, err, tc.want)
		}
	}
	if _, _, err := c.Call(ctx, router.Address{Type: "test/tally", ID: "a\x00"}, "twinflow/int64", []byte("1")); reasonOf(err) != router.ReasonBadID {
		t.Errorf("call to a bad id: %v, want reason %s", err, router.ReasonBadID)
	}
	if _, _, err := c.Call(ctx, tallyAt("a"), "twinflow/int64", []byte(`"x"`)); reasonOf(err) != router.ReasonFunctionFailed {
		t.Errorf("call the function fails: %v, want reason %s", err, router.ReasonFunctionFailed)
	}
	// An id that cannot be a subject token still has an address.
	if _, reply, err := c.Call(ctx, tallyAt("a b"), "twinflow/int64", []byte("2")); err != nil || string(reply) != "2" {
		t.Errorf("call to id \"a b\": %s %v, want 2", reply, err)
	}
	if got := countOf(t, c, "a"); got != 13 {
		t.Fatalf("count %d after the refused messages, want 13", got)
	}

	// A sender that stops waiting learns the key to repeat the message with.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Send(gone, tallyAt("b"), "twinflow/int64", []byte("1"))
	var ce *client.Error
	if !errors.As(err, &ce) || !ce.Temporary() || ce.Key == "" || !errors.Is(err, context.Canceled) {
		t.Fatalf("send with a canceled context: %v, want a temporary error with a key, wrapping context.Canceled", err)
	}
	if _, err := c.Send(ctx, tallyAt("b"), "twinflow/int64", []byte("1"), client.WithKey(ce.Key)); err != nil {
		t.Fatal(err)
	}
	if got := countOf(t, c, "b"); got != 1 {
		t.Fatalf("count %d after a send whose sender stopped waiting and its repeat, want 1", got)
	}

	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, tallyAt("b"), "twinflow/int64", []byte("1")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send after Close: %v, want ErrClosed", err)
	}
}

// TestConcurrentSendsShareWrites: the sends of many goroutines, each
// waiting for its acknowledgement, go out many to a write.
func TestConcurrentSendsShareWrites(t *testing.T) {
	p := start(t)
	reg := prometheus.NewRegistry()
	c := p.client(client.Options{Metrics: reg})
	const senders, each = 32, 20
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for range each {
				if _, err := c.Send(context.Background(), tallyAt(strconv.Itoa(s)), "twinflow/int64", []byte("1")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var writes, msgs float64
	for _, mf := range mfs {
		if mf.GetName() == "twinflow_frontdoor_write_messages" {
			h := mf.GetMetric()[0].GetHistogram()
			writes, msgs = float64(h.GetSampleCount()), h.GetSampleSum()
		}
	}
	if msgs != senders*each || writes == 0 || msgs/writes < 4 {
		t.Fatalf("%.0f messages in %.0f writes, want all %d messages, at least 4 to a write", msgs, writes, senders*each)
	}
	t.Logf("%.0f messages in %.0f writes", msgs, writes)
	for s := range senders {
		if got := countOf(t, c, strconv.Itoa(s)); got != each {
			t.Errorf("address %d: count %d, want %d", s, got, each)
		}
	}
}

// faultyWriter fails the next drop writes before they are stored, and
// loses the acknowledgement of the next lose writes after they are
// durable, as when the connection drops before the answer arrives.
type faultyWriter struct {
	next       frontdoor.Writer
	drop, lose atomic.Int64
	lost       atomic.Int64 // writes that failed, stored or not
}

func (w *faultyWriter) Write(ctx context.Context, batch []byte) (uint64, error) {
	if w.drop.Add(-1) >= 0 {
		w.lost.Add(1)
		return 0, errors.New("the write failed")
	}
	seq, err := w.next.Write(ctx, batch)
	if err == nil && w.lose.Add(-1) >= 0 {
		w.lost.Add(1)
		return 0, errors.New("the acknowledgement was lost")
	}
	return seq, err
}

// TestExactlyOnceWithRetryingSenders: senders repeat each message, with
// its key, until it is acknowledged, while writes fail before they are
// stored or lose their acknowledgements after, and the runtime is killed
// and started again; every message is applied exactly once. A client that
// acknowledged a message before its write was durable would lose it; one
// that gave a repeat another key would apply it twice.
func TestExactlyOnceWithRetryingSenders(t *testing.T) {
	p := start(t)
	w := &faultyWriter{}
	client.SetWriterWrapper(func(next frontdoor.Writer) frontdoor.Writer { w.next = next; return w })
	defer client.SetWriterWrapper(nil)
	var mu sync.RWMutex // held for writing while the platform restarts
	opts := client.Options{WriteTimeout: time.Second, Limits: frontdoor.Limits{MaxWait: time.Second}, Logger: p.cfg.Logger}
	c := p.client(opts)

	const senders, each = 8, 40
	var acked, repeats atomic.Int64
	crash := make(chan struct{})
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("s%d-m%d", s, i)
				for attempt := 0; ; attempt++ {
					mu.RLock()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err := c.Send(ctx, tallyAt(strconv.Itoa(s)), "twinflow/int64", []byte("1"), client.WithKey(key))
					cancel()
					mu.RUnlock()
					if err == nil {
						acked.Add(1)
						break
					}
					var ce *client.Error
					if errors.As(err, &ce) && !ce.Temporary() {
						t.Errorf("message %s: %v", key, err)
						return
					}
					if attempt > 500 {
						t.Errorf("message %s never acknowledged: %v", key, err)
						return
					}
					repeats.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
				if s == 0 && i == each/4 {
					w.drop.Store(3)
					w.lose.Store(3)
				}
				if s == 0 && i == each/2 {
					close(crash)
				}
			}
		})
	}
	// Mid-way the runtime dies; the senders repeat on a new connection.
	select {
	case <-crash:
	case <-time.After(time.Minute):
		t.Fatal("sender 0 never got half way")
	}
	mu.Lock()
	_ = c.Close(context.Background())
	p.crash()
	c = p.client(opts)
	mu.Unlock()
	wg.Wait()
	if acked.Load() != senders*each {
		t.Fatalf("%d acknowledged, want %d", acked.Load(), senders*each)
	}
	if w.lost.Load() == 0 || repeats.Load() == 0 {
		t.Fatalf("%d writes failed, %d repeats: want some of each", w.lost.Load(), repeats.Load())
	}
	mu.RLock()
	defer mu.RUnlock()
	for s := range senders {
		if got := countOf(t, c, strconv.Itoa(s)); got != each {
			t.Errorf("sender %d: count %d, want %d (each message exactly once)", s, got, each)
		}
	}
}
