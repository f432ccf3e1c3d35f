package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
)

// jsonDoc is a message payload decoded once, on first use, for all the
// targets that take their id from a JSON field.
type jsonDoc struct {
	parsed bool
	value  any
	err    *Error
}

// field returns the string or number at path. Errors leave it to the caller
// to say which ingress and target they concern.
func (d *jsonDoc) field(data []byte, path []string) (string, *Error) {
	if !d.parsed {
		d.parsed = true
		d.value, d.err = decodeJSON(data)
	}
	if d.err != nil {
		return "", &Error{Reason: d.err.Reason, Detail: d.err.Detail}
	}
	v := d.value
	for i, key := range path {
		at := quote(strings.Join(path[:i+1], "."))
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[key]; !ok {
				return "", errorf(ReasonMissingID, "JSON field %s missing", at)
			}
		case []any:
			n, err := strconv.Atoi(key)
			if err != nil || n < 0 || n >= len(x) {
				return "", errorf(ReasonMissingID, "JSON field %s missing: the array has %d elements", at, len(x))
			}
			v = x[n]
		default:
			return "", errorf(ReasonBadJSON, "JSON field %s cannot be looked up in %s", at, kind(v))
		}
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return string(x), nil
	default:
		return "", errorf(ReasonBadJSON, "JSON field %s is %s; an id must be a string or a number", quote(strings.Join(path, ".")), kind(v))
	}
}

func decodeJSON(data []byte) (any, *Error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errorf(ReasonBadJSON, "payload is empty, not JSON")
		}
		return nil, errorf(ReasonBadJSON, "payload is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errorf(ReasonBadJSON, "payload is not valid JSON: data after the top-level value at byte %d", dec.InputOffset())
	}
	return v, nil
}

// kind names the JSON kind of v, with its article.
func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	case string:
		return "a string"
	default:
		return "a number"
	}
}
