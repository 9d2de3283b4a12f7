// Package protocol holds what Relay's socket protocols share. Each
// protocol is a package below this one, over the same hub: seed (the
// tutorial's {"topics": [...]} texts in, raw message frames out), relayv1
// (JSON commands, offsets, recovery, presence) and pusher. A protocol's
// package owns its session, the ws.Handler that reads one socket's
// commands and acts on the hub for the client the socket is bound to, its
// command decoding and its frame encoding.
//
// Package api authenticates a socket, upgrades it, binds it to a hub
// client and hands it to the session of the protocol it negotiated. The
// protocol packages import hub, ws, relay, jsonwire and this package,
// never api: a new protocol is one more folder.
package protocol

import (
	"encoding/json"
	"fmt"

	"github.com/relayhq/relay/internal/jsonwire"
	"github.com/relayhq/relay/internal/relay"
)

// TopicNames decodes a JSON array of topic names (raw is valid JSON, a
// value jsonwire.Members returned), counting it first and refusing more
// than maxTopics with relay.ErrLimit before any name is decoded: a command
// is up to the message limit and runs on a read loop other sockets share,
// so naming thousands of topics must cost one scan, not thousands of
// allocations. Anything but an array of strings wraps relay.ErrInvalid.
func TopicNames(raw []byte, maxTopics int) ([]string, error) {
	n := jsonwire.Elements(raw)
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
