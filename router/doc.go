// Package router decides where messages go: from a NATS message arriving on
// an ingress to the function addresses it is for, and from an egress record
// written by a function to the NATS subject it is published on.
//
// Everything here is a pure function of its inputs: no I/O, no goroutines, no
// clock. The runtime's ingress readers call [Router.Route] for each message,
// send the [Routed] value to the target addresses, and publish what fails to
// the dead-letter subject given by [DeadLetter]. The egress side calls
// [Egresses.Resolve] for each record a function emits.
//
// # Configured ingresses
//
// An [IngressRule] from the module spec names a NATS subject pattern (with the
// * and > wildcards), where the message typename comes from (a fixed typename
// or a header), and one or more [TargetRule]s: a function type and where the
// id of the receiving address comes from (a subject token, a header or a
// field of a JSON payload). A message goes to one address per target rule, so
// one message can fan out to several function types.
//
// # Direct ingress
//
// Without any configuration, a message can be sent to any address on the
// direct ingress, under one of two subjects:
//
//   - twinflow.in.<namespace>.<name>.<id>: the subject names the address. The
//     id is everything after the function type, so it may contain dots (each
//     dot-separated part must be a valid NATS token). The message typename is
//     in the Twinflow-Typename header and the payload is the raw message.
//     [DirectSubject] builds such a subject.
//   - twinflow.envelope: the payload is a serialized twinflow.v1.IngressEnvelope
//     that carries the target address and the typed message, for ids that are
//     not valid NATS tokens.
//   - twinflow.batch: the payload is a serialized twinflow.v1.IngressBatch,
//     many envelopes in one publish. [Routed.Items] holds them, each routed
//     on its own: an invalid item carries its error and the others go on.
//
// # Idempotency keys
//
// [Routed.Key] is the message's idempotency key as its publisher gave it: an
// envelope's idempotency_key, else the Nats-Msg-Id header. A batch item
// without a key of its own, in a batch published with a Nats-Msg-Id, has
// "<Nats-Msg-Id>/<index>". The runtime qualifies keys with the stream and
// drops a repeat that reaches an address which saw its key.
//
// # The front door
//
// The runtime also answers core NATS requests on twinflow.send.<namespace>.
// <name>.<id> and twinflow.call.<namespace>.<name>.<id> ([SendSubjectPrefix],
// [CallSubjectPrefix], [SubjectAddress]) and writes them into the direct
// ingress as batches. No ingress may overlap these subjects.
//
// # Replies
//
// A message that arrived as a core NATS request carries its reply subject in
// [Message.Reply]. A message that went through a JetStream stream has lost
// it, so the publisher may put the reply subject in the Twinflow-Reply-To
// header instead. Either way it reaches the function, which answers through
// the built-in "reply" egress. The runtime publishes the answer with its own
// NATS permissions, so a reply subject must be one it is safe to answer
// ([ValidateReplySubject]): an inbox, under "_INBOX." or
// "_INBOX_<identity>.", and not read by an ingress. A message with any
// other reply subject is not routed (reason bad_reply_to).
//
// # Errors
//
// Every routing failure is an [*Error] with a [Reason]. Failures are
// permanent: the same message always fails the same way, so the caller
// dead-letters it and moves on instead of retrying.
package router
