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
	var user []byte
	err := decodeObject(body, func(key, val []byte) {
		if fieldIs(key, "user_id") {
			user = val
		}
	})
	if err != nil {
		return registerRequest{}, err
	}
	if isNull(user) {
		return registerRequest{}, fmt.Errorf("user_id is required: a non-negative integer: %w", relay.ErrInvalid)
	}
	u, err := decodeUserID(user)
	return registerRequest{User: u}, err
}

// publishRequest is POST /publish's body.
type publishRequest struct {
	Topic          string
	User           relay.UserID
	HasUser        bool
	Message        []byte
	IdempotencyKey string
}

// maxIdempotencyKey bounds an idempotency key, in bytes.
const maxIdempotencyKey = 256

func decodePublish(body []byte, maxMessage int) (publishRequest, error) {
	var topic, user, message, idem []byte
	var p publishRequest
	err := decodeObject(body, func(key, val []byte) {
		switch {
		case fieldIs(key, "topic"):
			topic = val
		case fieldIs(key, "user_id"):
			user = val
		case fieldIs(key, "message"):
			message = val
		case fieldIs(key, "idempotency_key"):
			idem = val
		}
	})
	if err != nil {
		return p, err
	}
	t, err := decodeString("topic", topic)
	if err != nil {
		return p, err
	}
	p.Topic = string(t)
	if !isNull(user) {
		if p.User, err = decodeUserID(user); err != nil {
			return p, err
		}
		p.HasUser = true
	}
	msg, err := decodeString("message", message)
	if err != nil {
		return p, err
	}
	if len(msg) > maxMessage {
		return p, fmt.Errorf("message is %d bytes, the limit is %d: %w", len(msg), maxMessage, relay.ErrTooLarge)
	}
	if !isNull(idem) {
		k, err := decodeString("idempotency_key", idem)
		if err != nil {
			return p, err
		}
		if len(k) == 0 || len(k) > maxIdempotencyKey {
			return p, fmt.Errorf("idempotency_key must be 1 to %d bytes: %w", maxIdempotencyKey, relay.ErrInvalid)
		}
		p.IdempotencyKey = string(k)
	}
	p.Message = bytes.Clone(msg) // msg may alias the pooled body
	return p, nil
}

// decodeTopics decodes the seed protocol's {"topics": [...]} command,
// refusing more than maxTopics names before decoding any (see
// decodeV1Command). A text that is not a topics command at all (not JSON,
// not an object, or without a "topics" array) is refused with a
// *notTopicsCommand, which the seed protocol ignores; a topics array with
// bad entries is a topics command, refused.
func decodeTopics(msg []byte, maxTopics int) ([]string, error) {
	var raw []byte
	err := decodeObject(msg, func(key, val []byte) {
		if fieldIs(key, "topics") {
			raw = val
		}
	})
	if err != nil {
		return nil, &notTopicsCommand{err}
	}
	if isNull(raw) {
		return nil, &notTopicsCommand{fmt.Errorf(`topics is required: send {"topics": ["name", ...]}: %w`, relay.ErrInvalid)}
	}
	if elements(raw) < 0 {
		return nil, &notTopicsCommand{fmt.Errorf("topics must be an array of strings: %w", relay.ErrInvalid)}
	}
	return decodeTopicNames(raw, maxTopics)
}

// notTopicsCommand is decodeTopics' refusal of a text that is no topics
// command: the tutorial's server ignores such texts, and so does the seed
// protocol.
type notTopicsCommand struct{ err error }

func (e *notTopicsCommand) Error() string { return e.err.Error() }
func (e *notTopicsCommand) Unwrap() error { return e.err }

// decodeTopicNames decodes a JSON array of topic names (raw is valid JSON,
// from members), counting it first and refusing more than maxTopics
// before any name is decoded.
func decodeTopicNames(raw []byte, maxTopics int) ([]string, error) {
	n := elements(raw)
	switch {
	case n < 0:
		return nil, fmt.Errorf("topics must be an array of strings: %w", relay.ErrInvalid)
	case n > maxTopics:
		return nil, fmt.Errorf("too many topics: %d named, at most %d per connection: %w", n, maxTopics, relay.ErrLimit)
	}
	topics := make([]string, 0, n)
	if err := json.Unmarshal(raw, &topics); err != nil {
		return nil, fmt.Errorf("topics must be an array of strings: %w", relay.ErrInvalid)
	}
	return topics, nil
}

