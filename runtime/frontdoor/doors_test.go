package frontdoor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
)

// answerer stands in for the runtime behind the stream: it reads every
// batch the door writes and answers each request item on its reply
// subject, with "echo:" and the payload, or with the error header its
// payload names ("duplicate", "silent" for no answer at all).
func (r *rig) answerer(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		s, err := r.js.Stream(ctx, stream)
		if err != nil {
			return
		}
		for seq := uint64(1); ctx.Err() == nil; {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				time.Sleep(2 * time.Millisecond)
				continue
			}
			seq++
			var b twinflowv1.IngressBatch
			if proto.Unmarshal(m.Data, &b) != nil {
				continue
			}
			for _, it := range b.GetItems() {
				if it.GetReplyTo() == "" {
					continue
				}
				out := &nats.Msg{Subject: it.GetReplyTo(), Header: nats.Header{}}
				switch v := string(it.GetArgument().GetValue()); v {
				case "silent":
					continue
				case "duplicate":
					out.Header.Set(router.ErrorHeader, "seen")
					out.Header.Set(router.ErrorReasonHeader, string(router.ReasonDuplicate))
				case "fail":
					out.Header.Set(router.ErrorHeader, "terminal: no")
				default:
					out.Header.Set(router.TypenameHeader, it.GetArgument().GetTypename())
					out.Data = append([]byte("echo:"), v...)
				}
				_ = r.nc.PublishMsg(out)
			}
		}
	}()
}

func TestNATSDoor(t *testing.T) {
	r := newRig(t)
	d := r.door(t, Config{Serves: func(ft string) bool { return ft == "ns/f" }})
	n, err := ServeNATS(d, r.nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	r.answerer(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	request := func(subject string, h nats.Header, data string) *nats.Msg {
		t.Helper()
		reply, err := r.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Header: h, Data: []byte(data)})
		if err != nil {
			t.Fatalf("request to %s: %v", subject, err)
		}
		return reply
	}
	typed := nats.Header{router.TypenameHeader: {"ns/T"}}

	// send: the acknowledgement says where the message is, with its key.
	reply := request("twinflow.send.ns.f.a.b", nats.Header{router.TypenameHeader: {"ns/T"}, "Nats-Msg-Id": {"k-1"}}, "hello")
	var ack struct {
		Stream string `json:"stream"`
		Seq    uint64 `json:"seq"`
	}
	if err := json.Unmarshal(reply.Data, &ack); err != nil || ack.Stream != stream || ack.Seq == 0 ||
		reply.Header.Get(router.IdempotencyKeyHeader) != "k-1" || reply.Header.Get(router.ErrorHeader) != "" {
		t.Fatalf("send answered %q %v, want an acknowledgement with key k-1", reply.Data, reply.Header)
	}
	items := r.stored(t)[ack.Seq]
	want := &twinflowv1.IngressEnvelope{Target: &twinflowv1.Address{Type: "ns/f", Id: "a.b"},
		Argument: &twinflowv1.TypedValue{Typename: "ns/T", Value: []byte("hello")}, IdempotencyKey: "k-1"}
	if len(items) != 1 || !proto.Equal(items[0], want) {
		t.Errorf("stored %v, want %v", items, want)
	}
	// The other key header, and a generated key.
	reply = request("twinflow.send.ns.f.a", nats.Header{router.TypenameHeader: {"ns/T"}, router.IdempotencyKeyHeader: {"k-2"}}, "x")
	if reply.Header.Get(router.IdempotencyKeyHeader) != "k-2" {
		t.Errorf("key %q, want k-2", reply.Header.Get(router.IdempotencyKeyHeader))
	}
	if reply = request("twinflow.send.ns.f.a", typed, "x"); reply.Header.Get(router.IdempotencyKeyHeader) == "" {
		t.Error("no key generated")
	}

	// call: the function's reply comes to the requester's inbox.
	reply = request("twinflow.call.ns.f.a", typed, "ping")
	if string(reply.Data) != "echo:ping" || reply.Header.Get(router.TypenameHeader) != "ns/T" {
		t.Errorf("call answered %q %v, want the function's echo", reply.Data, reply.Header)
	}

	// Refusals carry the error and its reason.
	for _, tt := range []struct {
		subject string
		h       nats.Header
		reason  router.Reason
	}{
		{"twinflow.send.ns.f", typed, router.ReasonMissingID},
		{"twinflow.send.ns.f.a", nil, router.ReasonMissingTypename},
		{"twinflow.call.ns.g.a", typed, router.ReasonNoEndpoint},
		{"twinflow.send.ns.f.a", nats.Header{router.TypenameHeader: {"ns/T"}, "Nats-Msg-Id": {"bad\x7fkey"}}, router.ReasonBadIdempotencyKey},
	} {
		reply := request(tt.subject, tt.h, "x")
		if got := reply.Header.Get(router.ErrorReasonHeader); got != string(tt.reason) || reply.Header.Get(router.ErrorHeader) == "" || len(reply.Data) != 0 {
			t.Errorf("%s %v: answered %q %v, want reason %s", tt.subject, tt.h, reply.Data, reply.Header, tt.reason)
		}
	}
}

