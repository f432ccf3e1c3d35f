package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/internal/testwait"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/frontdoor"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/sdk"
)

// tally adds each int64 message to its count, and answers a request with
// the new count.
func tally(ctx sdk.Context, msg sdk.Message) error {
	n, err := sdk.As(msg, sdk.Int64Type)
	if err != nil {
		return sdk.Terminal(err)
	}
	c, _, err := count.Get(ctx)
	if err != nil {
		return err
	}
	c += n
	if err := count.Set(ctx, c); err != nil {
		return err
	}
	if msg.ReplyTo() != "" {
		return sdk.Reply(ctx, sdk.Int64Type, c)
	}
	return nil
}

func tallyRegistry(t *testing.T) *sdk.Registry {
	t.Helper()
	reg := sdk.NewRegistry()
	if err := reg.Register("test/tally", sdk.FunctionFunc(tally), count); err != nil {
		t.Fatal(err)
	}
	return reg
}

// post sends a request to the engine's HTTP front door, with its token
// unless the headers set Authorization, and returns the status, headers
// and body. An error is returned when the request does not get through
// (the engine is gone).
func (h *harness) post(path string, hdr map[string]string, body string) (int, http.Header, []byte, error) {
	info := h.e.Access()
	req, err := http.NewRequest(http.MethodPost, info.IngressURL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	tok, err := secrets.ReadIngressToken(info.IngressTokenFile)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

var int64Body = map[string]string{"Content-Type": "application/json", router.TypenameHeader: "twinflow/int64"}

func withKey(key string) map[string]string {
	return map[string]string{"Content-Type": "application/json", router.TypenameHeader: "twinflow/int64", frontdoor.IdempotencyKeyHeader: key}
}

// TestFrontDoorHTTP: sends and calls over HTTP reach the function and its
// state; a repeated key is applied once, and a call repeated with the key
// of one its target received is answered 409; errors are mapped.
func TestFrontDoorHTTP(t *testing.T) {
	ep := serve(t, tallyRegistry(t))
	h := start(t, baseConfig(t, ep.url()))
	for i := range 5 {
		if status, _, body, err := h.post("/send/test/tally/a", withKey(fmt.Sprint("k", i%3)), "1"); err != nil || status != http.StatusAccepted {
			t.Fatalf("send %d: %d %s %v", i, status, body, err)
		}
	}
	testwait.For(t, "three distinct messages applied", func() bool { return h.stateInt("test/tally", "a", "count") == 3 })

	status, hdr, body, err := h.post("/call/test/tally/a", withKey("c-1"), "10")
	if err != nil || status != http.StatusOK || string(body) != "13" || hdr.Get(router.TypenameHeader) != "twinflow/int64" {
		t.Fatalf("call: %d %v %s %v, want 200 with the count 13", status, hdr, body, err)
	}
	status, _, body, err = h.post("/call/test/tally/a", withKey("c-1"), "10")
	if err != nil || status != http.StatusConflict || !strings.Contains(string(body), "already_exists") {
		t.Fatalf("call repeated with its key: %d %s %v, want 409", status, body, err)
	}
	if got := h.stateInt("test/tally", "a", "count"); got != 13 {
		t.Errorf("count %d after the repeated call, want 13", got)
	}

	for _, tt := range []struct {
		name   string
		path   string
		hdr    map[string]string
		body   string
		status int
	}{
		{"no endpoint", "/send/other/fn/a", int64Body, "1", http.StatusNotFound},
		{"no token", "/send/test/tally/a", map[string]string{"Authorization": "Bearer wrong"}, "1", http.StatusUnauthorized},
		{"bad body", "/send/test/tally/a", map[string]string{"Content-Type": "application/json"}, "{", http.StatusBadRequest},
	} {
		status, _, body, err := h.post(tt.path, tt.hdr, tt.body)
		if err != nil || status != tt.status {
			t.Errorf("%s: %d %s %v, want %d", tt.name, status, body, err, tt.status)
		}
	}
	// The function fails for a message it cannot read: a call gets the
	// function's error, and the batch is dead-lettered.
	status, _, body, err = h.post("/call/test/tally/b", map[string]string{"Content-Type": "text/plain"}, "not a number")
	if err != nil || status != http.StatusInternalServerError || !strings.Contains(string(body), "the function failed") {
		t.Errorf("call of a failing function: %d %s %v, want 500 with the function's error", status, body, err)
	}
}

// TestFrontDoorConnectAndNATS: the Connect service, and the core NATS door
// with the client identity's credentials.
func TestFrontDoorConnectAndNATS(t *testing.T) {
	ep := serve(t, tallyRegistry(t))
	h := start(t, baseConfig(t, ep.url()))
	info := h.e.Access()
	tok, err := secrets.ReadIngressToken(info.IngressTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	c := twinflowv1connect.NewIngressServiceClient(http.DefaultClient, info.IngressURL,
		connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+tok)
				return next(ctx, req)
			}
		})))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	target := &twinflowv1.Address{Type: "test/tally", Id: "c"}
	if _, err := c.Send(ctx, connect.NewRequest(&twinflowv1.SendRequest{Target: target, Argument: &twinflowv1.TypedValue{Typename: "twinflow/int64", Value: []byte("2")}})); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Call(ctx, connect.NewRequest(&twinflowv1.CallRequest{Target: target, Argument: &twinflowv1.TypedValue{Typename: "twinflow/int64", Value: []byte("3")}}))
	if err != nil || string(resp.Msg.GetResult().GetValue()) != "5" {
		t.Fatalf("Connect call: %v %v, want 5", resp, err)
	}

	// The client identity may use the NATS door; the reply comes to its
	// own inbox.
	hdr := nats.Header{router.TypenameHeader: {"twinflow/int64"}, "Nats-Msg-Id": {"n-1"}}
	ack, err := h.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: "twinflow.send.test.tally.c", Header: hdr, Data: []byte("4")})
	if err != nil || ack.Header.Get(router.ErrorHeader) != "" || !bytes.Contains(ack.Data, []byte(`"seq":`)) {
		t.Fatalf("NATS send: %v %v", ack, err)
	}
	reply, err := h.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: "twinflow.call.test.tally.c", Header: nats.Header{router.TypenameHeader: {"twinflow/int64"}}, Data: []byte("1")})
	if err != nil || string(reply.Data) != "10" {
		t.Fatalf("NATS call: %v %v, want 10", reply, err)
	}
	// The same message id again is stored and dropped.
	if _, err := h.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: "twinflow.send.test.tally.c", Header: hdr, Data: []byte("4")}); err != nil {
		t.Fatal(err)
	}
	reply, err = h.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: "twinflow.call.test.tally.c", Header: nats.Header{router.TypenameHeader: {"twinflow/int64"}}, Data: []byte("0")})
	if err != nil || string(reply.Data) != "10" {
		t.Fatalf("after a repeated message id: %v %v, want the count still 10", reply, err)
	}
}

