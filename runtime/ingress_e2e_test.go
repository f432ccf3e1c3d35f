package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/natsbus/natsbustest"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
)

// These tests drive the NATS side of the engine end to end: configured
// ingresses (from Go and from YAML), the direct ingress, dead letters,
// request/reply and both egress deliveries. The core ones run against the
// embedded server and against a separate nats-server process.

// reading is what the sensors in these tests publish.
type reading struct {
	Device struct {
		ID string `json:"id"`
	} `json:"device"`
	Value int64 `json:"value"`
}

var (
	readingType = sdk.JSONType[reading]("test/Reading")
	total       = sdk.ValueSpec[int64]{Name: "total", Type: sdk.Int64Type}
	seen        = sdk.ValueSpec[[]int64]{Name: "seen", Type: sdk.JSONType[[]int64]("test/ints")}
)

func readingJSON(id string, value int64) []byte {
	var r reading
	r.Device.ID, r.Value = id, value
	b, _ := json.Marshal(r)
	return b
}

// summer adds each reading to its total and writes "<id>=<total>" to every
// egress in egresses.
func summer(egresses ...string) sdk.FunctionFunc {
	return func(ctx sdk.Context, msg sdk.Message) error {
		r, err := sdk.As(msg, readingType)
		if err != nil {
			return sdk.Terminal(err)
		}
		n, _, err := total.Get(ctx)
		if err != nil {
			return err
		}
		n += r.Value
		if err := total.Set(ctx, n); err != nil {
			return err
		}
		for _, eg := range egresses {
			if err := sdk.Egress(ctx, eg, sdk.StringType, fmt.Sprintf("%s=%d", ctx.Self().ID, n)); err != nil {
				return err
			}
		}
		return nil
	}
}

// logger appends each reading's value to its list.
func logger(ctx sdk.Context, msg sdk.Message) error {
	r, err := sdk.As(msg, readingType)
	if err != nil {
		return sdk.Terminal(err)
	}
	list, _, err := seen.Get(ctx)
	if err != nil {
		return err
	}
	return seen.Set(ctx, append(list, r.Value))
}

// echo answers a string request with "echo:<id>:<request>".
func echo(ctx sdk.Context, msg sdk.Message) error {
	s, err := sdk.As(msg, sdk.StringType)
	if err != nil {
		return sdk.Terminal(err)
	}
	return sdk.Reply(ctx, sdk.StringType, "echo:"+ctx.Self().ID+":"+s)
}

// ack answers any request with an empty message.
func ack(ctx sdk.Context, _ sdk.Message) error {
	return sdk.Reply(ctx, sdk.BytesType, nil)
}

// forwarder passes a request on to test/echo with the same id.
func forwarder(ctx sdk.Context, msg sdk.Message) error {
	ctx.Forward(sdk.Address{Type: "test/echo", ID: ctx.Self().ID}, sdk.TypedValue{Typename: msg.Typename(), Bytes: msg.Bytes()})
	return nil
}

