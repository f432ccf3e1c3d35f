package router

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// testRules covers every kind of rule: fixed typename, typename header,
// default typename header; ids from subject tokens, headers and JSON fields;
// fan-out to two function types.
func testRules() []IngressRule {
	return []IngressRule{
		{
			Name:     "metrics",
			Subject:  "datacenter.metrics.*.*",
			Typename: "datacenter/ServerMetricReport",
			Targets: []TargetRule{
				{FunctionType: "datacenter/server", ID: IDFromSubjectToken(3)},
				{FunctionType: "datacenter/rack", ID: IDFromHeader("X-Rack")},
			},
		},
		{
			Name:           "events",
			Subject:        "events.>",
			TypenameHeader: "X-Type",
			Targets: []TargetRule{
				{FunctionType: "datacenter/server", ID: IDFromJSONField("server.id")},
				{FunctionType: "datacenter/rack", ID: IDFromJSONField("rack")},
			},
		},
		{
			Name:    "plain",
			Subject: "plain.*",
			Targets: []TargetRule{{FunctionType: "ns/f", ID: IDFromSubjectToken(1)}},
		},
		{
			Name:     "deep",
			Subject:  "deep.>",
			Typename: "ns/T",
			Targets: []TargetRule{
				{FunctionType: "ns/f", ID: IDFromSubjectToken(3)},
				{FunctionType: "ns/g", ID: IDFromJSONField("servers.1.id")},
			},
		},
	}
}

func newTestRouter(t testing.TB) *Router {
	t.Helper()
	r, err := New(testRules(), Limits{MaxPayload: 64})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func h(kv ...string) map[string][]string {
	m := map[string][]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = append(m[kv[i]], kv[i+1])
	}
	return m
}

