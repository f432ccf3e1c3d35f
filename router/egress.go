package router

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Delivery is the publishing guarantee of an egress. The zero value is
// ExactlyOnce.
type Delivery int

// The deliveries.
const (
	// ExactlyOnce publishes a record only once the checkpoint that holds it
	// is complete, with a stable Nats-Msg-Id so that JetStream drops a
	// publish repeated after a crash. Records appear with checkpoint latency.
	ExactlyOnce Delivery = iota
	// AtLeastOnce publishes a record as soon as its invocation completes. A
	// crash may publish it again.
	AtLeastOnce
)

// String returns "exactly-once" or "at-least-once", as in the module spec.
func (d Delivery) String() string {
	switch d {
	case ExactlyOnce:
		return "exactly-once"
	case AtLeastOnce:
		return "at-least-once"
	}
	return fmt.Sprintf("Delivery(%d)", int(d))
}

// ParseDelivery parses "exactly-once" or "at-least-once".
func ParseDelivery(s string) (Delivery, error) {
	switch s {
	case "exactly-once":
		return ExactlyOnce, nil
	case "at-least-once":
		return AtLeastOnce, nil
	}
	return 0, fmt.Errorf("delivery %s is neither exactly-once nor at-least-once", quote(s))
}

// EgressRule is one configured egress.
type EgressRule struct {
	// Name identifies the egress to functions: [A-Za-z0-9_-]+, unique, not
	// [ReplyEgress].
	Name string
	// Subject is the NATS subject records are published on: no wildcards,
	// not starting with "$", "_INBOX" or "twinflow." (reserved). A record's key is
	// appended to it as one more token, so an egress owns Subject and the
	// subjects under it: no other egress may publish there.
	Subject string
	// Delivery is the publishing guarantee.
	Delivery Delivery
}

// EgressRecord is a value a function wrote to an egress.
type EgressRecord struct {
	// Egress is the egress name: a configured one, or [ReplyEgress].
	Egress string
	// Typename is the value's typename.
	Typename string
	// Payload is the value.
	Payload []byte
	// ReplyTo is the subject to answer on, for the [ReplyEgress].
	ReplyTo string
	// Key, if set, is appended to the egress subject as a last token. The
	// [ReplyEgress] ignores it.
	Key string
	// Source is the function that wrote the record.
	Source Address
}

// Egresses maps egress records to subjects. It is immutable, so it is safe
// for concurrent use. A nil *Egresses knows only the [ReplyEgress].
type Egresses struct {
	rules   map[string]EgressRule
	ordered []EgressRule
}

