package router

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Reason classifies why a message could not be routed or an egress record
// could not be resolved. The values are stable: they appear in the
// Twinflow-Error-Reason header of dead letters and in metrics labels.
type Reason string

// The reasons of [Error].
const (
	// ReasonNoRoute: the ingress is unknown, or the subject is not one the
	// ingress accepts.
	ReasonNoRoute Reason = "no_route"
	// ReasonBadSubject: the subject is not a valid NATS subject, or a direct
	// ingress subject names an invalid function type.
	ReasonBadSubject Reason = "bad_subject"
	// ReasonMissingTypename: the header that holds the typename is missing
	// or empty.
	ReasonMissingTypename Reason = "missing_typename"
	// ReasonBadTypename: the typename is not "namespace/name".
	ReasonBadTypename Reason = "bad_typename"
	// ReasonMissingID: the subject token, header or JSON field that holds
	// the id of a target address is missing or empty.
	ReasonMissingID Reason = "missing_id"
	// ReasonBadID: the id is not valid UTF-8 or contains control characters.
	ReasonBadID Reason = "bad_id"
	// ReasonBadJSON: the payload is not JSON, or the JSON field holding an
	// id is not a string or a number.
	ReasonBadJSON Reason = "bad_json"
	// ReasonOversized: the payload is larger than [Limits.MaxPayload].
	ReasonOversized Reason = "oversized"
	// ReasonBadEnvelope: the payload on the envelope subject is not a valid
	// twinflow.v1.IngressEnvelope, the payload on the batch subject not a
	// valid twinflow.v1.IngressBatch, or an envelope has no valid target.
	ReasonBadEnvelope Reason = "bad_envelope"
	// ReasonBadIdempotencyKey: an idempotency key is longer than
	// [MaxIdempotencyKey] bytes, not valid UTF-8, or holds control
	// characters.
	ReasonBadIdempotencyKey Reason = "bad_idempotency_key"
	// ReasonNoEndpoint: no endpoint of the module serves the function type
	// a front door message is for.
	ReasonNoEndpoint Reason = "no_endpoint"
	// ReasonUnavailable: the front door cannot take the message now (intake
	// is paused, its queue is full, the runtime is stopping, or the durable
	// write failed); send it again later, with the same idempotency key.
	ReasonUnavailable Reason = "unavailable"
	// ReasonDuplicate: a request reached an address that already received
	// a message with its idempotency key within the dedup window; it was
	// dropped, and its reply went to the first request.
	ReasonDuplicate Reason = "duplicate"
	// ReasonFunctionFailed: the function failed for good on a request (a
	// terminal error, its endpoint's retry limits, or a result that broke
	// the protocol); the request was dead-lettered. Front door and client
	// answers carry it; the runtime's own answer to the request has the
	// error and no reason.
	ReasonFunctionFailed Reason = "function_failed"
	// ReasonTimeout: a request was stored but its caller stopped waiting
	// before the reply; it will still be processed (a repeat with its
	// idempotency key is dropped).
	ReasonTimeout Reason = "timeout"
	// ReasonUnknownEgress: an egress record names an egress that does not
	// exist.
	ReasonUnknownEgress Reason = "unknown_egress"
	// ReasonBadKey: an egress record's key is not a valid NATS subject token.
	ReasonBadKey Reason = "bad_key"
	// ReasonMissingReplyTo: a record for the "reply" egress has no reply
	// subject (the message it answers was not a request).
	ReasonMissingReplyTo Reason = "missing_reply_to"
	// ReasonBadReplyTo: a message, or a record for the "reply" egress, has
	// a reply subject that may not be answered: not a valid NATS subject,
	// not an inbox, or read by an ingress (see [ValidateReplySubject]).
	ReasonBadReplyTo Reason = "bad_reply_to"
	// ReasonUnknown is what [ReasonOf] returns for an error that is not an
	// [*Error].
	ReasonUnknown Reason = "unknown"
)

// Error is why a message could not be routed, or an egress record resolved.
// Routing is deterministic, so an Error is permanent: retrying the same
// message gives the same Error.
type Error struct {
	// Reason classifies the failure.
	Reason Reason
	// Detail says exactly what was wrong, naming the ingress or egress, the
	// subject, header or field at fault, and what it was needed for.
	Detail string
}

// Error returns the detail, which names everything needed to find the fault.
func (e *Error) Error() string { return e.Detail }

// ReasonOf returns the reason of the first [*Error] in err's chain, "" for
// a nil err, and [ReasonUnknown] for any other error.
func ReasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonUnknown
}

func errorf(reason Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ConfigError is a problem with one field of an ingress or egress rule given
// to [New] or [NewEgresses]. Those return every problem they find, joined
// with [errors.Join].
type ConfigError struct {
	// Path names the field with the module spec's YAML names, for example
	// "ingresses[0].targets[1].id.subjectToken" or "egresses[2].name".
	Path string
	// Detail says what is wrong with the field.
	Detail string
}

// Error returns "path: detail".
func (e *ConfigError) Error() string { return e.Path + ": " + e.Detail }

// maxQuoted is how many bytes of a user-supplied value an error quotes.
const maxQuoted = 64

// quote quotes s for an error message, cut to maxQuoted bytes. The result
// holds no control characters, so it is safe in a header.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	n := maxQuoted
	for n > maxQuoted-utf8.UTFMax && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:n], len(s))
}
