// Package jsonwire reads and writes the JSON on Relay's hot paths without
// reflection: a one-pass scanner that walks an object's members and
// validates the whole document as encoding/json would (the fuzz targets of
// its callers hold it to encoding/json's answers), helpers that decode a
// member into a string or refuse it with an error naming the field
// (wrapping relay.ErrInvalid), and AppendString, which writes a JSON string
// as encoding/json would. Publish bodies (package api) and socket commands
// (the packages under internal/protocol) are decoded with it; relay.v1
// frames and publish receipts are written with it.
package jsonwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Members walks the members of the JSON object in b in one pass, calling
// f with each key (unescaped) and raw value, and validates the whole
// document as encoding/json would: publish bodies are decoded on the hot
// path, and encoding/json needs two passes plus reflection. The fuzz
// targets hold this scanner to encoding/json's answers. A valid document
// that is not an object is refused with ErrNotObject.
func Members(b []byte, f func(key, val []byte)) error {
	s := scanner{b: b}
	s.space()
	if s.i >= len(b) {
		return errors.New("unexpected end of JSON input")
	}
	var err error
	if b[s.i] == '{' {
		err = s.object(0, f)
	} else if err = s.value(0); err == nil {
		err = ErrNotObject
	}
	if err != nil && err != ErrNotObject {
		return err
	}
	if s.space(); s.i != len(b) {
		return s.errAt("after top-level value")
	}
	return err
}

// ErrNotObject is Members' refusal of a valid JSON document that is not an
// object.
var ErrNotObject = errors.New("not an object")

// maxDepth matches encoding/json's nesting limit.
const maxDepth = 10000

type scanner struct {
	b []byte
	i int
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) errAt(context string) error {
	if s.i >= len(s.b) {
		return errors.New("unexpected end of JSON input")
	}
	return fmt.Errorf("invalid character %q %s", s.b[s.i], context)
}

// value skips one JSON value.
func (s *scanner) value(depth int) error {
	if depth > maxDepth {
		return errors.New("exceeded max depth")
	}
	switch c := s.peek(); {
	case c == '"':
		return s.str()
	case c == '{':
		return s.object(depth, nil)
	case c == '[':
		s.i++
		s.space()
		if s.peek() == ']' {
			s.i++
			return nil
		}
		for {
			s.space()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return nil
			default:
				return s.errAt("after array element")
			}
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.errAt("looking for beginning of value")
}

// object skips an object, calling f (when not nil) with each key and raw
// value.
func (s *scanner) object(depth int, f func(key, val []byte)) error {
	s.i++ // '{'
	s.space()
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		s.space()
		if s.peek() != '"' {
			return s.errAt("looking for beginning of object key string")
		}
		ks := s.i
		if err := s.str(); err != nil {
			return err
		}
		key := s.b[ks:s.i]
		s.space()
		if s.peek() != ':' {
			return s.errAt("after object key")
		}
		s.i++
		s.space()
		vs := s.i
		if err := s.value(depth + 1); err != nil {
			return err
		}
		if f != nil {
			k, err := unquote(key)
			if err != nil {
				return err
			}
			f(k, s.b[vs:s.i])
		}
		s.space()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.errAt("after object key:value pair")
		}
	}
}

func (s *scanner) literal(lit string) error {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		for j := 0; j < len(lit); j++ {
			if s.i+j >= len(s.b) {
				s.i += j
				return s.errAt("")
			}
			if s.b[s.i+j] != lit[j] {
				s.i += j
				return s.errAt("in literal " + lit)
			}
		}
	}
	s.i += len(lit)
	return nil
}

// number skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return s.errAt("in numeric literal")
	}
	if s.peek() == '.' {
		s.i++
		if c := s.peek(); c < '0' || c > '9' {
			return s.errAt("after decimal point in numeric literal")
		}
		s.digits()
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if c := s.peek(); c < '0' || c > '9' {
			return s.errAt("in exponent of numeric literal")
		}
		s.digits()
	}
	return nil
}

func (s *scanner) digits() {
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
}

// str skips a string, checking escapes and refusing control characters.
func (s *scanner) str() error {
	if s.peek() != '"' {
		return s.errAt("looking for beginning of value")
	}
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return nil
		case c < 0x20:
			return s.errAt("in string literal")
		case c == '\\':
			s.i++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for range 4 {
					if !isHex(s.peek()) {
						return s.errAt("in \\u hexadecimal character escape")
					}
					s.i++
				}
			default:
				return s.errAt("in string escape code")
			}
		default:
			s.i++
		}
	}
	return errors.New("unexpected end of JSON input")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// unquote returns the value of a valid JSON string literal. A plain string
// (no escapes, valid UTF-8) is returned as a slice of raw, without a copy;
// the short escapes are decoded here, since JSON payloads carried in a
// message are full of \"; \u escapes and invalid UTF-8 go through
// encoding/json, so they are treated exactly as it treats them.
func unquote(raw []byte) ([]byte, error) {
	inner := raw[1 : len(raw)-1]
	i := bytes.IndexByte(inner, '\\')
	if i < 0 {
		if utf8.Valid(inner) {
			return inner, nil
		}
		return unquoteJSON(raw)
	}
	if !utf8.Valid(inner) {
		return unquoteJSON(raw)
	}
	out := make([]byte, i, len(inner))
	copy(out, inner)
	for ; i < len(inner); i++ {
		c := inner[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++ // the scanner guaranteed a valid escape
		switch inner[i] {
		case '"', '\\', '/':
			out = append(out, inner[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		default: // 'u'
			return unquoteJSON(raw)
		}
	}
	return out, nil
}

func unquoteJSON(raw []byte) ([]byte, error) {
	var v string
	err := json.Unmarshal(raw, &v)
	return []byte(v), err
}

// Elements returns how many elements the JSON array in b has, or -1 when
// b is not an array. b must be valid JSON (a value Members returned), so
// counting costs one pass and no allocation: a command can be refused for
// naming too many topics before any of them is decoded.
func Elements(b []byte) int {
	s := scanner{b: b}
	s.space()
	if s.peek() != '[' {
		return -1
	}
	s.i++
	s.space()
	if s.peek() == ']' {
		return 0
	}
	for n := 1; ; n++ {
		s.space()
		if s.value(1) != nil {
			return -1
		}
		s.space()
		if s.peek() != ',' {
			return n
		}
		s.i++
	}
}
