package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// ProtocolV1 is the Sec-WebSocket-Protocol value of the relay.v1 protocol.
const ProtocolV1 = "relay.v1"

// maxPresenceUsers bounds the users listed in a subscribed frame.
const maxPresenceUsers = 1000

// EncodeV1 is relay.v1's frame for a message or presence event, built once
// per publish and shared by every relay.v1 subscriber.
func EncodeV1(m *relay.Message) []byte {
	b := make([]byte, 0, 64+len(m.Topic)+len(m.Epoch)+len(m.Data)+len(m.Data)/8)
	switch m.Kind {
	case relay.KindReset:
		// The node missed messages history no longer holds: an unsolicited
		// subscribed frame, as after a failed recovery.
		b = append(b, `{"type":"subscribed","topic":`...)
		b = appendString(b, m.Topic)
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, m.Offset, 10)
		b = append(b, `,"epoch":`...)
		b = appendString(b, m.Epoch)
		b = append(b, `,"recovered":false`...)
	case relay.KindJoin, relay.KindLeave:
		b = append(b, `{"type":"`...)
		if m.Kind == relay.KindJoin {
			b = append(b, "join"...)
		} else {
			b = append(b, "leave"...)
		}
		b = append(b, `","topic":`...)
		b = appendString(b, m.Topic)
		b = append(b, `,"user_id":`...)
		b = strconv.AppendUint(b, uint64(m.User), 10)
	default:
		b = append(b, `{"type":"message","topic":`...)
		b = appendString(b, m.Topic)
		if m.Offset > 0 { // messages to one user are outside the stream
			b = append(b, `,"offset":`...)
			b = strconv.AppendUint(b, m.Offset, 10)
			b = append(b, `,"epoch":`...)
			b = appendString(b, m.Epoch)
		}
		b = append(b, `,"message":`...)
		b = appendString(b, m.Data)
	}
	return ws.EncodeText(append(b, '}'))
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString[S ~string | ~[]byte](b []byte, s S) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// v1Command is a relay.v1 command from a client.
type v1Command struct {
	Type     string                    `json:"type"`
	ID       json.RawMessage           `json:"id,omitempty"`
	Topics   []string                  `json:"topics"`
	Since    map[string]relay.Position `json:"since"`
	Presence bool                      `json:"presence"`
	// refused is why the command could not be decoded.
	refused error
}

// v1Session speaks relay.v1 on one socket. Commands are decoded on the
// socket's reader; a subscribe, which may wait for the engine (its
// subscription, history and presence), runs on a worker goroutine that
// exists while commands are queued, so that the reader, for most sockets
// an epoll loop shared with many others, never waits for the network.
// Commands still run one at a time, in the order they came.
type v1Session struct {
	session

	mu      sync.Mutex
	queue   []v1Command // waiting for the worker
	working bool        // a worker runs; commands must queue behind it
}

// maxQueuedCommands bounds the commands one socket may have waiting for
// the engine.
const maxQueuedCommands = 32

func (s *v1Session) HandleText(c *ws.Conn, msg []byte) {
	if s.client == nil {
		return
	}
	cmd, err := decodeV1Command(msg, s.api.hub.MaxTopics())
	if err != nil {
		cmd.refused = err // answered in turn, after the commands before it
	}
	s.mu.Lock()
	if !s.working && (cmd.refused != nil || cmd.Type != "subscribe" && cmd.Type != "") {
		s.mu.Unlock()
		s.run(c, cmd) // never waits: unsubscribe, ping, or an error
		return
	}
	if len(s.queue) >= maxQueuedCommands {
		s.mu.Unlock()
		s.reply(c, errorFrame(cmd.ID, "limit_exceeded", fmt.Sprintf("more than %d commands are waiting for earlier subscribes; wait for their replies", maxQueuedCommands)))
		return
	}
	s.queue = append(s.queue, cmd)
	start := !s.working
	s.working = true
	s.mu.Unlock()
	if start {
		go s.work(c)
	}
}

// work runs the queued commands until none is left.
func (s *v1Session) work(c *ws.Conn) {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.working = false
			s.mu.Unlock()
			return
		}
		cmd := s.queue[0]
		s.queue[0] = v1Command{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		s.run(c, cmd)
	}
}

// run executes one command and answers it.
func (s *v1Session) run(c *ws.Conn, cmd v1Command) {
	if err := cmd.refused; err != nil {
		code := "bad_request"
		if errors.Is(err, relay.ErrLimit) {
			code = v1Code(err)
		}
		s.reply(c, errorFrame(cmd.ID, code, trimSentinel(err)))
		return
	}
	var err error
	switch cmd.Type {
	case "subscribe":
		err = s.subscribe(c, cmd)
	case "unsubscribe":
		if err = s.api.hub.Unsubscribe(s.client, c, cmd.Topics); err == nil {
			s.reply(c, v1Reply{Type: "unsubscribed", ID: cmd.ID, Topics: nonNil(cmd.Topics)})
		}
	case "ping":
		s.reply(c, v1Reply{Type: "pong", ID: cmd.ID})
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
		s.reply(c, errorFrame(cmd.ID, v1Code(err), trimSentinel(err)))
	}
}

// subscribe adds topics, recovering those in since, and answers each topic
// with a subscribed frame before its replay. It runs on the session's
// worker, since a networked engine answers over the network.
func (s *v1Session) subscribe(c *ws.Conn, cmd v1Command) error {
	if len(cmd.Topics) == 0 {
		return fmt.Errorf(`subscribe needs "topics": a non-empty array of topic names: %w`, relay.ErrInvalid)
	}
	// decodeV1Command bounded topics and since; the since check uses a
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
	return s.api.hub.Subscribe(ctx, s.client, c, cmd.Topics, hub.SubscribeOptions{
		Presence: cmd.Presence,
		Since:    cmd.Since,
		History:  s.api.broker,
		Ready: func(topic string, r hub.Subscribed) {
			rep := v1Reply{Type: "subscribed", ID: cmd.ID, Topic: topic, Offset: &r.Position.Offset, Epoch: &r.Position.Epoch, Recovered: &r.Recovered}
			if cmd.Presence {
				users := r.Users
				if users == nil {
					users = []relay.UserID{}
				}
				if len(users) > maxPresenceUsers {
					users, rep.UsersTruncated = users[:maxPresenceUsers], true
				}
				rep.Users = &users
			}
			s.reply(c, rep)
		},
	})
}

// replace is the seed command {"topics": [...]} in relay.v1: the set is
// replaced, and every topic in it is answered with a subscribed frame.
func (s *v1Session) replace(c *ws.Conn, cmd v1Command) error {
	keep := newStringSet(cmd.Topics)
	var drop []string
	for _, t := range s.client.Topics() {
		if !keep[t] {
			drop = append(drop, t)
		}
	}
	if err := s.api.hub.Unsubscribe(s.client, c, drop); err != nil {
		return err
	}
	if len(cmd.Topics) == 0 {
		return nil
	}
	cmd.Since = nil
	return s.subscribe(c, cmd)
}

func (s *v1Session) reply(c *ws.Conn, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.api.log.Error("encoding a relay.v1 reply", "err", err)
		return
	}
	c.SendText(b)
}

// v1Reply is every server frame except messages and presence events.
type v1Reply struct {
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

func errorFrame(id json.RawMessage, code, msg string) v1Reply {
	return v1Reply{Type: "error", ID: id, Code: code, Message: msg}
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
