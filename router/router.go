package router

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Address names one function instance.
type Address struct {
	// Type is the function type, "namespace/name".
	Type string
	// ID is the instance id: non-empty UTF-8 without control characters.
	ID string
}

// String returns "namespace/name/id".
func (a Address) String() string { return a.Type + "/" + a.ID }

// Message is a NATS message as the ingress received it. Header has the
// shape of nats.Header.
type Message struct {
	// Subject is the subject the message was published on.
	Subject string
	// Header holds the message headers.
	Header map[string][]string
	// Data is the payload.
	Data []byte
	// Reply is the reply subject of a core NATS request. Leave it empty for
	// a message delivered by JetStream, whose reply subject is the ack
	// subject; the publisher's reply subject then travels in [ReplyToHeader].
	Reply string
}

// Routed is where a message goes and what it carries.
type Routed struct {
	// Targets are the receiving addresses, one per target rule of the
	// ingress (one for the direct ingress), in rule order.
	Targets []Address
	// Typename is the message's typename.
	Typename string
	// Payload is the message. It aliases the Message's Data, except for
	// envelopes, whose argument it is.
	Payload []byte
	// ReplyTo is the reply subject to answer on, or "".
	ReplyTo string
	// Key is the message's idempotency key as the publisher gave it: the
	// envelope's idempotency_key, else the Nats-Msg-Id header; "" for none.
	// Keys are the publisher's, per ingress: the caller qualifies them with
	// the stream before comparing.
	Key string
	// Items are the messages of a batch envelope ([BatchSubject]), one per
	// item, in order; the other fields are then empty. An item that cannot
	// be routed has its Err set, and the others are routed.
	Items []Item
}

// Item is one message of a batch envelope.
type Item struct {
	// Target is the receiving address.
	Target Address
	// Typename, Payload, ReplyTo and Key are as in [Routed]. An item
	// without an idempotency_key of its own, in a batch published with a
	// Nats-Msg-Id, has the key "<Nats-Msg-Id>/<index>". An item that cannot
	// be routed keeps its ReplyTo as given, so that the requester may be
	// told: check it with [Router.CheckReplyTo] before answering.
	Typename string
	Payload  []byte
	ReplyTo  string
	Key      string
	// Err is why the item cannot be routed, an [*Error]; nil when it can.
	Err error
	// Envelope is, for an item that cannot be routed, the item as a
	// serialized twinflow.v1.IngressEnvelope: the payload of its dead
	// letter.
	Envelope []byte
}

// MaxIdempotencyKey is the longest idempotency key, in bytes, an envelope
// or a front door message may carry: every address keeps the keys of the
// messages it received for the dedup window.
const MaxIdempotencyKey = 256

// ValidateIdempotencyKey checks an idempotency key: non-empty, at most
// [MaxIdempotencyKey] bytes of valid UTF-8 without control characters.
func ValidateIdempotencyKey(k string) error {
	switch {
	case k == "":
		return errors.New("idempotency key is empty")
	case len(k) > MaxIdempotencyKey:
		return fmt.Errorf("idempotency key of %d bytes is longer than %d bytes", len(k), MaxIdempotencyKey)
	case !utf8.ValidString(k):
		return fmt.Errorf("idempotency key %s is not valid UTF-8", quote(k))
	}
	for _, r := range k {
		if isControl(r) {
			return fmt.Errorf("idempotency key %s contains a control character", quote(k))
		}
	}
	return nil
}

// IDSource says where the id of a target address comes from. Exactly one of
// the three fields is set; build one with [IDFromSubjectToken],
// [IDFromHeader] or [IDFromJSONField].
type IDSource struct {
	// SubjectToken is the 0-based index of the subject token holding the
	// id, or -1 when unset.
	SubjectToken int
	// Header is the name of the header holding the id.
	Header string
	// JSONField is the path of the payload's JSON field holding the id, with
	// dots between object keys and array indexes, e.g. "server.id" or
	// "servers.0.id". A string value is the id as it is; a number is the id
	// as written in the JSON text; anything else is an error.
	JSONField string
}

// IDFromSubjectToken returns an IDSource that takes the id from token i
// (0-based) of the subject.
func IDFromSubjectToken(i int) IDSource { return IDSource{SubjectToken: i} }

