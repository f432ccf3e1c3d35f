package router

import (
	"errors"
	"strings"
	"testing"
)

func TestTopicSubject(t *testing.T) {
	for _, tt := range []struct{ topic, subject string }{
		{"dc1/rack-1/srv-1-3/metrics", "dc1.rack-1.srv-1-3.metrics"},
		{"dc1/+/+/metrics", "dc1.*.*.metrics"},
		{"dc1/#", "dc1.>"},
		{"dc1/srv.7/metrics", "dc1.srv//7.metrics"},
		{"dc1//metrics", "dc1./.metrics"},
		{"/dc1", "/.dc1"},
		{"dc1/", "dc1./"},
		{"a", "a"},
	} {
		got, err := TopicSubject(tt.topic)
		if err != nil || got != tt.subject {
			t.Errorf("TopicSubject(%q) = %q, %v; want %q", tt.topic, got, err, tt.subject)
		}
		if !strings.ContainsAny(tt.topic, "+#") {
			if back := SubjectTopic(got); back != tt.topic {
				t.Errorf("SubjectTopic(%q) = %q, want %q", got, back, tt.topic)
			}
		}
	}
	for _, bad := range []string{"", "dc1/#/metrics", "dc1/srv+/x", "dc1/srv 1", "a/b#"} {
		if s, err := TopicSubject(bad); err == nil {
			t.Errorf("TopicSubject(%q) = %q, want an error", bad, s)
		}
	}
}

// TestRouteTopic: an ingress of MQTT topics takes ids from topic levels,
// and dead-letters a message whose level is empty.
func TestRouteTopic(t *testing.T) {
	r, err := New([]IngressRule{{
		Name: "devices", Topic: "dc1/+/+/metrics", Subject: "dc1.*.*.metrics", Typename: "dc/Report",
		Targets: []TargetRule{{FunctionType: "dc/server", ID: IDFromSubjectToken(2)}},
	}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Route("devices", Message{Subject: "dc1.rack-1.srv//7.metrics"})
	if err != nil || got.Targets[0] != (Address{Type: "dc/server", ID: "srv.7"}) || got.Typename != "dc/Report" {
		t.Errorf("route: %+v, %v", got, err)
	}
	_, err = r.Route("devices", Message{Subject: "dc1.rack-1./.metrics"})
	var re *Error
	if !errors.As(err, &re) || re.Reason != ReasonMissingID || !strings.Contains(re.Detail, `level 2 of topic "dc1/rack-1//metrics" is empty`) {
		t.Errorf("empty level: %v", err)
	}

	_, err = New([]IngressRule{{Name: "d", Topic: "dc1/+", Subject: "dc1.>", Typename: "dc/R",
		Targets: []TargetRule{{FunctionType: "dc/server", ID: IDFromSubjectToken(1)}}}}, Limits{})
	if err == nil || !strings.Contains(err.Error(), `subject "dc1.>" is not the NATS form "dc1.*" of the topic "dc1/+"`) {
		t.Errorf("a subject that is not the topic's: %v", err)
	}
}