// TestBatchEnvelopes: a gateway publishes many messages in one batch; each
// valid item is applied once, the items with a key of their own even when
// a later batch repeats them; invalid items are dead-lettered one by one
// with their index.
func TestBatchEnvelopes(t *testing.T) {
	ep := serve(t, tallyRegistry(t))
	h := start(t, baseConfig(t, ep.url()))
	item := func(id, typename, value, key string) *twinflowv1.IngressEnvelope {
		return &twinflowv1.IngressEnvelope{Target: &twinflowv1.Address{Type: "test/tally", Id: id},
			Argument: &twinflowv1.TypedValue{Typename: typename, Value: []byte(value)}, IdempotencyKey: key}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish := func(id string, items ...*twinflowv1.IngressEnvelope) {
		b, err := proto.Marshal(&twinflowv1.IngressBatch{Items: items})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: router.BatchSubject, Header: nats.Header{"Nats-Msg-Id": {id}}, Data: b}); err != nil {
			t.Fatalf("the client identity publishing a batch: %v", err)
		}
	}
	publish("gw-1", item("a", "twinflow/int64", "1", "k-a"), item("b", "twinflow/int64", "2", ""), item("", "twinflow/int64", "3", ""),
		item("a", "twinflow/int64", "4", ""), item("a", "no typename", "5", ""))
	// A second batch repeats the keyed item: its target drops it.
	publish("gw-2", item("a", "twinflow/int64", "1", "k-a"), item("b", "twinflow/int64", "10", ""))
	testwait.For(t, "the batches applied", func() bool { return h.stateInt("test/tally", "b", "count") == 12 })
	if got := h.stateInt("test/tally", "a", "count"); got != 5 {
		t.Errorf("count of a %d, want 5: the repeated item applied once", got)
	}
	var dead []*jetstream.RawStreamMsg
	testwait.For(t, "two dead letters", func() bool { dead = h.deadLetters(); return len(dead) >= 2 })
	for i, want := range []struct {
		index  string
		reason router.Reason
	}{{"2", router.ReasonMissingID}, {"4", router.ReasonBadTypename}} {
		d := dead[i]
		if d.Header.Get(router.BatchIndexHeader) != want.index || d.Header.Get(router.ErrorReasonHeader) != string(want.reason) ||
			d.Subject != router.DeadLetterSubject || d.Header.Get(router.OriginalSubjectHeader) != router.BatchSubject {
			t.Errorf("dead letter %d: %s %v, want index %s, reason %s", i, d.Subject, d.Header, want.index, want.reason)
		}
	}
}

