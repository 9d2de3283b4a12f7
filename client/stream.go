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
	// MinBackoff and MaxBackoff bound the wait between reconnect
	// attempts. The wait before attempt n is drawn uniformly from
	// [0, min(MaxBackoff, MinBackoff·2^(n-1))) ("full jitter"), so that
	// the clients of a restarted server do not all come back at once. n
	// starts over once a connection opens, unless the server ended that
	// connection to push back (4002 slow consumer, 4004 rate limit, or a
	// subscribe answered "unavailable"): then the waits keep growing.
	MinBackoff time.Duration // default 100ms (the JS client's base is 250ms)
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
	pos      *Position // nil until the first subscribed frame (or SubscribeSince's position)
	// conn is the connection (gen) on which the server last confirmed the
	// topic, 0 if it never did: a refused command cannot have unsubscribed
	// a topic confirmed on the current connection, but a topic confirmed
	// only on an earlier one is not subscribed until it is confirmed again.
	conn  int
	ready chan struct{}
	err   error           // why the server refused the topic, when ready closed without a confirmation
	users map[uint64]bool // who is present, with presence
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
		return nil, errNoRelayV1
	}
	return ws, nil
}

// errNoRelayV1 ends a stream: a server (or a proxy in front of it) that
// drops the subprotocol would drop it again on every retry.
var errNoRelayV1 = errors.New("relay: the server did not accept the relay.v1 protocol")

// Events returns the channel events arrive on; it is closed when the
// stream ends (see Err).
func (s *Stream) Events() <-chan Event { return s.events }

// Err returns why the stream ended, once Events is closed: nil after
// Close; a *CloseError with code 4000 or 4001, or with one of 1002, 1003,
// 1007, 1008 and 1009 (the server says the client broke the protocol,
// which a reconnect would repeat); an *Error with status 404 or 401 when
// the registration is gone or the connect token is refused on a
// reconnect and there is no StreamOptions.Reconnect to get another URL;
// the server no longer accepting relay.v1; or the server refusing, after
// a reconnect, a topic it had accepted before (a narrower token, a lower
// topic limit), since carrying on without it would drop its messages
// silently. Every other failure is retried.
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
// in ascending order: the server's list on subscribe (at most 1000), kept
// up to date by join and leave events. The first list comes without
// events (read it here); each list after a reconnect is delivered as
// join and leave events for what changed meanwhile, so that the events
// alone also stay in step.
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
		// A connection that opened restarts the backoff, unless the server
		// pushed back: reconnecting at once after a slow-consumer or
		// rate-limit close, or to an engine that cannot subscribe, would
		// only repeat it, from every client at the same time.
		if !pushedBack(err) {
			attempt = 0
		}
		for ws = nil; ws == nil; {
			attempt++
			if !s.sleep(attempt) {
				return
			}
			ws, err = s.redial()
			if errors.Is(err, errNoRelayV1) {
				s.err = err
				return
			}
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
		s.attach(ws)
	}
}

// finalCloseCodes are the close codes after which a Stream does not
// reconnect, the same as the JS client's FINAL_CLOSE_CODES: 4000 (the
// registration was deleted: reconnecting would undo the deletion), 4001
// (a newer connection replaced this one: the two would replace each other
// forever), and the codes by which the server says the client broke the
// protocol or sent what it refuses (1002, 1003, 1007, 1008, 1009): the
// same client would do the same again.
var finalCloseCodes = []int{4000, 4001, 1002, 1003, 1007, 1008, 1009}

// final reports whether a connection's end rules out reconnecting.
func final(err error) bool {
	var ce *websocket.CloseError
	var re *resubscribeError
	return errors.As(err, &ce) && slices.Contains(finalCloseCodes, ce.Code) || errors.As(err, &re)
}

// pushedBack reports whether a connection ended because the server asked
// the client to slow down: then the next reconnect waits longer than the
// last one instead of starting over.
func pushedBack(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && (ce.Code == 4002 || ce.Code == 4004) || errors.Is(err, errUnavailable)
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

// sleep waits before reconnect attempt n: a random time in
// [0, min(MaxBackoff, MinBackoff·2^(n-1))) ("full jitter", as the JS
// client), so that clients dropped together do not come back together.
// It returns false if the stream was closed meanwhile.
func (s *Stream) sleep(n int) bool {
	bound := s.opts.MinBackoff << min(n-1, 20)
	if bound <= 0 || bound > s.opts.MaxBackoff {
		bound = s.opts.MaxBackoff
	}
	t := time.NewTimer(drawWait(bound))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.quit:
		return false
	}
}