// IDFromHeader returns an IDSource that takes the id from header h.
func IDFromHeader(h string) IDSource { return IDSource{SubjectToken: -1, Header: h} }

// IDFromJSONField returns an IDSource that takes the id from the JSON field
// at path.
func IDFromJSONField(path string) IDSource { return IDSource{SubjectToken: -1, JSONField: path} }

// describe says where the id comes from, for error messages.
func (s IDSource) describe() string {
	switch {
	case s.Header != "":
		return "header " + quote(s.Header)
	case s.JSONField != "":
		return "JSON field " + quote(s.JSONField)
	default:
		return "subject token " + strconv.Itoa(s.SubjectToken)
	}
}

// TargetRule sends the messages of an ingress to one function type.
type TargetRule struct {
	// FunctionType is "namespace/name".
	FunctionType string
	// ID says where the id of the receiving address comes from.
	ID IDSource
}

// IngressRule routes the messages of one configured ingress.
type IngressRule struct {
	// Name identifies the ingress: [A-Za-z0-9_-]+, unique, not
	// [DirectIngress]. It becomes part of the JetStream stream name.
	Name string
	// Subject is the NATS subject pattern the ingress reads, with the * and
	// > wildcards. It may not overlap another ingress or the subjects
	// Twinflow uses (twinflow.in.>, twinflow.envelope, twinflow.dlq.>), nor
	// start with "$" or "_INBOX" (reply inboxes).
	Subject string
	// Topic is the MQTT topic filter the ingress reads, with the + and #
	// wildcards, or "" for an ingress of NATS subjects. Subject is then
	// its NATS form ([TopicSubject]), and an id taken from a subject token
	// is the topic level the token came from: srv.7, not srv//7. A message
	// whose level for an id is empty is dead-lettered.
	Topic string
	// Typename is the typename of every message, or "" to read it from the
	// TypenameHeader.
	Typename string
	// TypenameHeader is the header holding the typename when Typename is
	// ""; [TypenameHeader] when both are "".
	TypenameHeader string
	// Targets are the receivers of each message; at least one.
	Targets []TargetRule
}

// Limits bounds the messages a Router accepts.
type Limits struct {
	// MaxPayload is the largest payload in bytes; 0 means
	// [DefaultMaxPayload]. It is checked before anything else.
	MaxPayload int
}

// DefaultMaxPayload is the payload limit when [Limits.MaxPayload] is 0: 1 MiB,
// the NATS server's default max_payload.
const DefaultMaxPayload = 1 << 20

// Router routes ingress messages to addresses. It is immutable, so it is
// safe for concurrent use.
type Router struct {
	rules      map[string]*rule
	ordered    []IngressRule
	maxPayload int
}

type rule struct {
	IngressRule
	pattern []string
	label   string // `ingress "name"`, for errors
	// typenameHeader is the header holding the typename, or "" when the
	// typename is fixed.
	typenameHeader string
	paths          [][]string // split JSON paths, per target
}

