package router

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var ingressNames = []string{"metrics", "events", "plain", "deep", DirectIngress, "unknown"}

// FuzzRoute routes random messages: Route must not panic, and must return
// either targets with valid, non-empty ids or an *Error. A failure's dead
// letter must carry header values without line breaks.
func FuzzRoute(f *testing.F) {
	f.Add(uint8(0), "datacenter.metrics.eu1.srv-7", "X-Rack", "r-3", []byte("x"))
	f.Add(uint8(1), "events.a", "X-Type", "a/B", []byte(`{"server":{"id":"s"},"rack":12}`))
	f.Add(uint8(1), "events.a", "X-Type", "a/B", []byte(`{"server":{"id":{}},"rack":[]}`))
	f.Add(uint8(2), "plain.x", "Twinflow-Typename", "a/B", []byte(nil))
	f.Add(uint8(3), "deep.a.b.c", "", "", []byte(`{"servers":[0,{"id":"s"}]}`))
	f.Add(uint8(4), "twinflow.in.a.b.c.d", "twinflow-typename", "t/T", []byte("raw"))
	f.Add(uint8(4), "twinflow.in.a.b", "Twinflow-Typename", "t/T", []byte("raw"))
	f.Add(uint8(4), EnvelopeSubject, "", "", envelope("a/b", "i d", "a/B", "v"))
	f.Add(uint8(4), EnvelopeSubject, "", "", []byte("\x0a\x02\x0a"))
	f.Add(uint8(4), BatchSubject, "Nats-Msg-Id", "b", []byte("\x0a\x10\x0a\x05\x0a\x01a\x12\x00\x12\x07\x0a\x03a/B\x12\x00"))
	f.Add(uint8(4), BatchSubject, "", "", []byte("\x0a\x00\x0a\x02\x0a\x00"))
	f.Add(uint8(5), "a.b", "", "", []byte(nil))
	f.Add(uint8(1), "events.a", "X-Type", "a/B", []byte("{\"server\":{\"id\":\"s\xff\"},\"rack\":1}"))
	f.Add(uint8(1), "events.a", "X-Type", "a/B", []byte(`{"server":{"id":"\ud800"},"rack":"\ufffd"}`))
	f.Add(uint8(0), "datacenter.metrics.eu1.srv-7", "X-Rack", "r\xff", []byte("x"))
	r := newTestRouter(f)
	f.Fuzz(func(t *testing.T, which uint8, subject, hkey, hval string, data []byte) {
		ingress := ingressNames[int(which)%len(ingressNames)]
		msg := Message{Subject: subject, Header: map[string][]string{hkey: {hval}, "X-Rack": {hval}}, Data: data}
		got, err := r.Route(ingress, msg)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason == "" || e.Detail == "" {
				t.Fatalf("error %T %v is not a complete *Error", err, err)
			}
			_, header := DeadLetter(err, msg)
			for _, k := range []string{ErrorHeader, ErrorReasonHeader, OriginalSubjectHeader} {
				if v := header[k][0]; strings.ContainsAny(v, "\r\n") {
					t.Fatalf("header %s = %q has a line break", k, v)
				}
			}
			return
		}
		if got.Items != nil {
			if ingress != DirectIngress || subject != BatchSubject || len(got.Targets) != 0 {
				t.Fatalf("Route(%q, %q) = items %+v and targets %+v", ingress, subject, got.Items, got.Targets)
			}
			for i, it := range got.Items {
				if it.Err != nil {
					if ReasonOf(it.Err) == ReasonUnknown {
						t.Fatalf("item %d: error %T %v is not an *Error", i, it.Err, it.Err)
					}
					continue
				}
				if err := ValidateAddress(it.Target.Type, it.Target.ID); err != nil {
					t.Fatalf("item %d: %v", i, err)
				}
				if err := ValidateTypename(it.Typename); err != nil {
					t.Fatalf("item %d: %v", i, err)
				}
			}
			return
		}
		if len(got.Targets) == 0 {
			t.Fatalf("Route(%q, %q) = no targets", ingress, subject)
		}
		for _, a := range got.Targets {
			if a.ID == "" || !utf8.ValidString(a.ID) {
				t.Fatalf("Route(%q, %q): bad id %q", ingress, subject, a.ID)
			}
			// An id is what was sent: U+FFFD in it was sent as such, not
			// put in place of bytes that are not UTF-8.
			if strings.ContainsRune(a.ID, utf8.RuneError) && !sentReplacement(msg) {
				t.Fatalf("Route(%q, %q, %q): id %q holds U+FFFD that was not sent", ingress, subject, data, a.ID)
			}
			if err := ValidateFunctionType(a.Type); err != nil {
				t.Fatalf("Route(%q, %q): %v", ingress, subject, err)
			}
		}
		if err := ValidateTypename(got.Typename); err != nil {
			t.Fatalf("Route(%q, %q): %v", ingress, subject, err)
		}
		if ingress == DirectIngress && subject != EnvelopeSubject {
			s, err := DirectSubject(got.Targets[0].Type, got.Targets[0].ID)
			if err != nil || s != subject {
				t.Fatalf("DirectSubject(%v) = %q, %v; routed from %q", got.Targets[0], s, err, subject)
			}
		}
	})
}

// sentReplacement reports whether a message holds U+FFFD, as UTF-8 or as
// a JSON escape.
func sentReplacement(msg Message) bool {
	const r = "\ufffd"
	if strings.Contains(msg.Subject, r) || bytes.Contains(msg.Data, []byte(r)) ||
		bytes.Contains(bytes.ToLower(msg.Data), []byte(`\ufffd`)) {
		return true
	}
	for _, vs := range msg.Header {
		for _, v := range vs {
			if strings.Contains(v, r) {
				return true
			}
		}
	}
	return false
}

// FuzzDirectSubject checks that every subject DirectSubject builds routes
// back to its address.
func FuzzDirectSubject(f *testing.F) {
	f.Add("datacenter/server", "srv-1")
	f.Add("a/b", "x.y.z")
	f.Add("a/b", "x y")
	r := newTestRouter(f)
	f.Fuzz(func(t *testing.T, ftype, id string) {
		s, err := DirectSubject(ftype, id)
		if err != nil {
			return
		}
		got, err := r.Route(DirectIngress, Message{Subject: s, Header: map[string][]string{TypenameHeader: {"a/B"}}})
		if err != nil {
			t.Fatalf("Route(%q): %v", s, err)
		}
		if len(got.Targets) != 1 || got.Targets[0] != (Address{ftype, id}) {
			t.Fatalf("Route(%q) = %+v, want %s %q", s, got.Targets, ftype, id)
		}
	})
}