// drawWait returns a wait drawn uniformly from [0, bound). Tests replace
// it to see the bounds.
var drawWait = func(bound time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(bound)))
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
			if err := s.failAck(f, b); err != nil {
				return err
			}
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
	var evs []Event
	if st != nil && f.Users != nil { // a fresh snapshot of who is present
		users := make(map[uint64]bool, len(*f.Users))
		for _, u := range *f.Users {
			users[u] = true
		}
		if st.users != nil {
			// A snapshot after a reconnect: who came and went meanwhile
			// sent no join or leave to this stream, so report the
			// differences, or an application that follows the events
			// would drift from Present.
			evs = presenceChanges(f.Topic, st.users, users)
		}
		st.users = users
	}
	if st != nil && f.Offset != nil {
		st.conn = s.gen
		switch {
		case st.pos == nil:
			st.pos = &Position{Offset: *f.Offset, Epoch: f.Epoch}
		case !f.Recovered:
			evs = append(evs, Event{Type: "gap", Topic: f.Topic, Offset: *f.Offset, Epoch: f.Epoch})
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
	for _, e := range evs {
		if !s.emit(e) {
			return false
		}
	}
	return true
}

// presenceChanges returns a leave for each user of old missing from now
// and a join for each user of now missing from old, in ascending order.
func presenceChanges(topic string, old, now map[uint64]bool) []Event {
	var left, joined []uint64
	for u := range old {
		if !now[u] {
			left = append(left, u)
		}
	}
	for u := range now {
		if !old[u] {
			joined = append(joined, u)
		}
	}
	slices.Sort(left)
	slices.Sort(joined)
	evs := make([]Event, 0, len(left)+len(joined))
	for _, u := range left {
		evs = append(evs, Event{Type: "leave", Topic: topic, UserID: u})
	}
	for _, u := range joined {
		evs = append(evs, Event{Type: "join", Topic: topic, UserID: u})
	}
	return evs
}

// errUnavailable drops a connection whose subscribe the server could not
// carry out for want of its engine (Redis, NATS): nothing is wrong with
// the topics, so the stream reconnects, with growing backoff, and
// subscribes them again, as the JS client does.
var errUnavailable = errors.New("relay: the server could not subscribe for now (unavailable); reconnecting")

// resubscribeError ends a stream: the server refused a topic it had
// confirmed on an earlier connection, so the stream can no longer deliver
// it, and carrying on with the others would lose it silently.
type resubscribeError struct {
	topic string
	err   error
}

func (e *resubscribeError) Error() string {
	return fmt.Sprintf("relay: the server refused to subscribe %q again after a reconnect: %v", e.topic, e.err)
}

func (e *resubscribeError) Unwrap() error { return e.err }

// failAck handles an error frame. It returns an error when the connection
// must end: errUnavailable to reconnect, a *resubscribeError to stop.
func (s *Stream) failAck(f frame, raw []byte) error {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	json.Unmarshal(raw, &e)
	err := fmt.Errorf("relay: %s: %s", e.Code, e.Message)
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.acks[string(f.ID)]
	if a == nil {
		return nil
	}
	if e.Code == "unavailable" {
		// The ack stays: the reconnect hands it errResubscribe, and a
		// Subscribe waiting for it waits for the resubscribe instead.
		return errUnavailable
	}
	delete(s.acks, string(f.ID))
	a.done <- err
	// The server refuses a command as a whole. Topics never confirmed are
	// forgotten, and a Subscribe waiting for them (its command went out
	// with a resubscribe) learns why. Topics confirmed on this connection
	// are still subscribed: a refused command changes nothing. Topics
	// confirmed on an earlier connection only, which a resubscribe grouped
	// with them, are subscribed again.
	var again []string
	presence, dropped := false, false
	for t := range a.topics {
		st := s.topics[t]
		switch {
		case st == nil || st.conn == s.gen:
		case st.conn == 0:
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
	slices.Sort(again)
	switch {
	case len(again) == 0:
	case dropped: // the culprit is gone: the rest again, together
		s.sendSubscribeLocked(again, presence)
	case len(again) > 1: // one by one, to find the culprit
		for _, t := range again {
			s.sendSubscribeLocked([]string{t}, presence)
		}
	default:
		return &resubscribeError{topic: again[0], err: err}
	}
	return nil
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
