// Package seed speaks the seed protocol, the one a socket gets when it
// asks for no subprotocol: the tutorial's. The text {"topics": [...]}
// replaces the client's topics (new clients start with ["cats"]), "ping"
// is accepted, and the server sends each message as a text frame whose
// payload is exactly the published message (ws.EncodeSeed, the WebSocket
// server's default encoding).
package seed

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/logthrottle"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// Protocol is what the seed sessions of one node share. Create it with New.
type Protocol struct {
	hub     *hub.Hub
	logs    *logthrottle.Throttle
	ignored atomic.Uint64
}

// New returns the seed protocol over h, logging ignored texts within the
// budget of logs (nil: nothing is logged).
func New(h *hub.Hub, logs *logthrottle.Throttle) *Protocol {
	if logs == nil {
		logs = logthrottle.New(nil, logthrottle.Config{})
	}
	return &Protocol{hub: h, logs: logs}
}

// Ignored returns how many texts seed sockets sent that were neither a
// topics command nor "ping", and were ignored.
func (p *Protocol) Ignored() uint64 { return p.ignored.Load() }

// NewSession returns the session of a socket bound to client, which is
// nil when binding it failed (the socket is being closed then, and the
// session does nothing).
func (p *Protocol) NewSession(client *hub.Client) *Session {
	return &Session{p: p, client: client}
}

// Session speaks the seed protocol on one socket: the text
// {"topics": [...]} replaces the client's topics, and a topics command the
// server refuses (bad or forbidden topic names, too many) closes the socket
// with 1008 and a reason. Every other text ("ping", but also an app's own
// {"type":"hello"} or text that is not JSON) is ignored, as the tutorial's
// server ignores it; those other than "ping" are counted and logged at
// Debug.
type Session struct {
	p      *Protocol
	client *hub.Client // nil when the attach failed
}

// HandleClose unbinds the socket from its client. (The WebSocket server
// logs the close, with the user SetLogAttrs gave it.)
func (s *Session) HandleClose(c *ws.Conn) {
	if s.client != nil {
		s.p.hub.Detach(s.client, c)
	}
}

// HandleText carries out a topics command; see Session.
func (s *Session) HandleText(c *ws.Conn, msg []byte) {
	if s.client == nil {
		return
	}
	if string(bytes.TrimSpace(msg)) == "ping" { // websocat sends "ping\n"
		return
	}
	topics, err := decodeTopics(msg, s.p.hub.MaxTopics())
	if nc := (*notTopicsCommand)(nil); errors.As(err, &nc) {
		s.ignored(c, len(msg), nc)
		return
	}
	if err == nil {
		err = s.p.hub.SetTopics(s.client, c, topics)
	}
	if err != nil {
		c.CloseWith(relay.ClosePolicy, relay.Detail(err))
	}
}

// ignored counts a text that is no command and logs it at Debug (kind
// "seed_ignored"): its size and why it is no command, never its content.
func (s *Session) ignored(c *ws.Conn, size int, why error) {
	s.p.ignored.Add(1)
	lt, ctx := s.p.logs, context.Background()
	if !lt.Allow(ctx, slog.LevelDebug, "seed_ignored") {
		return
	}
	lt.Logger().LogAttrs(ctx, slog.LevelDebug, "seed text ignored: not a topics command", slog.Uint64("conn", c.ID()),
		slog.Uint64("user_id", uint64(s.client.User)), slog.String("remote", c.RemoteAddr().String()),
		slog.Int("bytes", size), slog.String("why", relay.Detail(why)))
}