// crashingWriter writes batches until it is armed. The armed write
// crashes: before the write it fails at once, as a write that never became
// durable; after the write it stands still, as a runtime that died between
// the durable write and the acknowledgements, until the test has killed the
// engine.
type crashingWriter struct {
	next    frontdoor.Writer
	before  bool          // crash before the write instead of after it
	armed   atomic.Bool   // the next write crashes
	hit     chan struct{} // closed when a write crashed
	killed  chan struct{} // closed by the test when it kills the engine
	once    sync.Once
	crashed []string // the keys of the crashed write, set before hit
}

func (w *crashingWriter) Write(ctx context.Context, batch []byte) (uint64, error) {
	if !w.armed.Swap(false) {
		return w.next.Write(ctx, batch)
	}
	var b twinflowv1.IngressBatch
	_ = proto.Unmarshal(batch, &b)
	for _, it := range b.GetItems() {
		w.crashed = append(w.crashed, it.GetIdempotencyKey())
	}
	if w.before {
		w.once.Do(func() { close(w.hit) })
		return 0, errors.New("crashed before the write")
	}
	if _, err := w.next.Write(ctx, batch); err != nil {
		return 0, err
	}
	w.once.Do(func() { close(w.hit) })
	<-w.killed
	return 0, errors.New("crashed after the write, before the acknowledgements")
}

// TestFrontDoorExactlyOnceAcrossACrash: clients send keyed messages and
// repeat each until it is acknowledged. A write crashes, either before it
// is durable or between the durable write and the acknowledgements, and
// the engine is killed; after the restart the clients repeat what was not
// acknowledged, and every message is applied exactly once. An
// acknowledgement given before the write is durable would lose messages; a
// key lost on the way would apply the repeats twice.
func TestFrontDoorExactlyOnceAcrossACrash(t *testing.T) {
	for _, before := range []bool{false, true} {
		name := "after the write"
		if before {
			name = "before the write"
		}
		t.Run(name, func(t *testing.T) { exactlyOnceAcrossACrash(t, before) })
	}
}

