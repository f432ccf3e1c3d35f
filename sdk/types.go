package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Type is a typename plus the codec for values of T. Messages and state
// values carry the typename on the wire, so that a receiver can tell what
// it got before decoding it.
//
// Implementations must be safe for concurrent use.
type Type[T any] interface {
	// Typename returns the "namespace/name" the values travel under.
	Typename() string
	// Encode serializes v.
	Encode(v T) ([]byte, error)
	// Decode parses b. The caller keeps ownership of b.
	Decode(b []byte) (T, error)
}

// Primitive types. Their values are JSON-encoded (42, 1.5, "x", true) so
// that they read well in state dumps and in other languages' SDKs.
var (
	// Int64Type is "twinflow/int64".
	Int64Type Type[int64] = JSONType[int64]("twinflow/int64")
	// Float64Type is "twinflow/float64".
	Float64Type Type[float64] = JSONType[float64]("twinflow/float64")
	// StringType is "twinflow/string".
	StringType Type[string] = JSONType[string]("twinflow/string")
	// BoolType is "twinflow/bool".
	BoolType Type[bool] = JSONType[bool]("twinflow/bool")
	// BytesType is "twinflow/bytes": raw bytes, not encoded at all.
	BytesType Type[[]byte] = bytesType{}
)

// JSONType returns the type of Go values of T encoded as JSON with
// encoding/json, under the given typename ("namespace/name"). The typename
// is checked where the type is used: by [Registry.Register] and [Encode].
func JSONType[T any](typename string) Type[T] { return jsonType[T]{name: typename} }

type jsonType[T any] struct{ name string }

func (t jsonType[T]) Typename() string { return t.name }

func (t jsonType[T]) Encode(v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t.name, err)
	}
	return b, nil
}

func (t jsonType[T]) Decode(b []byte) (T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("decode %s: %w", t.name, err)
	}
	return v, nil
}

// ProtoType returns the type of the protobuf message T (a generated message
// pointer such as *datacenterv1.ServerMetricReport), encoded in the
// protobuf binary format under the typename "proto/" + the message's full
// name, e.g. "proto/datacenter.v1.ServerMetricReport".
//
// T must be a concrete message type; for an interface type such as
// proto.Message the returned type has an empty typename, which
// [Registry.Register] and [Encode] reject.
func ProtoType[T proto.Message]() Type[T] {
	mt, err := messageType[T]()
	if err != nil {
		return protoType[T]{err: err}
	}
	return protoType[T]{name: "proto/" + string(mt.Descriptor().FullName()), mt: mt}
}

// messageType finds the message type of T from its zero value. Generated
// messages answer ProtoReflect on a nil pointer; anything else (an
// interface type, a hand-written message) is turned into an error rather
// than a panic.
func messageType[T proto.Message]() (mt protoreflect.MessageType, err error) {
	defer func() {
		if recover() != nil {
			mt, err = nil, errors.New("sdk.ProtoType: cannot take the message type of a nil value")
		}
	}()
	var zero T
	if any(zero) == nil {
		return nil, errors.New("sdk.ProtoType: T must be a concrete message type, not an interface")
	}
	return zero.ProtoReflect().Type(), nil
}

type protoType[T proto.Message] struct {
	name string
	mt   protoreflect.MessageType
	err  error
}

func (t protoType[T]) Typename() string { return t.name }

func (t protoType[T]) Encode(v T) ([]byte, error) {
	if t.err != nil {
		return nil, t.err
	}
	b, err := proto.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t.name, err)
	}
	return b, nil
}

func (t protoType[T]) Decode(b []byte) (T, error) {
	var zero T
	if t.err != nil {
		return zero, t.err
	}
	m, ok := t.mt.New().Interface().(T)
	if !ok {
		return zero, fmt.Errorf("decode %s: message type does not match", t.name)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return zero, fmt.Errorf("decode %s: %w", t.name, err)
	}
	return m, nil
}

type bytesType struct{}

func (bytesType) Typename() string { return "twinflow/bytes" }

// Encode and Decode copy so that neither the function nor the SDK sees the
// other modify a shared slice.
func (bytesType) Encode(v []byte) ([]byte, error) { return bytes.Clone(v), nil }
func (bytesType) Decode(b []byte) ([]byte, error) { return bytes.Clone(b), nil }

// Encode encodes v with typ into a TypedValue. It fails when typ is nil,
// its typename is malformed, or the codec fails.
func Encode[T any](typ Type[T], v T) (TypedValue, error) {
	if typ == nil {
		return TypedValue{}, errors.New("encode: type is nil")
	}
	name := typ.Typename()
	if err := validateTypename(name); err != nil {
		return TypedValue{}, fmt.Errorf("encode: %w", err)
	}
	b, err := typ.Encode(v)
	if err != nil {
		return TypedValue{}, err
	}
	return TypedValue{Typename: name, Bytes: b}, nil
}

// Decode decodes v with typ. It fails, naming both typenames, when v's
// typename is not typ's: values of different types must never be decoded
// into each other just because their bytes happen to parse.
func Decode[T any](typ Type[T], v TypedValue) (T, error) {
	var zero T
	if typ == nil {
		return zero, errors.New("decode: type is nil")
	}
	if want := typ.Typename(); v.Typename != want {
		return zero, fmt.Errorf("value has typename %q, want %q", v.Typename, want)
	}
	return typ.Decode(v.Bytes)
}
