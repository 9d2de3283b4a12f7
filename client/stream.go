package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Event is one thing a Stream delivers, in order.
type Event struct {
	// Type is "message", "join", "leave" or "gap". A gap means the
	// messages of Topic between the last one delivered and Offset could
	// not be recovered (history trimmed, or the server's stream restarted
	// with a new epoch): reload that topic's state some other way.
	Type    string
	Topic   string
	Offset  uint64 // message: its place in the topic; gap: where the stream resumes
	Epoch   string
	Message string // message only
	UserID  uint64 // join and leave only
	// Private marks a message published to one user: it lives outside the
	// topic's offsets (Offset is 0) and is not recovered after a
	// disconnect.
	Private bool
}

// StreamOptions tune a Stream. The zero value works.
type StreamOptions struct {
	// Reconnect returns the socket URL to reconnect to. By default the
	// first URL is reused, which works while the server keeps the
	// registration (its reconnect grace, 30 s by default); give a function
	// that registers again (through your backend) to survive longer
	// outages.
	Reconnect func(ctx context.Context) (string, error)
	// MinBackoff and MaxBackoff bound the wait between reconnect attempts;
	// each wait is drawn at random up to a bound that doubles per failure.
	MinBackoff time.Duration // default 100ms
	MaxBackoff time.Duration // default 10s
	// Buffer is how many events may wait for the application before the
	// stream stops reading (and the server eventually drops it as a slow
	// consumer, after which it reconnects and recovers).
	Buffer int // default 1024
}

// Stream is a relay.v1 connection that survives disconnects: it
// reconnects with backoff and jitter, resubscribes every topic from the
// last offset it delivered, and hands the application one ordered stream
// of events with no gap and no duplicate, as long as the server's history
// still reaches back (otherwise it says so with a "gap" event).
type Stream struct {
	c      *Client
	opts   StreamOptions
	events chan Event
	done   chan struct{} // closed when run returns
	quit   chan struct{} // closed by Close
	once   sync.Once
	err    error // why the stream ended; read after done

	mu     sync.Mutex
	url    string
	ws     *websocket.Conn // nil while disconnected
	wmu    sync.Mutex      // one writer at a time on ws
	topics map[string]*topicState
	nextID uint64
	acks   map[string]*pendingAck
	gen    int // connection generation, +1 per connect
}

type topicState struct {
	presence bool
	pos      *Position // nil until the first subscribed frame
	ready    chan struct{}
	err      error           // why the server refused the topic, when ready closed without a position
	users    map[uint64]bool // who is present, with presence
}

// Position is a point in a topic's stream.
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

type pendingAck struct {
	topics map[string]bool
	done   chan error
}

// OpenStream connects to a socket URL from Register (or from TokenURL,
// for a signed connect token) with the relay.v1 protocol. It fails if the
// first connection fails; later disconnects are repaired in the
// background.
func (c *Client) OpenStream(ctx context.Context, url string, opts StreamOptions) (*Stream, error) {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 1024
	}
	s := &Stream{
		c: c, opts: opts, url: url,
		events: make(chan Event, opts.Buffer),
		done:   make(chan struct{}),
		quit:   make(chan struct{}),
		topics: make(map[string]*topicState),
		acks:   make(map[string]*pendingAck),
	}
	ws, err := s.dial(ctx, url)
	if err != nil {
		return nil, err
	}
	// Attached before OpenStream returns, so that a first Subscribe is
	// answered on this connection rather than by the resubscribe of a
	// connection that is not yet current.
	s.attach(ws)
	go s.run(ws)
	return s, nil
}

func (s *Stream) dial(ctx context.Context, url string) (*websocket.Conn, error) {
	h := s.c.header.Clone()
	h.Set("Sec-WebSocket-Protocol", "relay.v1")
	ws, err := s.c.dial(ctx, url, h)
	if err != nil {
		return nil, err
	}
	if ws.Subprotocol() != "relay.v1" {
		ws.Close()
		return nil, errors.New("relay: the server did not accept the relay.v1 protocol")
	}
	return ws, nil
}

// Events returns the channel events arrive on; it is closed when the
// stream ends (see Err).
func (s *Stream) Events() <-chan Event { return s.events }

// Err returns why the stream ended, once Events is closed.
func (s *Stream) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Subscribe adds topics (with join and leave events when presence is set)
// and returns once the server has confirmed them all. Topics the server
// refuses are forgotten again.
func (s *Stream) Subscribe(ctx context.Context, presence bool, topics ...string) error {
	return s.subscribe(ctx, presence, nil, topics)
}

