package router

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Subjects and headers of the direct ingress, dead letters and egress.
const (
	// DirectIngress is the ingress name to pass to [Router.Route] for
	// messages of the direct ingress. No configured ingress may use it.
	DirectIngress = "direct"
	// DirectSubjectPrefix starts every direct ingress subject:
	// twinflow.in.<namespace>.<name>.<id>.
	DirectSubjectPrefix = "twinflow.in."
	// DirectSubjects is the subject pattern of the direct ingress subjects
	// that name their address.
	DirectSubjects = "twinflow.in.>"
	// DirectStream is the JetStream stream that captures the direct
	// ingress subjects, and the front door's writes.
	DirectStream = "TWINFLOW_IN"
	// EnvelopeSubject is the direct ingress subject whose payload is a
	// serialized twinflow.v1.IngressEnvelope.
	EnvelopeSubject = "twinflow.envelope"
	// BatchSubject is the direct ingress subject whose payload is a
	// serialized twinflow.v1.IngressBatch: many envelopes in one publish.
	BatchSubject = "twinflow.batch"
	// SendSubjectPrefix starts the subjects of the runtime's core NATS
	// front door for one-way messages: twinflow.send.<namespace>.<name>.<id>,
	// answered once the message is durable. No stream captures them.
	SendSubjectPrefix = "twinflow.send."
	// CallSubjectPrefix starts the subjects of the front door for requests:
	// twinflow.call.<namespace>.<name>.<id>, answered by the function.
	CallSubjectPrefix = "twinflow.call."
	// DeadLetterSubjects is the pattern of every dead-letter subject; the
	// stream TWINFLOW_DLQ holds them.
	DeadLetterSubjects = "twinflow.dlq.>"
	// DeadLetterSubject is where messages that cannot be routed go.
	DeadLetterSubject = "twinflow.dlq.ingress"
	// FunctionDeadLetterSubject is where the messages of batches that
	// failed for good go: a terminal error, an endpoint's retry limits, a
	// result that breaks the protocol.
	FunctionDeadLetterSubject = "twinflow.dlq.function"
	// EgressDeadLetterSubject is where egress records that cannot be
	// published go, such as one larger than the NATS server accepts.
	EgressDeadLetterSubject = "twinflow.dlq.egress"

	// TypenameHeader holds the typename of a message on the direct ingress,
	// of a configured ingress without a fixed typename or typename header,
	// and of every published egress record.
	TypenameHeader = "Twinflow-Typename"
	// ReplyToHeader holds the reply subject of a message that went through
	// JetStream, which drops the reply subject of the original publish.
	ReplyToHeader = "Twinflow-Reply-To"
	// IdempotencyKeyHeader holds the idempotency key of a message sent to
	// the front door, when Nats-Msg-Id does not; the front door's answers
	// carry the key used, given or generated.
	IdempotencyKeyHeader = "Twinflow-Idempotency-Key"
	// BatchIndexHeader holds the index of the item of a batch envelope
	// that a dead letter was.
	BatchIndexHeader = "Twinflow-Batch-Index"
	// SourceHeader holds the address ("namespace/name/id") of the function
	// that wrote a published egress record.
	SourceHeader = "Twinflow-Source"
	// TargetHeader holds the address ("namespace/name/id") a function dead
	// letter was for.
	TargetHeader = "Twinflow-Target"
	// CallerHeader holds the address of the function that sent a message
	// that was dead-lettered, when a function sent it.
	CallerHeader = "Twinflow-Caller"
	// ErrorHeader holds the error message of a dead letter.
	ErrorHeader = "Twinflow-Error"
	// ErrorReasonHeader holds the [Reason] of a dead letter.
	ErrorReasonHeader = "Twinflow-Error-Reason"
	// OriginalSubjectHeader holds the subject a dead letter was published on.
	OriginalSubjectHeader = "Twinflow-Original-Subject"
	// OriginalSizeHeader holds the payload size in bytes of a dead letter
	// whose payload was cut short or left out to fit the NATS server's
	// maximum payload.
	OriginalSizeHeader = "Twinflow-Original-Size"

	// ReplyEgress is the built-in egress that publishes to the reply subject
	// of the request being handled. No configured egress may use the name.
	ReplyEgress = "reply"
)

// DirectStreamSubjects are the subjects of the direct ingress: those its
// stream captures, and those a publisher to it may publish to.
var DirectStreamSubjects = []string{DirectSubjects, EnvelopeSubject, BatchSubject}

// FrontDoorSubjects are the subjects of the runtime's core NATS front door:
// requests that the runtime answers itself, not captured by any stream.
var FrontDoorSubjects = []string{SendSubjectPrefix + ">", CallSubjectPrefix + ">"}

// reservedPatterns are the subjects Twinflow itself uses; no ingress may
// overlap them.
var reservedPatterns = [][]string{
	{"twinflow", "in", ">"},
	{"twinflow", "envelope"},
	{"twinflow", "batch"},
	{"twinflow", "send", ">"},
	{"twinflow", "call", ">"},
	{"twinflow", "dlq", ">"},
}