// ingressRegistry serves test/sum (egress "out"), test/log, test/echo,
// test/forward and test/ack.
func ingressRegistry(t *testing.T) *sdk.Registry {
	t.Helper()
	reg := sdk.NewRegistry()
	for _, err := range []error{
		reg.Register("test/sum", summer("out"), total),
		reg.Register("test/log", sdk.FunctionFunc(logger), seen),
		reg.Register("test/echo", sdk.FunctionFunc(echo)),
		reg.Register("test/forward", sdk.FunctionFunc(forwarder)),
		reg.Register("test/ack", sdk.FunctionFunc(ack)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// Ingresses used by the tests, one per id source.
var (
	bySubject = router.IngressRule{
		Name: "by-subject", Subject: "sensors.*.reading", Typename: readingType.Typename(),
		Targets: []router.TargetRule{{FunctionType: "test/sum", ID: router.IDFromSubjectToken(1)}},
	}
	byHeader = router.IngressRule{
		Name: "by-header", Subject: "devices.header",
		// No fixed typename: it comes from the Twinflow-Typename header.
		Targets: []router.TargetRule{{FunctionType: "test/sum", ID: router.IDFromHeader("Device-Id")}},
	}
	byJSON = router.IngressRule{
		Name: "by-json", Subject: "devices.json", Typename: readingType.Typename(),
		Targets: []router.TargetRule{{FunctionType: "test/sum", ID: router.IDFromJSONField("device.id")}},
	}
	fanOut = router.IngressRule{
		Name: "fan-out", Subject: "devices.fanout", Typename: readingType.Typename(),
		Targets: []router.TargetRule{
			{FunctionType: "test/sum", ID: router.IDFromJSONField("device.id")},
			{FunctionType: "test/log", ID: router.IDFromHeader("Device-Id")},
		},
	}
)

// natsModes runs a test against the embedded server and against an
// external nats-server process given by URL (the -nats flag of twinflow
// run). The mode applies to a complete configuration: the external server
// gets the permissions of its module.
func natsModes(t *testing.T, test func(t *testing.T, cfg func(runtime.Config) runtime.Config)) {
	t.Run("embedded", func(t *testing.T) {
		test(t, func(c runtime.Config) runtime.Config { return c })
	})
	t.Run("external", func(t *testing.T) {
		if testing.Short() {
			t.Skip("builds and runs nats-server")
		}
		bin := natsbustest.BuildExternalServer(t)
		// The server gets the identities of the data dir's keys, with
		// the permissions an embedded server would give them.
		test(t, func(c runtime.Config) runtime.Config {
			keys, err := secrets.Ensure(c.DataDir, c.Module.UserNames())
			if err != nil {
				t.Fatal(err)
			}
			c.NATSURL = natsbustest.StartExternalServer(t, bin, natsbus.AuthorizationConfig(runtime.NATSUsers(c.Module, keys)))
			c.NATSCredsFile = keys.Runtime.SeedFile
			return c
		})
	})
}

// ingressConfig is baseConfig with the given ingresses.
func ingressConfig(t *testing.T, url string, rules ...router.IngressRule) runtime.Config {
	cfg := baseConfig(t, url)
	cfg.Module.Ingresses = rules
	return cfg
}

// publish publishes through JetStream on the harness's own connection (not
// the engine's) and waits for the acknowledgement.
func (h *harness) publish(subject string, header nats.Header, data []byte) {
	h.t.Helper()
	if _, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Header: header, Data: data}); err != nil {
		h.t.Fatalf("publish to %s: %v", subject, err)
	}
}

// strings returns the JSON strings the collector got, in arrival order.
func (c *collector) strings(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range c.all() {
		var s string
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatalf("record %q on %s: %v", m.Data, m.Subject, err)
		}
		out = append(out, s)
	}
	return out
}

func (c *collector) has(t *testing.T, s string) bool {
	return slices.Contains(c.strings(t), s)
}

func (h *harness) stateInts(functionType, id, name string) []int64 {
	h.t.Helper()
	var list []int64
	if raw := h.state(functionType, id)[name]; raw != nil {
		if err := json.Unmarshal(raw, &list); err != nil {
			h.t.Fatal(err)
		}
	}
	return list
}

