package frontdoor

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/twinflow/twinflow/router"
)

// Message is one message for an address, as the front door takes it.
type Message struct {
	Target   router.Address
	Typename string
	Payload  []byte
	// ReplyTo is the inbox a call is answered on; "" for a one-way message.
	ReplyTo string
	// Key is the idempotency key; the front door generates one when the
	// client gave none, so that its own retries of a write are idempotent.
	Key string
}

// The field numbers of twinflow.v1.IngressBatch, IngressEnvelope, Address
// and TypedValue (proto/twinflow/v1). A write's batch is appended field by
// field into one buffer instead of building the messages first: it is the
// front door's hot path. TestEncodingMatchesProto keeps the two in step.
const (
	batchItems       = 1
	envelopeTarget   = 1
	envelopeArgument = 2
	envelopeReplyTo  = 3
	envelopeKey      = 4
	addressType      = 1
	addressID        = 2
	valueTypename    = 1
	valueValue       = 2
)

// addressSize and valueSize are the encoded sizes of m's Address and
// TypedValue.
func addressSize(m *Message) int {
	return stringField(addressType, m.Target.Type) + stringField(addressID, m.Target.ID)
}

func valueSize(m *Message) int {
	return stringField(valueTypename, m.Typename) + bytesField(valueValue, m.Payload)
}

// envelopeSize is the encoded size of m as an IngressEnvelope.
func envelopeSize(m *Message) int {
	return messageField(envelopeTarget, addressSize(m)) + messageField(envelopeArgument, valueSize(m)) +
		stringField(envelopeReplyTo, m.ReplyTo) + stringField(envelopeKey, m.Key)
}

// itemSize is the encoded size of m as an item of an IngressBatch.
func itemSize(m *Message) int { return messageField(batchItems, envelopeSize(m)) }

// appendItem appends m to b as an item of an IngressBatch.
func appendItem(b []byte, m *Message) []byte {
	b = protowire.AppendTag(b, batchItems, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(envelopeSize(m)))
	b = protowire.AppendTag(b, envelopeTarget, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(addressSize(m)))
	b = appendString(b, addressType, m.Target.Type)
	b = appendString(b, addressID, m.Target.ID)
	b = protowire.AppendTag(b, envelopeArgument, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(valueSize(m)))
	b = appendString(b, valueTypename, m.Typename)
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, valueValue, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	b = appendString(b, envelopeReplyTo, m.ReplyTo)
	return appendString(b, envelopeKey, m.Key)
}

// appendString appends a string field, leaving it out when empty as proto3
// does.
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func stringField(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func bytesField(num protowire.Number, b []byte) int {
	if len(b) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(b))
}

func messageField(num protowire.Number, size int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(size)
}
