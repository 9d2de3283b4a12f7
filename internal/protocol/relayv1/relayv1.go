// Package relayv1 speaks relay.v1 (docs/protocol.md), the protocol a socket
// gets by asking for the subprotocol "relay.v1": JSON commands (subscribe
// with recovery and presence, unsubscribe, ping, and the seed command), each
// answered in the order it came, and JSON frames for messages, carrying
// their topic, offset and epoch, and for presence events.
package relayv1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/jsonwire"
	"github.com/relayhq/relay/internal/protocol"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// Subprotocol is relay.v1's Sec-WebSocket-Protocol value.
const Subprotocol = "relay.v1"

// Protocol is what the relay.v1 sessions of one node share. Create it
// with New.
type Protocol struct {
	hub     *hub.Hub
	history relay.HistoryReader
	log     *slog.Logger
}

// New returns relay.v1 over h, recovering subscribes from history and
// logging the server's own errors to log (nil: discarded).
func New(h *hub.Hub, history relay.HistoryReader, log *slog.Logger) *Protocol {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Protocol{hub: h, history: history, log: log}
}

// NewSession returns the session of a socket bound to client, which is
// nil when binding it failed (the socket is being closed then, and the
// session does nothing).
func (p *Protocol) NewSession(client *hub.Client) *Session {
	return &Session{p: p, client: client}
}

// maxPresenceUsers bounds the users listed in a subscribed frame.
const maxPresenceUsers = 1000

// Encode is relay.v1's frame for a message or presence event, built once
// per publish and shared by every relay.v1 subscriber (the WebSocket
// server's encoder of relay.FormatV1).
func Encode(m *relay.Message) []byte {
	b := make([]byte, 0, 64+len(m.Topic)+len(m.Epoch)+len(m.Data)+len(m.Data)/8)
	switch m.Kind {
	case relay.KindReset:
		// The node missed messages history no longer holds: an unsolicited
		// subscribed frame, as after a failed recovery.
		b = append(b, `{"type":"subscribed","topic":`...)
		b = jsonwire.AppendString(b, m.Topic)
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, m.Offset, 10)
		b = append(b, `,"epoch":`...)
		b = jsonwire.AppendString(b, m.Epoch)
		b = append(b, `,"recovered":false`...)
	case relay.KindJoin, relay.KindLeave:
		b = append(b, `{"type":"`...)
		if m.Kind == relay.KindJoin {
			b = append(b, "join"...)
		} else {
			b = append(b, "leave"...)
		}
		b = append(b, `","topic":`...)
		b = jsonwire.AppendString(b, m.Topic)
		b = append(b, `,"user_id":`...)
		b = strconv.AppendUint(b, uint64(m.User), 10)
	default:
		b = append(b, `{"type":"message","topic":`...)
		b = jsonwire.AppendString(b, m.Topic)
		if m.Offset > 0 { // messages to one user are outside the stream
			b = append(b, `,"offset":`...)
			b = strconv.AppendUint(b, m.Offset, 10)
			b = append(b, `,"epoch":`...)
			b = jsonwire.AppendString(b, m.Epoch)
		}
		b = append(b, `,"message":`...)
		b = jsonwire.AppendString(b, m.Data)
	}
	return ws.EncodeText(append(b, '}'))
}

// command is a relay.v1 command from a client.
type command struct {
	Type     string                    `json:"type"`
	ID       json.RawMessage           `json:"id,omitempty"`
	Topics   []string                  `json:"topics"`
	Since    map[string]relay.Position `json:"since"`
	Presence bool                      `json:"presence"`
	// refused is why the command could not be decoded.
	refused error
}

// Session speaks relay.v1 on one socket. Commands are decoded on the
// socket's reader; a subscribe, which may wait for the engine (its
// subscription, history and presence), runs on a worker goroutine that
// exists while commands are queued, so that the reader, for most sockets
// an epoll loop shared with many others, never waits for the network.
// Commands still run one at a time, in the order they came.
type Session struct {
	p      *Protocol
	client *hub.Client // nil when the attach failed

	cmds protocol.Serial[command]
}

// maxQueuedCommands bounds the commands one socket may have waiting for
// the engine.
const maxQueuedCommands = 32

// HandleClose unbinds the socket from its client. (The WebSocket server
// logs the close, with the user SetLogAttrs gave it.)
func (s *Session) HandleClose(c *ws.Conn) {
	if s.client != nil {
		s.p.hub.Detach(s.client, c)
	}
}

// HandleText decodes a command and runs it, or queues it behind the
// subscribes before it; see Session.
func (s *Session) HandleText(c *ws.Conn, msg []byte) {
	if s.client == nil {
		return
	}
	cmd, err := decodeCommand(msg, s.p.hub.MaxTopics())
	if err != nil {
		cmd.refused = err // answered in turn, after the commands before it
	}
	// Unsubscribe, ping and errors never wait: they run at once unless
	// subscribes are queued before them.
	inline := cmd.refused != nil || cmd.Type != "subscribe" && cmd.Type != ""
	lim := protocol.Limit{Commands: maxQueuedCommands, Bytes: protocol.MaxQueuedBytes}
	if !s.cmds.Do(cmd, len(msg), inline, lim, func(cmd command) { s.run(c, cmd) }) {
		s.reply(c, errorFrame(cmd.ID, "limit_exceeded", fmt.Sprintf("more than %d commands or %d KiB are waiting for earlier subscribes; wait for their replies", maxQueuedCommands, protocol.MaxQueuedBytes>>10)))
	}
}