// TestConfiguredIngressToStateAndEgress publishes on a configured ingress
// from a separate connection: the function's state changes and its egress
// record reaches a subscriber.
func TestConfiguredIngressToStateAndEgress(t *testing.T) {
	natsModes(t, func(t *testing.T, mode func(runtime.Config) runtime.Config) {
		ep := serve(t, ingressRegistry(t))
		h := start(t, mode(ingressConfig(t, ep.url(), bySubject)))
		out := h.subscribe("test.out")

		pub, _, err := h.access().ConnectNATS("publisher", testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		// A plain core NATS publish: the ingress stream captures it.
		for _, v := range []int64{3, 4} {
			if err := pub.Publish("sensors.s-1.reading", readingJSON("ignored", v)); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "the total of s-1", func() bool { return h.stateInt("test/sum", "s-1", "total") == 7 })
		testwait.For(t, "the egress records", func() bool { return len(out.all()) == 2 })
		if got := out.strings(t); got[0] != "s-1=3" || got[1] != "s-1=7" {
			t.Errorf("egress records %q, want [s-1=3 s-1=7]", got)
		}
		m := out.all()[1]
		if got := m.Header.Get(router.SourceHeader); got != "test/sum/s-1" {
			t.Errorf("source header %q", got)
		}
		if got := m.Header.Get(router.TypenameHeader); got != sdk.StringType.Typename() {
			t.Errorf("typename header %q", got)
		}
	})
}

// checkIDSources sends one reading through each of the three ingresses that
// take the id from a subject token, a header and a JSON field, and one
// through the fan-out ingress.
func checkIDSources(t *testing.T, h *harness, prefix string) {
	h.publish(prefix+"sensors.tok-1.reading", nil, readingJSON("not-this", 1))
	h.publish(prefix+"devices.header", nats.Header{
		"Device-Id": {"hdr-1"}, router.TypenameHeader: {readingType.Typename()},
	}, readingJSON("not-this", 2))
	h.publish(prefix+"devices.json", nil, readingJSON("json-1", 3))
	h.publish(prefix+"devices.fanout", nats.Header{"Device-Id": {"log-1"}}, readingJSON("sum-1", 4))

	for id, want := range map[string]int64{"tok-1": 1, "hdr-1": 2, "json-1": 3, "sum-1": 4} {
		testwait.For(t, "the total of "+id, func() bool { return h.stateInt("test/sum", id, "total") == want })
	}
	testwait.For(t, "the fan-out to test/log", func() bool { return len(h.stateInts("test/log", "log-1", "seen")) == 1 })
	if got := h.stateInts("test/log", "log-1", "seen"); got[0] != 4 {
		t.Errorf("test/log log-1 saw %v, want [4]", got)
	}
	if _, ok := h.state("test/sum", "not-this")["total"]; ok {
		t.Error("an id was taken from the payload where the rule names a subject token or header")
	}
}

func TestIngressIDSourcesFromGo(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, ingressConfig(t, ep.url(), bySubject, byHeader, byJSON, fanOut))
	checkIDSources(t, h, "")
}

const yamlModule = `
endpoints:
  - functions: test/*
    url: %s
    timeout: 5s
    maxInFlight: 4
ingresses:
  - name: by-subject
    subject: yaml.sensors.*.reading
    typename: test/Reading
    targets:
      - function: test/sum
        id: {subjectToken: 2}
  - name: by-header
    subject: yaml.devices.header
    targets:
      - function: test/sum
        id: {header: Device-Id}
  - name: by-json
    subject: yaml.devices.json
    typename: test/Reading
    targets:
      - function: test/sum
        id: {jsonField: device.id}
  - name: fan-out
    subject: yaml.devices.fanout
    typename: test/Reading
    targets:
      - function: test/sum
        id: {jsonField: device.id}
      - function: test/log
        id: {header: Device-Id}
egresses:
  - name: out
    subject: test.out
    delivery: exactly-once
`

func TestIngressIDSourcesFromYAML(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	m, err := spec.Parse("module.yaml", fmt.Appendf(nil, yamlModule, ep.url()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, ep.url())
	cfg.Module = m
	h := start(t, cfg)
	checkIDSources(t, h, "yaml.")
}

// TestIngressFanOut sends each message of one ingress to two function
// types, whose ids come from different places.
func TestIngressFanOut(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, ingressConfig(t, ep.url(), fanOut))
	out := h.subscribe("test.out")
	for i := range 5 {
		h.publish("devices.fanout", nats.Header{"Device-Id": {"dev"}}, readingJSON(fmt.Sprintf("s%d", i%2), int64(i+1)))
	}
	testwait.For(t, "the totals", func() bool {
		return h.stateInt("test/sum", "s0", "total") == 1+3+5 && h.stateInt("test/sum", "s1", "total") == 2+4
	})
	testwait.For(t, "the log", func() bool { return len(h.stateInts("test/log", "dev", "seen")) == 5 })
	if got := h.stateInts("test/log", "dev", "seen"); !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("test/log dev saw %v, want [1 2 3 4 5] in order", got)
	}
	testwait.For(t, "the egress of test/sum", func() bool { return len(out.all()) == 5 })
}

// deadLetters reads the dead letters stored in the DLQ stream.
func (h *harness) deadLetters() []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.ops.Stream(ctx, runtime.DeadLetterStream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			h.t.Fatalf("dead letter %d: %v", seq, err)
		}
		if m.Subject == router.DeadLetterSubject {
			out = append(out, m)
		}
	}
	return out
}

