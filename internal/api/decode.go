package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// The decoders below turn untrusted bytes into requests. Each error names
// the field and what it must be; all wrap relay.ErrInvalid or
// relay.ErrTooLarge. They are fuzzed (decode_fuzz_test.go).

// registerRequest is POST /register's body.
type registerRequest struct {
	User relay.UserID
}

func decodeRegister(body []byte) (registerRequest, error) {
	var raw struct {
		UserID json.RawMessage `json:"user_id"`
	}
	if err := decodeObject(body, &raw); err != nil {
		return registerRequest{}, err
	}
	if isNull(raw.UserID) {
		return registerRequest{}, fmt.Errorf("user_id is required: a non-negative integer: %w", relay.ErrInvalid)
	}
	u, err := decodeUserID(raw.UserID)
	return registerRequest{User: u}, err
}

// publishRequest is POST /publish's body.
type publishRequest struct {
	Topic   string
	User    relay.UserID
	HasUser bool
	Message []byte
}

func decodePublish(body []byte, maxMessage int) (publishRequest, error) {
	var raw struct {
		Topic   json.RawMessage `json:"topic"`
		UserID  json.RawMessage `json:"user_id"`
		Message json.RawMessage `json:"message"`
	}
	var p publishRequest
	if err := decodeObject(body, &raw); err != nil {
		return p, err
	}
	topic, err := decodeString("topic", raw.Topic)
	if err != nil {
		return p, err
	}
	p.Topic = topic
	if !isNull(raw.UserID) {
		if p.User, err = decodeUserID(raw.UserID); err != nil {
			return p, err
		}
		p.HasUser = true
	}
	msg, err := decodeString("message", raw.Message)
	if err != nil {
		return p, err
	}
	if len(msg) > maxMessage {
		return p, fmt.Errorf("message is %d bytes, the limit is %d: %w", len(msg), maxMessage, relay.ErrTooLarge)
	}
	p.Message = []byte(msg)
	return p, nil
}

// decodeTopics decodes the seed protocol's {"topics": [...]} command.
func decodeTopics(msg []byte) ([]string, error) {
	var raw struct {
		Topics json.RawMessage `json:"topics"`
	}
	if err := decodeObject(msg, &raw); err != nil {
		return nil, err
	}
	if isNull(raw.Topics) {
		return nil, fmt.Errorf(`topics is required: send {"topics": ["name", ...]}: %w`, relay.ErrInvalid)
	}
	var topics []string
	if err := json.Unmarshal(raw.Topics, &topics); err != nil {
		return nil, fmt.Errorf("topics must be an array of strings: %w", relay.ErrInvalid)
	}
	return topics, nil
}

// decodeObject decodes a JSON object into v, whose fields are RawMessages.
func decodeObject(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return fmt.Errorf("body is empty: send a JSON object: %w", relay.ErrInvalid)
	}
	err := json.Unmarshal(b, v)
	if err == nil {
		return nil
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("body must be a JSON object, not %s: %w", typ.Value, relay.ErrInvalid)
	}
	return fmt.Errorf("body is not valid JSON (%v): %w", err, relay.ErrInvalid)
}

// isNull reports whether a field was absent or null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func decodeString(field string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", fmt.Errorf("%s is required: a string: %w", field, relay.ErrInvalid)
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("%s must be a string, got %s: %w", field, excerpt(raw), relay.ErrInvalid)
	}
	return s, nil
}

// decodeUserID accepts a JSON integer from 0 to 2^64-1, written without a
// fraction or exponent.
func decodeUserID(raw json.RawMessage) (relay.UserID, error) {
	s := string(raw)
	if len(s) > 0 && s[0] == '-' {
		return 0, fmt.Errorf("user_id must be a non-negative integer, got %s: %w", excerpt(raw), relay.ErrInvalid)
	}
	u, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("user_id %s is too large: the limit is %d: %w", excerpt(raw), uint64(1<<64-1), relay.ErrInvalid)
		}
		return 0, fmt.Errorf("user_id must be a non-negative integer, got %s: %w", excerpt(raw), relay.ErrInvalid)
	}
	if len(s) > 1 && s[0] == '0' { // JSON has no leading zeros
		return 0, fmt.Errorf("user_id must be a non-negative integer, got %s: %w", excerpt(raw), relay.ErrInvalid)
	}
	return relay.UserID(u), nil
}

// excerpt shows at most 40 bytes of untrusted input in an error message,
// quoted unless it is short and printable.
func excerpt(b []byte) string {
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
