package api

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/relayhq/relay/internal/jsonwire"
	"github.com/relayhq/relay/internal/relay"
)

// The decoders below turn untrusted request bodies into requests, with
// package jsonwire. Each error names the field and what it must be; all
// wrap relay.ErrInvalid or relay.ErrTooLarge. They are fuzzed
// (decode_fuzz_test.go). The socket protocols decode their own commands
// (internal/protocol/...).

// registerRequest is POST /register's body.
type registerRequest struct {
	User relay.UserID
}

func decodeRegister(body []byte) (registerRequest, error) {
	var user []byte
	err := jsonwire.Object(body, func(key, val []byte) {
		if jsonwire.FieldIs(key, "user_id") {
			user = val
		}
	})
	if err != nil {
		return registerRequest{}, err
	}
	if jsonwire.IsNull(user) {
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
	err := jsonwire.Object(body, func(key, val []byte) {
		switch {
		case jsonwire.FieldIs(key, "topic"):
			topic = val
		case jsonwire.FieldIs(key, "user_id"):
			user = val
		case jsonwire.FieldIs(key, "message"):
			message = val
		case jsonwire.FieldIs(key, "idempotency_key"):
			idem = val
		}
	})
	if err != nil {
		return p, err
	}
	t, err := jsonwire.String("topic", topic)
	if err != nil {
		return p, err
	}
	p.Topic = string(t)
	if !jsonwire.IsNull(user) {
		if p.User, err = decodeUserID(user); err != nil {
			return p, err
		}
		p.HasUser = true
	}
	msg, err := jsonwire.String("message", message)
	if err != nil {
		return p, err
	}
	if len(msg) > maxMessage {
		return p, fmt.Errorf("message is %d bytes, the limit is %d: %w", len(msg), maxMessage, relay.ErrTooLarge)
	}
	if !jsonwire.IsNull(idem) {
		k, err := jsonwire.String("idempotency_key", idem)
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

// decodeUserID accepts a JSON integer from 0 to 2^64-1, written without a
// fraction or exponent.
func decodeUserID(raw []byte) (relay.UserID, error) {
	s := string(raw)
	if len(s) > 0 && s[0] == '-' {
		return 0, fmt.Errorf("user_id must be a non-negative integer, got %s: %w", jsonwire.Excerpt(raw), relay.ErrInvalid)
	}
	u, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("user_id %s is too large: the limit is %d: %w", jsonwire.Excerpt(raw), uint64(1<<64-1), relay.ErrInvalid)
		}
		return 0, fmt.Errorf("user_id must be a non-negative integer, got %s: %w", jsonwire.Excerpt(raw), relay.ErrInvalid)
	}
	if len(s) > 1 && s[0] == '0' { // JSON has no leading zeros
		return 0, fmt.Errorf("user_id must be a non-negative integer, got %s: %w", jsonwire.Excerpt(raw), relay.ErrInvalid)
	}
	return relay.UserID(u), nil
}