// TestMalformedMessagesAreDeadLettered publishes malformed messages, each
// followed by a good one: the bad ones land in the dead-letter stream with
// the reason and original subject, the good ones are processed.
func TestMalformedMessagesAreDeadLettered(t *testing.T) {
	natsModes(t, func(t *testing.T, mode func(runtime.Config) runtime.Config) {
		ep := serve(t, ingressRegistry(t))
		cfg := mode(ingressConfig(t, ep.url(), bySubject, byHeader, byJSON))
		cfg.MaxPayload = 4 << 10
		h := start(t, cfg)
		live := h.subscribe(router.DeadLetterSubject)
		typed := nats.Header{router.TypenameHeader: {readingType.Typename()}}
		direct, err := router.DirectSubject("test/sum", "direct-1")
		if err != nil {
			t.Fatal(err)
		}
		huge := readingJSON("x", 1)
		huge = append(huge[:len(huge)-1], fmt.Sprintf(`,"pad":%q}`, strings.Repeat("x", 5<<10))...)

		bad := []struct {
			subject string
			header  nats.Header
			data    []byte
			reason  router.Reason
		}{
			{"devices.header", typed, readingJSON("x", 1), router.ReasonMissingID},                                 // no Device-Id
			{"devices.json", nil, []byte(`{"device": {"id": "x"`), router.ReasonBadJSON},                           // truncated
			{"sensors.big.reading", nil, huge, router.ReasonOversized},                                             // over MaxPayload
			{direct, nil, readingJSON("x", 1), router.ReasonMissingTypename},                                       // no typename
			{"devices.header", nats.Header{"Device-Id": {"x"}}, readingJSON("x", 1), router.ReasonMissingTypename}, // no typename header
			{"devices.json", nil, []byte("{\"device\":{\"id\":\"x\xff\"},\"value\":1}"), router.ReasonBadID},       // not UTF-8
			{"devices.header", nats.Header{"Device-Id": {"x\xff"}, router.TypenameHeader: {readingType.Typename()}}, readingJSON("x", 1), router.ReasonBadID},
		}
		for i, b := range bad {
			h.publish(b.subject, b.header, b.data)
			// The next good message on the same ingress.
			id := fmt.Sprintf("good-%d", i)
			switch b.subject {
			case "devices.header":
				h.publish(b.subject, nats.Header{"Device-Id": {id}, router.TypenameHeader: {readingType.Typename()}}, readingJSON("x", 1))
			case "devices.json":
				h.publish(b.subject, nil, readingJSON(id, 1))
			case direct:
				h.send("test/sum", id, readingType.Typename(), readingJSON("x", 1))
			default:
				h.publish("sensors."+id+".reading", nil, readingJSON("x", 1))
			}
		}
		for i := range bad {
			id := fmt.Sprintf("good-%d", i)
			testwait.For(t, id, func() bool { return h.stateInt("test/sum", id, "total") == 1 })
		}
		testwait.For(t, "the dead letters", func() bool { return len(h.deadLetters()) == len(bad) })
		// Each ingress has its own reader, so the dead letters of different
		// ingresses are stored in any order: find each by subject and reason.
		stored := map[string]*jetstream.RawStreamMsg{}
		for _, m := range h.deadLetters() {
			if m.Header.Get(router.ErrorHeader) == "" {
				t.Errorf("dead letter of %s: no error text", m.Header.Get(router.OriginalSubjectHeader))
			}
			stored[m.Header.Get(router.OriginalSubjectHeader)+" "+m.Header.Get(router.ErrorReasonHeader)] = m
		}
		for i, b := range bad {
			m := stored[b.subject+" "+string(b.reason)]
			if m == nil {
				t.Errorf("no dead letter for message %d on %s with reason %s; got %v", i, b.subject, b.reason, slices.Collect(maps.Keys(stored)))
				continue
			}
			if string(m.Data) != string(b.data) {
				t.Errorf("dead letter %d: payload of %d bytes, want the original %d bytes", i, len(m.Data), len(b.data))
			}
		}
		if m := stored["devices.header "+string(router.ReasonMissingID)]; m != nil && !strings.Contains(m.Header.Get(router.ErrorHeader), "Device-Id") {
			t.Errorf("missing-id error %q does not name the header", m.Header.Get(router.ErrorHeader))
		}
		// Subscribers of the dead-letter subject see them too.
		testwait.For(t, "live dead letters", func() bool { return len(live.all()) == len(bad) })
		if h.stateInt("test/sum", "x", "total") != -1 || h.stateInt("test/sum", "big", "total") != -1 || h.stateInt("test/sum", "x\ufffd", "total") != -1 {
			t.Error("a dead-lettered message reached a function")
		}
	})
}

