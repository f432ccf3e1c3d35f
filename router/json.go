package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
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
		// encoding/json turns bytes that are not UTF-8, and \u escapes of
		// half a surrogate pair, into U+FFFD without a word: the id would be
		// another one than the publisher sent. Look at what was sent.
		if strings.ContainsRune(x, utf8.RuneError) {
			if why := badString(rawValue(data, path)); why != "" {
				return "", errorf(ReasonBadID, "JSON field %s: %s", quote(strings.Join(path, ".")), why)
			}
		}
		return x, nil
	case json.Number:
		return string(x), nil
	default:
		return "", errorf(ReasonBadJSON, "JSON field %s is %s; an id must be a string or a number", quote(strings.Join(path, ".")), kind(v))
	}
}

// rawValue returns the JSON value at path in data as it is written there,
// nil if there is none. data has been decoded, so it is valid JSON.
func rawValue(data []byte, path []string) []byte {
	raw := bytes.TrimSpace(data)
	for _, key := range path {
		if len(raw) == 0 {
			return nil
		}
		switch raw[0] {
		case '{':
			var m map[string]json.RawMessage
			if json.Unmarshal(raw, &m) != nil {
				return nil
			}
			raw = m[key]
		case '[':
			var a []json.RawMessage
			n, err := strconv.Atoi(key)
			if json.Unmarshal(raw, &a) != nil || err != nil || n < 0 || n >= len(a) {
				return nil
			}
			raw = a[n]
		default:
			return nil
		}
	}
	return raw
}

// badString says why a JSON string literal, quotes included, does not
// decode to the characters it was meant to hold: bytes that are not UTF-8,
// or a \u escape of half a surrogate pair. It returns "" for one that does.
func badString(lit []byte) string {
	if !utf8.Valid(lit) {
		return fmt.Sprintf("id %s is not valid UTF-8", quote(string(bytes.Trim(lit, `"`))))
	}
	for i := 0; i < len(lit); i++ {
		if lit[i] != '\\' {
			continue
		}
		i++
		if i >= len(lit) || lit[i] != 'u' || i+4 >= len(lit) {
			continue
		}
		r, err := strconv.ParseUint(string(lit[i+1:i+5]), 16, 16)
		if err != nil || !utf16.IsSurrogate(rune(r)) {
			i += 4
			continue
		}
		// A high surrogate must be followed by an escaped low one.
		if r < 0xdc00 && i+10 < len(lit) && lit[i+5] == '\\' && lit[i+6] == 'u' {
			if lo, err := strconv.ParseUint(string(lit[i+7:i+11]), 16, 16); err == nil && 0xdc00 <= lo && lo < 0xe000 {
				i += 10
				continue
			}
		}
		return fmt.Sprintf("id %s holds \\u%s, half of a UTF-16 surrogate pair: not a character", quote(string(bytes.Trim(lit, `"`))), lit[i+1:i+5])
	}
	return ""
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