// IsDeadLetterSubject reports whether s is a dead-letter subject.
func IsDeadLetterSubject(s string) bool { return strings.HasPrefix(s, "twinflow.dlq.") }

// IsValidName reports whether s is a valid namespace, function name or
// ingress/egress name: one or more of A-Z, a-z, 0-9, "_" and "-".
func IsValidName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidateFunctionType checks that t is "namespace/name" with both parts
// valid per [IsValidName].
func ValidateFunctionType(t string) error {
	ns, name, ok := strings.Cut(t, "/")
	switch {
	case t == "":
		return errors.New(`function type is empty; want "namespace/name"`)
	case !ok:
		return fmt.Errorf(`function type %s has no "/"; want "namespace/name"`, quote(t))
	case !IsValidName(ns):
		return fmt.Errorf("function type %s: namespace %s must match [A-Za-z0-9_-]+", quote(t), quote(ns))
	case !IsValidName(name):
		return fmt.Errorf("function type %s: name %s must match [A-Za-z0-9_-]+", quote(t), quote(name))
	}
	return nil
}

// ValidateTypename checks that t is a typename: "namespace/name", split at
// the last "/", both parts non-empty, valid UTF-8 without spaces or control
// characters. Examples: "datacenter/ServerMetricReport", "twinflow/json",
// "type.googleapis.com/google.protobuf.Struct".
func ValidateTypename(t string) error {
	if t == "" {
		return errors.New("typename is empty")
	}
	if !utf8.ValidString(t) {
		return fmt.Errorf("typename %s is not valid UTF-8", quote(t))
	}
	for _, r := range t {
		if isSpaceOrControl(r) {
			return fmt.Errorf("typename %s contains a space or control character", quote(t))
		}
	}
	i := strings.LastIndexByte(t, '/')
	if i <= 0 || i == len(t)-1 {
		return fmt.Errorf(`typename %s is not "namespace/name"`, quote(t))
	}
	return nil
}

// DirectSubject returns the direct ingress subject for the address
// (functionType, id): twinflow.in.<namespace>.<name>.<id>. The id may hold
// dots; each dot-separated part must be a valid NATS token (non-empty, no
// spaces or control characters, no "*" or ">"). Send other ids through
// [EnvelopeSubject].
func DirectSubject(functionType, id string) (string, error) {
	if err := ValidateFunctionType(functionType); err != nil {
		return "", err
	}
	if err := validateID(id); err != nil {
		return "", err
	}
	for i, tok := range strings.Split(id, ".") {
		if err := checkToken(tok, false); err != nil {
			return "", fmt.Errorf("id %s cannot be a subject: part %d %w; use the envelope subject %s", quote(id), i, err, EnvelopeSubject)
		}
	}
	ns, name, _ := strings.Cut(functionType, "/")
	return DirectSubjectPrefix + ns + "." + name + "." + id, nil
}

// InboxPrefix starts every subject a request may be answered on: "_INBOX."
// (the NATS clients' default inbox prefix) or "_INBOX_<identity>." (an
// inbox prefix that only one identity may subscribe to, set with
// nats.CustomInboxPrefix). No ingress or egress subject may start with it.
const InboxPrefix = "_INBOX"

// ValidateReplySubject checks a reply subject that a function's answer is
// published to: a valid NATS subject without wildcards, under "_INBOX." or
// "_INBOX_<identity>." (see [InboxPrefix]), with at least one token after
// the prefix. The runtime publishes answers with its own NATS permissions,
// so it must answer only where a requester waits: never on an API subject
// ("$JS.API.STREAM.DELETE.X" would delete a stream), an ingress, an egress
// or the runtime's own subjects. Inboxes are the one place where NATS
// clients wait for answers, and with per-identity inbox prefixes and
// permissions only their owner can read them.
func ValidateReplySubject(s string) error {
	if err := checkSubject(s); err != nil {
		return fmt.Errorf("reply %w", err)
	}
	first, rest, _ := strings.Cut(s, ".")
	if !IsInboxToken(first) || rest == "" {
		return fmt.Errorf("reply subject %s is not an inbox: requests are answered only on subjects under %s. or %s_<identity>.", quote(s), InboxPrefix, InboxPrefix)
	}
	return nil
}

// ValidateAddress checks the address of a function instance: its type per
// [ValidateFunctionType], its id non-empty valid UTF-8 without control
// characters.
func ValidateAddress(functionType, id string) error {
	if err := ValidateFunctionType(functionType); err != nil {
		return err
	}
	return validateID(id)
}

// IsInboxToken reports whether tok, the first token of a subject, makes it
// an inbox: "_INBOX" or "_INBOX_<name>" with a name per [IsValidName].
func IsInboxToken(tok string) bool {
	if tok == InboxPrefix {
		return true
	}
	name, ok := strings.CutPrefix(tok, InboxPrefix+"_")
	return ok && IsValidName(name)
}