// TestRequestReply sends NATS requests through the direct ingress and a
// configured one, to a function that replies and to one that forwards the
// request to another, which replies.
func TestRequestReply(t *testing.T) {
	natsModes(t, func(t *testing.T, mode func(runtime.Config) runtime.Config) {
		ep := serve(t, ingressRegistry(t))
		cfg := mode(ingressConfig(t, ep.url(), router.IngressRule{
			Name: "requests", Subject: "requests.*", Typename: sdk.StringType.Typename(),
			Targets: []router.TargetRule{{FunctionType: "test/forward", ID: router.IDFromSubjectToken(1)}},
		}))
		h := start(t, cfg)
		request := func(subject, s string) string {
			t.Helper()
			v, _ := sdk.Encode(sdk.StringType, s)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			reply, err := natsbus.Request(ctx, h.js, subject, nats.Header{router.TypenameHeader: {v.Typename}}, v.Bytes)
			if err != nil {
				t.Fatalf("request to %s: %v", subject, err)
			}
			if got := reply.Header.Get(router.TypenameHeader); got != sdk.StringType.Typename() {
				t.Errorf("reply typename %q", got)
			}
			var out string
			if err := json.Unmarshal(reply.Data, &out); err != nil {
				t.Fatalf("reply %q: %v", reply.Data, err)
			}
			return out
		}
		direct := func(ftype, id string) string {
			s, err := router.DirectSubject(ftype, id)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		if got := request(direct("test/echo", "e1"), "ping"); got != "echo:e1:ping" {
			t.Errorf("direct reply %q", got)
		}
		if got := request(direct("test/forward", "f1"), "pong"); got != "echo:f1:pong" {
			t.Errorf("forwarded reply %q", got)
		}
		if got := request("requests.r1", "hi"); got != "echo:r1:hi" {
			t.Errorf("reply through the configured ingress %q", got)
		}
		// Requests in a row to one address each get their own answer.
		for i := range 3 {
			s := fmt.Sprint(i)
			if got := request(direct("test/echo", "e1"), s); got != "echo:e1:"+s {
				t.Errorf("reply %d: %q", i, got)
			}
		}
		// A request that cannot be routed is answered with the reason at
		// once, besides being dead-lettered.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		reply, err := natsbus.Request(ctx, h.js, direct("test/echo", "e1"), nil, []byte(`"no typename"`))
		if err != nil {
			t.Fatalf("request without a typename: %v", err)
		}
		if got := router.Reason(reply.Header.Get(router.ErrorReasonHeader)); got != router.ReasonMissingTypename || len(reply.Data) != 0 {
			t.Errorf("answer to a request without a typename: reason %q, error %q, data %q", got,
				reply.Header.Get(router.ErrorHeader), reply.Data)
		}
		testwait.For(t, "the dead letter", func() bool { return len(h.deadLetters()) == 1 })
	})
}

// TestEgressDeliveries: at-least-once records are published as soon as
// the invocation completes; exactly-once records only once a checkpoint
// covers them, with a Nats-Msg-Id.
func TestEgressDeliveries(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reg.Register("test/sum", summer("fast", "out"), total); err != nil {
		t.Fatal(err)
	}
	ep := serve(t, reg)
	cfg := baseConfig(t, ep.url())
	cfg.CheckpointInterval = time.Hour
	cfg.Module.Egresses = append(cfg.Module.Egresses, router.EgressRule{Name: "fast", Subject: "test.fast", Delivery: router.AtLeastOnce})
	h := start(t, cfg)
	fast, out := h.subscribe("test.fast"), h.subscribe("test.out")

	h.send("test/sum", "a", readingType.Typename(), readingJSON("a", 5))
	testwait.For(t, "the at-least-once record", func() bool { return len(fast.all()) == 1 })
	if got := fast.strings(t); got[0] != "a=5" {
		t.Errorf("at-least-once record %q", got[0])
	}
	// The exactly-once record of the same invocation waits for a
	// checkpoint: it is neither delivered nor stored.
	if n := len(out.all()); n != 0 {
		t.Fatalf("%d exactly-once records before a checkpoint", n)
	}
	s, err := h.ops.Stream(context.Background(), "TWINFLOW_EGRESS_out")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Fatalf("exactly-once stream holds %v messages before a checkpoint (err %v)", info.State.Msgs, err)
	}
	if _, err := h.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the exactly-once record", func() bool { return len(out.all()) == 1 })
	m := out.all()[0]
	if got := out.strings(t); got[0] != "a=5" {
		t.Errorf("exactly-once record %q", got[0])
	}
	if m.Header.Get(jetstream.MsgIDHeader) == "" {
		t.Error("exactly-once record has no Nats-Msg-Id")
	}
	if got := fast.all()[0].Header.Get(jetstream.MsgIDHeader); got != "" {
		t.Errorf("at-least-once record has Nats-Msg-Id %q", got)
	}
}

