package runtime_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/internal/testwait"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/console"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/sdk"
)

// The console's admin API: listing addresses from the index, describing
// one, sending messages, dead letters and their replay, the platform's
// samples; and how a browser logs in.

var (
	tallySpec  = sdk.ValueSpec[int64]{Name: "tally", Type: sdk.Int64Type}
	tickType   = sdk.JSONType[string]("test/Tick")
	replyType  = sdk.JSONType[map[string]any]("twinflow/json")
	anyJSON    = sdk.JSONType[any]("twinflow/json")
	addressPB  = sdk.ProtoType[*twinflowv1.Address]()
	consoleReg = func(t *testing.T, accept *atomic.Bool) *sdk.Registry {
		reg := sdk.NewRegistry()
		// tally adds what it gets; 0 deletes its state. It keeps a delayed
		// tick pending and tells its egress.
		must(t, reg.Register("test/tally", sdk.FunctionFunc(func(ctx sdk.Context, msg sdk.Message) error {
			if msg.Typename() == tickType.Typename() {
				return nil
			}
			n, err := sdk.As(msg, sdk.Int64Type)
			if err != nil {
				return sdk.Terminal(err)
			}
			if n == 0 {
				tallySpec.Clear(ctx)
				return nil
			}
			cur, _, err := tallySpec.Get(ctx)
			if err != nil {
				return err
			}
			if err := tallySpec.Set(ctx, cur+n); err != nil {
				return err
			}
			if err := sdk.SendAfter(ctx, time.Hour, ctx.Self(), tickType, "tick", "tick"); err != nil {
				return err
			}
			return sdk.Egress(ctx, "out", sdk.Int64Type, cur+n)
		}), tallySpec))
		// picky takes messages only while accept is set; it fails them for
		// good otherwise.
		must(t, reg.Register("test/picky", sdk.FunctionFunc(func(ctx sdk.Context, msg sdk.Message) error {
			if !accept.Load() {
				return sdk.Terminal(errors.New("not accepting yet"))
			}
			cur, _, err := tallySpec.Get(ctx)
			if err != nil {
				return err
			}
			return tallySpec.Set(ctx, cur+1)
		}), tallySpec))
		// echo answers with what it got and its typename.
		must(t, reg.Register("test/echo", sdk.FunctionFunc(func(ctx sdk.Context, msg sdk.Message) error {
			if msg.Typename() == addressPB.Typename() {
				a, err := sdk.As(msg, addressPB)
				if err != nil {
					return sdk.Terminal(err)
				}
				return sdk.Reply(ctx, addressPB, a)
			}
			v, err := sdk.As(msg, anyJSON)
			if err != nil {
				return sdk.Terminal(err)
			}
			return sdk.Reply(ctx, replyType, map[string]any{"echo": v})
		})))
		return reg
	}
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func startConsole(t *testing.T, accept *atomic.Bool, pages map[string]string) *harness {
	t.Helper()
	ep := serve(t, consoleReg(t, accept))
	cfg := baseConfig(t, ep.url())
	if pages != nil {
		fsys := fstest.MapFS{}
		for name, body := range pages {
			fsys[name] = &fstest.MapFile{Data: []byte(body)}
		}
		cfg.ConsolePages = map[string]fs.FS{"app": fsys}
	}
	return start(t, cfg)
}

func list(t *testing.T, h *harness, req *twinflowv1.ListAddressesRequest) *twinflowv1.ListAddressesResponse {
	t.Helper()
	resp, err := h.admin.ListAddresses(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("ListAddresses(%v): %v", req, err)
	}
	return resp.Msg
}

// listAll pages through the addresses of a type.
func listAll(t *testing.T, h *harness, functionType, prefix string, limit int32) []string {
	t.Helper()
	var ids []string
	after := ""
	for {
		page := list(t, h, &twinflowv1.ListAddressesRequest{Type: functionType, Prefix: prefix, After: after, Limit: limit})
		for _, a := range page.GetAddresses() {
			ids = append(ids, a.GetId())
		}
		if page.GetNextAfter() == "" {
			return ids
		}
		if len(page.GetAddresses()) != int(limit) {
			t.Fatalf("a page of %d addresses with a next page; want %d", len(page.GetAddresses()), limit)
		}
		after = page.GetNextAfter()
	}
}

// TestListAddresses lists the addresses of a function type a page at a
// time, by prefix, with their state; deleted state leaves the list; and
// after a crash the list is the restored checkpoint's.
func TestListAddresses(t *testing.T) {
	h := startConsole(t, &atomic.Bool{}, nil)
	var want []string
	for i := range 250 {
		id := fmt.Sprintf("t-%03d", i)
		want = append(want, id)
		h.sendInt("test/tally", id, int64(i+1))
	}
	h.sendInt("test/picky", "other-type", 1) // dead-lettered: no state
	testwait.For(t, "the tallies", func() bool { return h.stateInt("test/tally", "t-249", "tally") == 250 })
	testwait.For(t, "every tally", func() bool {
		return list(t, h, &twinflowv1.ListAddressesRequest{Type: "test/tally", Limit: 1}).GetTotal() == 250
	})
	if got := listAll(t, h, "test/tally", "", 100); !slices.Equal(got, want) {
		t.Fatalf("paged through %d addresses, want the %d sent, in id order: %v", len(got), len(want), got)
	}
	if got := listAll(t, h, "test/tally", "t-12", 3); !slices.Equal(got, []string{"t-120", "t-121", "t-122", "t-123", "t-124", "t-125", "t-126", "t-127", "t-128", "t-129"}) {
		t.Errorf("addresses with the prefix t-12: %v", got)
	}
	page := list(t, h, &twinflowv1.ListAddressesRequest{Type: "test/tally", Prefix: "t-00", Limit: 2, StateNames: []string{"tally"}})
	if len(page.GetAddresses()) != 2 || page.GetNextAfter() != "t-001" {
		t.Fatalf("first page of t-00: %v", page)
	}
	if v := page.GetAddresses()[1].GetValues(); len(v) != 1 || v[0].GetName() != "tally" || v[0].GetJson() != "2" {
		t.Errorf("state of t-001 in the listing: %v, want tally 2 as JSON", v)
	}
	if n := list(t, h, &twinflowv1.ListAddressesRequest{Type: "test/picky"}).GetTotal(); n != 0 {
		t.Errorf("%d addresses of test/picky, whose every message failed; want none", n)
	}

	// Deleting an address's state takes it out of the list.
	h.sendInt("test/tally", "t-000", 0)
	testwait.For(t, "t-000 to leave the list", func() bool {
		return list(t, h, &twinflowv1.ListAddressesRequest{Type: "test/tally", Limit: 1}).GetAddresses()[0].GetId() == "t-001"
	})
	if n := list(t, h, &twinflowv1.ListAddressesRequest{Type: "test/tally", Limit: 1}).GetTotal(); n != 249 {
		t.Errorf("%d addresses after one deleted its state, want 249", n)
	}

	// After a crash the index is restored with the state: the deletion
	// checkpointed stays, and a message processed after the checkpoint is
	// read again and indexes its address again.
	if _, err := h.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.cfg.CheckpointInterval = time.Hour // no checkpoint may take the new address in
	h.crash()
	h.sendInt("test/tally", "zz-new", 1)
	testwait.For(t, "the new address", func() bool { return h.stateInt("test/tally", "zz-new", "tally") == 1 })
	h.crash()
	testwait.For(t, "the new address, after the crash", func() bool { return h.stateInt("test/tally", "zz-new", "tally") == 1 })
	if got := listAll(t, h, "test/tally", "", 1000); !slices.Equal(got, append(want[1:], "zz-new")) {
		t.Errorf("after the crash: %d addresses (last %q), want the %d of the checkpoint and zz-new", len(got), got[len(got)-1], len(want)-1)
	}
	if n := list(t, h, &twinflowv1.ListAddressesRequest{Type: "test/tally", Limit: 1}).GetTotal(); n != 250 {
		t.Errorf("%d addresses counted after the crash, want 250", n)
	}

	// Bad requests say what is wrong.
	for _, req := range []*twinflowv1.ListAddressesRequest{{Type: "nonamespace"}, {Type: "a/b", Limit: 5000}, {Type: "a/b", Limit: -1}} {
		if _, err := h.admin.ListAddresses(context.Background(), connect.NewRequest(req)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("ListAddresses(%v) = %v, want invalid_argument", req, err)
		}
	}
}

// TestDescribeAndSend describes an address (state, delayed messages,
// activity) and sends messages and requests through the admin API.
func TestDescribeAndSend(t *testing.T) {
	h := startConsole(t, &atomic.Bool{}, nil)
	ctx := context.Background()
	send, err := h.admin.SendMessage(ctx, connect.NewRequest(&twinflowv1.SendMessageRequest{
		Address: &twinflowv1.Address{Type: "test/tally", Id: "d"}, Typename: sdk.Int64Type.Typename(), Json: "7"}))
	if err != nil {
		t.Fatal(err)
	}
	if send.Msg.GetSequence() == 0 {
		t.Errorf("SendMessage answered sequence 0")
	}
	testwait.For(t, "the tally", func() bool { return h.stateInt("test/tally", "d", "tally") == 7 })
	resp, err := h.admin.DescribeAddress(ctx, connect.NewRequest(&twinflowv1.DescribeAddressRequest{Address: &twinflowv1.Address{Type: "test/tally", Id: "d"}}))
	if err != nil {
		t.Fatal(err)
	}
	d := resp.Msg
	if len(d.GetValues()) != 1 || d.GetValues()[0].GetJson() != "7" {
		t.Errorf("values %v, want tally 7", d.GetValues())
	}
	if len(d.GetDelayed()) != 1 || d.GetDelayed()[0].GetCancellationToken() != "tick" || d.GetDelayed()[0].GetJson() != `"tick"` ||
		d.GetDelayed()[0].GetTarget().GetId() != "d" {
		t.Errorf("delayed %v, want the tick to itself", d.GetDelayed())
	}
	if !d.GetActivityKnown() || len(d.GetReceived()) != 1 || d.GetReceived()[0].GetJson() != "7" || d.GetReceived()[0].GetKind() != "received" {
		t.Errorf("received %v (known %v), want the message 7", d.GetReceived(), d.GetActivityKnown())
	}
	var kinds []string
	for _, e := range d.GetSent() {
		kinds = append(kinds, e.GetKind())
	}
	if !slices.Equal(kinds, []string{"delayed", "egress"}) {
		t.Errorf("sent %v, want the delayed tick and the egress record", kinds)
	}

	// A request, with a protobuf message written as JSON, answered.
	reply, err := h.admin.SendMessage(ctx, connect.NewRequest(&twinflowv1.SendMessageRequest{
		Address: &twinflowv1.Address{Type: "test/echo", Id: "e"}, Typename: addressPB.Typename(), Json: `{"type": "a/b", "id": "c"}`, Request: true}))
	if err != nil {
		t.Fatal(err)
	}
	if j := strings.ReplaceAll(reply.Msg.GetReplyJson(), " ", ""); j != `{"type":"a/b","id":"c"}` || reply.Msg.GetReply().GetTypename() != addressPB.Typename() {
		t.Errorf("reply %v, want the address back", reply.Msg)
	}
	// A request that fails for good is answered with the error.
	reply, err = h.admin.SendMessage(ctx, connect.NewRequest(&twinflowv1.SendMessageRequest{
		Address: &twinflowv1.Address{Type: "test/picky", Id: "p"}, Request: true, Json: "{}"}))
	if err != nil || !strings.Contains(reply.Msg.GetReplyError(), "not accepting yet") {
		t.Errorf("request to a failing function: %v, %v; want its error", reply.Msg, err)
	}
	for _, req := range []*twinflowv1.SendMessageRequest{
		{Address: &twinflowv1.Address{Type: "test/echo", Id: "e"}, Json: "{"},
		{Address: &twinflowv1.Address{Type: "test/echo", Id: "e"}, Typename: "proto/no.Such", Json: "{}"},
		{Address: &twinflowv1.Address{Type: "test/echo"}, Json: "{}"},
	} {
		if _, err := h.admin.SendMessage(ctx, connect.NewRequest(req)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("SendMessage(%v) = %v, want invalid_argument", req, err)
		}
	}
}

func deadLetters(t *testing.T, h *harness) *twinflowv1.ListDeadLettersResponse {
	t.Helper()
	resp, err := h.admin.ListDeadLetters(context.Background(), connect.NewRequest(&twinflowv1.ListDeadLettersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

func replay(t *testing.T, h *harness, seqs ...uint64) []*twinflowv1.ReplayResult {
	t.Helper()
	resp, err := h.admin.ReplayDeadLetters(context.Background(), connect.NewRequest(&twinflowv1.ReplayDeadLettersRequest{Sequences: seqs}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetResults()
}

// TestReplayDeadLetters replays a function dead letter once, however often
// it is asked: the replay record refuses a second replay, and without the
// record the stream's duplicate window drops it; and an ingress dead letter
// goes back to its original subject.
func TestReplayDeadLetters(t *testing.T) {
	var accept atomic.Bool
	h := startConsole(t, &accept, nil)
	h.sendInt("test/picky", "x", 1)
	var dl *twinflowv1.DeadLetter
	testwait.For(t, "the dead letter", func() bool {
		r := deadLetters(t, h)
		if len(r.GetDeadLetters()) == 1 {
			dl = r.GetDeadLetters()[0]
		}
		return dl != nil
	})
	if dl.GetTarget() != "test/picky/x" || dl.GetReplaySubject() != "twinflow.in.test.picky.x" || !strings.Contains(dl.GetError(), "not accepting yet") ||
		dl.GetJson() != "1" || dl.GetSubject() != router.FunctionDeadLetterSubject {
		t.Fatalf("dead letter %v", dl)
	}
	accept.Store(true)
	if r := replay(t, h, dl.GetSequence()); r[0].GetOutcome() != twinflowv1.ReplayOutcome_REPLAY_OUTCOME_REPLAYED || r[0].GetSubject() != "twinflow.in.test.picky.x" {
		t.Fatalf("replay: %v", r)
	}
	testwait.For(t, "the replayed message", func() bool { return h.stateInt("test/picky", "x", "tally") == 1 })
	// A second replay finds the record of the first.
	if r := replay(t, h, dl.GetSequence()); r[0].GetOutcome() != twinflowv1.ReplayOutcome_REPLAY_OUTCOME_ALREADY_REPLAYED ||
		!strings.HasPrefix(r[0].GetDetail(), "replayed at ") {
		t.Fatalf("second replay: %v", r)
	}
	list := deadLetters(t, h)
	if list.GetTotal() != 1 || list.GetReplayed() != 1 || list.GetDeadLetters()[0].GetReplayedAtUnixMillis() == 0 {
		t.Errorf("after the replay: %d dead letters, %d replayed, replayed at %d; want 1, 1 and a time",
			list.GetTotal(), list.GetReplayed(), list.GetDeadLetters()[0].GetReplayedAtUnixMillis())
	}

	// Without its record (as when the runtime stopped between the replay
	// and the record), a replay within the duplicate window is dropped.
	s, err := h.ops.Stream(context.Background(), runtime.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(context.Background(), jetstream.WithPurgeSubject("twinflow.dlq.replayed."+strconv.FormatUint(dl.GetSequence(), 10))); err != nil {
		t.Fatal(err)
	}
	if r := replay(t, h, dl.GetSequence()); r[0].GetOutcome() != twinflowv1.ReplayOutcome_REPLAY_OUTCOME_ALREADY_REPLAYED {
		t.Fatalf("replay without its record: %v", r)
	}
	// A message sent after that one comes after it in the stream: once it
	// is applied, a second copy of the replay would have been too.
	h.sendInt("test/picky", "x", 1)
	testwait.For(t, "the next message", func() bool { return h.stateInt("test/picky", "x", "tally") >= 2 })
	if n := h.stateInt("test/picky", "x", "tally"); n != 2 {
		t.Errorf("tally %d after a replay and a message, want 2: the dead letter was replayed twice", n)
	}

	// An ingress dead letter (no typename) goes back to its subject with
	// its headers, and the replay's id.
	m := nats.NewMsg("twinflow.in.test.picky.y")
	m.Header.Set("X-Mine", "kept")
	m.Data = []byte("1")
	if _, err := h.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var ingress *twinflowv1.DeadLetter
	testwait.For(t, "the ingress dead letter", func() bool {
		for _, d := range deadLetters(t, h).GetDeadLetters() {
			if d.GetSubject() == router.DeadLetterSubject {
				ingress = d
			}
		}
		return ingress != nil
	})
	if ingress.GetReason() == "" || ingress.GetReplaySubject() != "twinflow.in.test.picky.y" || ingress.GetHeaders()["X-Mine"] != "kept" {
		t.Fatalf("ingress dead letter %v", ingress)
	}
	// The stream is trimmed after each checkpoint: the replayed message is
	// seen on its subject as it is published.
	var seen collector
	sub, err := h.ops.Conn().Subscribe("twinflow.in.test.picky.y", func(m *nats.Msg) {
		seen.mu.Lock()
		seen.msgs = append(seen.msgs, m)
		seen.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := h.ops.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if r := replay(t, h, ingress.GetSequence()); r[0].GetOutcome() != twinflowv1.ReplayOutcome_REPLAY_OUTCOME_REPLAYED {
		t.Fatalf("replaying the ingress dead letter: %v", r)
	}
	testwait.For(t, "the replayed message on its subject", func() bool { return len(seen.all()) > 0 })
	got := seen.all()[0]
	if got.Header.Get("X-Mine") != "kept" || got.Header.Get(runtime.ReplayOfHeader) != strconv.FormatUint(ingress.GetSequence(), 10) ||
		!strings.HasPrefix(got.Header.Get(nats.MsgIdHdr), "twinflow-dlq-replay-") || string(got.Data) != "1" {
		t.Errorf("the replayed message: headers %v, data %q", got.Header, got.Data)
	}

	// What cannot be replayed says why.
	rec, err := s.GetLastMsgForSubject(context.Background(), "twinflow.dlq.replayed."+strconv.FormatUint(ingress.GetSequence(), 10))
	if err != nil {
		t.Fatalf("the record of the ingress dead letter's replay: %v", err)
	}
	r := replay(t, h, 9999, rec.Sequence)
	if r[0].GetOutcome() != twinflowv1.ReplayOutcome_REPLAY_OUTCOME_NOT_FOUND || r[1].GetOutcome() == twinflowv1.ReplayOutcome_REPLAY_OUTCOME_REPLAYED {
		t.Errorf("replaying a missing sequence and a replay record: %v", r)
	}
}

// TestGetPlatform reads the runtime's samples of itself after some work.
func TestGetPlatform(t *testing.T) {
	h := startConsole(t, &atomic.Bool{}, nil)
	for i := range 50 {
		h.sendInt("test/tally", fmt.Sprint("p", i), 1)
	}
	testwait.For(t, "the tallies", func() bool { return h.stateInt("test/tally", "p49", "tally") == 1 })
	var p *twinflowv1.GetPlatformResponse
	var fn *twinflowv1.FunctionSample
	testwait.For(t, "a sample of test/tally's calls", func() bool {
		resp, err := h.admin.GetPlatform(context.Background(), connect.NewRequest(&twinflowv1.GetPlatformRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		p = resp.Msg
		for _, s := range p.GetSamples() {
			for _, f := range s.GetFunctions() {
				if f.GetType() == "test/tally" && f.GetInvocationsPerSecond() > 0 && f.GetP50Millis() > 0 {
					fn = f
				}
			}
		}
		return fn != nil
	})
	if fn.GetP99Millis() < fn.GetP50Millis() || fn.GetCallsPerSecond() <= 0 {
		t.Errorf("function sample %v", fn)
	}
	last := p.GetSamples()[len(p.GetSamples())-1]
	if len(p.GetShards()) != 2 || p.GetShards()[1].GetKeyGroupHi() != 16 || len(last.GetShards()) != 2 {
		t.Errorf("shards %v, sampled %v", p.GetShards(), last.GetShards())
	}
	if i := slices.IndexFunc(last.GetStreams(), func(s *twinflowv1.StreamSample) bool { return s.GetStream() == runtime.DirectStream }); i < 0 ||
		last.GetStreams()[i].GetLastSequence() < 50 {
		t.Errorf("streams %v, want %s with its 50 messages", last.GetStreams(), runtime.DirectStream)
	}
	if len(last.GetEndpoints()) != 1 || !last.GetEndpoints()[0].GetReachable() {
		t.Errorf("endpoints %v", last.GetEndpoints())
	}
	if len(p.GetCheckpoints()) == 0 || p.GetKeyGroups() != 16 {
		t.Errorf("%d checkpoints, %d key groups", len(p.GetCheckpoints()), p.GetKeyGroups())
	}
}

// browser is an HTTP client that keeps cookies, as a browser does, and
// sends the Origin a browser's pages send.
type browser struct {
	t      *testing.T
	base   string
	client *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, base: base, client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(method, path string, body io.Reader, header map[string]string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func (b *browser) login(token string, origin string) *http.Response {
	b.t.Helper()
	resp, _ := b.do("POST", "/ui/login", strings.NewReader(url.Values{"token": {token}, "next": {"/ui/apps/app/"}}.Encode()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": origin})
	return resp
}

// api calls an admin method with the console's cookie.
func (b *browser) api(method, csrf, origin string) (*http.Response, string) {
	b.t.Helper()
	h := map[string]string{"Content-Type": "application/json", "Origin": origin}
	if csrf != "" {
		h[console.CSRFHeader] = csrf
	}
	return b.do("POST", "/"+twinflowv1connect.AdminServiceName+"/"+method, strings.NewReader("{}"), h)
}

// TestConsoleLogin checks how a browser gets in: the login page turns the
// admin token into a session cookie scripts cannot read; pages want it;
// API calls with it need the CSRF token and the runtime's own origin; a
// rotated token ends it; the live feed streams samples.
func TestConsoleLogin(t *testing.T) {
	h := startConsole(t, &atomic.Bool{}, map[string]string{"index.html": "<p>the app's page</p>"})
	base := h.e.AdminURL()
	origin := base
	tokenBytes, err := os.ReadFile(h.e.Access().AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	b := newBrowser(t, base)

	// Without a session: pages go to the login page, the rest is refused;
	// the login page and the static files are open.
	if resp, _ := b.do("GET", "/ui/", nil, map[string]string{"Accept": "text/html"}); resp.StatusCode != http.StatusSeeOther ||
		resp.Header.Get("Location") != "/ui/login?next=%2Fui%2F" {
		t.Errorf("/ui/ without a session: %s to %q, want a redirect to the login page", resp.Status, resp.Header.Get("Location"))
	}
	for _, path := range []string{"/ui/apps/app/", "/ui/events", "/ui/session"} {
		if resp, _ := b.do("GET", path, nil, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without a session: %s, want 401", path, resp.Status)
		}
	}
	if resp, body := b.do("GET", "/ui/login", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, `<label for="token">Admin token</label>`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("login page: %s, CSP %q", resp.Status, resp.Header.Get("Content-Security-Policy"))
	}
	if resp, _ := b.do("GET", "/ui/static/css/console.css", nil, nil); resp.StatusCode != 200 {
		t.Errorf("static file: %s", resp.Status)
	}
	if resp, _ := b.api("ListFunctionTypes", "", origin); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API without a session or token: %s", resp.Status)
	}

	// Logging in: a wrong token, another site's form, then the right one.
	if resp := b.login("wrong", origin); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with a wrong token: %s", resp.Status)
	}
	if resp := b.login(token, "http://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("login from another origin: %s", resp.Status)
	}
	resp := b.login(token, origin)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/apps/app/" {
		t.Fatalf("login: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	cookie := resp.Header.Get("Set-Cookie")
	for _, attr := range []string{"twinflow-session=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(cookie, attr) {
			t.Errorf("session cookie %q lacks %s", cookie, attr)
		}
	}
	if strings.Contains(cookie, token) {
		t.Errorf("the session cookie holds the admin token")
	}
	if resp, body := b.do("GET", "/ui/apps/app/", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, "the app's page") {
		t.Errorf("the app's page with a session: %s %q", resp.Status, body)
	}
	resp, body := b.do("GET", "/ui/session", nil, nil)
	csrf := ""
	if i := strings.Index(body, `"csrf":"`); i >= 0 {
		csrf, _, _ = strings.Cut(body[i+len(`"csrf":"`):], `"`)
	}
	if resp.StatusCode != 200 || csrf == "" || !strings.Contains(body, `"apps":["app"]`) {
		t.Fatalf("session: %s %s", resp.Status, body)
	}

	// API calls with the cookie need the CSRF token, from the runtime's
	// own origin.
	if resp, body := b.api("ListFunctionTypes", "", origin); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, console.CSRFHeader) {
		t.Errorf("API with the cookie and no CSRF token: %s %s", resp.Status, body)
	}
	if resp, _ := b.api("ListFunctionTypes", "x"+csrf, origin); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API with a wrong CSRF token: %s", resp.Status)
	}
	if resp, _ := b.api("ListFunctionTypes", csrf, "http://evil.example"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API from another origin: %s", resp.Status)
	}
	if resp, body := b.api("ListFunctionTypes", csrf, origin); resp.StatusCode != 200 {
		t.Errorf("API with the cookie and the CSRF token: %s %s", resp.Status, body)
	}

	// The live feed streams samples.
	req, err := http.NewRequest("GET", base+"/ui/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events, err := b.client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if events.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("events: %s", events.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(events.Body)
	for sc.Scan() && sc.Text() != "event: sample" {
	}
	if !sc.Scan() || !strings.Contains(sc.Text(), `"atUnixMillis"`) {
		t.Errorf("no sample on the live feed: %q, %v", sc.Text(), sc.Err())
	}
	events.Body.Close()

	// Rotating the token ends the session; logging out ends it too.
	if err := secrets.RotateAdminToken(h.cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	newToken, err := secrets.ReadAdminToken(h.e.Access().AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := b.api("ListFunctionTypes", csrf, origin); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API with a session of the old token: %s", resp.Status)
	}
	b.login(newToken, origin)
	resp, body = b.do("GET", "/ui/session", nil, nil)
	if i := strings.Index(body, `"csrf":"`); i >= 0 {
		csrf, _, _ = strings.Cut(body[i+len(`"csrf":"`):], `"`)
	}
	if resp, _ := b.do("POST", "/ui/logout", nil, map[string]string{console.CSRFHeader: csrf, "Origin": origin}); resp.StatusCode != http.StatusNoContent ||
		!strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %s %q", resp.Status, resp.Header.Get("Set-Cookie"))
	}
	if resp, _ := b.do("GET", "/ui/session", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("session after logging out: %s", resp.Status)
	}
}
