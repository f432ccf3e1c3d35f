package runtime_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
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

	"github.com/twinflow/twinflow/internal/testwait"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/sdk"
)

// switchable serves a handler on a fixed loopback address that can be
// taken down (connections refused) and brought back, as a redeploy does.
type switchable struct {
	t    *testing.T
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
}

func newSwitchable(t *testing.T, h http.Handler) *switchable {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &switchable{t: t, addr: l.Addr().String(), h: h}
	s.serve(l)
	t.Cleanup(s.down)
	return s
}

func (s *switchable) url() string { return "http://" + s.addr }

func (s *switchable) serve(l net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv = &http.Server{Handler: s.h}
	go func() { _ = s.srv.Serve(l) }()
}

// down closes the listener and every connection.
func (s *switchable) down() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// up listens again on the same address.
func (s *switchable) up() {
	s.t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.serve(l)
}

// readyz returns the status code and body of /readyz.
func (h *harness) readyz() (int, string) {
	h.t.Helper()
	resp, err := http.Get(h.e.AdminURL() + "/readyz")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricSum adds up every series of a metric on /metrics, labelled or not.
func (h *harness) metricSum(name string) float64 {
	h.t.Helper()
	resp, err := http.Get(h.e.AdminURL() + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			h.t.Fatal(err)
		}
		sum += f
	}
	return sum
}

// TestEndpointOutageIsWaitedOut takes the function endpoint down while
// messages arrive: nothing is dead-lettered, readiness names the endpoint
// while it is down, and once it is back every message counts once.
func TestEndpointOutageIsWaitedOut(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reg.Register("test/counter", sdk.FunctionFunc(counter), count); err != nil {
		t.Fatal(err)
	}
	ep := newSwitchable(t, sdk.Handler(reg))
	h := start(t, baseConfig(t, ep.url()))
	dlq := h.subscribe("twinflow.dlq.>")
	h.sendInt("test/counter", "a0", 1)
	testwait.For(t, "the first message", func() bool { return h.stateInt("test/counter", "a0", "count") == 1 })

	ep.down()
	const addresses, per = 50, 10
	for i := 0; i < per; i++ {
		for a := 0; a < addresses; a++ {
			h.sendInt("test/counter", fmt.Sprintf("a%d", a), 1)
		}
	}
	testwait.For(t, "readiness to report the endpoint", func() bool {
		code, body := h.readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "endpoint "+ep.url()+" unreachable")
	})
	if n := h.metricSum("twinflow_endpoint_unreachable"); n == 0 {
		t.Error("twinflow_endpoint_unreachable is 0 while the endpoint is down")
	}
	// Several probes fail before the endpoint comes back.
	testwait.For(t, "failed attempts of every address", func() bool {
		return h.metricSum("twinflow_invocation_retries_total") >= 5*addresses
	})
	ep.up()
	for a := 0; a < addresses; a++ {
		id := fmt.Sprintf("a%d", a)
		want := int64(per)
		if a == 0 {
			want++
		}
		testwait.For(t, "count of "+id, func() bool { return h.stateInt("test/counter", id, "count") == want })
	}
	testwait.For(t, "readiness once the endpoint is back", func() bool {
		code, _ := h.readyz()
		return code == http.StatusOK
	})
	if n := len(dlq.all()); n != 0 {
		t.Fatalf("%d dead letters; an outage must dead-letter nothing: %s", n, dlq.all()[0].Header.Get(router.ErrorHeader))
	}
}

