package router

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	e, err := NewEgresses([]EgressRule{
		{Name: "alerts", Subject: "datacenter.alerts"},
		{Name: "audit", Subject: "audit", Delivery: AtLeastOnce},
	})
	if err != nil {
		t.Fatal(err)
	}
	src := Address{Type: "datacenter/server", ID: "srv-1"}
	tests := []struct {
		name     string
		rec      EgressRecord
		subject  string
		delivery Delivery
	}{
		{"exactly-once", EgressRecord{Egress: "alerts", Typename: "a/B", Source: src}, "datacenter.alerts", ExactlyOnce},
		{"key", EgressRecord{Egress: "alerts", Typename: "a/B", Key: "srv-1", Source: src}, "datacenter.alerts.srv-1", ExactlyOnce},
		{"at-least-once", EgressRecord{Egress: "audit", Typename: "a/B", Source: src}, "audit", AtLeastOnce},
		{"reply ignores the key", EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "_INBOX.x.y", Key: "k", Source: src}, "_INBOX.x.y", AtLeastOnce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject, header, delivery, err := e.Resolve(tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]string{"Twinflow-Typename": {"a/B"}, "Twinflow-Source": {"datacenter/server/srv-1"}}
			if subject != tt.subject || delivery != tt.delivery || !reflect.DeepEqual(header, want) {
				t.Errorf("Resolve = %q, %v, %v; want %q, %v, %v", subject, header, delivery, tt.subject, want, tt.delivery)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	e, err := NewEgresses([]EgressRule{{Name: "b", Subject: "s"}, {Name: "a", Subject: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	var none *Egresses
	tests := []struct {
		e      *Egresses
		rec    EgressRecord
		reason Reason
		detail string
	}{
		{e, EgressRecord{Egress: "c", Typename: "a/B"}, ReasonUnknownEgress, `no egress named "c"; the module spec declares "a", "b"`},
		{none, EgressRecord{Egress: "c", Typename: "a/B"}, ReasonUnknownEgress, `no egress named "c"; the module spec declares none`},
		{e, EgressRecord{Egress: "reply", Typename: "a/B"}, ReasonMissingReplyTo, `egress "reply": the record has no reply subject; only a message sent as a NATS request can be answered`},
		{none, EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "a b"}, ReasonBadReplyTo, `egress "reply": reply subject "a b" is not a valid NATS subject: token 0 "a b" contains a space or control character`},
		{none, EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "$JS.API.STREAM.DELETE.X"}, ReasonBadReplyTo, `egress "reply": reply subject "$JS.API.STREAM.DELETE.X" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{none, EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "twinflow.in.a.b.c"}, ReasonBadReplyTo, `egress "reply": reply subject "twinflow.in.a.b.c" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{e, EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "t"}, ReasonBadReplyTo, `egress "reply": reply subject "t" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{e, EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "_INBOX"}, ReasonBadReplyTo, `egress "reply": reply subject "_INBOX" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{e, EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "_INBOXES.x"}, ReasonBadReplyTo, `egress "reply": reply subject "_INBOXES.x" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{e, EgressRecord{Egress: "reply", Typename: "a/B", ReplyTo: "_INBOX_.x"}, ReasonBadReplyTo, `egress "reply": reply subject "_INBOX_.x" is not an inbox: requests are answered only on subjects under _INBOX. or _INBOX_<identity>.`},
		{e, EgressRecord{Egress: "a", Typename: "a/B", Key: "x.y"}, ReasonBadKey, `egress "a": key "x.y" contains "."; a key is one subject token`},
		{e, EgressRecord{Egress: "a", Typename: "a/B", Key: "*"}, ReasonBadKey, `egress "a": key "*" contains '*'`},
		{e, EgressRecord{Egress: "a", Typename: "a/B", Key: "x y"}, ReasonBadKey, `egress "a": key "x y" contains a space or control character`},
		{e, EgressRecord{Egress: "a"}, ReasonBadTypename, `egress "a": typename is empty`},
		{e, EgressRecord{Egress: "reply", ReplyTo: "_INBOX.r", Typename: "x"}, ReasonBadTypename, `egress "reply": typename "x" is not "namespace/name"`},
	}
	for _, tt := range tests {
		_, _, _, err := tt.e.Resolve(tt.rec)
		var re *Error
		if !errors.As(err, &re) || re.Reason != tt.reason || re.Detail != tt.detail {
			t.Errorf("Resolve(%+v) error = %v (%s), want %s: %s", tt.rec, err, ReasonOf(err), tt.reason, tt.detail)
		}
	}
	if _, _, d, err := none.Resolve(EgressRecord{Egress: "reply", ReplyTo: "_INBOX_alice.r", Typename: "a/B"}); err != nil || d != AtLeastOnce {
		t.Errorf("nil Egresses reply: %v, %v", d, err)
	}
}

func TestNewEgressesErrors(t *testing.T) {
	_, err := NewEgresses([]EgressRule{
		{Name: "reply", Subject: "a"},
		{Name: "a b", Subject: "b"},
		{Name: "x", Subject: "a.*"},
		{Name: "x", Subject: "twinflow.out"},
		{Name: "y", Subject: "$SYS.x", Delivery: 7},
		{Name: "z"},
		{Name: "k1", Subject: "keyed"},
		{Name: "k2", Subject: "keyed.sub"},
		{Name: "k3", Subject: "keyed"},
		{Name: "k4", Subject: "keyedx"},
		{Name: "i", Subject: "_INBOX_client.x"},
	})
	want := `egresses[0].name: egress name "reply" is reserved for the built-in egress that answers requests
egresses[1].name: egress name "a b" must match [A-Za-z0-9_-]+
egresses[2].subject: "a.*" has wildcards; an egress publishes to one subject
egresses[3].name: duplicate egress name "x"
egresses[3].subject: "twinflow.out": subjects under twinflow. are reserved
egresses[4].subject: "$SYS.x": subjects starting with $ are reserved by NATS
egresses[4].delivery: unknown delivery 7
egresses[5].subject: subject is empty
egresses[7].subject: "keyed.sub" overlaps egress "k1", which publishes on keyed and keyed.<key>
egresses[8].subject: "keyed" overlaps egress "k1", which publishes on keyed and keyed.<key>
egresses[8].subject: "keyed" overlaps egress "k2", which publishes on keyed.sub and keyed.sub.<key>
egresses[10].subject: "_INBOX_client.x": subjects starting with _INBOX are reply inboxes`
	if err == nil || err.Error() != want {
		t.Errorf("NewEgresses error:\n%v\nwant\n%s", err, want)
	}
}

func TestDelivery(t *testing.T) {
	for _, d := range []Delivery{ExactlyOnce, AtLeastOnce} {
		got, err := ParseDelivery(d.String())
		if err != nil || got != d {
			t.Errorf("ParseDelivery(%q) = %v, %v", d, got, err)
		}
	}
	if _, err := ParseDelivery("once"); err == nil || err.Error() != `delivery "once" is neither exactly-once nor at-least-once` {
		t.Errorf("ParseDelivery(once) = %v", err)
	}
	if s := Delivery(5).String(); s != "Delivery(5)" {
		t.Errorf("String = %q", s)
	}
}

func TestValidateRules(t *testing.T) {
	in := []IngressRule{{Name: "in", Subject: "data.>", Typename: "a/B", Targets: []TargetRule{{FunctionType: "a/b", ID: IDFromSubjectToken(1)}}}}
	if err := ValidateRules(in, []EgressRule{{Name: "out", Subject: "out"}}); err != nil {
		t.Fatalf("valid rules: %v", err)
	}
	err := ValidateRules(append(in, IngressRule{Name: "in", Subject: "twinflow.in.x"}), []EgressRule{
		{Name: "ok", Subject: "out"},
		{Name: "loop", Subject: "data.out"},
		{Name: "under", Subject: "data"},
		{Name: "bad", Subject: "twinflow.x"},
	})
	var paths []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("error %v is not a *ConfigError", err)
			return
		}
		paths = append(paths, ce.Path)
	}
	walk(err)
	want := []string{"ingresses[1].name", "ingresses[1].subject", "ingresses[1].targets", "egresses[3].subject"}
	for _, w := range want {
		if !strings.Contains(strings.Join(paths, " "), w) {
			t.Errorf("no error at %s; got %v", w, paths)
		}
	}
	for _, w := range []string{
		`egresses[1].subject: "data.out" (with its keyed subjects data.out.<key>) overlaps the subject "data.>" of ingress "in"`,
		`egresses[2].subject: "data" (with its keyed subjects data.<key>) overlaps the subject "data.>" of ingress "in"`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}