// NewEgresses validates the rules and returns their Egresses. It reports
// every problem it finds, each as a [*ConfigError], joined with
// [errors.Join].
func NewEgresses(rules []EgressRule) (*Egresses, error) {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: path, Detail: fmt.Sprintf(format, args...)})
	}
	e := &Egresses{rules: make(map[string]EgressRule, len(rules))}
	var valid []int // indexes of the rules with a valid subject
	for i, r := range rules {
		at := fmt.Sprintf("egresses[%d]", i)
		switch _, dup := e.rules[r.Name]; {
		case !IsValidName(r.Name):
			bad(at+".name", "egress name %s must match [A-Za-z0-9_-]+", quote(r.Name))
		case r.Name == ReplyEgress:
			bad(at+".name", "egress name %q is reserved for the built-in egress that answers requests", ReplyEgress)
		case dup:
			bad(at+".name", "duplicate egress name %q", r.Name)
		default:
			e.rules[r.Name] = r
		}
		e.ordered = append(e.ordered, r)
		if err := checkSubject(r.Subject); err != nil {
			if _, perr := parsePattern(r.Subject); perr == nil {
				bad(at+".subject", "%s has wildcards; an egress publishes to one subject", quote(r.Subject))
			} else {
				bad(at+".subject", "%v", err)
			}
		} else if strings.HasPrefix(r.Subject, "$") {
			bad(at+".subject", "%s: subjects starting with $ are reserved by NATS", quote(r.Subject))
		} else if strings.HasPrefix(r.Subject, InboxPrefix) {
			bad(at+".subject", "%s: subjects starting with %s are reply inboxes", quote(r.Subject), InboxPrefix)
		} else if strings.HasPrefix(r.Subject, "twinflow.") || r.Subject == "twinflow" {
			bad(at+".subject", "%s: subjects under twinflow. are reserved", quote(r.Subject))
		} else {
			// An egress owns its subject and the keyed subjects under it.
			for _, j := range valid {
				o := rules[j]
				if SubjectsOverlap(r.Subject+".>", o.Subject) || SubjectsOverlap(r.Subject, o.Subject+".>") || r.Subject == o.Subject {
					bad(at+".subject", "%s overlaps egress %s, which publishes on %s and %s.<key>", quote(r.Subject), quote(o.Name), o.Subject, o.Subject)
				}
			}
			valid = append(valid, i)
		}
		if r.Delivery != ExactlyOnce && r.Delivery != AtLeastOnce {
			bad(at+".delivery", "unknown delivery %d", int(r.Delivery))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return e, nil
}

// Rules returns the configured egress rules. The caller owns the returned
// slice.
func (e *Egresses) Rules() []EgressRule {
	if e == nil {
		return nil
	}
	return slices.Clone(e.ordered)
}

// Resolve returns the subject, headers and delivery to publish rec with.
// The subject is the egress subject, plus "."+rec.Key when the key is set;
// for the [ReplyEgress] it is rec.ReplyTo, delivered [AtLeastOnce]. The
// headers are [TypenameHeader] and [SourceHeader] ("namespace/name/id").
// Every error is an [*Error].
func (e *Egresses) Resolve(rec EgressRecord) (subject string, header map[string][]string, delivery Delivery, err error) {
	at := "egress " + quote(rec.Egress)
	if rec.Egress == ReplyEgress {
		if rec.ReplyTo == "" {
			return "", nil, 0, errorf(ReasonMissingReplyTo, "%s: the record has no reply subject; only a message sent as a NATS request can be answered", at)
		}
		// Egress subjects are never inboxes, so a valid reply subject is
		// never an egress's.
		if err := ValidateReplySubject(rec.ReplyTo); err != nil {
			return "", nil, 0, errorf(ReasonBadReplyTo, "%s: %v", at, err)
		}
		subject, delivery = rec.ReplyTo, AtLeastOnce
	} else {
		var r EgressRule
		ok := false
		if e != nil {
			r, ok = e.rules[rec.Egress]
		}
		if !ok {
			return "", nil, 0, errorf(ReasonUnknownEgress, "no egress named %s; the module spec declares %s", quote(rec.Egress), e.names())
		}
		subject, delivery = r.Subject, r.Delivery
		if rec.Key != "" {
			if err := checkToken(rec.Key, false); err != nil {
				return "", nil, 0, errorf(ReasonBadKey, "%s: key %v", at, err)
			}
			if strings.Contains(rec.Key, ".") {
				return "", nil, 0, errorf(ReasonBadKey, "%s: key %s contains \".\"; a key is one subject token", at, quote(rec.Key))
			}
			subject += "." + rec.Key
		}
	}
	if err := ValidateTypename(rec.Typename); err != nil {
		return "", nil, 0, errorf(ReasonBadTypename, "%s: %v", at, err)
	}
	header = map[string][]string{TypenameHeader: {rec.Typename}}
	if rec.Source != (Address{}) {
		header[SourceHeader] = []string{headerSafe(rec.Source.String(), maxErrorHeader)}
	}
	return subject, header, delivery, nil
}

// names lists the configured egress names for an error message.
func (e *Egresses) names() string {
	if e == nil || len(e.rules) == 0 {
		return "none"
	}
	var names []string
	for n := range e.rules {
		names = append(names, quote(n))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// ValidateRules checks the ingress and egress rules of a module together,
// as the runtime uses them: each set as [New] (with default limits) and
// [NewEgresses] do, and that no egress publishes where an ingress reads,
// since its records would come back as messages. It reports every problem
// it finds, each as a [*ConfigError], joined with [errors.Join].
func ValidateRules(ingresses []IngressRule, egresses []EgressRule) error {
	var errs []error
	if _, err := New(ingresses, Limits{}); err != nil {
		errs = append(errs, err)
	}
	if _, err := NewEgresses(egresses); err != nil {
		errs = append(errs, err)
	}
	for i, eg := range egresses {
		for _, in := range ingresses {
			if SubjectsOverlap(eg.Subject, in.Subject) || SubjectsOverlap(eg.Subject+".>", in.Subject) {
				errs = append(errs, &ConfigError{
					Path:   fmt.Sprintf("egresses[%d].subject", i),
					Detail: fmt.Sprintf("%q (with its keyed subjects %s.<key>) overlaps the subject %q of ingress %q", eg.Subject, eg.Subject, in.Subject, in.Name),
				})
			}
		}
	}
	return errors.Join(errs...)
}