// httpRig is a door served over HTTP, with a token.
type httpRig struct {
	*rig
	d   *Door
	srv *httptest.Server
}

const token = "secret"

func newHTTPRig(t *testing.T, cfg Config) *httpRig {
	t.Helper()
	r := newRig(t)
	if cfg.Serves == nil {
		cfg.Serves = func(ft string) bool { return ft == "ns/f" }
	}
	cfg.MaxPayload = 1024
	d := r.door(t, cfg)
	h, err := NewHTTP(d, r.nc, HTTPOptions{InboxPrefix: "_INBOX_runtime", CallTimeout: 500 * time.Millisecond,
		Authorize: func(r *http.Request) error {
			if r.Header.Get("Authorization") != "Bearer "+token {
				return errors.New("the front door needs its token")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	r.answerer(t)
	return &httpRig{rig: r, d: d, srv: srv}
}

// post sends a plain HTTP request and returns the status, the headers and
// the body.
func (h *httpRig) post(t *testing.T, path string, hdr map[string]string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func TestHTTPDoorSend(t *testing.T) {
	h := newHTTPRig(t, Config{})
	status, hdr, body := h.post(t, "/send/ns/f/a%2Fb%20c", map[string]string{"Content-Type": "application/json", IdempotencyKeyHeader: "k-1"}, []byte(`{"n":1}`))
	var ack struct {
		Stream         string `json:"stream"`
		Sequence       uint64 `json:"sequence"`
		IdempotencyKey string `json:"idempotencyKey"`
	}
	if status != http.StatusAccepted || json.Unmarshal(body, &ack) != nil || ack.Stream != stream || ack.Sequence == 0 ||
		ack.IdempotencyKey != "k-1" || hdr.Get(IdempotencyKeyHeader) != "k-1" {
		t.Fatalf("send: %d %q, want 202 with the acknowledgement", status, body)
	}
	items := h.stored(t)[ack.Sequence]
	if len(items) != 1 || items[0].GetTarget().GetId() != "a/b c" || items[0].GetArgument().GetTypename() != "twinflow/json" ||
		string(items[0].GetArgument().GetValue()) != `{"n":1}` || items[0].GetIdempotencyKey() != "k-1" {
		t.Errorf("stored %v", items)
	}

	// The body's type decides the typename, unless the header names it.
	for _, tt := range []struct {
		hdr      map[string]string
		body     string
		typename string
		payload  string
	}{
		{map[string]string{"Content-Type": "text/plain; charset=utf-8"}, "ada", "twinflow/string", `"ada"`},
		{map[string]string{"Content-Type": "application/octet-stream"}, "\x00\x01", "twinflow/bytes", "\x00\x01"},
		{map[string]string{"Content-Type": "application/protobuf", router.TypenameHeader: "proto/a.B"}, "\x08\x01", "proto/a.B", "\x08\x01"},
		{map[string]string{"Content-Type": `application/x-protobuf; messageType="a.C"`}, "\x08\x02", "proto/a.C", "\x08\x02"},
		{map[string]string{"Content-Type": "application/json", router.TypenameHeader: "ns/Event"}, "[1]", "ns/Event", "[1]"},
		{map[string]string{"Content-Type": "", router.TypenameHeader: "ns/Raw"}, "raw", "ns/Raw", "raw"},
	} {
		status, _, body := h.post(t, "/send/ns/f/a", tt.hdr, []byte(tt.body))
		if status != http.StatusAccepted || json.Unmarshal(body, &ack) != nil {
			t.Errorf("%v: %d %s", tt.hdr, status, body)
			continue
		}
		it := h.stored(t)[ack.Sequence][0]
		if it.GetArgument().GetTypename() != tt.typename || string(it.GetArgument().GetValue()) != tt.payload || it.GetIdempotencyKey() == "" {
			t.Errorf("%v: stored %v, want %s %q with a generated key", tt.hdr, it, tt.typename, tt.payload)
		}
	}
}

// Every error is an HTTP status with a JSON body in Connect's error format,
// and says what was wrong.
func TestHTTPDoorErrors(t *testing.T) {
	h := newHTTPRig(t, Config{})
	json := map[string]string{"Content-Type": "application/json"}
	tests := []struct {
		name   string
		path   string
		hdr    map[string]string
		body   string
		status int
		code   string
	}{
		{"no token", "/send/ns/f/a", map[string]string{"Content-Type": "application/json", "Authorization": ""}, "1", 401, "unauthenticated"},
		{"wrong token", "/send/ns/f/a", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer nope"}, "1", 401, "unauthenticated"},
		{"bad JSON", "/send/ns/f/a", json, "{", 400, "invalid_argument"},
		{"bad function type", "/send/n$/f/a", json, "1", 400, "invalid_argument"},
		{"protobuf without typename", "/send/ns/f/a", map[string]string{"Content-Type": "application/protobuf"}, "", 400, "invalid_argument"},
		{"form body", "/send/ns/f/a", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "a=1", 415, "invalid_argument"},
		{"bad key", "/send/ns/f/a", map[string]string{"Content-Type": "application/json", IdempotencyKeyHeader: strings.Repeat("k", 300)}, "1", 400, "invalid_argument"},
		{"no endpoint", "/send/ns/g/a", json, "1", 404, "not_found"},
		{"oversized", "/send/ns/f/a", json, `"` + strings.Repeat("x", 2000) + `"`, 413, "resource_exhausted"},
		{"body over the limit", "/send/ns/f/a", json, `"` + strings.Repeat("x", 80<<10) + `"`, 413, "resource_exhausted"},
		{"bad call timeout", "/call/ns/f/a", map[string]string{"Content-Type": "application/json", TimeoutHeader: "soon"}, "1", 400, "invalid_argument"},
		{"duplicate call", "/call/ns/f/a", map[string]string{"Content-Type": "application/octet-stream"}, "duplicate", 409, "already_exists"},
		{"failed function", "/call/ns/f/a", map[string]string{"Content-Type": "application/octet-stream"}, "fail", 500, "internal"},
		{"no reply", "/call/ns/f/a", map[string]string{"Content-Type": "application/octet-stream"}, "silent", 504, "deadline_exceeded"},
	}
	for _, tt := range tests {
		status, hdr, body := h.post(t, tt.path, tt.hdr, []byte(tt.body))
		var e struct{ Code, Message string }
		if err := jsonUnmarshal(body, &e); err != nil || status != tt.status || e.Code != tt.code || e.Message == "" {
			t.Errorf("%s: %d %s, want %d with code %s and a message", tt.name, status, body, tt.status, tt.code)
		}
		if status == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", tt.name)
		}
	}
}

var jsonUnmarshal = json.Unmarshal

func TestHTTPDoorCall(t *testing.T) {
	h := newHTTPRig(t, Config{})
	status, hdr, body := h.post(t, "/call/ns/f/a", map[string]string{"Content-Type": "application/json", IdempotencyKeyHeader: "c-1"}, []byte(`{"q":1}`))
	if status != http.StatusOK || string(body) != `echo:{"q":1}` || hdr.Get(router.TypenameHeader) != "twinflow/json" || hdr.Get(IdempotencyKeyHeader) != "c-1" {
		t.Errorf("call: %d %v %q, want the function's reply", status, hdr, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("a reply that is not JSON has Content-Type %s", ct)
	}
}

// Backpressure: while intake is paused, the door answers 503 with
// Retry-After instead of queueing without bound.
func TestHTTPDoorUnavailableWhileIntakeIsPaused(t *testing.T) {
	h := newHTTPRig(t, Config{Limits: Limits{MaxUnread: 1, MaxWait: 200 * time.Millisecond}, Read: func() uint64 { return 0 }})
	json := map[string]string{"Content-Type": "application/json"}
	if status, _, body := h.post(t, "/send/ns/f/a", json, []byte("1")); status != http.StatusAccepted {
		t.Fatalf("first message: %d %s", status, body)
	}
	status, hdr, body := h.post(t, "/send/ns/f/a", json, []byte("2"))
	if status != http.StatusAccepted {
		t.Fatalf("second message: %d %s", status, body)
	}
	// Two unread: writes are held; the next waits, then is refused.
	status, hdr, body = h.post(t, "/send/ns/f/a", json, []byte("3"))
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || hdr.Get(IdempotencyKeyHeader) == "" {
		t.Fatalf("while intake is paused: %d %v %s, want 503 with Retry-After and the key", status, hdr, body)
	}
}

func TestConnectDoor(t *testing.T) {
	h := newHTTPRig(t, Config{})
	c := twinflowv1connect.NewIngressServiceClient(h.srv.Client(), h.srv.URL, connect.WithInterceptors(bearer(token)))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	target := &twinflowv1.Address{Type: "ns/f", Id: "a"}
	sent, err := c.Send(ctx, connect.NewRequest(&twinflowv1.SendRequest{Target: target,
		Argument: &twinflowv1.TypedValue{Typename: "ns/T", Value: []byte("x")}, IdempotencyKey: "s-1"}))
	if err != nil || sent.Msg.GetStream() != stream || sent.Msg.GetSequence() == 0 || sent.Msg.GetIdempotencyKey() != "s-1" {
		t.Fatalf("Send: %v %v", sent, err)
	}
	called, err := c.Call(ctx, connect.NewRequest(&twinflowv1.CallRequest{Target: target,
		Argument: &twinflowv1.TypedValue{Typename: "ns/T", Value: []byte("ping")}}))
	if err != nil || string(called.Msg.GetResult().GetValue()) != "echo:ping" || called.Msg.GetResult().GetTypename() != "ns/T" || called.Msg.GetIdempotencyKey() == "" {
		t.Fatalf("Call: %v %v", called, err)
	}
	for _, tt := range []struct {
		req  *twinflowv1.CallRequest
		code connect.Code
	}{
		{&twinflowv1.CallRequest{Target: &twinflowv1.Address{Type: "ns/g", Id: "a"}, Argument: &twinflowv1.TypedValue{Typename: "ns/T"}}, connect.CodeNotFound},
		{&twinflowv1.CallRequest{Target: target, Argument: &twinflowv1.TypedValue{Typename: "ns/T", Value: []byte("duplicate")}}, connect.CodeAlreadyExists},
		{&twinflowv1.CallRequest{Target: target, Argument: &twinflowv1.TypedValue{Typename: "ns/T", Value: []byte("silent")}, TimeoutMillis: 100}, connect.CodeDeadlineExceeded},
		{&twinflowv1.CallRequest{Target: target}, connect.CodeInvalidArgument},
	} {
		if _, err := c.Call(ctx, connect.NewRequest(tt.req)); connect.CodeOf(err) != tt.code {
			t.Errorf("Call(%v): %v, want %s", tt.req, err, tt.code)
		}
	}
	// Without the token.
	anon := twinflowv1connect.NewIngressServiceClient(h.srv.Client(), h.srv.URL)
	if _, err := anon.Send(ctx, connect.NewRequest(&twinflowv1.SendRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("Send without the token: %v, want unauthenticated", err)
	}
}

// bearer adds the token to every call.
func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}