// New validates the rules and returns a Router for them. It reports every
// problem it finds, each as a [*ConfigError], joined with [errors.Join].
func New(rules []IngressRule, limits Limits) (*Router, error) {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: path, Detail: fmt.Sprintf(format, args...)})
	}
	if limits.MaxPayload < 0 {
		bad("limits.maxPayload", "must not be negative, got %d", limits.MaxPayload)
	}
	r := &Router{rules: make(map[string]*rule, len(rules)), maxPayload: limits.MaxPayload}
	if r.maxPayload == 0 {
		r.maxPayload = DefaultMaxPayload
	}
	var prev []*rule
	for i, in := range rules {
		at := fmt.Sprintf("ingresses[%d]", i)
		c := &rule{IngressRule: in, label: label(in.Name)}
		c.Targets = append([]TargetRule(nil), in.Targets...)
		switch {
		case !IsValidName(in.Name):
			bad(at+".name", "ingress name %s must match [A-Za-z0-9_-]+", quote(in.Name))
		case in.Name == DirectIngress:
			bad(at+".name", "ingress name %q is reserved for the direct ingress", DirectIngress)
		case r.rules[in.Name] != nil:
			bad(at+".name", "duplicate ingress name %q", in.Name)
		default:
			r.rules[in.Name] = c
		}
		if in.Topic != "" {
			if sub, err := TopicSubject(in.Topic); err != nil {
				bad(at+".topic", "%v", err)
			} else if sub != in.Subject {
				bad(at+".subject", "subject %s is not the NATS form %s of the topic %s", quote(in.Subject), quote(sub), quote(in.Topic))
			}
		}
		if p, err := parsePattern(in.Subject); err != nil {
			bad(at+".subject", "%v", err)
		} else {
			c.pattern = p
			for _, res := range reservedPatterns {
				if overlap(p, res) {
					bad(at+".subject", "%s overlaps %s, which Twinflow uses", quote(in.Subject), strings.Join(res, "."))
				}
			}
			for _, o := range prev {
				if overlap(p, o.pattern) {
					bad(at+".subject", "%s overlaps the subject %s of ingress %s; a message may belong to one ingress only", quote(in.Subject), quote(o.Subject), quote(o.Name))
				}
			}
			prev = append(prev, c)
		}
		switch {
		case in.Typename != "" && in.TypenameHeader != "":
			bad(at+".typename", "set typename or typenameHeader, not both")
		case in.Typename != "":
			if err := ValidateTypename(in.Typename); err != nil {
				bad(at+".typename", "%v", err)
			}
		case in.TypenameHeader != "":
			if err := checkHeaderName(in.TypenameHeader); err != nil {
				bad(at+".typenameHeader", "%v", err)
			}
			c.typenameHeader = in.TypenameHeader
		default:
			c.typenameHeader = TypenameHeader
		}
		if len(in.Targets) == 0 {
			bad(at+".targets", "at least one target is required")
		}
		c.paths = make([][]string, len(in.Targets))
		for j, t := range in.Targets {
			tat := fmt.Sprintf("%s.targets[%d]", at, j)
			if err := ValidateFunctionType(t.FunctionType); err != nil {
				bad(tat+".function", "%v", err)
			}
			for k := range j {
				if in.Targets[k] == t {
					bad(tat, "same function and id as targets[%d]", k)
				}
			}
			id := t.ID
			n := 0
			if id.SubjectToken != -1 {
				n++
			}
			if id.Header != "" {
				n++
			}
			if id.JSONField != "" {
				n++
			}
			if n != 1 {
				bad(tat+".id", "exactly one of subjectToken, header, jsonField is required (subjectToken is -1 when unset)")
				continue
			}
			switch {
			case id.Header != "":
				if err := checkHeaderName(id.Header); err != nil {
					bad(tat+".id.header", "%v", err)
				}
			case id.JSONField != "":
				path := strings.Split(id.JSONField, ".")
				if slices.Contains(path, "") {
					bad(tat+".id.jsonField", "JSON field path %s has an empty part", quote(id.JSONField))
				}
				c.paths[j] = path
			case id.SubjectToken < 0:
				bad(tat+".id.subjectToken", "must be 0 or more, got %d", id.SubjectToken)
			case c.pattern != nil && !tokenInPattern(c.pattern, id.SubjectToken):
				bad(tat+".id.subjectToken", "token %d is past the end of subject %s, which has %d tokens (counted from 0)", id.SubjectToken, quote(in.Subject), len(c.pattern))
			}
		}
		r.ordered = append(r.ordered, c.IngressRule)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// tokenInPattern reports whether a subject matching p can have token i.
func tokenInPattern(p []string, i int) bool {
	return i < len(p) || p[len(p)-1] == ">"
}

// Rules returns the ingress rules the Router was built from. The caller owns
// the returned slice.
func (r *Router) Rules() []IngressRule {
	out := make([]IngressRule, len(r.ordered))
	for i, in := range r.ordered {
		in.Targets = append([]TargetRule(nil), in.Targets...)
		out[i] = in
	}
	return out
}

// Route returns where msg, received on the named ingress (a rule name or
// [DirectIngress]), goes. Every error is an [*Error].
func (r *Router) Route(ingress string, msg Message) (Routed, error) {
	if ingress == DirectIngress && msg.Subject == BatchSubject {
		// A batch may be larger than one message: its items are bounded
		// one by one.
		return r.routeBatch(msg)
	}
	if len(msg.Data) > r.maxPayload {
		return Routed{}, errorf(ReasonOversized, "%s: payload of %d bytes exceeds the limit of %d bytes", label(ingress), len(msg.Data), r.maxPayload)
	}
	var out Routed
	var err error
	if ingress == DirectIngress {
		out, err = r.routeDirect(msg)
	} else if c := r.rules[ingress]; c != nil {
		out, err = c.route(msg)
	} else {
		return Routed{}, errorf(ReasonNoRoute, "no ingress named %s", quote(ingress))
	}
	if err != nil {
		return Routed{}, err
	}
	if out.ReplyTo != "" {
		if err := r.CheckReplyTo(out.ReplyTo); err != nil {
			return Routed{}, errorf(ReasonBadReplyTo, "%s: %v", label(ingress), err)
		}
	}
	if out.Key == "" {
		out.Key = msgID(msg.Header)
	}
	return out, nil
}

// msgIDHeader is JetStream's message id header, which the router takes as
// an idempotency key.
const msgIDHeader = "Nats-Msg-Id"

// msgID returns the Nats-Msg-Id header (NATS header names are case
// sensitive, and so is JetStream).
func msgID(h map[string][]string) string {
	if v := h[msgIDHeader]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// CheckReplyTo checks a reply subject before it is answered: it must pass
// [ValidateReplySubject] and not be read by one of the Router's ingresses,
// where the answer would come back as a message. [Router.Route] applies it
// to every message it routes.
func (r *Router) CheckReplyTo(s string) error {
	if err := ValidateReplySubject(s); err != nil {
		return err
	}
	// Ingress subjects do not overlap: at most one matches.
	for _, c := range r.rules {
		if match(c.pattern, s) {
			return fmt.Errorf("reply subject %s is read by ingress %s; an answer there would come back as a message", quote(s), quote(c.Name))
		}
	}
	return nil
}

func label(ingress string) string {
	if ingress == DirectIngress {
		return "direct ingress"
	}
	return "ingress " + quote(ingress)
}

func (c *rule) route(msg Message) (Routed, error) {
	at := c.label
	if err := checkSubject(msg.Subject); err != nil {
		return Routed{}, errorf(ReasonBadSubject, "%s: %v", at, err)
	}
	if !match(c.pattern, msg.Subject) {
		return Routed{}, errorf(ReasonNoRoute, "%s: subject %s does not match %s", at, quote(msg.Subject), quote(c.Subject))
	}
	typename := c.Typename
	if c.typenameHeader != "" {
		var err error
		if typename, err = typenameFrom(msg.Header, c.typenameHeader, at); err != nil {
			return Routed{}, err
		}
	}
	out := Routed{
		Targets:  make([]Address, len(c.Targets)),
		Typename: typename,
		Payload:  msg.Data,
		ReplyTo:  replyTo(msg),
	}
	var doc jsonDoc
	for j, t := range c.Targets {
		id, err := c.id(j, msg, &doc)
		if err != nil {
			return Routed{}, err
		}
		out.Targets[j] = Address{Type: t.FunctionType, ID: id}
	}
	return out, nil
}

// id returns the id of the address of target j.
func (c *rule) id(j int, msg Message, doc *jsonDoc) (string, error) {
	t := c.Targets[j]
	src := t.ID
	at := c.label
	const need = "needed for the id of "
	var id string
	switch {
	case src.Header != "":
		id = headerValue(msg.Header, src.Header)
		if id == "" {
			return "", errorf(ReasonMissingID, "%s: header %s missing; %s%s", at, quote(src.Header), need, t.FunctionType)
		}
	case src.JSONField != "":
		v, err := doc.field(msg.Data, c.paths[j])
		if err != nil {
			err.Detail = fmt.Sprintf("%s: %s; %s%s", at, err.Detail, need, t.FunctionType)
			return "", err
		}
		id = v
		if id == "" {
			return "", errorf(ReasonMissingID, "%s: JSON field %s is empty; %s%s", at, quote(src.JSONField), need, t.FunctionType)
		}
	case c.Topic != "":
		var ok bool
		if id, ok = token(msg.Subject, src.SubjectToken); !ok {
			return "", errorf(ReasonMissingID, "%s: topic %s has no level %d; %s%s", at, quote(SubjectTopic(msg.Subject)), src.SubjectToken, need, t.FunctionType)
		}
		if id = topicLevel(id); id == "" {
			return "", errorf(ReasonMissingID, "%s: level %d of topic %s is empty; %s%s", at, src.SubjectToken, quote(SubjectTopic(msg.Subject)), need, t.FunctionType)
		}
	default:
		var ok bool
		if id, ok = token(msg.Subject, src.SubjectToken); !ok {
			return "", errorf(ReasonMissingID, "%s: subject %s has no token %d; %s%s", at, quote(msg.Subject), src.SubjectToken, need, t.FunctionType)
		}
	}
	if err := validateID(id); err != nil {
		return "", errorf(ReasonBadID, "%s: %s: %v; %s%s", at, src.describe(), err, need, t.FunctionType)
	}
	return id, nil
}

// typenameFrom reads and checks the typename in header h.
func typenameFrom(header map[string][]string, h, at string) (string, error) {
	typename := headerValue(header, h)
	if typename == "" {
		return "", errorf(ReasonMissingTypename, "%s: header %s missing; needed for the typename of the message", at, quote(h))
	}
	if err := ValidateTypename(typename); err != nil {
		return "", errorf(ReasonBadTypename, "%s: header %s: %v", at, quote(h), err)
	}
	return typename, nil
}

func replyTo(msg Message) string {
	if msg.Reply != "" {
		return msg.Reply
	}
	return headerValue(msg.Header, ReplyToHeader)
}

func (r *Router) routeDirect(msg Message) (Routed, error) {
	const at = "direct ingress"
	if msg.Subject == EnvelopeSubject {
		return routeEnvelope(msg)
	}
	if !strings.HasPrefix(msg.Subject, DirectSubjectPrefix) {
		if err := checkSubject(msg.Subject); err != nil {
			return Routed{}, errorf(ReasonBadSubject, "%s: %v", at, err)
		}
		return Routed{}, errorf(ReasonNoRoute, "%s: subject %s is neither %s<namespace>.<name>.<id>, %s nor %s", at, quote(msg.Subject), DirectSubjectPrefix, EnvelopeSubject, BatchSubject)
	}
	addr, err := SubjectAddress(DirectSubjectPrefix, msg.Subject)
	if err != nil {
		err.Detail = at + ": " + err.Detail
		return Routed{}, err
	}
	typename, terr := typenameFrom(msg.Header, TypenameHeader, at)
	if terr != nil {
		return Routed{}, terr
	}
	return Routed{
		Targets:  []Address{addr},
		Typename: typename,
		Payload:  msg.Data,
		ReplyTo:  replyTo(msg),
	}, nil
}

// SubjectAddress returns the address a subject names after prefix:
// <prefix><namespace>.<name>.<id>, where the id is everything after the
// function type (it may hold dots). The direct ingress
// ([DirectSubjectPrefix]) and the front door ([SendSubjectPrefix],
// [CallSubjectPrefix]) name addresses this way.
func SubjectAddress(prefix, subject string) (Address, *Error) {
	if err := checkSubject(subject); err != nil {
		return Address{}, errorf(ReasonBadSubject, "%v", err)
	}
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return Address{}, errorf(ReasonNoRoute, "subject %s does not start with %s", quote(subject), prefix)
	}
	ns, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return Address{}, errorf(ReasonBadSubject, "subject %s has no function name; want %s<namespace>.<name>.<id>", quote(subject), prefix)
	}
	name, id, ok := strings.Cut(rest, ".")
	if !ok {
		return Address{}, errorf(ReasonMissingID, "subject %s has no id after the function type; want %s<namespace>.<name>.<id>", quote(subject), prefix)
	}
	ftype := ns + "/" + name
	if err := ValidateFunctionType(ftype); err != nil {
		return Address{}, errorf(ReasonBadSubject, "subject %s: %v", quote(subject), err)
	}
	if err := validateID(id); err != nil {
		return Address{}, errorf(ReasonBadID, "subject %s: %v", quote(subject), err)
	}
	return Address{Type: ftype, ID: id}, nil
}

