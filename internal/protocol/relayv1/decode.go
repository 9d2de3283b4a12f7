package relayv1

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/relayhq/relay/internal/jsonwire"
	"github.com/relayhq/relay/internal/protocol"
	"github.com/relayhq/relay/internal/relay"
)

// decodeCommand decodes a relay.v1 command as encoding/json would decode
// it into command (keys matched case-insensitively, unknown keys
// ignored), except that a field given twice is refused, and that topics
// and since are counted on the raw JSON and refused past maxTopics before
// they are decoded: a command is up to the message limit (64 KiB) and
// runs on a read loop other sockets share, so naming thousands of topics
// must cost one scan, not thousands of allocations. Shape errors wrap
// relay.ErrInvalid, counts relay.ErrLimit; the id is kept whenever it
// could be read, so an error can answer it. It is fuzzed
// (decode_fuzz_test.go).
func decodeCommand(msg []byte, maxTopics int) (command, error) {
	var cmd command
	var typ, id, topics, since, presence []byte
	twice := ""
	set := func(field *[]byte, name string, val []byte) {
		if *field != nil && twice == "" {
			twice = name
		}
		*field = val
	}
	err := jsonwire.Members(msg, func(key, val []byte) {
		switch {
		case jsonwire.FieldIs(key, "type"):
			set(&typ, "type", val)
		case jsonwire.FieldIs(key, "id"):
			set(&id, "id", val)
		case jsonwire.FieldIs(key, "topics"):
			set(&topics, "topics", val)
		case jsonwire.FieldIs(key, "since"):
			set(&since, "since", val)
		case jsonwire.FieldIs(key, "presence"):
			set(&presence, "presence", val)
		}
	})
	if err == jsonwire.ErrNotObject {
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
	if !jsonwire.IsNull(typ) {
		t, err := jsonwire.String("type", typ)
		if err != nil {
			return cmd, err
		}
		cmd.Type = string(t)
	}
	if !jsonwire.IsNull(presence) {
		switch string(presence) {
		case "true":
			cmd.Presence = true
		case "false":
		default:
			return cmd, fmt.Errorf("presence must be true or false, got %s: %w", jsonwire.Excerpt(presence), relay.ErrInvalid)
		}
	}
	if !jsonwire.IsNull(topics) {
		if cmd.Topics, err = protocol.TopicNames(topics, maxTopics); err != nil {
			return cmd, err
		}
	}
	if !jsonwire.IsNull(since) {
		n := 0
		if since[0] != '{' || jsonwire.Members(since, func(_, _ []byte) { n++ }) != nil {
			return cmd, fmt.Errorf(`since must be an object of topic → {"offset": N, "epoch": E}, got %s: %w`, jsonwire.Excerpt(since), relay.ErrInvalid)
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