// run executes one command and answers it.
func (s *Session) run(c *ws.Conn, cmd command) {
	if err := cmd.refused; err != nil {
		code := "bad_request"
		if errors.Is(err, relay.ErrLimit) {
			code = errorCode(err)
		}
		s.reply(c, errorFrame(cmd.ID, code, relay.Detail(err)))
		return
	}
	var err error
	switch cmd.Type {
	case "subscribe":
		err = s.subscribe(c, cmd)
	case "unsubscribe":
		if err = s.p.hub.Unsubscribe(s.client, c, cmd.Topics); err == nil {
			s.reply(c, frame{Type: "unsubscribed", ID: cmd.ID, Topics: nonNil(cmd.Topics)})
		}
	case "ping":
		s.reply(c, frame{Type: "pong", ID: cmd.ID})
	case "":
		if cmd.Topics == nil {
			err = fmt.Errorf(`command has no "type": use subscribe, unsubscribe or ping: %w`, relay.ErrInvalid)
			break
		}
		err = s.replace(c, cmd)
	default:
		err = fmt.Errorf("unknown command type %q: use subscribe, unsubscribe or ping: %w", cmd.Type, relay.ErrInvalid)
	}
	if err != nil {
		s.reply(c, errorFrame(cmd.ID, errorCode(err), relay.Detail(err)))
	}
}

// subscribe adds topics, recovering those in since, and answers each topic
// with a subscribed frame before its replay. It runs on the session's
// worker, since a networked engine answers over the network.
func (s *Session) subscribe(c *ws.Conn, cmd command) error {
	if len(cmd.Topics) == 0 {
		return fmt.Errorf(`subscribe needs "topics": a non-empty array of topic names: %w`, relay.ErrInvalid)
	}
	// decodeCommand bounded topics and since; the since check uses a
	// set, since both may hold -max-topics names.
	if len(cmd.Since) > 0 {
		if len(cmd.Since) > len(cmd.Topics) {
			return fmt.Errorf("since names %d topics but topics only %d; since may only name topics in topics: %w", len(cmd.Since), len(cmd.Topics), relay.ErrInvalid)
		}
		names := newStringSet(cmd.Topics)
		for t := range cmd.Since {
			if !names[t] {
				return fmt.Errorf("since names topic %q, which is not in topics: %w", t, relay.ErrInvalid)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.p.hub.Subscribe(ctx, s.client, c, cmd.Topics, hub.SubscribeOptions{
		Presence: cmd.Presence,
		Since:    cmd.Since,
		History:  s.p.history,
		Ready: func(topic string, r hub.Subscribed) {
			rep := frame{Type: "subscribed", ID: cmd.ID, Topic: topic, Offset: &r.Position.Offset, Epoch: &r.Position.Epoch, Recovered: &r.Recovered}
			if cmd.Presence {
				members := r.Members
				if len(members) > maxPresenceUsers {
					members, rep.UsersTruncated = members[:maxPresenceUsers], true
				}
				users := make([]relay.UserID, len(members))
				for i, p := range members {
					users[i] = p.User
				}
				rep.Users = &users
			}
			s.reply(c, rep)
		},
	})
}

// replace is the seed command {"topics": [...]} in relay.v1: the set is
// replaced, and every topic in it is answered with a subscribed frame.
func (s *Session) replace(c *ws.Conn, cmd command) error {
	keep := newStringSet(cmd.Topics)
	var drop []string
	for _, t := range s.client.Topics() {
		if !keep[t] {
			drop = append(drop, t)
		}
	}
	if err := s.p.hub.Unsubscribe(s.client, c, drop); err != nil {
		return err
	}
	if len(cmd.Topics) == 0 {
		return nil
	}
	cmd.Since = nil
	return s.subscribe(c, cmd)
}

func (s *Session) reply(c *ws.Conn, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.p.log.Error("encoding a relay.v1 reply", "err", err)
		return
	}
	c.SendText(b)
}

// frame is every server frame except messages and presence events.
type frame struct {
	Type           string          `json:"type"`
	ID             json.RawMessage `json:"id,omitempty"`
	Topic          string          `json:"topic,omitempty"`
	Topics         []string        `json:"topics,omitempty"`
	Offset         *uint64         `json:"offset,omitempty"`
	Epoch          *string         `json:"epoch,omitempty"`
	Recovered      *bool           `json:"recovered,omitempty"`
	Users          *[]relay.UserID `json:"users,omitempty"`
	UsersTruncated bool            `json:"users_truncated,omitempty"`
	Code           string          `json:"code,omitempty"`
	Message        string          `json:"message,omitempty"`
}

func errorFrame(id json.RawMessage, code, msg string) frame {
	return frame{Type: "error", ID: id, Code: code, Message: msg}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func newStringSet(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, x := range list {
		m[x] = true
	}
	return m
}
