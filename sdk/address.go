package sdk

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Address names one function instance: a function type ("namespace/name")
// and an instance id. Every address has its own state.
type Address struct {
	// Type is the function type, "namespace/name", e.g. "datacenter/server".
	Type string
	// ID is the instance id, any non-empty UTF-8 string, e.g. "srv-0042".
	ID string
}

// String returns "type/id", e.g. "datacenter/server/srv-0042".
func (a Address) String() string { return a.Type + "/" + a.ID }

// Validate reports whether a is a well-formed address: a valid function
// type and a non-empty UTF-8 id.
func (a Address) Validate() error {
	if err := validateFunctionType(a.Type); err != nil {
		return err
	}
	if a.ID == "" {
		return errors.New("address id is empty")
	}
	if !utf8.ValidString(a.ID) {
		return errors.New("address id is not valid UTF-8")
	}
	return nil
}

func (a Address) toProto() *twinflowv1.Address {
	return &twinflowv1.Address{Type: a.Type, Id: a.ID}
}

func addressFromProto(a *twinflowv1.Address) Address {
	return Address{Type: a.GetType(), ID: a.GetId()}
}

// TypedValue is a payload with the name of its type. Messages, state values
// and egress records are all typed values. Build one with [Encode] and read
// it with [Decode].
//
// Whoever passes a TypedValue to the SDK hands over Bytes: the slice must
// not be modified afterwards.
type TypedValue struct {
	// Typename is "namespace/name", e.g. "datacenter/ServerMetricReport".
	Typename string
	// Bytes is the payload, encoded as the typename says.
	Bytes []byte
}

func (v TypedValue) toProto() *twinflowv1.TypedValue {
	return &twinflowv1.TypedValue{Typename: v.Typename, Value: v.Bytes}
}

// validateFunctionType checks the "namespace/name" form of a function type:
// exactly one slash, both parts non-empty. Module specs match function
// types by namespace ("namespace/*"), so a second slash would be ambiguous.
func validateFunctionType(s string) error {
	if err := validateName(s); err != nil {
		return fmt.Errorf("function type %q: %w", s, err)
	}
	if strings.Count(s, "/") != 1 {
		return fmt.Errorf("function type %q: want exactly one '/' as in \"namespace/name\"", s)
	}
	return nil
}

// validateTypename checks the "namespace/name" form of a typename. Unlike a
// function type, the name part may contain more slashes: typenames are
// opaque to routing.
func validateTypename(s string) error {
	if err := validateName(s); err != nil {
		return fmt.Errorf("typename %q: %w", s, err)
	}
	return nil
}

// validateName checks what typenames and function types share: a non-empty
// namespace and name around the first slash, valid UTF-8, no spaces or
// control characters (they would break subjects, logs and CLIs).
func validateName(s string) error {
	i := strings.IndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return errors.New(`want "namespace/name" with both parts non-empty`)
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf { // ASCII fast path: typenames almost always are
			if c <= ' ' || c == 0x7f {
				return errors.New("contains a space or control character")
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return errors.New("not valid UTF-8")
		}
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return errors.New("contains a space or control character")
		}
		i += size
	}
	return nil
}