// validateID checks that an address id is non-empty valid UTF-8 without
// control characters.
func validateID(id string) error {
	if id == "" {
		return errors.New("id is empty")
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("id %s is not valid UTF-8", quote(id))
	}
	for _, r := range id {
		if isControl(r) {
			return fmt.Errorf("id %s contains a control character", quote(id))
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || 0x80 <= r && r < 0xa0 }

func isSpaceOrControl(r rune) bool {
	return r == ' ' || isControl(r) || r == 0x85 || r == 0xa0 || r == 0x2028 || r == 0x2029
}

// checkToken checks one subject token: non-empty, no spaces or control
// characters, and no "*" or ">" unless wildcards are allowed and the token
// is exactly one of them.
func checkToken(tok string, wildcards bool) error {
	if tok == "" {
		return errors.New("is empty")
	}
	if wildcards && (tok == "*" || tok == ">") {
		return nil
	}
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case c <= ' ' || c == 0x7f:
			return fmt.Errorf("%s contains a space or control character", quote(tok))
		case c == '*' || c == '>':
			return fmt.Errorf("%s contains %q", quote(tok), c)
		}
	}
	return nil
}

// checkSubject checks a subject a message was published on: dot-separated
// valid tokens, no wildcards.
func checkSubject(s string) error {
	if s == "" {
		return errors.New("subject is empty")
	}
	i := 0
	for rest := s; ; i++ {
		tok, r, more := strings.Cut(rest, ".")
		if err := checkToken(tok, false); err != nil {
			return fmt.Errorf("subject %s is not a valid NATS subject: token %d %w", quote(s), i, err)
		}
		if !more {
			return nil
		}
		rest = r
	}
}

// parsePattern splits a subject pattern into tokens, checking that "*" and
// ">" are whole tokens and ">" is the last.
func parsePattern(s string) ([]string, error) {
	if s == "" {
		return nil, errors.New("subject is empty")
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		if err := checkToken(tok, true); err != nil {
			return nil, fmt.Errorf("%s is not a valid NATS subject: token %d %w", quote(s), i, err)
		}
		if tok == ">" && i != len(toks)-1 {
			return nil, fmt.Errorf(`%s is not a valid NATS subject: ">" must be the last token`, quote(s))
		}
	}
	if strings.HasPrefix(toks[0], "$") {
		return nil, fmt.Errorf("%s: subjects starting with $ are reserved by NATS", quote(s))
	}
	if strings.HasPrefix(toks[0], InboxPrefix) {
		return nil, fmt.Errorf("%s: subjects starting with %s are reply inboxes", quote(s), InboxPrefix)
	}
	return toks, nil
}

// match reports whether the valid subject subj matches the pattern p.
func match(p []string, subj string) bool {
	rest, done := subj, false
	for _, pt := range p {
		if done {
			return false
		}
		if pt == ">" {
			return true
		}
		tok, r, more := strings.Cut(rest, ".")
		done, rest = !more, r
		if pt != "*" && pt != tok {
			return false
		}
	}
	return done
}

// SubjectsOverlap reports whether some subject matches both NATS subject
// patterns a and b (with the * and > wildcards). It is false when either is
// not a valid pattern.
func SubjectsOverlap(a, b string) bool {
	pa, err := parsePattern(a)
	if err != nil {
		return false
	}
	pb, err := parsePattern(b)
	if err != nil {
		return false
	}
	return overlap(pa, pb)
}

// SubjectWithin reports whether every subject matching the NATS subject
// pattern sub also matches the pattern p: sub grants no more than p. It is
// false when either is not a valid pattern.
func SubjectWithin(sub, p string) bool {
	ps, err := parsePattern(sub)
	if err != nil {
		return false
	}
	pp, err := parsePattern(p)
	if err != nil {
		return false
	}
	for i, t := range pp {
		if t == ">" {
			return i < len(ps)
		}
		if i >= len(ps) {
			return false
		}
		switch {
		case ps[i] == ">":
			return false
		case t == "*":
		case t != ps[i]:
			return false
		}
	}
	return len(ps) == len(pp)
}

// overlap reports whether some subject matches both patterns.
func overlap(a, b []string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == ">" || b[i] == ">" {
			return true
		}
		if a[i] != "*" && b[i] != "*" && a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// token returns token i (0-based) of the valid subject subj.
func token(subj string, i int) (string, bool) {
	rest := subj
	for ; i > 0; i-- {
		var more bool
		if _, rest, more = strings.Cut(rest, "."); !more {
			return "", false
		}
	}
	tok, _, _ := strings.Cut(rest, ".")
	return tok, true
}

// checkHeaderName checks a NATS header name: printable ASCII without spaces
// or ":".
func checkHeaderName(h string) error {
	if h == "" {
		return errors.New("header name is empty")
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("header name %s may hold only printable ASCII without spaces or \":\"", quote(h))
		}
	}
	return nil
}

// headerValue returns the first value of header key: an exact match of the
// name first, else a case-insensitive one (NATS header names are case
// sensitive, but publishers are not always careful).
func headerValue(h map[string][]string, key string) string {
	if v, ok := h[key]; ok {
		if len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var best string
	found := false
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) && (!found || k < best) {
			best, found = k, true
		}
	}
	if !found {
		return ""
	}
	return h[best][0]
}