// TestReplySubjectMustNotBeReserved publishes requests whose reply subject
// is not an inbox: the JetStream API, the direct ingress, an ingress, an
// egress, the runtime's own inbox. Answering them would let any publisher
// act with the runtime's own NATS permissions (here: delete the
// dead-letter stream), inject messages or forge records. They are
// dead-lettered instead, and the function is not asked to answer them.
func TestReplySubjectMustNotBeReserved(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, ingressConfig(t, ep.url(), bySubject))
	subject, err := router.DirectSubject("test/ack", "a")
	if err != nil {
		t.Fatal(err)
	}
	typed := func(replyTo string) nats.Header {
		hdr := nats.Header{router.TypenameHeader: {"test/Ping"}}
		if replyTo != "" {
			hdr.Set(router.ReplyToHeader, replyTo)
		}
		return hdr
	}
	evil := []string{
		// An empty answer here is a request to delete the stream.
		"$JS.API.STREAM.DELETE." + runtime.DeadLetterStream,
		"twinflow.in.test.sum.injected",
		"sensors.injected.reading", // read by the ingress by-subject
		"test.out",                 // owned by the egress out
		runtime.RuntimeInboxPrefix + ".x",
		"_INBOX_client",
	}
	rejected := h.subscribe(router.FunctionDeadLetterSubject)
	for _, to := range evil {
		h.publish(subject, typed(to), nil)
	}
	// A proper request to the same address after them is answered, so they
	// have been handled by then.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := natsbus.Request(ctx, h.js, subject, typed(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.Header.Get(router.TypenameHeader); got != sdk.BytesType.Typename() {
		t.Errorf("reply typename %q", got)
	}
	// None reaches the function.
	testwait.For(t, "the dead letters", func() bool { return len(h.deadLetters()) == len(evil) })
	for i, m := range h.deadLetters() {
		if got := router.Reason(m.Header.Get(router.ErrorReasonHeader)); got != router.ReasonBadReplyTo ||
			!strings.Contains(m.Header.Get(router.ErrorHeader), "is not an inbox") {
			t.Errorf("dead letter %d: reason %q (%s)", i, got, m.Header.Get(router.ErrorHeader))
		}
	}
	if n := len(ep.requestsFor("test/ack")); n != 1 {
		t.Errorf("test/ack invoked %d times, want once (the proper request)", n)
	}
	if n := len(rejected.all()); n != 0 {
		t.Errorf("%d answers reached a function and were dead-lettered", n)
	}
	if n := len(ep.requestsFor("test/sum")); n != 0 {
		t.Errorf("an answer was injected into an ingress: test/sum invoked %d times", n)
	}
	s, err := h.ops.Stream(ctx, "TWINFLOW_EGRESS_out")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("an answer was injected into the egress stream: %v messages (err %v)", info.State.Msgs, err)
	}
}