// decodeObject walks the JSON object in b (see members).
func decodeObject(b []byte, f func(key, val []byte)) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return fmt.Errorf("body is empty: send a JSON object: %w", relay.ErrInvalid)
	}
	err := members(b, f)
	switch {
	case err == nil:
		return nil
	case err == errNotObject:
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

// fieldIs matches an object key to a field name the way encoding/json
// does: exactly or case-insensitively.
func fieldIs(key []byte, name string) bool {
	return string(key) == name || bytes.EqualFold(key, []byte(name))
}

// isNull reports whether a field was absent or null.
func isNull(raw []byte) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// decodeString returns a string field's value; it may alias raw.
func decodeString(field string, raw []byte) ([]byte, error) {
	if isNull(raw) {
		return nil, fmt.Errorf("%s is required: a string: %w", field, relay.ErrInvalid)
	}
	if raw[0] != '"' {
		return nil, fmt.Errorf("%s must be a string, got %s: %w", field, excerpt(raw), relay.ErrInvalid)
	}
	s, err := unquote(raw)
	if err != nil {
		return nil, fmt.Errorf("%s must be a string, got %s: %w", field, excerpt(raw), relay.ErrInvalid)
	}
	return s, nil
}

// decodeUserID accepts a JSON integer from 0 to 2^64-1, written without a
// fraction or exponent.
func decodeUserID(raw []byte) (relay.UserID, error) {
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

// decodeV1Command decodes a relay.v1 command as encoding/json would decode
// it into v1Command (keys matched case-insensitively, unknown keys
// ignored), except that a field given twice is refused, and that topics
// and since are counted on the raw JSON and refused past maxTopics before
// they are decoded: a command is up to the message limit (64 KiB) and
// runs on a read loop other sockets share, so naming thousands of topics
// must cost one scan, not thousands of allocations. Shape errors wrap
// relay.ErrInvalid, counts relay.ErrLimit; the id is kept whenever it
// could be read, so an error can answer it.
func decodeV1Command(msg []byte, maxTopics int) (v1Command, error) {
	var cmd v1Command
	var typ, id, topics, since, presence []byte
	twice := ""
	set := func(field *[]byte, name string, val []byte) {
		if *field != nil && twice == "" {
			twice = name
		}
		*field = val
	}
	err := members(msg, func(key, val []byte) {
		switch {
		case fieldIs(key, "type"):
			set(&typ, "type", val)
		case fieldIs(key, "id"):
			set(&id, "id", val)
		case fieldIs(key, "topics"):
			set(&topics, "topics", val)
		case fieldIs(key, "since"):
			set(&since, "since", val)
		case fieldIs(key, "presence"):
			set(&presence, "presence", val)
		}
	})
	if err == errNotObject {
		if string(bytes.TrimSpace(msg)) == "null" {
			return cmd, nil // as encoding/json: nothing set, so "no type" follows
		}
		return cmd, fmt.Errorf("command must be a JSON object: %w", relay.ErrInvalid)
	}
	if err != nil {
		return cmd, fmt.Errorf("command is not valid JSON (%v): %w", err, relay.ErrInvalid)
	}
	if twice != "" {
		return cmd, fmt.Errorf("command gives %q more than once: %w", twice, relay.ErrInvalid)
	}
	if id != nil {
		cmd.ID = json.RawMessage(bytes.Clone(id))
	}
	if !isNull(typ) {
		t, err := decodeString("type", typ)
		if err != nil {
			return cmd, err
		}
		cmd.Type = string(t)
	}
	if !isNull(presence) {
		switch string(presence) {
		case "true":
			cmd.Presence = true
		case "false":
		default:
			return cmd, fmt.Errorf("presence must be true or false, got %s: %w", excerpt(presence), relay.ErrInvalid)
		}
	}
	if !isNull(topics) {
		if cmd.Topics, err = decodeTopicNames(topics, maxTopics); err != nil {
			return cmd, err
		}
	}
	if !isNull(since) {
		n := 0
		if since[0] != '{' || members(since, func(_, _ []byte) { n++ }) != nil {
			return cmd, fmt.Errorf(`since must be an object of topic → {"offset": N, "epoch": E}, got %s: %w`, excerpt(since), relay.ErrInvalid)
		}
		if n > maxTopics {
			return cmd, fmt.Errorf("since names %d topics; a connection may have at most %d: %w", n, maxTopics, relay.ErrLimit)
		}
		if err := json.Unmarshal(since, &cmd.Since); err != nil {
			return cmd, fmt.Errorf(`since must map topics to {"offset": N, "epoch": E}: %v: %w`, err, relay.ErrInvalid)
		}
	}
	return cmd, nil
}