// SubscribeSince adds the topics of since, each starting after its
// position (a message's offset and epoch, e.g. from a publish's result, a
// History page or an earlier stream's Position), so that a program that
// stopped picks up where it left off: the messages after each position
// are replayed first, then live ones follow. When the server's history no
// longer reaches back, or the epoch changed, the stream starts with a
// "gap" event for that topic instead. A topic already subscribed keeps
// its own position.
func (s *Stream) SubscribeSince(ctx context.Context, presence bool, since map[string]Position) error {
	topics := make([]string, 0, len(since))
	for t := range since {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	return s.subscribe(ctx, presence, since, topics)
}

func (s *Stream) subscribe(ctx context.Context, presence bool, since map[string]Position, topics []string) error {
	s.mu.Lock()
	var added []string
	for _, t := range topics {
		if st := s.topics[t]; st != nil {
			st.presence = presence
		} else {
			st := &topicState{presence: presence, ready: make(chan struct{})}
			if p, ok := since[t]; ok {
				st.pos = &p
			}
			s.topics[t] = st
			added = append(added, t)
		}
	}
	ack := s.sendSubscribeLocked(topics, presence)
	s.mu.Unlock()
	var err error
	if ack != nil {
		select {
		case err = <-ack.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return s.endErr()
		}
	}
	switch {
	case err == nil && ack != nil:
		return nil
	case ack == nil || err == errResubscribe: // the reconnect subscribes
		return s.awaitReady(ctx, topics)
	}
	s.mu.Lock()
	for _, t := range added {
		delete(s.topics, t)
	}
	s.mu.Unlock()
	return err
}

// awaitReady waits until each topic has been confirmed once.
func (s *Stream) awaitReady(ctx context.Context, topics []string) error {
	for _, t := range topics {
		s.mu.Lock()
		st := s.topics[t]
		s.mu.Unlock()
		if st == nil {
			continue
		}
		select {
		case <-st.ready:
			s.mu.Lock()
			err := st.err
			s.mu.Unlock()
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return s.endErr()
		}
	}
	return nil
}

// sendSubscribeLocked sends a subscribe command for topics on the current
// connection, with the position of every topic that has one. It returns
// nil while disconnected.
func (s *Stream) sendSubscribeLocked(topics []string, presence bool) *pendingAck {
	if s.ws == nil {
		return nil
	}
	s.nextID++
	id := strconv.FormatUint(s.nextID, 10)
	cmd := struct {
		Type     string              `json:"type"`
		ID       string              `json:"id"`
		Topics   []string            `json:"topics"`
		Since    map[string]Position `json:"since,omitempty"`
		Presence bool                `json:"presence,omitempty"`
	}{Type: "subscribe", ID: id, Topics: topics, Presence: presence}
	ack := &pendingAck{topics: map[string]bool{}, done: make(chan error, 1)}
	for _, t := range topics {
		ack.topics[t] = true
		if p := s.topics[t].pos; p != nil {
			if cmd.Since == nil {
				cmd.Since = map[string]Position{}
			}
			cmd.Since[t] = *p
		}
	}
	s.acks[`"`+id+`"`] = ack
	if err := s.write(s.ws, cmd); err != nil {
		delete(s.acks, `"`+id+`"`)
		return nil // the reader sees the failure and reconnects
	}
	return ack
}

// Unsubscribe removes topics.
func (s *Stream) Unsubscribe(ctx context.Context, topics ...string) error {
	s.mu.Lock()
	for _, t := range topics {
		delete(s.topics, t)
	}
	ws := s.ws
	s.mu.Unlock()
	if ws == nil {
		return nil
	}
	return s.write(ws, map[string]any{"type": "unsubscribe", "topics": topics})
}

// Position returns the last position delivered on topic.
func (s *Stream) Position(topic string) (Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.topics[topic]; st != nil && st.pos != nil {
		return *st.pos, true
	}
	return Position{}, false
}

// Present returns the users present on a topic subscribed with presence,
// kept up to date by join and leave events, in ascending order (at most
// the 1000 the server lists on subscribe, plus later joins).
func (s *Stream) Present(topic string) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.topics[topic]
	if st == nil || st.users == nil {
		return nil
	}
	out := make([]uint64, 0, len(st.users))
	for u := range st.users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// Close ends the stream with a normal close.
func (s *Stream) Close() error {
	s.once.Do(func() { close(s.quit) })
	s.mu.Lock()
	ws := s.ws
	s.mu.Unlock()
	if ws != nil {
		s.wmu.Lock()
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		s.wmu.Unlock()
		ws.Close()
	}
	<-s.done
	return nil
}

func (s *Stream) endErr() error {
	if s.err != nil {
		return s.err
	}
	return errors.New("relay: stream closed")
}

func (s *Stream) write(ws *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.WriteMessage(websocket.TextMessage, b)
}

// run owns the connection: it reads until the connection fails, then
// reconnects with backoff and resubscribes, until Close or a final error.
func (s *Stream) run(ws *websocket.Conn) {
	// done closes first, so that Err is set for whoever sees Events close.
	defer close(s.events)
	defer close(s.done)
	for attempt := 0; ; {
		err := s.read(ws)
		s.detach(ws)
		select {
		case <-s.quit:
			return
		default:
		}
		if final(err) {
			s.err = err
			return
		}
		for ws = nil; ws == nil; {
			attempt++
			if !s.sleep(attempt) {
				return
			}
			ws, err = s.redial()
			var e *Error
			if errors.As(err, &e) && e.Status == http.StatusNotFound && s.opts.Reconnect == nil {
				s.err = fmt.Errorf("relay: cannot reconnect, the registration is gone (set StreamOptions.Reconnect to register again): %w", err)
				return
			}
			// A refused connect token (expired, revoked key) will be
			// refused again: retrying it forever would hide the cause.
			if errors.As(err, &e) && e.Status == http.StatusUnauthorized && s.opts.Reconnect == nil {
				s.err = fmt.Errorf("relay: cannot reconnect, the server refused the connect token (set StreamOptions.Reconnect to fetch a fresh one): %w", err)
				return
			}
		}
		attempt = 0
		s.attach(ws)
	}
}

// final reports whether a connection's end rules out reconnecting: the
// registration was deleted, or a newer connection took this one's place.
func final(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && (ce.Code == 4000 || ce.Code == 4001)
}

func (s *Stream) redial() (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go func() { // Close must not wait for a dial in progress
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	url := s.url
	if s.opts.Reconnect != nil {
		u, err := s.opts.Reconnect(ctx)
		if err != nil {
			return nil, err
		}
		url = u
		s.mu.Lock()
		s.url = u
		s.mu.Unlock()
	}
	return s.dial(ctx, url)
}

// sleep waits before reconnect attempt n: a random time up to
// MinBackoff·2^(n-1), capped at MaxBackoff (full jitter). It returns false
// if the stream was closed meanwhile.
func (s *Stream) sleep(n int) bool {
	bound := s.opts.MinBackoff << min(n-1, 20)
	if bound <= 0 || bound > s.opts.MaxBackoff {
		bound = s.opts.MaxBackoff
	}
	t := time.NewTimer(time.Duration(rand.Int64N(int64(bound)) + 1))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.quit:
		return false
	}
}

// attach makes ws current and resubscribes every topic from its position.
func (s *Stream) attach(ws *websocket.Conn) {
	ws.SetReadLimit(16 << 20)
	ws.SetPingHandler(func(data string) error {
		ws.SetReadDeadline(time.Now().Add(90 * time.Second))
		s.wmu.Lock()
		defer s.wmu.Unlock()
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ws = ws
	s.gen++
	groups := map[bool][]string{}
	for t, st := range s.topics {
		groups[st.presence] = append(groups[st.presence], t)
	}
	for presence, list := range groups {
		s.sendSubscribeLocked(list, presence)
	}
}

func (s *Stream) detach(ws *websocket.Conn) {
	ws.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ws == ws {
		s.ws = nil
	}
	for id, a := range s.acks { // their topics are resubscribed on reconnect
		delete(s.acks, id)
		a.done <- errResubscribe
	}
}

// errResubscribe tells a waiting Subscribe that its connection dropped:
// the reconnect resubscribes, and it waits for that instead.
var errResubscribe = errors.New("relay: reconnecting")

// frame is every relay.v1 frame the stream reads.
type frame struct {
	Type      string          `json:"type"`
	ID        json.RawMessage `json:"id"`
	Topic     string          `json:"topic"`
	Offset    *uint64         `json:"offset"`
	Epoch     string          `json:"epoch"`
	Message   string          `json:"message"`
	UserID    uint64          `json:"user_id"`
	Recovered bool            `json:"recovered"`
	Users     *[]uint64       `json:"users"`
}

// read handles frames until the connection fails.
func (s *Stream) read(ws *websocket.Conn) error {
	for {
		ws.SetReadDeadline(time.Now().Add(90 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			continue // not ours to judge: skip what we cannot read
		}
		switch f.Type {
		case "message":
			if !s.message(f) {
				return errors.New("relay: stream closed")
			}
		case "join", "leave":
			s.mu.Lock()
			if st := s.topics[f.Topic]; st != nil && st.users != nil {
				if f.Type == "join" {
					st.users[f.UserID] = true
				} else {
					delete(st.users, f.UserID)
				}
			}
			s.mu.Unlock()
			if !s.emit(Event{Type: f.Type, Topic: f.Topic, UserID: f.UserID}) {
				return errors.New("relay: stream closed")
			}
		case "subscribed":
			if !s.subscribed(f) {
				return errors.New("relay: stream closed")
			}
		case "error":
			s.failAck(f, b)
		}
	}
}

// message delivers a message unless it was already delivered, noting its
// position.
func (s *Stream) message(f frame) bool {
	if f.Offset == nil { // to one user: outside the stream
		return s.emit(Event{Type: "message", Topic: f.Topic, Message: f.Message, Private: true})
	}
	s.mu.Lock()
	st := s.topics[f.Topic]
	if st == nil { // unsubscribed meanwhile
		s.mu.Unlock()
		return true
	}
	var gap *Event
	if st.pos != nil {
		if st.pos.Epoch == f.Epoch && *f.Offset <= st.pos.Offset {
			s.mu.Unlock()
			return true // already delivered
		}
		if st.pos.Epoch != f.Epoch || *f.Offset != st.pos.Offset+1 {
			gap = &Event{Type: "gap", Topic: f.Topic, Offset: *f.Offset - 1, Epoch: f.Epoch}
		}
	}
	st.pos = &Position{Offset: *f.Offset, Epoch: f.Epoch}
	s.mu.Unlock()
	if gap != nil && !s.emit(*gap) {
		return false
	}
	return s.emit(Event{Type: "message", Topic: f.Topic, Offset: *f.Offset, Epoch: f.Epoch, Message: f.Message})
}

// subscribed records a topic's confirmation: where the stream now stands
// and whether everything since the last delivered message will follow.
func (s *Stream) subscribed(f frame) bool {
	s.mu.Lock()
	st := s.topics[f.Topic]
	var gap *Event
	if st != nil && f.Users != nil { // a fresh snapshot of who is present
		st.users = make(map[uint64]bool, len(*f.Users))
		for _, u := range *f.Users {
			st.users[u] = true
		}
	}
	if st != nil && f.Offset != nil {
		switch {
		case st.pos == nil:
			st.pos = &Position{Offset: *f.Offset, Epoch: f.Epoch}
		case !f.Recovered:
			gap = &Event{Type: "gap", Topic: f.Topic, Offset: *f.Offset, Epoch: f.Epoch}
			st.pos = &Position{Offset: *f.Offset, Epoch: f.Epoch}
		}
		select {
		case <-st.ready:
		default:
			close(st.ready)
		}
	}
	if a := s.acks[string(f.ID)]; a != nil {
		delete(a.topics, f.Topic)
		if len(a.topics) == 0 {
			delete(s.acks, string(f.ID))
			a.done <- nil
		}
	}
	s.mu.Unlock()
	return gap == nil || s.emit(*gap)
}

func (s *Stream) failAck(f frame, raw []byte) {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	json.Unmarshal(raw, &e)
	err := fmt.Errorf("relay: %s: %s", e.Code, e.Message)
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.acks[string(f.ID)]; a != nil {
		delete(s.acks, string(f.ID))
		a.done <- err
		// The server refuses a command as a whole. Topics never confirmed
		// are forgotten, and a Subscribe waiting for them (its command went
		// out with a resubscribe) learns why; topics confirmed before,
		// which a resubscribe grouped with them, are subscribed again.
		var again []string
		presence, dropped := false, false
		for t := range a.topics {
			st := s.topics[t]
			switch {
			case st == nil:
			case st.pos == nil:
				delete(s.topics, t)
				dropped = true
				st.err = err
				select {
				case <-st.ready:
				default:
					close(st.ready)
				}
			default:
				again, presence = append(again, t), st.presence
			}
		}
		if dropped && len(again) > 0 {
			slices.Sort(again)
			s.sendSubscribeLocked(again, presence)
		}
	}
}

// emit hands e to the application, waiting while its buffer is full.
func (s *Stream) emit(e Event) bool {
	select {
	case s.events <- e:
		return true
	case <-s.quit:
		return false
	}
}