// TestFailingAddressDoesNotHoldUpOthers queues more messages for an address
// whose function keeps failing than a shard holds in memory: its backlog
// spills, intake goes on, another function type is processed meanwhile,
// and once the function recovers the backlog is applied in order.
func TestFailingAddressDoesNotHoldUpOthers(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	reg := sdk.NewRegistry()
	stuck := func(ctx sdk.Context, msg sdk.Message) error {
		if broken.Load() {
			return errors.New("the disk is on fire")
		}
		return orderFn(ctx, msg)
	}
	if err := reg.Register("test/stuck", sdk.FunctionFunc(stuck), last, count); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("test/counter", sdk.FunctionFunc(counter), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	cfg := baseConfig(t, ep.url())
	cfg.MaxAddressQueue = 50
	h := start(t, cfg)
	dlq := h.subscribe("twinflow.dlq.>")

	// More than a shard's bound on messages in memory (shard.DefaultMaxQueued).
	total := shard.DefaultMaxQueued + 2000
	pub := h.asyncPublisher()
	for i := 1; i <= total; i++ {
		pub.sendInt("test/stuck", "s", int64(i))
	}
	pub.wait()
	for i := 0; i < 200; i++ {
		h.sendInt("test/counter", fmt.Sprintf("c%d", i%10), 1)
	}
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("c%d", i)
		testwait.For(t, "count of "+id, func() bool { return h.stateInt("test/counter", id, "count") == 20 })
	}
	if read := h.metric("twinflow_ingress_messages_total"); read != float64(total+200) {
		t.Fatalf("%v messages read, want all %d: intake stopped for the failing address", read, total+200)
	}
	if n := h.metric("twinflow_spilled_messages_total"); n < float64(total-shard.DefaultMaxAddressQueue) {
		t.Errorf("%v messages spilled, want nearly all %d of the failing address", n, total)
	}
	broken.Store(false)
	testwait.For(t, "the backlog applied", func() bool { return h.stateInt("test/stuck", "s", "count") == int64(total) })
	if got := h.stateInt("test/stuck", "s", "last"); got != int64(total) {
		t.Fatalf("last message %d, want %d", got, total)
	}
	if n := len(dlq.all()); n != 0 {
		t.Fatalf("%d dead letters; retryable failures must be retried: %s", n, dlq.all()[0].Header.Get(router.ErrorHeader))
	}
}

// asyncPub publishes many messages without waiting for each
// acknowledgement.
type asyncPub struct {
	h *harness
	n int
}

func (h *harness) asyncPublisher() *asyncPub { return &asyncPub{h: h} }