func routeEnvelope(msg Message) (Routed, error) {
	const at = "direct ingress: envelope"
	var env twinflowv1.IngressEnvelope
	if err := proto.Unmarshal(msg.Data, &env); err != nil {
		return Routed{}, errorf(ReasonBadEnvelope, "%s: payload is not a twinflow.v1.IngressEnvelope: %v", at, err)
	}
	it, err := envelopeItem(&env, at)
	if err != nil {
		return Routed{}, err
	}
	if it.ReplyTo == "" {
		it.ReplyTo = replyTo(msg)
	}
	return Routed{Targets: []Address{it.Target}, Typename: it.Typename, Payload: it.Payload, ReplyTo: it.ReplyTo, Key: it.Key}, nil
}

// envelopeItem checks an envelope; at names it in errors. The reply subject
// is not checked here: Route and routeBatch check it against the ingresses.
func envelopeItem(env *twinflowv1.IngressEnvelope, at string) (Item, error) {
	t := env.GetTarget()
	if t == nil {
		return Item{}, errorf(ReasonBadEnvelope, "%s: no target", at)
	}
	if err := ValidateFunctionType(t.GetType()); err != nil {
		return Item{}, errorf(ReasonBadEnvelope, "%s: target: %v", at, err)
	}
	if t.GetId() == "" {
		return Item{}, errorf(ReasonMissingID, "%s: target id is empty; needed for the id of %s", at, t.GetType())
	}
	if err := validateID(t.GetId()); err != nil {
		return Item{}, errorf(ReasonBadID, "%s: target: %v", at, err)
	}
	arg := env.GetArgument()
	if arg.GetTypename() == "" {
		return Item{}, errorf(ReasonMissingTypename, "%s: argument has no typename", at)
	}
	if err := ValidateTypename(arg.GetTypename()); err != nil {
		return Item{}, errorf(ReasonBadTypename, "%s: argument: %v", at, err)
	}
	if k := env.GetIdempotencyKey(); k != "" {
		if err := ValidateIdempotencyKey(k); err != nil {
			return Item{}, errorf(ReasonBadIdempotencyKey, "%s: %v", at, err)
		}
	}
	return Item{
		Target:   Address{Type: t.GetType(), ID: t.GetId()},
		Typename: arg.GetTypename(),
		Payload:  arg.GetValue(),
		ReplyTo:  env.GetReplyTo(),
		Key:      env.GetIdempotencyKey(),
	}, nil
}

