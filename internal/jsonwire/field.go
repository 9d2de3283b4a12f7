package jsonwire

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// Object walks the JSON object in b (see Members), refusing anything else
// with an error that wraps relay.ErrInvalid and says what b is instead:
// empty, another JSON type, or not valid JSON.
func Object(b []byte, f func(key, val []byte)) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return fmt.Errorf("body is empty: send a JSON object: %w", relay.ErrInvalid)
	}
	err := Members(b, f)
	switch {
	case err == nil:
		return nil
	case err == ErrNotObject:
		return fmt.Errorf("body must be a JSON object, not %s: %w", kind(bytes.TrimSpace(b)[0]), relay.ErrInvalid)
	}
	return fmt.Errorf("body is not valid JSON (%v): %w", err, relay.ErrInvalid)
}

// kind names the JSON type a value starting with c has.
func kind(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// FieldIs matches an object key to a field name the way encoding/json
// does: exactly or case-insensitively.
func FieldIs(key []byte, name string) bool {
	return string(key) == name || bytes.EqualFold(key, []byte(name))
}

// IsNull reports whether a field was absent (raw is empty) or null.
func IsNull(raw []byte) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// String returns the value of the string field named field, whose raw
// JSON is raw; the value may alias raw. An absent, null or non-string
// field is refused with an error naming it, wrapping relay.ErrInvalid.
func String(field string, raw []byte) ([]byte, error) {
	if IsNull(raw) {
		return nil, fmt.Errorf("%s is required: a string: %w", field, relay.ErrInvalid)
	}
	if raw[0] != '"' {
		return nil, fmt.Errorf("%s must be a string, got %s: %w", field, Excerpt(raw), relay.ErrInvalid)
	}
	s, err := unquote(raw)
	if err != nil {
		return nil, fmt.Errorf("%s must be a string, got %s: %w", field, Excerpt(raw), relay.ErrInvalid)
	}
	return s, nil
}

// Excerpt shows at most 40 bytes of untrusted input in an error message,
// quoted unless it is short and printable.
func Excerpt(b []byte) string {
	s := string(b)
	cut := len(s) > 40
	if cut {
		s = s[:40]
	}
	printable := true
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			printable = false
		}
	}
	if !printable || cut {
		s = strconv.Quote(s)
	}
	if cut {
		s += "…"
	}
	return s
}
