// Package typedjson shows typed values as JSON, and makes typed values from
// JSON: the form people read and write them in. JSON values (the SDK's
// JSON types and primitives) are JSON already; a value whose typename is
// "proto/<full message name>" is a protobuf message, shown through its
// descriptor when the [Codec]'s types hold it; raw bytes and anything else
// are not JSON.
package typedjson

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// BytesTypename is the typename of raw bytes (the SDK's BytesType): never
// JSON, even when the bytes happen to parse as JSON.
const BytesTypename = "twinflow/bytes"

const protoPrefix = "proto/"

// Codec renders and encodes values with the protobuf message types it is
// given: the runtime's, made from its module's descriptor sets, or a
// client's, made from the runtime's.
type Codec struct {
	types *protoregistry.Types
}

// New returns a codec that knows the messages of types; nil knows none.
func New(types *protoregistry.Types) *Codec {
	if types == nil {
		types = &protoregistry.Types{}
	}
	return &Codec{types: types}
}

// Render returns the value data of type typename as JSON, and false when it
// cannot: raw bytes, a protobuf message the codec does not know or that
// does not decode, or bytes that are not JSON.
func (c *Codec) Render(typename string, data []byte) (string, bool) {
	if typename == BytesTypename {
		return "", false
	}
	if mt, ok := c.protoType(typename); ok {
		m := mt.New().Interface()
		if proto.Unmarshal(data, m) != nil {
			return "", false
		}
		b, err := protojson.MarshalOptions{Resolver: c.types}.Marshal(m)
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	if strings.HasPrefix(typename, protoPrefix) || !json.Valid(data) {
		return "", false
	}
	return string(data), true
}

// Encode returns the value of type typename written as the JSON document
// doc: the message it names encoded as protobuf for a protobuf typename the
// codec knows, else doc itself, which must be valid JSON. Raw bytes and
// unknown protobuf messages cannot be written as JSON.
func (c *Codec) Encode(typename, doc string) ([]byte, error) {
	if typename == BytesTypename {
		return nil, fmt.Errorf("%s is raw bytes, not JSON: send it as bytes", typename)
	}
	if mt, ok := c.protoType(typename); ok {
		m := mt.New().Interface()
		if err := (protojson.UnmarshalOptions{Resolver: c.types}).Unmarshal([]byte(doc), m); err != nil {
			return nil, fmt.Errorf("%s: the JSON is not a %s: %w", typename, mt.Descriptor().FullName(), err)
		}
		// Deterministic: fields in number order, the same bytes for the same
		// document every time (a dynamic message ranges over its fields in
		// no set order).
		return proto.MarshalOptions{Deterministic: true}.Marshal(m)
	}
	if name, ok := strings.CutPrefix(typename, protoPrefix); ok {
		return nil, fmt.Errorf("%s: the protobuf message %s is unknown to this runtime, so it cannot be written from JSON: list a descriptor set that holds it under descriptors in the module spec, or send its encoding as bytes", typename, name)
	}
	if !json.Valid([]byte(doc)) {
		return nil, fmt.Errorf("%s: not a valid JSON document", typename)
	}
	return []byte(doc), nil
}

func (c *Codec) protoType(typename string) (protoreflect.MessageType, bool) {
	name, ok := strings.CutPrefix(typename, protoPrefix)
	if !ok {
		return nil, false
	}
	mt, err := c.types.FindMessageByName(protoreflect.FullName(name))
	return mt, err == nil
}
