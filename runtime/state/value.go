package state

import (
	"encoding/binary"
	"errors"
	"fmt"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Value is one stored state value with its expiry.
type Value struct {
	// Typename is the type of Data, for example "twinflow/json".
	Typename string
	// Data is the serialized value.
	Data []byte
	// Expiry says when the value expires, per its spec.
	Expiry twinflowv1.ExpiryMode
	// ExpireAfterMillis is how long after the event named by Expiry the
	// value expires.
	ExpireAfterMillis int64
	// ExpiresAtMillis is when the value expires, in Unix milliseconds; 0
	// for never.
	ExpiresAtMillis int64
}

// Expired reports whether v has expired at the Unix millisecond now.
func (v Value) Expired(now int64) bool {
	return v.ExpiresAtMillis != 0 && v.ExpiresAtMillis <= now
}

// Refreshed returns v with its expiry restarted at the Unix millisecond now:
// ExpiresAtMillis is now + ExpireAfterMillis, or 0 when v never expires.
// Apply it to a value being written, and to values with
// EXPIRY_MODE_AFTER_INVOKE whenever their address is invoked (see [Touch]).
func (v Value) Refreshed(now int64) Value {
	if v.Expiry == twinflowv1.ExpiryMode_EXPIRY_MODE_NONE_UNSPECIFIED || v.ExpireAfterMillis <= 0 {
		v.ExpiresAtMillis = 0
	} else {
		v.ExpiresAtMillis = max(now+v.ExpireAfterMillis, 1)
	}
	return v
}

// Value encoding, version 1:
//
//	[0x01][expires-at uvarint][expiry mode byte][expire-after uvarint]
//	[len(typename) uvarint][typename][data]
//
// The expiry comes first so that a sweep can test it without decoding the
// rest. Negative times and durations are stored as 0.
const valueFormat = 1

var errMalformedValue = errors.New("malformed state value")

// encodeValue appends the encoding of v to dst.
func encodeValue(dst []byte, v Value) []byte {
	dst = append(dst, valueFormat)
	dst = binary.AppendUvarint(dst, uint64(max(v.ExpiresAtMillis, 0)))
	dst = append(dst, byte(v.Expiry))
	dst = binary.AppendUvarint(dst, uint64(max(v.ExpireAfterMillis, 0)))
	dst = binary.AppendUvarint(dst, uint64(len(v.Typename)))
	dst = append(dst, v.Typename...)
	return append(dst, v.Data...)
}

func encodedValueLen(v Value) int {
	return 1 + binary.MaxVarintLen64 + 1 + binary.MaxVarintLen64 +
		uvarintLen(uint64(len(v.Typename))) + len(v.Typename) + len(v.Data)
}

// valueExpiresAt decodes only the expiry time of an encoded value.
func valueExpiresAt(b []byte) (int64, error) {
	if len(b) < 1 || b[0] != valueFormat {
		return 0, errMalformedValue
	}
	at, w := binary.Uvarint(b[1:])
	if w <= 0 || at > 1<<63-1 {
		return 0, errMalformedValue
	}
	return int64(at), nil
}

// decodeValue decodes an encoded value. Data is a copy when copyData is
// set, and aliases b otherwise.
func decodeValue(b []byte, copyData bool) (Value, error) {
	var v Value
	if len(b) < 1 || b[0] != valueFormat {
		return v, fmt.Errorf("%w: unknown format", errMalformedValue)
	}
	rest := b[1:]
	at, w := binary.Uvarint(rest)
	if w <= 0 || at > 1<<63-1 {
		return v, fmt.Errorf("%w: bad expiry time", errMalformedValue)
	}
	rest = rest[w:]
	if len(rest) < 1 {
		return v, fmt.Errorf("%w: truncated", errMalformedValue)
	}
	mode := rest[0]
	rest = rest[1:]
	after, w := binary.Uvarint(rest)
	if w <= 0 || after > 1<<63-1 {
		return v, fmt.Errorf("%w: bad expiry duration", errMalformedValue)
	}
	rest = rest[w:]
	typename, rest, ok := readString(rest)
	if !ok {
		return v, fmt.Errorf("%w: bad typename", errMalformedValue)
	}
	v.Typename = typename
	v.Expiry = twinflowv1.ExpiryMode(mode)
	v.ExpireAfterMillis = int64(after)
	v.ExpiresAtMillis = int64(at)
	if copyData {
		v.Data = append(make([]byte, 0, len(rest)), rest...)
	} else {
		v.Data = rest
	}
	return v, nil
}