func (p *asyncPub) sendInt(functionType, id string, v int64) {
	p.h.t.Helper()
	subject, err := router.DirectSubject(functionType, id)
	if err != nil {
		p.h.t.Fatal(err)
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(router.TypenameHeader, sdk.Int64Type.Typename())
	msg.Data = []byte(strconv.FormatInt(v, 10))
	if _, err := p.h.js.PublishMsgAsync(msg); err != nil {
		p.h.t.Fatalf("publish: %v", err)
	}
	if p.n++; p.n%1000 == 0 {
		p.wait()
	}
}

func (p *asyncPub) wait() {
	p.h.t.Helper()
	select {
	case <-p.h.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		p.h.t.Fatal("publishes not acknowledged within a minute")
	}
}

// TestStopWithStuckEndpointMeetsItsDeadline stops while a call hangs: the
// stop ends after its deadline with a final checkpoint, and the message of
// the hung call runs after the next start.
func TestStopWithStuckEndpointMeetsItsDeadline(t *testing.T) {
	var hang atomic.Bool
	hang.Store(true)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	reg := sdk.NewRegistry()
	fn := func(ctx sdk.Context, msg sdk.Message) error {
		if hang.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
		return counter(ctx, msg)
	}
	if err := reg.Register("test/hang", sdk.FunctionFunc(fn), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for handlers
	cfg := baseConfig(t, ep.url())
	cfg.StopTimeout = time.Second
	cfg.Module.Endpoints[0].Timeout = time.Hour
	h := start(t, cfg)
	h.sendInt("test/hang", "x", 1)
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	man, err := h.e.Stop(ctx, "")
	if err != nil {
		t.Fatalf("stop with a hung call: %v", err)
	}
	if man == nil {
		t.Fatal("no final checkpoint")
	}
	hang.Store(false)
	h.nc.Close()
	h.reopen()
	testwait.For(t, "the hung message after the restart", func() bool { return h.stateInt("test/hang", "x", "count") == 1 })
}

// TestRepeatedPublishIsDroppedAfterRestart publishes a message, lets a
// checkpoint cover it (the ingress stream is then trimmed), crashes the
// runtime and its embedded NATS, and publishes the same message id again,
// as a publisher does whose acknowledgement was lost in the crash: NATS
// stores it again, having forgotten the trimmed id, and the address drops
// it as a repeat.
func TestRepeatedPublishIsDroppedAfterRestart(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reg.Register("test/counter", sdk.FunctionFunc(counter), count); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	h := start(t, baseConfig(t, ep.url()))
	publish := func(id string) {
		t.Helper()
		subject, _ := router.DirectSubject("test/counter", "a")
		msg := nats.NewMsg(subject)
		msg.Header.Set(router.TypenameHeader, sdk.Int64Type.Typename())
		msg.Header.Set(jetstream.MsgIDHeader, id)
		msg.Data = []byte("1")
		if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
	publish("m-1")
	testwait.For(t, "m-1 applied", func() bool { return h.stateInt("test/counter", "a", "count") == 1 })
	// Complete checkpoints cover m-1: the runtime trims what they read.
	for i := 0; i < 3; i++ {
		if _, err := h.e.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, "the ingress stream trimmed", func() bool {
		s, err := h.ops.Stream(context.Background(), runtime.DirectStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
	h.crash()
	publish("m-1")
	publish("m-2")
	testwait.For(t, "m-2 applied", func() bool { return h.stateInt("test/counter", "a", "count") >= 2 })
	if got := h.stateInt("test/counter", "a", "count"); got != 2 {
		t.Fatalf("count %d after m-1, m-1 again and m-2; want 2", got)
	}
	if n := h.metric("twinflow_duplicates_dropped_total"); n != 1 {
		t.Fatalf("%v duplicates dropped, want the repeat of m-1", n)
	}
}

// hostile is a function endpoint that answers each message with the
// result its payload names: results a correct SDK never produces.
type hostile struct{}

func (hostile) Invoke(_ context.Context, req *connect.Request[twinflowv1.InvokeRequest]) (*connect.Response[twinflowv1.InvokeResponse], error) {
	resp := &twinflowv1.InvokeResponse{}
	for _, b := range req.Msg.GetBatches() {
		res := &twinflowv1.AddressResult{Target: b.GetTarget()}
		if len(b.GetState()) == 0 {
			res.Outcome = &twinflowv1.AddressResult_MissingStates{MissingStates: &twinflowv1.MissingStates{
				Specs: []*twinflowv1.StateSpec{{Name: "count", Typename: sdk.Int64Type.Typename()}}}}
			resp.Results = append(resp.Results, res)
			continue
		}
		eff := &twinflowv1.Effects{}
		self := b.GetTarget()
		str := func(s string) *twinflowv1.TypedValue {
			return &twinflowv1.TypedValue{Typename: "twinflow/string", Value: []byte(s)}
		}
		inv := b.GetInvocations()[0]
		switch string(inv.GetArgument().GetValue()) {
		case "undeclared state":
			eff.StateMutations = append(eff.StateMutations, &twinflowv1.StateMutation{Name: "nope", Kind: twinflowv1.StateMutation_KIND_SET, Value: str("x")})
		case "empty state name":
			eff.StateMutations = append(eff.StateMutations, &twinflowv1.StateMutation{Name: "", Kind: twinflowv1.StateMutation_KIND_SET, Value: str("x")})
		case "state of another type":
			eff.StateMutations = append(eff.StateMutations, &twinflowv1.StateMutation{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET, Value: str("x")})
		case "bad typename":
			eff.StateMutations = append(eff.StateMutations, &twinflowv1.StateMutation{Name: "count", Kind: twinflowv1.StateMutation_KIND_SET,
				Value: &twinflowv1.TypedValue{Typename: "not a typename!", Value: []byte("1")}})
		case "negative delay":
			eff.Delayed = append(eff.Delayed, &twinflowv1.DelayedMessage{Target: self, Argument: str("x"), DelayMillis: -1})
		case "overflowing delay":
			eff.Delayed = append(eff.Delayed, &twinflowv1.DelayedMessage{Target: self, Argument: str("x"), DelayMillis: math.MaxInt64})
		case "empty target id":
			eff.Outgoing = append(eff.Outgoing, &twinflowv1.OutgoingMessage{Target: &twinflowv1.Address{Type: "test/x"}, Argument: str("x")})
		case "bad target type":
			eff.Outgoing = append(eff.Outgoing, &twinflowv1.OutgoingMessage{Target: &twinflowv1.Address{Type: "nope", Id: "x"}, Argument: str("x")})
		case "oversized message":
			eff.Outgoing = append(eff.Outgoing, &twinflowv1.OutgoingMessage{Target: self, Argument: str(strings.Repeat("x", 2<<20))})
		case "foreign reply":
			eff.Egress = append(eff.Egress, &twinflowv1.EgressRecord{Egress: router.ReplyEgress, ReplyTo: "_INBOX.someone.else", Value: str("x")})
		case "huge error":
			res.Outcome = &twinflowv1.AddressResult_Error{Error: &twinflowv1.InvocationError{
				Kind: twinflowv1.InvocationError_KIND_TERMINAL, Message: strings.Repeat("e", 2<<20)}}
		case "wrong address":
			res.Target = &twinflowv1.Address{Type: "test/other", Id: "y"}
		}
		if res.Outcome == nil {
			res.Outcome = &twinflowv1.AddressResult_Effects{Effects: eff}
		}
		resp.Results = append(resp.Results, res)
	}
	return connect.NewResponse(resp), nil
}

// TestInvalidResultsAreRefused has a misbehaving endpoint return results
// that break the protocol's rules: each is refused as a whole, its message
// dead-lettered with the precise reason, nothing of it applied, and the
// platform goes on.
func TestInvalidResultsAreRefused(t *testing.T) {
	_, handler := twinflowv1connect.NewFunctionServiceHandler(hostile{})
	ep := newSwitchable(t, handler)
	h := start(t, baseConfig(t, ep.url()))
	dlq := h.subscribe(router.FunctionDeadLetterSubject)
	cases := []struct{ send, reason string }{
		{"undeclared state", `state "nope" is not declared by test/h (declared: "count")`},
		{"empty state name", `state "" is not declared`},
		{"state of another type", `state "count" is declared as twinflow/int64 but the value is twinflow/string`},
		{"bad typename", `typename "not a typename!" contains a space`},
		{"negative delay", "delay of -1 ms is outside [0, 315360000000] ms"},
		{"overflowing delay", "delay of 9223372036854775807 ms is outside"},
		{"empty target id", "outgoing message 0: target id is empty"},
		{"bad target type", `outgoing message 0: target function type "nope" has no "/"`},
		{"oversized message", "outgoing message 0: 2097152 bytes, more than the limit of 1048576"},
		{"foreign reply", `reply subject "_INBOX.someone.else" is not one of the batch's requests`},
		{"huge error", "cut; 2097185 bytes in all"},
		{"wrong address", "is for test/other/y, but the batch was for test/h/11"},
	}
	for i, c := range cases {
		h.send("test/h", fmt.Sprint(i), "twinflow/string", []byte(c.send))
	}
	testwait.For(t, "a dead letter per case", func() bool { return len(dlq.all()) == len(cases) })
	for _, m := range dlq.all() {
		id := strings.TrimPrefix(m.Header.Get(router.TargetHeader), "test/h/")
		i, err := strconv.Atoi(id)
		if err != nil {
			t.Fatalf("dead letter for %q", m.Header.Get(router.TargetHeader))
		}
		c := cases[i]
		if got := m.Header.Get(router.ErrorHeader); !strings.Contains(got, c.reason) {
			t.Errorf("%s: reason %.300q, want it to contain %q", c.send, got, c.reason)
		}
		if h.stateInt("test/h", id, "count") != -1 {
			t.Errorf("%s: state was written although the result was refused", c.send)
		}
	}
}