func TestRoute(t *testing.T) {
	r := newTestRouter(t)
	tests := []struct {
		name    string
		ingress string
		msg     Message
		want    Routed
	}{
		{
			name:    "subject token and header, fan-out",
			ingress: "metrics",
			msg:     Message{Subject: "datacenter.metrics.eu1.srv-7", Header: h("X-Rack", "r-3"), Data: []byte("x")},
			want: Routed{
				Targets:  []Address{{"datacenter/server", "srv-7"}, {"datacenter/rack", "r-3"}},
				Typename: "datacenter/ServerMetricReport",
				Payload:  []byte("x"),
			},
		},
		{
			name:    "header names match case-insensitively as a fallback",
			ingress: "metrics",
			msg:     Message{Subject: "datacenter.metrics.eu1.srv-7", Header: h("x-rack", "r-3")},
			want: Routed{
				Targets:  []Address{{"datacenter/server", "srv-7"}, {"datacenter/rack", "r-3"}},
				Typename: "datacenter/ServerMetricReport",
			},
		},
		{
			name:    "exact header name wins",
			ingress: "metrics",
			msg:     Message{Subject: "datacenter.metrics.eu1.srv-7", Header: h("x-rack", "low", "X-Rack", "exact")},
			want: Routed{
				Targets:  []Address{{"datacenter/server", "srv-7"}, {"datacenter/rack", "exact"}},
				Typename: "datacenter/ServerMetricReport",
			},
		},
		{
			name:    "JSON fields, string and number, typename header, reply",
			ingress: "events",
			msg: Message{
				Subject: "events.a.b.c", Header: h("X-Type", "datacenter/Event"),
				Data:  []byte(`{"server":{"id":"s1"},"rack":1.50}`),
				Reply: "_INBOX.1",
			},
			want: Routed{
				Targets:  []Address{{"datacenter/server", "s1"}, {"datacenter/rack", "1.50"}},
				Typename: "datacenter/Event",
				Payload:  []byte(`{"server":{"id":"s1"},"rack":1.50}`),
				ReplyTo:  "_INBOX.1",
			},
		},
		{
			name:    "JSON ids with U+FFFD sent as such, and a surrogate pair",
			ingress: "deep",
			msg:     Message{Subject: "deep.a.b.c", Data: []byte(`{"servers":[0,{"id":"\ufffd\ud83d\ude00�"}]}`)},
			want: Routed{
				Targets:  []Address{{"ns/f", "c"}, {"ns/g", "\ufffd\U0001F600\ufffd"}},
				Typename: "ns/T",
				Payload:  []byte(`{"servers":[0,{"id":"\ufffd\ud83d\ude00�"}]}`),
			},
		},
		{
			name:    "reply subject from header",
			ingress: "plain",
			msg:     Message{Subject: "plain.x", Header: h("Twinflow-Typename", "ns/T", "Twinflow-Reply-To", "_INBOX.2")},
			want:    Routed{Targets: []Address{{"ns/f", "x"}}, Typename: "ns/T", ReplyTo: "_INBOX.2"},
		},
		{
			name:    "default typename header",
			ingress: "plain",
			msg:     Message{Subject: "plain.x", Header: h("Twinflow-Typename", "a.b/c.D")},
			want:    Routed{Targets: []Address{{"ns/f", "x"}}, Typename: "a.b/c.D"},
		},
		{
			name:    "token under > and array index",
			ingress: "deep",
			msg:     Message{Subject: "deep.a.b.c.d", Data: []byte(`{"servers":[{"id":1},{"id":-2e3}]}`)},
			want: Routed{
				Targets:  []Address{{"ns/f", "c"}, {"ns/g", "-2e3"}},
				Typename: "ns/T",
				Payload:  []byte(`{"servers":[{"id":1},{"id":-2e3}]}`),
			},
		},
		{
			name:    "direct",
			ingress: DirectIngress,
			msg:     Message{Subject: "twinflow.in.datacenter.server.srv.0042", Header: h("Twinflow-Typename", "twinflow/json"), Data: []byte("{}"), Reply: "_INBOX_client.r"},
			want:    Routed{Targets: []Address{{"datacenter/server", "srv.0042"}}, Typename: "twinflow/json", Payload: []byte("{}"), ReplyTo: "_INBOX_client.r"},
		},
		{
			name:    "envelope",
			ingress: DirectIngress,
			msg:     Message{Subject: EnvelopeSubject, Data: envelope("datacenter/server", "id with spaces", "twinflow/json", "{}")},
			want:    Routed{Targets: []Address{{"datacenter/server", "id with spaces"}}, Typename: "twinflow/json", Payload: []byte("{}")},
		},
		{
			name:    "message id is the key",
			ingress: DirectIngress,
			msg:     Message{Subject: "twinflow.in.a.b.c", Header: h("Twinflow-Typename", "a/B", "Nats-Msg-Id", "m-1")},
			want:    Routed{Targets: []Address{{"a/b", "c"}}, Typename: "a/B", Key: "m-1"},
		},
		{
			name:    "message id of a configured ingress",
			ingress: "plain",
			msg:     Message{Subject: "plain.x", Header: h("Twinflow-Typename", "ns/T", "Nats-Msg-Id", "m-2")},
			want:    Routed{Targets: []Address{{"ns/f", "x"}}, Typename: "ns/T", Key: "m-2"},
		},
		{
			name:    "envelope with reply and key fields, which win over the headers",
			ingress: DirectIngress,
			msg: Message{Subject: EnvelopeSubject, Header: h("Nats-Msg-Id", "m-3", "Twinflow-Reply-To", "_INBOX.h"),
				Data: marshal(&twinflowv1.IngressEnvelope{Target: &twinflowv1.Address{Type: "a/b", Id: "c"},
					Argument: &twinflowv1.TypedValue{Typename: "a/B"}, ReplyTo: "_INBOX.f", IdempotencyKey: "k-3"})},
			want: Routed{Targets: []Address{{"a/b", "c"}}, Typename: "a/B", ReplyTo: "_INBOX.f", Key: "k-3"},
		},
		{
			name:    "envelope without fields takes the headers",
			ingress: DirectIngress,
			msg:     Message{Subject: EnvelopeSubject, Header: h("Nats-Msg-Id", "m-4", "Twinflow-Reply-To", "_INBOX.h"), Data: envelope("a/b", "c", "a/B", "")},
			want:    Routed{Targets: []Address{{"a/b", "c"}}, Typename: "a/B", ReplyTo: "_INBOX.h", Key: "m-4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Route(tt.ingress, tt.msg)
			if err != nil {
				t.Fatalf("Route: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Route:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func marshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func envelope(ftype, id, typename, value string) []byte {
	env := &twinflowv1.IngressEnvelope{
		Target:   &twinflowv1.Address{Type: ftype, Id: id},
		Argument: &twinflowv1.TypedValue{Typename: typename, Value: []byte(value)},
	}
	b, err := proto.Marshal(env)
	if err != nil {
		panic(err)
	}
	return b
}

// TestReplySubjectReadByIngress: an inbox that an ingress's wildcards
// match is not answered, since the answer would come back as a message.
func TestReplySubjectReadByIngress(t *testing.T) {
	r, err := New([]IngressRule{{Name: "loop", Subject: "*.loop", Targets: []TargetRule{{FunctionType: "ns/f", ID: IDFromSubjectToken(0)}}}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Route("loop", Message{Subject: "a.loop", Header: h("Twinflow-Typename", "a/B"), Reply: "_INBOX.loop"})
	want := `ingress "loop": reply subject "_INBOX.loop" is read by ingress "loop"; an answer there would come back as a message`
	if ReasonOf(err) != ReasonBadReplyTo || err.(*Error).Detail != want {
		t.Errorf("Route error %v, want %s", err, want)
	}
	if err := r.CheckReplyTo("_INBOX_client.loop.x"); err != nil {
		t.Errorf("an inbox no ingress reads: %v", err)
	}
}

func TestRouteErrors(t *testing.T) {
	r := newTestRouter(t)
	metrics := func(subject string, header map[string][]string) Message {
		return Message{Subject: subject, Header: header}
	}
	event := func(data string) Message {
		return Message{Subject: "events.x", Header: h("X-Type", "a/B"), Data: []byte(data)}
	}
	typed := h("Twinflow-Typename", "a/B")
	tests := []struct {
		ingress string
		msg     Message
		reason  Reason
		detail  string
	}{
		{"metrics", Message{Subject: "not even checked", Data: make([]byte, 65)}, ReasonOversized,
			`ingress "metrics": payload of 65 bytes exceeds the limit of 64 bytes`},
		{DirectIngress, Message{Subject: "twinflow.in.a.b.c", Data: make([]byte, 65)}, ReasonOversized,
			`direct ingress: payload of 65 bytes exceeds the limit of 64 bytes`},
		{"nope", metrics("a.b", nil), ReasonNoRoute,
			`no ingress named "nope"`},
		{"metrics", metrics("datacenter.metrics.eu1", nil), ReasonNoRoute,
			`ingress "metrics": subject "datacenter.metrics.eu1" does not match "datacenter.metrics.*.*"`},
		{"metrics", metrics("datacenter..eu1.s", nil), ReasonBadSubject,
			`ingress "metrics": subject "datacenter..eu1.s" is not a valid NATS subject: token 1 is empty`},
		{"metrics", metrics("datacenter.metrics.eu 1.s", nil), ReasonBadSubject,
			`ingress "metrics": subject "datacenter.metrics.eu 1.s" is not a valid NATS subject: token 2 "eu 1" contains a space or control character`},
		{"metrics", metrics("datacenter.metrics.*.s", nil), ReasonBadSubject,
			`ingress "metrics": subject "datacenter.metrics.*.s" is not a valid NATS subject: token 2 "*" contains '*'`},
		{"metrics", metrics("", nil), ReasonBadSubject,
			`ingress "metrics": subject is empty`},
		{"metrics", metrics("datacenter.metrics.eu1.s1", nil), ReasonMissingID,
			`ingress "metrics": header "X-Rack" missing; needed for the id of datacenter/rack`},
		{"metrics", metrics("datacenter.metrics.eu1.s1", h("X-Rack", "")), ReasonMissingID,
			`ingress "metrics": header "X-Rack" missing; needed for the id of datacenter/rack`},
		{"metrics", metrics("datacenter.metrics.eu1.s1", h("X-Rack", "a\x01")), ReasonBadID,
			`ingress "metrics": header "X-Rack": id "a\x01" contains a control character; needed for the id of datacenter/rack`},
		{"metrics", metrics("datacenter.metrics.eu1.s\xff", h("X-Rack", "r")), ReasonBadID,
			`ingress "metrics": subject token 3: id "s\xff" is not valid UTF-8; needed for the id of datacenter/server`},
		{"metrics", metrics("datacenter.metrics.eu1.s1", h("X-Rack", "r\xff")), ReasonBadID,
			`ingress "metrics": header "X-Rack": id "r\xff" is not valid UTF-8; needed for the id of datacenter/rack`},
		{"events", event("{\"server\":{\"id\":\"s\xff\"}}"), ReasonBadID,
			`ingress "events": JSON field "server.id": id "s\xff" is not valid UTF-8; needed for the id of datacenter/server`},
		{"events", event("{\"server\":{\"id\":\"\xc3\"},\"rack\":\"r\"}"), ReasonBadID,
			`ingress "events": JSON field "server.id": id "\xc3" is not valid UTF-8; needed for the id of datacenter/server`},
		{"events", event(`{"server":{"id":"s"},"rack":"\ud800"}`), ReasonBadID,
			`ingress "events": JSON field "rack": id "\\ud800" holds \ud800, half of a UTF-16 surrogate pair: not a character; needed for the id of datacenter/rack`},
		{"events", event(`{"server":{"id":"\udc00\ud800x"}}`), ReasonBadID,
			`ingress "events": JSON field "server.id": id "\\udc00\\ud800x" holds \udc00, half of a UTF-16 surrogate pair: not a character; needed for the id of datacenter/server`},
		{"plain", metrics("plain.x", nil), ReasonMissingTypename,
			`ingress "plain": header "Twinflow-Typename" missing; needed for the typename of the message`},
		{"plain", metrics("plain.x", h("Twinflow-Typename", "noslash")), ReasonBadTypename,
			`ingress "plain": header "Twinflow-Typename": typename "noslash" is not "namespace/name"`},
		{"events", Message{Subject: "events.x"}, ReasonMissingTypename,
			`ingress "events": header "X-Type" missing; needed for the typename of the message`},
		{"events", event(`{"server":`), ReasonBadJSON,
			`ingress "events": payload is not valid JSON: unexpected EOF; needed for the id of datacenter/server`},
		{"events", event(``), ReasonBadJSON,
			`ingress "events": payload is empty, not JSON; needed for the id of datacenter/server`},
		{"events", event(`{} {}`), ReasonBadJSON,
			`ingress "events": payload is not valid JSON: data after the top-level value at byte 4; needed for the id of datacenter/server`},
		{"events", event(`{"rack":"r"}`), ReasonMissingID,
			`ingress "events": JSON field "server" missing; needed for the id of datacenter/server`},
		{"events", event(`{"server":{},"rack":"r"}`), ReasonMissingID,
			`ingress "events": JSON field "server.id" missing; needed for the id of datacenter/server`},
		{"events", event(`{"server":{"id":""}}`), ReasonMissingID,
			`ingress "events": JSON field "server.id" is empty; needed for the id of datacenter/server`},
		{"events", event(`{"server":"s"}`), ReasonBadJSON,
			`ingress "events": JSON field "server.id" cannot be looked up in a string; needed for the id of datacenter/server`},
		{"events", event(`{"server":{"id":{}}}`), ReasonBadJSON,
			`ingress "events": JSON field "server.id" is an object; an id must be a string or a number; needed for the id of datacenter/server`},
		{"events", event(`{"server":{"id":[1]}}`), ReasonBadJSON,
			`ingress "events": JSON field "server.id" is an array; an id must be a string or a number; needed for the id of datacenter/server`},
		{"events", event(`{"server":{"id":true}}`), ReasonBadJSON,
			`ingress "events": JSON field "server.id" is a boolean; an id must be a string or a number; needed for the id of datacenter/server`},
		{"events", event(`{"server":{"id":null}}`), ReasonBadJSON,
			`ingress "events": JSON field "server.id" is null; an id must be a string or a number; needed for the id of datacenter/server`},
		{"events", event(`{"server":{"id":"s"},"rack":null}`), ReasonBadJSON,
			`ingress "events": JSON field "rack" is null; an id must be a string or a number; needed for the id of datacenter/rack`},
		{"deep", Message{Subject: "deep.a.b"}, ReasonMissingID,
			`ingress "deep": subject "deep.a.b" has no token 3; needed for the id of ns/f`},
		{"deep", Message{Subject: "deep.a.b.c", Data: []byte(`{"servers":[{}]}`)}, ReasonMissingID,
			`ingress "deep": JSON field "servers.1" missing: the array has 1 elements; needed for the id of ns/g`},
		{DirectIngress, Message{Subject: "other.a.b.c", Header: typed}, ReasonNoRoute,
			`direct ingress: subject "other.a.b.c" is neither twinflow.in.<namespace>.<name>.<id>, twinflow.envelope nor twinflow.batch`},
		{DirectIngress, Message{Subject: "twinflow.in.a", Header: typed}, ReasonBadSubject,
			`direct ingress: subject "twinflow.in.a" has no function name; want twinflow.in.<namespace>.<name>.<id>`},
		{DirectIngress, Message{Subject: "twinflow.in.a.b", Header: typed}, ReasonMissingID,
			`direct ingress: subject "twinflow.in.a.b" has no id after the function type; want twinflow.in.<namespace>.<name>.<id>`},
		{DirectIngress, Message{Subject: "twinflow.in.a$.b.c", Header: typed}, ReasonBadSubject,
			`direct ingress: subject "twinflow.in.a$.b.c": function type "a$/b": namespace "a$" must match [A-Za-z0-9_-]+`},
		{DirectIngress, Message{Subject: "twinflow.in.a.b.c..d", Header: typed}, ReasonBadSubject,
			`direct ingress: subject "twinflow.in.a.b.c..d" is not a valid NATS subject: token 5 is empty`},
		{DirectIngress, Message{Subject: "twinflow.in.a.b.c"}, ReasonMissingTypename,
			`direct ingress: header "Twinflow-Typename" missing; needed for the typename of the message`},
		{DirectIngress, Message{Subject: "twinflow.in.a.b.c", Header: h("Twinflow-Typename", "a b/c")}, ReasonBadTypename,
			`direct ingress: header "Twinflow-Typename": typename "a b/c" contains a space or control character`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: []byte{0xff}}, ReasonBadEnvelope,
			`direct ingress: envelope: payload is not a twinflow.v1.IngressEnvelope: ` + protoErr([]byte{0xff})},
		{DirectIngress, Message{Subject: EnvelopeSubject}, ReasonBadEnvelope,
			`direct ingress: envelope: no target`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: envelope("a", "i", "a/B", "")}, ReasonBadEnvelope,
			`direct ingress: envelope: target: function type "a" has no "/"; want "namespace/name"`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: envelope("a/b", "", "a/B", "")}, ReasonMissingID,
			`direct ingress: envelope: target id is empty; needed for the id of a/b`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: envelope("a/b", "x\ny", "a/B", "")}, ReasonBadID,
			`direct ingress: envelope: target: id "x\ny" contains a control character`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: envelope("a/b", "i", "", "")}, ReasonMissingTypename,
			`direct ingress: envelope: argument has no typename`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: envelope("a/b", "i", "a/", "")}, ReasonBadTypename,
			`direct ingress: envelope: argument: typename "a/" is not "namespace/name"`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: marshal(&twinflowv1.IngressEnvelope{Target: &twinflowv1.Address{Type: "a/b", Id: "c"},
			Argument: &twinflowv1.TypedValue{Typename: "a/B"}, IdempotencyKey: "k\x00"})}, ReasonBadIdempotencyKey,
			`direct ingress: envelope: idempotency key "k\x00" contains a control character`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: marshal(&twinflowv1.IngressEnvelope{Target: &twinflowv1.Address{Type: "a/b", Id: "c"},
			Argument: &twinflowv1.TypedValue{Typename: "a/B"}, ReplyTo: "twinflow.in.a.b.c"})}, ReasonBadReplyTo,
			`direct ingress: reply subject "twinflow.in.a.b.c" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{DirectIngress, Message{Subject: BatchSubject, Data: []byte{0xff}}, ReasonBadEnvelope,
			`direct ingress: batch: payload is not a twinflow.v1.IngressBatch: ` + protoErr([]byte{0xff})},
		{DirectIngress, Message{Subject: BatchSubject}, ReasonBadEnvelope,
			`direct ingress: batch: the batch has no items`},
		{DirectIngress, Message{Subject: "twinflow.in.a.b.c", Header: typed, Reply: "$JS.API.STREAM.DELETE.X"}, ReasonBadReplyTo,
			`direct ingress: reply subject "$JS.API.STREAM.DELETE.X" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{DirectIngress, Message{Subject: "twinflow.in.a.b.c", Header: h("Twinflow-Typename", "a/B", "Twinflow-Reply-To", "twinflow.in.a.b.d")}, ReasonBadReplyTo,
			`direct ingress: reply subject "twinflow.in.a.b.d" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{DirectIngress, Message{Subject: EnvelopeSubject, Data: envelope("a/b", "i", "a/B", ""), Reply: "a..b"}, ReasonBadReplyTo,
			`direct ingress: reply subject "a..b" is not a valid NATS subject: token 1 is empty`},
		{"plain", Message{Subject: "plain.x", Header: typed, Reply: "events.loop"}, ReasonBadReplyTo,
			`ingress "plain": reply subject "events.loop" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{"plain", Message{Subject: "plain.x", Header: typed, Reply: "_INBOX_a"}, ReasonBadReplyTo,
			`ingress "plain": reply subject "_INBOX_a" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
	}
	for _, tt := range tests {
		t.Run(string(tt.reason), func(t *testing.T) {
			got, err := r.Route(tt.ingress, tt.msg)
			if err == nil {
				t.Fatalf("Route(%q, %q) = %+v, want error %q", tt.ingress, tt.msg.Subject, got, tt.detail)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
			if e.Reason != tt.reason || e.Detail != tt.detail {
				t.Errorf("Route(%q, %q) error:\n got %s: %s\nwant %s: %s", tt.ingress, tt.msg.Subject, e.Reason, e.Detail, tt.reason, tt.detail)
			}
			if ReasonOf(err) != tt.reason {
				t.Errorf("ReasonOf = %q, want %q", ReasonOf(err), tt.reason)
			}
		})
	}
}

func protoErr(b []byte) string {
	return proto.Unmarshal(b, &twinflowv1.IngressEnvelope{}).Error()
}

func TestQuoteTruncates(t *testing.T) {
	long := strings.Repeat("é", 100)
	r := newTestRouter(t)
	_, err := r.Route("metrics", Message{Subject: "datacenter.metrics.eu1.s1", Header: h("X-Rack", long+"\x01")})
	want := `ingress "metrics": header "X-Rack": id "` + strings.Repeat("é", 32) + `"... (201 bytes) contains a control character; needed for the id of datacenter/rack`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestNewErrors(t *testing.T) {
	ok := TargetRule{FunctionType: "a/b", ID: IDFromSubjectToken(0)}
	tests := []struct {
		name  string
		rules []IngressRule
		want  []string
	}{
		{"bad name", []IngressRule{{Name: "a.b", Subject: "s", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].name: ingress name "a.b" must match [A-Za-z0-9_-]+`}},
		{"empty name", []IngressRule{{Subject: "s", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].name: ingress name "" must match [A-Za-z0-9_-]+`}},
		{"reserved name", []IngressRule{{Name: "direct", Subject: "s", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].name: ingress name "direct" is reserved for the direct ingress`}},
		{"duplicate name", []IngressRule{
			{Name: "a", Subject: "s", Targets: []TargetRule{ok}},
			{Name: "a", Subject: "t", Targets: []TargetRule{ok}}},
			[]string{`ingresses[1].name: duplicate ingress name "a"`}},
		{"empty subject", []IngressRule{{Name: "a", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: subject is empty`}},
		{"bad subject", []IngressRule{{Name: "a", Subject: "a..b", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: "a..b" is not a valid NATS subject: token 1 is empty`}},
		{"partial wildcard", []IngressRule{{Name: "a", Subject: "a.b*", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: "a.b*" is not a valid NATS subject: token 1 "b*" contains '*'`}},
		{"> not last", []IngressRule{{Name: "a", Subject: "a.>.b", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: "a.>.b" is not a valid NATS subject: ">" must be the last token`}},
		{"dollar", []IngressRule{{Name: "a", Subject: "$JS.API.>", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: "$JS.API.>": subjects starting with $ are reserved by NATS`}},
		{"inbox", []IngressRule{{Name: "a", Subject: "_INBOX.>", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: "_INBOX.>": subjects starting with _INBOX are reply inboxes`}},
		{"identity inbox", []IngressRule{{Name: "a", Subject: "_INBOX_client.*", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: "_INBOX_client.*": subjects starting with _INBOX are reply inboxes`}},
		{"reserved subject", []IngressRule{{Name: "a", Subject: "*.in.x.y.z", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].subject: "*.in.x.y.z" overlaps twinflow.in.>, which Twinflow uses`}},
		{"everything", []IngressRule{{Name: "a", Subject: ">", Targets: []TargetRule{ok}}},
			[]string{
				`ingresses[0].subject: ">" overlaps twinflow.in.>, which Twinflow uses`,
				`ingresses[0].subject: ">" overlaps twinflow.envelope, which Twinflow uses`,
				`ingresses[0].subject: ">" overlaps twinflow.batch, which Twinflow uses`,
				`ingresses[0].subject: ">" overlaps twinflow.send.>, which Twinflow uses`,
				`ingresses[0].subject: ">" overlaps twinflow.call.>, which Twinflow uses`,
				`ingresses[0].subject: ">" overlaps twinflow.dlq.>, which Twinflow uses`,
			}},
		{"overlapping ingresses", []IngressRule{
			{Name: "a", Subject: "x.*.z", Targets: []TargetRule{ok}},
			{Name: "b", Subject: "x.y.>", Targets: []TargetRule{ok}}},
			[]string{`ingresses[1].subject: "x.y.>" overlaps the subject "x.*.z" of ingress "a"; a message may belong to one ingress only`}},
		{"typename and header", []IngressRule{{Name: "a", Subject: "s", Typename: "a/B", TypenameHeader: "X", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].typename: set typename or typenameHeader, not both`}},
		{"bad typename", []IngressRule{{Name: "a", Subject: "s", Typename: "B", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].typename: typename "B" is not "namespace/name"`}},
		{"bad typename header", []IngressRule{{Name: "a", Subject: "s", TypenameHeader: "X Y", Targets: []TargetRule{ok}}},
			[]string{`ingresses[0].typenameHeader: header name "X Y" may hold only printable ASCII without spaces or ":"`}},
		{"no targets", []IngressRule{{Name: "a", Subject: "s"}},
			[]string{`ingresses[0].targets: at least one target is required`}},
		{"bad function", []IngressRule{{Name: "a", Subject: "s", Targets: []TargetRule{{FunctionType: "a/b/c", ID: IDFromSubjectToken(0)}}}},
			[]string{`ingresses[0].targets[0].function: function type "a/b/c": name "b/c" must match [A-Za-z0-9_-]+`}},
		{"duplicate target", []IngressRule{{Name: "a", Subject: "s", Targets: []TargetRule{ok, ok}}},
			[]string{`ingresses[0].targets[1]: same function and id as targets[0]`}},
		{"no id", []IngressRule{{Name: "a", Subject: "s", Targets: []TargetRule{{FunctionType: "a/b", ID: IDSource{SubjectToken: -1}}}}},
			[]string{`ingresses[0].targets[0].id: exactly one of subjectToken, header, jsonField is required (subjectToken is -1 when unset)`}},
		{"two ids", []IngressRule{{Name: "a", Subject: "s", Targets: []TargetRule{{FunctionType: "a/b", ID: IDSource{Header: "X"}}}}},
			[]string{`ingresses[0].targets[0].id: exactly one of subjectToken, header, jsonField is required (subjectToken is -1 when unset)`}},
		{"negative token", []IngressRule{{Name: "a", Subject: "s", Targets: []TargetRule{{FunctionType: "a/b", ID: IDSource{SubjectToken: -2}}}}},
			[]string{`ingresses[0].targets[0].id.subjectToken: must be 0 or more, got -2`}},
		{"token past end", []IngressRule{{Name: "a", Subject: "s.*", Targets: []TargetRule{{FunctionType: "a/b", ID: IDFromSubjectToken(2)}}}},
			[]string{`ingresses[0].targets[0].id.subjectToken: token 2 is past the end of subject "s.*", which has 2 tokens (counted from 0)`}},
		{"bad header", []IngressRule{{Name: "a", Subject: "s", Targets: []TargetRule{{FunctionType: "a/b", ID: IDFromHeader("a:b")}}}},
			[]string{`ingresses[0].targets[0].id.header: header name "a:b" may hold only printable ASCII without spaces or ":"`}},
		{"bad JSON path", []IngressRule{{Name: "a", Subject: "s", Targets: []TargetRule{{FunctionType: "a/b", ID: IDFromJSONField("a..b")}}}},
			[]string{`ingresses[0].targets[0].id.jsonField: JSON field path "a..b" has an empty part`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.rules, Limits{})
			if err == nil {
				t.Fatal("New succeeded")
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ce *ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("error %T is not *ConfigError", e)
				}
				got = append(got, ce.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("New errors:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
	if _, err := New(nil, Limits{MaxPayload: -1}); err == nil || err.Error() != "limits.maxPayload: must not be negative, got -1" {
		t.Errorf("negative limit: %v", err)
	}
}

func TestNewCopiesRules(t *testing.T) {
	rules := testRules()
	r := newTestRouter(t)
	rules[0].Targets[0].FunctionType = "changed/after"
	got := r.Rules()
	if !reflect.DeepEqual(got, testRules()) {
		t.Errorf("Rules() = %+v, want %+v", got, testRules())
	}
	got[0].Targets[0].FunctionType = "x/y"
	if r.Rules()[0].Targets[0].FunctionType != "datacenter/server" {
		t.Error("Rules() aliases the router's rules")
	}
}

func TestDefaultMaxPayload(t *testing.T) {
	r, err := New(nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	msg := Message{Subject: "twinflow.in.a.b.c", Header: h(TypenameHeader, "a/B"), Data: make([]byte, DefaultMaxPayload)}
	if _, err := r.Route(DirectIngress, msg); err != nil {
		t.Fatal(err)
	}
	msg.Data = append(msg.Data, 0)
	if _, err := r.Route(DirectIngress, msg); ReasonOf(err) != ReasonOversized {
		t.Fatalf("got %v, want oversized", err)
	}
}

func TestDirectSubject(t *testing.T) {
	tests := []struct {
		ftype, id string
		want      string
		err       string
	}{
		{"datacenter/server", "srv-0042", "twinflow.in.datacenter.server.srv-0042", ""},
		{"datacenter/server", "eu.srv.1", "twinflow.in.datacenter.server.eu.srv.1", ""},
		{"d_c/s-1", "é", "twinflow.in.d_c.s-1.é", ""},
		{"datacenter", "x", "", `function type "datacenter" has no "/"; want "namespace/name"`},
		{"", "x", "", `function type is empty; want "namespace/name"`},
		{"data.center/server", "x", "", `function type "data.center/server": namespace "data.center" must match [A-Za-z0-9_-]+`},
		{"a/b", "", "", `id is empty`},
		{"a/b", "a b", "", `id "a b" cannot be a subject: part 0 "a b" contains a space or control character; use the envelope subject twinflow.envelope`},
		{"a/b", "a.", "", `id "a." cannot be a subject: part 1 is empty; use the envelope subject twinflow.envelope`},
		{"a/b", "x.*", "", `id "x.*" cannot be a subject: part 1 "*" contains '*'; use the envelope subject twinflow.envelope`},
		{"a/b", "a>b", "", `id "a>b" cannot be a subject: part 0 "a>b" contains '>'; use the envelope subject twinflow.envelope`},
		{"a/b", "\xff", "", `id "\xff" is not valid UTF-8`},
		{"a/b", "a\tb", "", `id "a\tb" contains a control character`},
	}
	r := newTestRouter(t)
	for _, tt := range tests {
		got, err := DirectSubject(tt.ftype, tt.id)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("DirectSubject(%q, %q) error = %v, want %s", tt.ftype, tt.id, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("DirectSubject(%q, %q) = %q, %v; want %q", tt.ftype, tt.id, got, err, tt.want)
			continue
		}
		routed, err := r.Route(DirectIngress, Message{Subject: got, Header: h(TypenameHeader, "a/B")})
		if err != nil || len(routed.Targets) != 1 || routed.Targets[0] != (Address{tt.ftype, tt.id}) {
			t.Errorf("Route(DirectSubject(%q, %q)) = %+v, %v", tt.ftype, tt.id, routed, err)
		}
	}
}

func TestValidateTypename(t *testing.T) {
	for _, ok := range []string{"a/b", "twinflow/json", "type.googleapis.com/google.protobuf.Struct", "a/b/c", "proto/datacenter.v1.ServerMetricReport"} {
		if err := ValidateTypename(ok); err != nil {
			t.Errorf("ValidateTypename(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a", "/a", "a/", "a /b", "a/b\n", "a/\xff", "a/b\u00a0"} {
		if err := ValidateTypename(bad); err == nil {
			t.Errorf("ValidateTypename(%q) succeeded", bad)
		}
	}
}

func TestMatchAndOverlap(t *testing.T) {
	p := func(s string) []string { return strings.Split(s, ".") }
	matches := []struct {
		pattern, subject string
		want             bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a", "a.b", false},
		{"a.b", "a", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a", false},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c", true},
		{"*.*", "a.b", true},
		{">", "a", true},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
	}
	for _, m := range matches {
		if got := match(p(m.pattern), m.subject); got != m.want {
			t.Errorf("match(%q, %q) = %v", m.pattern, m.subject, got)
		}
	}
	overlaps := []struct {
		a, b string
		want bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.*", "a.b", true},
		{"a.*", "*.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"*.>", "twinflow.in.>", true},
		{"x.>", "twinflow.in.>", false},
	}
	for _, o := range overlaps {
		if got := overlap(p(o.a), p(o.b)); got != o.want {
			t.Errorf("overlap(%q, %q) = %v", o.a, o.b, got)
		}
		if got := overlap(p(o.b), p(o.a)); got != o.want {
			t.Errorf("overlap(%q, %q) = %v", o.b, o.a, got)
		}
	}
}

func TestDeadLetter(t *testing.T) {
	r := newTestRouter(t)
	msg := Message{
		Subject: "datacenter.metrics.eu1.s1",
		Header: map[string][]string{
			"X-Keep":                      {"1", "2"},
			"Nats-Msg-Id":                 {"m1"},
			"Nats-Expected-Last-Sequence": {"7"},
			"nats-rollup":                 {"sub"},
		},
		Data: []byte("payload"),
	}
	_, err := r.Route("metrics", msg)
	subject, header := DeadLetter(err, msg)
	if subject != "twinflow.dlq.ingress" {
		t.Errorf("subject = %q", subject)
	}
	want := map[string][]string{
		"X-Keep":                    {"1", "2"},
		"Nats-Msg-Id":               {"m1"},
		"Twinflow-Error":            {`ingress "metrics": header "X-Rack" missing; needed for the id of datacenter/rack`},
		"Twinflow-Error-Reason":     {"missing_id"},
		"Twinflow-Original-Subject": {"datacenter.metrics.eu1.s1"},
	}
	if !reflect.DeepEqual(header, want) {
		t.Errorf("header:\n got %v\nwant %v", header, want)
	}
	header["X-Keep"][0] = "changed"
	if msg.Header["X-Keep"][0] != "1" {
		t.Error("DeadLetter aliases the message's headers")
	}

	subject, header = DeadLetterItem(err, msg, 3)
	want[BatchIndexHeader] = []string{"3"}
	if subject != DeadLetterSubject || !reflect.DeepEqual(header, want) {
		t.Errorf("DeadLetterItem: %s\n got %v\nwant %v", subject, header, want)
	}

	_, header = DeadLetter(errors.New("line 1\nline 2"), Message{Subject: "s"})
	if got := header[ErrorHeader][0]; got != "line 1 line 2" {
		t.Errorf("error header = %q", got)
	}
	if got := header[ErrorReasonHeader][0]; got != "unknown" {
		t.Errorf("reason header = %q", got)
	}
}

// TestRouteBatch: every item of a batch is routed on its own; an invalid
// one carries its error and the others go on, and keys come from the items
// or from the batch's message id and the item's index.
func TestRouteBatch(t *testing.T) {
	r, err := New(testRules(), Limits{MaxPayload: 8})
	if err != nil {
		t.Fatal(err)
	}
	item := func(ftype, id, typename, value, replyTo, key string) *twinflowv1.IngressEnvelope {
		env := &twinflowv1.IngressEnvelope{Argument: &twinflowv1.TypedValue{Typename: typename, Value: []byte(value)}, ReplyTo: replyTo, IdempotencyKey: key}
		if ftype != "" {
			env.Target = &twinflowv1.Address{Type: ftype, Id: id}
		}
		return env
	}
	items := []*twinflowv1.IngressEnvelope{
		item("a/b", "1", "a/B", "one", "", "k-0"),
		item("a/b", "2", "a/B", "two", "_INBOX_client.x", ""),
		item("", "", "a/B", "", "", ""),
		item("a/b", "", "a/B", "", "", ""),
		item("a/b", "3", "", "", "", ""),
		item("a/b", "3", "a/B", "too long a payload", "", ""),
		item("a/b", "3", "a/B", "", "plain.x", ""),
		item("a/b", "3", "a/B", "", "", strings.Repeat("k", MaxIdempotencyKey+1)),
		item("a/b", "4", "a/B", "", "", ""),
	}
	batch := marshal(&twinflowv1.IngressBatch{Items: items})
	got, err := r.Route(DirectIngress, Message{Subject: BatchSubject, Header: h("Nats-Msg-Id", "gw-7", "Twinflow-Reply-To", "_INBOX.ignored"), Data: batch})
	if err != nil {
		t.Fatal(err)
	}
	want := []Item{
		{Target: Address{"a/b", "1"}, Typename: "a/B", Payload: []byte("one"), Key: "k-0"},
		{Target: Address{"a/b", "2"}, Typename: "a/B", Payload: []byte("two"), ReplyTo: "_INBOX_client.x", Key: "gw-7/1"},
		{Err: errorf(ReasonBadEnvelope, "direct ingress: batch item 2: no target")},
		{Err: errorf(ReasonMissingID, "direct ingress: batch item 3: target id is empty; needed for the id of a/b")},
		{Err: errorf(ReasonMissingTypename, "direct ingress: batch item 4: argument has no typename")},
		{Err: errorf(ReasonOversized, "direct ingress: batch item 5: payload of 18 bytes exceeds the limit of 8 bytes")},
		{Err: errorf(ReasonBadReplyTo, `direct ingress: batch item 6: reply subject "plain.x" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`), ReplyTo: "plain.x"},
		{Err: errorf(ReasonBadIdempotencyKey, "direct ingress: batch item 7: idempotency key of %d bytes is longer than %d bytes", MaxIdempotencyKey+1, MaxIdempotencyKey)},
		{Target: Address{"a/b", "4"}, Typename: "a/B", Payload: []byte{}, Key: "gw-7/8"},
	}
	if len(got.Targets) != 0 || got.Payload != nil || got.Key != "" || got.ReplyTo != "" {
		t.Errorf("a batch routed as one message: %+v", got)
	}
	if len(got.Items) != len(want) {
		t.Fatalf("%d items, want %d: %+v", len(got.Items), len(want), got.Items)
	}
	for i := range want {
		g, w := got.Items[i], want[i]
		if len(g.Payload) == 0 && len(w.Payload) == 0 {
			g.Payload, w.Payload = nil, nil
		}
		if g.Err != nil {
			// The dead letter's payload is the item as it was sent.
			var env twinflowv1.IngressEnvelope
			if err := proto.Unmarshal(g.Envelope, &env); err != nil || !proto.Equal(&env, items[i]) {
				t.Errorf("item %d: envelope %x is not the item: %v", i, g.Envelope, err)
			}
			g.Envelope = nil
		} else if g.Envelope != nil {
			t.Errorf("item %d: routed, with an envelope", i)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("item %d:\n got %+v (%v)\nwant %+v (%v)", i, g, g.Err, w, w.Err)
		}
	}

	// Without a message id, items without a key of their own have none.
	got, err = r.Route(DirectIngress, Message{Subject: BatchSubject, Data: marshal(&twinflowv1.IngressBatch{Items: []*twinflowv1.IngressEnvelope{
		item("a/b", "1", "a/B", "", "", ""), item("a/b", "1", "a/B", "", "", "k"),
	}})})
	if err != nil {
		t.Fatal(err)
	}
	if got.Items[0].Key != "" || got.Items[1].Key != "k" {
		t.Errorf("keys %q and %q, want none and k", got.Items[0].Key, got.Items[1].Key)
	}
}

// TestBatchOnlyOnTheDirectIngress: a configured ingress whose subject is
// not the batch subject never routes batches.
func TestBatchOnlyOnTheDirectIngress(t *testing.T) {
	r := newTestRouter(t)
	_, err := r.Route("plain", Message{Subject: BatchSubject, Data: marshal(&twinflowv1.IngressBatch{})})
	if ReasonOf(err) != ReasonNoRoute {
		t.Errorf("Route = %v, want no_route", err)
	}
}

func TestSubjectAddress(t *testing.T) {
	tests := []struct {
		subject string
		want    Address
		reason  Reason
	}{
		{"twinflow.send.ns.f.a.b", Address{"ns/f", "a.b"}, ""},
		{"twinflow.call.ns.f.x", Address{"ns/f", "x"}, ReasonNoRoute},
		{"twinflow.send.ns", Address{}, ReasonBadSubject},
		{"twinflow.send.ns.f", Address{}, ReasonMissingID},
		{"twinflow.send.n$.f.x", Address{}, ReasonBadSubject},
		{"twinflow.send.ns.f.x..y", Address{}, ReasonBadSubject},
	}
	for _, tt := range tests {
		got, err := SubjectAddress(SendSubjectPrefix, tt.subject)
		if tt.reason == "" {
			if err != nil || got != tt.want {
				t.Errorf("SubjectAddress(%q) = %v, %v; want %v", tt.subject, got, err, tt.want)
			}
			continue
		}
		if err == nil || err.Reason != tt.reason {
			t.Errorf("SubjectAddress(%q) error %v, want reason %s", tt.subject, err, tt.reason)
		}
	}
}

func TestValidateIdempotencyKey(t *testing.T) {
	for _, k := range []string{"a", "client-1/msg 7", strings.Repeat("é", MaxIdempotencyKey/2)} {
		if err := ValidateIdempotencyKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	for _, k := range []string{"", "a\nb", string([]byte{0xff}), strings.Repeat("k", MaxIdempotencyKey+1)} {
		if err := ValidateIdempotencyKey(k); err == nil {
			t.Errorf("%q accepted", k)
		}
	}
}