// routeBatch routes the items of a batch envelope one by one. Only a
// payload that is not a batch at all fails the whole message.
func (r *Router) routeBatch(msg Message) (Routed, error) {
	const at = "direct ingress: batch"
	var b twinflowv1.IngressBatch
	if err := proto.Unmarshal(msg.Data, &b); err != nil {
		return Routed{}, errorf(ReasonBadEnvelope, "%s: payload is not a twinflow.v1.IngressBatch: %v", at, err)
	}
	if len(b.GetItems()) == 0 {
		return Routed{}, errorf(ReasonBadEnvelope, "%s: the batch has no items", at)
	}
	batchID := msgID(msg.Header)
	out := Routed{Items: make([]Item, len(b.GetItems()))}
	for i, env := range b.GetItems() {
		iat := at + " item " + strconv.Itoa(i)
		it, err := envelopeItem(env, iat)
		switch {
		case err != nil:
		case len(it.Payload) > r.maxPayload:
			err = errorf(ReasonOversized, "%s: payload of %d bytes exceeds the limit of %d bytes", iat, len(it.Payload), r.maxPayload)
		case it.ReplyTo != "":
			if rerr := r.CheckReplyTo(it.ReplyTo); rerr != nil {
				err = errorf(ReasonBadReplyTo, "%s: %v", iat, rerr)
			}
		}
		if err != nil {
			raw, _ := proto.Marshal(env)
			out.Items[i] = Item{Err: err, Envelope: raw, ReplyTo: env.GetReplyTo()}
			continue
		}
		if it.Key == "" && batchID != "" {
			it.Key = batchID + "/" + strconv.Itoa(i)
		}
		out.Items[i] = it
	}
	return out, nil
}