// TestOversizedEgressRecordIsDeadLettered has a function write a record
// larger than the NATS server accepts to an at-least-once and an
// exactly-once egress: each is replaced by a dead letter, and the records
// after it are still published.
func TestOversizedEgressRecordIsDeadLettered(t *testing.T) {
	natsModes(t, func(t *testing.T, mode func(runtime.Config) runtime.Config) {
		var limit int64
		reg := sdk.NewRegistry()
		fn := func(ctx sdk.Context, msg sdk.Message) error {
			s, err := sdk.As(msg, sdk.StringType)
			if err != nil {
				return sdk.Terminal(err)
			}
			switch s {
			case "big":
				s = strings.Repeat("x", int(limit)+1)
			case "big reply":
				return sdk.Reply(ctx, sdk.StringType, strings.Repeat("x", int(limit)+1))
			}
			for _, eg := range []string{"fast", "out"} {
				if err := sdk.Egress(ctx, eg, sdk.StringType, s); err != nil {
					return err
				}
			}
			return nil
		}
		if err := reg.Register("test/big", sdk.FunctionFunc(fn)); err != nil {
			t.Fatal(err)
		}
		ep := serve(t, reg)
		cfg := baseConfig(t, ep.url())
		cfg.MaxPayload = 4 << 10
		cfg.Module.Egresses = append(cfg.Module.Egresses, router.EgressRule{Name: "fast", Subject: "test.fast", Delivery: router.AtLeastOnce})
		h := start(t, mode(cfg))
		limit = h.nc.MaxPayload()
		fast, out, dlq := h.subscribe("test.fast"), h.subscribe("test.out"), h.subscribe(router.EgressDeadLetterSubject)
		for _, s := range []string{"small-1", "big", "small-2"} {
			h.sendString("test/big", "a", s)
		}
		testwait.For(t, "the at-least-once records", func() bool { return len(fast.all()) == 2 })
		testwait.For(t, "the exactly-once records", func() bool { return len(out.all()) == 2 })
		for _, c := range []*collector{fast, out} {
			if got := c.strings(t); got[0] != "small-1" || got[1] != "small-2" {
				t.Errorf("records %q, want [small-1 small-2]", got)
			}
		}
		testwait.For(t, "the dead letters", func() bool { return len(dlq.all()) == 2 })
		subjects := map[string]bool{}
		for _, m := range dlq.all() {
			subjects[m.Header.Get(router.OriginalSubjectHeader)] = true
			if got := router.Reason(m.Header.Get(router.ErrorReasonHeader)); got != router.ReasonOversized {
				t.Errorf("dead letter reason %q (%s)", got, m.Header.Get(router.ErrorHeader))
			}
			if got := m.Header.Get(router.SourceHeader); got != "test/big/a" {
				t.Errorf("dead letter source %q", got)
			}
			if m.Header.Get(router.OriginalSizeHeader) == "" {
				t.Error("dead letter does not say the record's size")
			}
		}
		if !subjects["test.fast"] || !subjects["test.out"] {
			t.Errorf("dead letters for %v, want test.fast and test.out", subjects)
		}
		// A reply too large for NATS is answered with the error.
		v, _ := sdk.Encode(sdk.StringType, "big reply")
		subject, _ := router.DirectSubject("test/big", "a")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		reply, err := natsbus.Request(ctx, h.js, subject, nats.Header{router.TypenameHeader: {v.Typename}}, v.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := router.Reason(reply.Header.Get(router.ErrorReasonHeader)); got != router.ReasonOversized || len(reply.Data) != 0 {
			t.Errorf("answer to an oversized reply: reason %q, error %q, %d bytes", got, reply.Header.Get(router.ErrorHeader), len(reply.Data))
		}
	})
}

// TestIngressDeadLetterNearServerLimit publishes a message just under the
// server's limit but over the runtime's: its dead letter, with the error
// headers added, would not fit, so it is stored with its payload cut.
func TestIngressDeadLetterNearServerLimit(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	cfg := ingressConfig(t, ep.url(), bySubject)
	cfg.MaxPayload = 4 << 10
	h := start(t, cfg)
	data := make([]byte, h.nc.MaxPayload()-64)
	for i := range data {
		data[i] = 'x'
	}
	h.publish("sensors.big.reading", nil, data)
	h.publish("sensors.good.reading", nil, readingJSON("x", 1))
	testwait.For(t, "the good message", func() bool { return h.stateInt("test/sum", "good", "total") == 1 })
	testwait.For(t, "the dead letter", func() bool { return len(h.deadLetters()) == 1 })
	m := h.deadLetters()[0]
	if got := router.Reason(m.Header.Get(router.ErrorReasonHeader)); got != router.ReasonOversized {
		t.Errorf("reason %q", got)
	}
	if got := m.Header.Get(router.OriginalSizeHeader); got != fmt.Sprint(len(data)) {
		t.Errorf("original size header %q, want %d", got, len(data))
	}
	if len(m.Data) >= len(data) || !strings.HasPrefix(string(data), string(m.Data)) {
		t.Errorf("dead letter payload of %d bytes, want a prefix of the original", len(m.Data))
	}
}

// TestStartRejectsInvalidModule starts engines with modules built in Go
// (which, unlike a parsed YAML spec, are not checked before Start): the
// error names the field at fault rather than a JetStream failure.
func TestStartRejectsInvalidModule(t *testing.T) {
	rule := func(name, subject string) router.IngressRule {
		return router.IngressRule{Name: name, Subject: subject, Typename: "a/B",
			Targets: []router.TargetRule{{FunctionType: "test/sum", ID: router.IDFromSubjectToken(0)}}}
	}
	tests := []struct {
		name string
		edit func(m *spec.Module)
		want string
	}{
		{"ingress overlapping the direct ingress", func(m *spec.Module) {
			m.Ingresses = []router.IngressRule{rule("in", "twinflow.in.>")}
		}, "ingresses[0].subject"},
		{"ingress without a name", func(m *spec.Module) {
			m.Ingresses = []router.IngressRule{rule("", "a.b")}
		}, "ingresses[0].name"},
		{"egress on an ingress subject", func(m *spec.Module) {
			m.Ingresses = []router.IngressRule{rule("in", "data.>")}
			m.Egresses = append(m.Egresses, router.EgressRule{Name: "loop", Subject: "data.out"})
		}, `egresses[1].subject: "data.out" (with its keyed subjects data.out.<key>) overlaps the subject "data.>" of ingress "in"`},
		{"egress on a reserved subject", func(m *spec.Module) {
			m.Egresses = append(m.Egresses, router.EgressRule{Name: "dlq", Subject: "twinflow.dlq.x"})
		}, "egresses[1].subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(t, "http://127.0.0.1:1")
			tt.edit(cfg.Module)
			e, err := runtime.Start(context.Background(), cfg)
			if err == nil {
				e.Kill()
				t.Fatal("Start accepted the module")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestConfiguredIngressAcrossCrashAndRestart checks that a configured
// ingress resumes where its checkpoint left off: after a crash the messages
// since the checkpoint are replayed and count once, a replayed bad message
// is not dead-lettered twice, and after a clean restart nothing is read
// again.
func TestConfiguredIngressAcrossCrashAndRestart(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	cfg := ingressConfig(t, ep.url(), bySubject, byHeader)
	cfg.CheckpointInterval = time.Hour
	h := start(t, cfg)
	for _, v := range []int64{1, 2} {
		h.publish("sensors.c.reading", nil, readingJSON("x", v))
	}
	testwait.For(t, "the first total", func() bool { return h.stateInt("test/sum", "c", "total") == 3 })
	if _, err := h.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.publish("sensors.c.reading", nil, readingJSON("x", 4))
	h.publish("devices.header", nil, readingJSON("x", 1)) // no id: dead letter
	testwait.For(t, "the total before the crash", func() bool { return h.stateInt("test/sum", "c", "total") == 7 })
	testwait.For(t, "the dead letter", func() bool { return len(h.deadLetters()) == 1 })

	h.crash()
	testwait.For(t, "the replayed total", func() bool { return h.stateInt("test/sum", "c", "total") == 7 })
	h.publish("sensors.c.reading", nil, readingJSON("x", 8))
	testwait.For(t, "the total after the crash", func() bool { return h.stateInt("test/sum", "c", "total") == 15 })
	// The replayed bad message was read again (the ingress is past it) and
	// its dead letter was dropped as a duplicate.
	h.publish("devices.header", nil, readingJSON("x", 1))
	testwait.For(t, "the second dead letter", func() bool { return len(h.deadLetters()) == 2 })

	h.restart()
	h.publish("sensors.c.reading", nil, readingJSON("x", 16))
	testwait.For(t, "the total after the restart", func() bool { return h.stateInt("test/sum", "c", "total") == 31 })
	if n := len(h.deadLetters()); n != 2 {
		t.Errorf("%d dead letters, want 2", n)
	}
}