func exactlyOnceAcrossACrash(t *testing.T, before bool) {
	ep := serve(t, tallyRegistry(t))
	cfg := baseConfig(t, ep.url())
	cw := &crashingWriter{before: before, hit: make(chan struct{}), killed: make(chan struct{})}
	runtime.SetDoorWriterWrapper(func(w frontdoor.Writer) frontdoor.Writer { cw.next = w; return cw })
	h := start(t, cfg)
	runtime.SetDoorWriterWrapper(nil)

	const clients, each = 8, 12
	var acked atomic.Int64
	var answers sync.Map    // key → true once it got an answer of any kind
	var engine sync.RWMutex // held for writing while the engine is swapped
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("c%d-m%d", c, i)
				for attempt := 0; ; attempt++ {
					engine.RLock()
					status, _, _, err := h.post("/send/test/tally/"+strconv.Itoa(c), withKey(key), "1")
					engine.RUnlock()
					if err == nil {
						answers.Store(key, true)
					}
					if err == nil && status == http.StatusAccepted {
						acked.Add(1)
						break
					}
					if attempt > 2000 {
						t.Errorf("message %s never acknowledged: %d %v", key, status, err)
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
				if c == 0 && i == each/2 {
					cw.armed.Store(true)
				}
			}
		})
	}
	select {
	case <-cw.hit:
	case <-time.After(30 * time.Second):
		t.Fatal("no write crashed")
	}
	if before {
		// The clients of the failed write have their answers before the
		// engine dies, whatever those are: an acknowledgement among them
		// would be for a message that is nowhere.
		testwait.For(t, "answers to the failed write", func() bool {
			for _, k := range cw.crashed {
				if _, ok := answers.Load(k); !ok {
					return false
				}
			}
			return true
		})
	}
	// The writer gives up without acknowledging, and the engine dies.
	close(cw.killed)
	h.e.Kill()
	engine.Lock()
	h.nc.Close()
	h.ops.Conn().Close()
	h.reopen()
	engine.Unlock()
	wg.Wait()
	if acked.Load() != clients*each {
		t.Fatalf("%d acknowledged, want %d", acked.Load(), clients*each)
	}
	// A call after a client's messages is answered once they are all
	// applied: its count is theirs.
	for c := range clients {
		status, _, body, err := h.post("/call/test/tally/"+strconv.Itoa(c), int64Body, "0")
		if err != nil || status != http.StatusOK || string(body) != strconv.Itoa(each) {
			t.Errorf("client %d: count %s (%d %v), want %d (each message exactly once)", c, body, status, err, each)
		}
	}
	if _, err := h.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	for c := range clients {
		if got := h.stateInt("test/tally", strconv.Itoa(c), "count"); got != each {
			t.Errorf("client %d: count %d, want %d (each message exactly once)", c, got, each)
		}
	}
}

// blocking is a function whose calls wait until release is closed.
func blocking(release <-chan struct{}) sdk.FunctionFunc {
	return func(ctx sdk.Context, msg sdk.Message) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return tally(ctx, msg)
	}
}

// TestFrontDoorBackpressure: when intake pauses (a function that does not
// answer, its backlog at the spill budget), the front door stops writing
// and answers 503 with Retry-After, instead of queueing without bound; once
// intake resumes, messages go through again, and every acknowledged one is
// applied once.
func TestFrontDoorBackpressure(t *testing.T) {
	release := make(chan struct{})
	reg := sdk.NewRegistry()
	if err := reg.Register("test/tally", blocking(release), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	cfg := baseConfig(t, ep.url())
	cfg.MaxAddressQueue = 1 // a second message spills,
	cfg.MaxSpillBytes = 2   // and a spilled one pauses intake
	cfg.FrontDoor = frontdoor.Limits{MaxUnread: 2, MaxQueued: 2, MaxWait: 300 * time.Millisecond}
	h := start(t, cfg)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	accepted := 0
	var refused map[string]string
	for i := 0; i < 200 && refused == nil; i++ {
		key := fmt.Sprint("m", i)
		status, hdr, body, err := h.post("/send/test/tally/a", withKey(key), "1")
		switch {
		case err != nil:
			t.Fatal(err)
		case status == http.StatusAccepted:
			accepted++
		case status == http.StatusServiceUnavailable:
			if hdr.Get("Retry-After") == "" || hdr.Get(frontdoor.IdempotencyKeyHeader) != key {
				t.Errorf("503 without Retry-After or key: %v %s", hdr, body)
			}
			refused = withKey(key)
		default:
			t.Fatalf("message %d: %d %s", i, status, body)
		}
	}
	if refused == nil {
		t.Fatalf("%d messages accepted while intake was paused, none refused", accepted)
	}
	close(release)
	// Intake resumes: the refused message goes through when sent again.
	testwait.For(t, "the refused message accepted", func() bool {
		status, _, _, err := h.post("/send/test/tally/a", refused, "1")
		return err == nil && status == http.StatusAccepted
	})
	accepted++
	testwait.For(t, "every accepted message applied", func() bool { return h.stateInt("test/tally", "a", "count") == int64(accepted) })
	var resp struct{ Code string }
	status, _, body, _ := h.post("/send/test/tally/a", refused, "1")
	if status != http.StatusAccepted || json.Unmarshal(body, &resp) != nil {
		t.Fatalf("again: %d %s", status, body)
	}
	if _, err := h.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.stateInt("test/tally", "a", "count"); got != int64(accepted) {
		t.Errorf("count %d, want %d: the repeat of an accepted key is dropped", got, accepted)
	}
}
