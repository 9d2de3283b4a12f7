package pusher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/protocol"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// Session speaks Pusher's protocol 7 on one socket. It is the socket's
// relay.Subscriber: it leaves out the events its own socket sent (the
// socket_id exclusion) and its user's own member_added, and closes the
// socket when the HTTP API terminates its user's connections.
//
// Commands that wait for the engine (subscribes, client events, sign-in)
// run in order on a goroutine of the session's own, started while there
// are some, so the read loop other sockets share never waits.
type Session struct {
	p        *Protocol
	app      *App
	conn     *ws.Conn
	client   *hub.Client
	socketID string

	cmds protocol.Serial[command]

	mu       sync.Mutex
	closed   bool                     // HandleClose ran: nothing more subscribes
	channels map[string]*subscription // by channel name
	user     string                   // signed in as, "" when not
	control  string                   // the topic that terminates user's connections
	events   tokenBucket              // client events
}

// subscription is one channel the socket is subscribed to.
type subscription struct {
	kind   Kind
	member *Member      // presence: who the socket is there
	key    relay.UserID // presence: member's roster key
	// counted: the channel's occupancy and subscription count include
	// the socket (set once subscribed, under the session's mu).
	counted bool
}

// command is one event a client sent.
type command struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// maxQueued bounds the commands waiting behind a slow one.
const maxQueued = 64

// commandTimeout bounds what one command may wait for the engine.
const commandTimeout = 10 * time.Second

func (p *Protocol) newSession(app *App, c *ws.Conn) *Session {
	s := &Session{p: p, app: app, conn: c, socketID: p.socketPrefix + "." + strconv.FormatUint(c.ID(), 10)}
	s.client = p.cfg.Hub.ConnectForeign(s)
	return s
}

// Deliver implements relay.Subscriber.
func (s *Session) Deliver(d *relay.Delivery) bool {
	m := d.Msg
	switch m.Kind {
	case relay.KindPublish:
		if len(m.Data) > 0 && m.Data[0] != '\n' {
			exclude, _, ok := SplitMessage(m.Data)
			if !ok {
				return s.controlMessage(m)
			}
			if string(exclude) == s.socketID {
				return true
			}
		}
	case relay.KindJoin, relay.KindLeave:
		ch := channelOf(m.Topic)
		if strings.HasPrefix(ch, onlinePrefix) {
			// A watched user came online or went offline (the socket's
			// own online topic has no presence events).
			if id := userIDOf(m.Data); id != "" {
				name := "offline"
				if m.Kind == relay.KindJoin {
					name = "online"
				}
				s.send(watchlistFrame(name, []string{id}))
			}
			return true
		}
		if m.Kind == relay.KindLeave {
			break
		}
		s.mu.Lock()
		sub := s.channels[ch]
		own := sub != nil && sub.member != nil && sub.key == m.User
		s.mu.Unlock()
		if own {
			return true // never to the joiner, nor its user's other sockets
		}
	case relay.KindReset:
		return true // Pusher has no gaps to tell of
	}
	return s.conn.Deliver(d)
}

// controlMessage acts on a message of the session's control topic.
func (s *Session) controlMessage(m *relay.Message) bool {
	s.mu.Lock()
	control := s.control
	s.mu.Unlock()
	if m.Topic == control && string(m.Data) == terminateMessage {
		s.conn.CloseCode(4009, "Connection terminated by the server")
	}
	return true
}

// terminateMessage on a user's control topic closes the user's sockets.
const terminateMessage = "terminate"

// controlTopic is the topic a signed-in socket listens on for commands to
// its user's connections. '#' names are reserved, so no client can
// subscribe to it.
func controlTopic(app, user string) string { return Topic(app, "#control-"+user) }

func channelOf(topic string) string {
	_, ch, _ := SplitTopic(topic)
	return ch
}

// Close implements relay.Subscriber.
func (s *Session) Close(reason relay.CloseReason) { s.conn.Close(reason) }

// HandleClose leaves every channel.
func (s *Session) HandleClose(c *ws.Conn) {
	s.p.cfg.Hub.Detach(s.client, s)
	s.mu.Lock()
	s.closed = true
	for name, sub := range s.channels {
		if sub.counted {
			s.p.occ.change(s.app, name, -1)
			s.p.countChanged(s.app, name)
		}
	}
	s.channels = nil
	s.mu.Unlock()
	s.p.stats.Connections.Add(-1)
}

// HandleText decodes an event and runs it, or queues it behind the ones
// that wait for the engine.
func (s *Session) HandleText(c *ws.Conn, msg []byte) {
	var cmd command
	if err := json.Unmarshal(msg, &cmd); err != nil || cmd.Event == "" {
		s.send(errorFrame(0, `Invalid message: expected a JSON object with an "event"`))
		return
	}
	inline := cmd.Event == "pusher:ping" || cmd.Event == "pusher:pong"
	if !s.cmds.Do(cmd, len(msg), inline, protocol.Limit{Commands: maxQueued, Bytes: protocol.MaxQueuedBytes}, s.run) {
		s.send(errorFrame(0, fmt.Sprintf("more than %d events or %d KiB are waiting for earlier ones; slow down", maxQueued, protocol.MaxQueuedBytes>>10)))
	}
}

func (s *Session) send(frame []byte) { s.conn.SendText(frame) }

// run executes one event; none once the socket closed.
func (s *Session) run(cmd command) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return
	}
	switch {
	case cmd.Event == "pusher:ping":
		s.send([]byte(`{"event":"pusher:pong","data":"{}"}`))
	case cmd.Event == "pusher:pong":
	case cmd.Event == "pusher:subscribe":
		var d struct {
			Channel     string `json:"channel"`
			Auth        string `json:"auth"`
			ChannelData string `json:"channel_data"`
		}
		if !decodeData(cmd.Data, &d) || d.Channel == "" {
			s.send(errorFrame(0, `pusher:subscribe needs data {"channel": …}`))
			return
		}
		s.subscribe(d.Channel, d.Auth, d.ChannelData)
	case cmd.Event == "pusher:unsubscribe":
		var d struct {
			Channel string `json:"channel"`
		}
		if !decodeData(cmd.Data, &d) || d.Channel == "" {
			s.send(errorFrame(0, `pusher:unsubscribe needs data {"channel": …}`))
			return
		}
		s.unsubscribe(d.Channel)
	case cmd.Event == "pusher:signin":
		var d struct {
			Auth     string `json:"auth"`
			UserData string `json:"user_data"`
		}
		if !decodeData(cmd.Data, &d) {
			s.send(errorFrame(0, `pusher:signin needs data {"auth": …, "user_data": …}`))
			return
		}
		s.signin(d.Auth, d.UserData)
	case strings.HasPrefix(cmd.Event, ClientEventPrefix):
		s.clientEvent(cmd)
	default:
		// Pusher ignores events it does not know; so does Relay.
	}
}

// decodeData reads a command's data, an object or a string holding one.
func decodeData(raw json.RawMessage, v any) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return false
		}
		raw = []byte(s)
	}
	return len(raw) > 0 && raw[0] == '{' && json.Unmarshal(raw, v) == nil
}

// subscribe carries out pusher:subscribe.
func (s *Session) subscribe(name, auth, channelData string) {
	ch, err := ParseChannel(name)
	if err != nil {
		s.send(subscriptionError(name, "InvalidChannel", err.Error(), 400))
		return
	}
	creds := s.app.Credentials
	sub := &subscription{kind: ch.Kind}
	switch {
	case ch.Kind.IsServerToUser():
		s.mu.Lock()
		user := s.user
		s.mu.Unlock()
		if user == "" || user != ch.UserID() {
			s.send(subscriptionError(name, "AuthError", "Subscribing to "+name+" needs a connection signed in as that user (pusher:signin)", 403))
			return
		}
	case ch.Kind.IsPresence():
		if err := VerifyChannelAuth(creds, s.socketID, name, channelData, auth); err != nil {
			s.authError(name, err)
			return
		}
		m, err := ParseChannelData(channelData)
		if err != nil {
			s.send(subscriptionError(name, "InvalidChannelData", err.Error(), 400))
			return
		}
		if len(m.UserInfo) > s.app.MaxMemberInfo {
			s.send(subscriptionError(name, "LimitReached", fmt.Sprintf("user_info is %d bytes; the limit of a member's info is %d", len(m.UserInfo), s.app.MaxMemberInfo), 413))
			return
		}
		sub.member, sub.key = &m, memberKey(m.UserID)
	case ch.Kind.RequiresAuth():
		if err := VerifyChannelAuth(creds, s.socketID, name, "", auth); err != nil {
			s.authError(name, err)
			return
		}
	}
	topic := Topic(s.app.ID, name)
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if sub.member != nil && !s.roomFor(ctx, name, topic, sub.key) {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.channels == nil {
		s.channels = make(map[string]*subscription)
	}
	// The socket's own member key must be known before the hub delivers
	// its join, which Subscribe does: the entry goes in first.
	prev := s.channels[name]
	if prev == nil {
		s.channels[name] = sub
	} else {
		// Subscribed already (pusher-js resubscribes only on a new socket):
		// answer again and change nothing.
		sub = prev
	}
	s.mu.Unlock()
	opts := hub.SubscribeOptions{Checked: true, Hold: true, Presence: sub.member != nil}
	if sub.member != nil && prev == nil {
		opts.Member = &hub.Member{User: sub.key, Info: memberInfo(*sub.member)}
	}
	if ch.Kind.IsCache() {
		opts.History = s.p.cfg.Broker
	}
	opts.Ready = func(_ string, r hub.Subscribed) {
		s.send(s.succeeded(name, sub, r))
		if ch.Kind.IsCache() {
			s.sendCached(ctx, name, topic, r.Position)
		}
	}
	if err := s.p.cfg.Hub.Subscribe(ctx, s.client, s, []string{topic}, opts); err != nil {
		if prev == nil {
			s.mu.Lock()
			if s.channels[name] == sub {
				delete(s.channels, name)
			}
			s.mu.Unlock()
		}
		kind, status := "ServerError", 503
		switch {
		case errors.Is(err, relay.ErrLimit):
			kind, status = "LimitReached", 429
		case errors.Is(err, relay.ErrInvalid):
			kind, status = "InvalidChannel", 400
		}
		s.send(subscriptionError(name, kind, relay.Detail(err), status))
		return
	}
	if prev != nil {
		return
	}
	// Counted once subscribed, unless the socket closed meanwhile (its
	// HandleClose then took nothing off for this channel).
	s.mu.Lock()
	sub.counted = !s.closed && s.channels[name] == sub
	s.mu.Unlock()
	if sub.counted {
		s.p.occ.change(s.app, name, +1)
		if counts(s.app, ch) {
			// subscription_count events come on a topic of their own, so
			// that they take no place in the channel's history.
			s.p.cfg.Hub.Subscribe(ctx, s.client, s, []string{countTopic(s.app.ID, name)}, hub.SubscribeOptions{Checked: true, Internal: true})
		}
		s.p.countChanged(s.app, name)
	}
}

// authError answers a subscription whose auth was refused: Pusher's
// pusher:error, and pusher:subscription_error so that pusher-js marks the
// channel failed instead of leaving it pending.
func (s *Session) authError(name string, err error) {
	s.send(errorFrame(0, err.Error()))
	s.send(subscriptionError(name, "AuthError", err.Error(), 401))
}

// roomFor checks a presence channel's member limit before the socket
// joins: a user already present always fits.
func (s *Session) roomFor(ctx context.Context, name, topic string, key relay.UserID) bool {
	present, err := s.p.cfg.Hub.Presence(ctx, topic)
	if err != nil {
		return true // the engine will refuse the subscribe itself if it is down
	}
	if len(present) < s.app.MaxPresenceMembers {
		return true
	}
	for _, p := range present {
		if p.User == key {
			return true
		}
	}
	s.send(subscriptionError(name, "LimitReached", fmt.Sprintf("presence channel %s has the maximum of %d members", name, s.app.MaxPresenceMembers), 403))
	return false
}

// succeeded is pusher_internal:subscription_succeeded; for a presence
// channel it lists the members, the socket's own included.
func (s *Session) succeeded(name string, sub *subscription, r hub.Subscribed) []byte {
	e := Event{Event: "pusher_internal:subscription_succeeded", Channel: name, Data: json.RawMessage(`"{}"`)}
	if sub.member == nil {
		return e.Frame()
	}
	ids := make([]string, 0, len(r.Members)+1)
	hash := make(map[string]json.RawMessage, len(r.Members)+1)
	add := func(info []byte) {
		var m struct {
			UserID   string          `json:"user_id"`
			UserInfo json.RawMessage `json:"user_info"`
		}
		if json.Unmarshal(info, &m) != nil {
			return
		}
		if _, dup := hash[m.UserID]; dup {
			return
		}
		if m.UserInfo == nil {
			m.UserInfo = json.RawMessage("null")
		}
		ids = append(ids, m.UserID)
		hash[m.UserID] = m.UserInfo
	}
	for _, p := range r.Members {
		add(p.Info)
	}
	add(memberInfo(*sub.member))
	type presence struct {
		IDs   []string                   `json:"ids"`
		Hash  map[string]json.RawMessage `json:"hash"`
		Count int                        `json:"count"`
	}
	e.Data = jsonString(mustJSON(struct {
		Presence presence `json:"presence"`
	}{presence{ids, hash, len(ids)}}))
	return e.Frame()
}

// sendCached sends a cache channel's last event, or pusher:cache_miss.
func (s *Session) sendCached(ctx context.Context, name, topic string, at relay.Position) {
	if at.Offset > 0 {
		page, err := s.p.cfg.Broker.History(ctx, topic, at.Offset-1, 1)
		if err == nil && len(page.Messages) == 1 {
			if _, frame, ok := SplitMessage(page.Messages[0].Data); ok {
				s.send(frame)
				return
			}
		}
	}
	s.send(Event{Event: "pusher:cache_miss", Channel: name}.Frame())
	s.p.webhook(s.app, webhookEvent{Name: "cache_miss", Channel: name})
}

// unsubscribe carries out pusher:unsubscribe; a channel the socket is not
// on is ignored, as Pusher does.
func (s *Session) unsubscribe(name string) {
	s.mu.Lock()
	sub := s.channels[name]
	delete(s.channels, name)
	s.mu.Unlock()
	if sub != nil {
		s.p.cfg.Hub.Unsubscribe(s.client, s, []string{Topic(s.app.ID, name), countTopic(s.app.ID, name)})
		if sub.counted {
			s.p.occ.change(s.app, name, -1)
			s.p.countChanged(s.app, name)
		}
	}
}

// signin carries out pusher:signin: the user's sign-in is checked, and
// the socket then listens for its user's termination.
func (s *Session) signin(auth, userData string) {
	if err := VerifyUserAuth(s.app.Credentials, s.socketID, userData, auth); err != nil {
		s.send(errorFrame(4009, err.Error()))
		return
	}
	u, err := ParseUserData(userData)
	if err != nil {
		s.send(errorFrame(4009, err.Error()))
		return
	}
	s.mu.Lock()
	if s.user != "" && s.user != u.ID {
		s.mu.Unlock()
		s.send(errorFrame(4009, "this connection is signed in as another user already"))
		return
	}
	watchlist, err := parseWatchlist(userData)
	if err != nil {
		s.mu.Unlock()
		s.send(errorFrame(4009, err.Error()))
		return
	}
	first := s.user == ""
	s.user, s.control = u.ID, controlTopic(s.app.ID, u.ID)
	s.mu.Unlock()
	var online []string
	if first {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		online, err = s.listen(ctx, u.ID, watchlist)
		cancel()
		if err != nil {
			s.mu.Lock()
			s.user, s.control = "", ""
			s.mu.Unlock()
			s.send(errorFrame(0, "signing in failed: "+relay.Detail(err)))
			return
		}
	}
	s.send(Event{Event: "pusher:signin_success", Data: jsonString(mustJSON(struct {
		UserData string `json:"user_data"`
	}{userData}))}.Frame())
	if len(online) > 0 {
		s.send(watchlistFrame("online", online))
	}
}

// listen subscribes a signed-in socket to its user's control topic, makes
// the user online (a member of its online topic, on every node), and
// subscribes to the online topics of the watchlist; it returns the
// watched users online now. These topics are the protocol's own: they do
// not count against -max-topics.
func (s *Session) listen(ctx context.Context, user string, watchlist []string) ([]string, error) {
	h := s.p.cfg.Hub
	if err := h.Subscribe(ctx, s.client, s, []string{s.control}, hub.SubscribeOptions{Checked: true, Internal: true}); err != nil {
		return nil, err
	}
	self := &hub.Member{User: memberKey(user), Info: memberInfo(Member{UserID: user})}
	if err := h.Subscribe(ctx, s.client, s, []string{onlineTopic(s.app.ID, user)}, hub.SubscribeOptions{Checked: true, Internal: true, Member: self}); err != nil {
		return nil, err
	}
	if len(watchlist) == 0 {
		return nil, nil
	}
	topics := make([]string, len(watchlist))
	for i, w := range watchlist {
		topics[i] = onlineTopic(s.app.ID, w)
	}
	var online []string
	err := h.Subscribe(ctx, s.client, s, topics, hub.SubscribeOptions{Checked: true, Internal: true, Presence: true,
		Ready: func(_ string, r hub.Subscribed) {
			for _, m := range r.Members {
				if id := userIDOf(m.Info); id != "" {
					online = append(online, id)
				}
			}
		}})
	return online, err
}

// maxWatchlist is the most users one sign-in may watch, as on Pusher.
const maxWatchlist = 100

// parseWatchlist reads user_data's optional watchlist: user ids.
func parseWatchlist(userData string) ([]string, error) {
	var d struct {
		Watchlist []string `json:"watchlist"`
	}
	if err := json.Unmarshal([]byte(userData), &d); err != nil {
		return nil, fmt.Errorf("user_data's watchlist must be an array of user ids")
	}
	if len(d.Watchlist) > maxWatchlist {
		return nil, fmt.Errorf("user_data's watchlist names %d users; at most %d", len(d.Watchlist), maxWatchlist)
	}
	for _, id := range d.Watchlist {
		if err := ValidateUserID(id); err != nil {
			return nil, err
		}
	}
	return d.Watchlist, nil
}

// onlinePrefix starts the topic whose members are a user's signed-in
// sockets, on every node: what watchlists watch.
const onlinePrefix = "#online-"

func onlineTopic(app, user string) string { return Topic(app, onlinePrefix+user) }

// watchlistFrame is pusher_internal:watchlist_events with one event.
func watchlistFrame(name string, ids []string) []byte {
	type event struct {
		Name    string   `json:"name"`
		UserIDs []string `json:"user_ids"`
	}
	return Event{Event: "pusher_internal:watchlist_events", Data: jsonString(mustJSON(struct {
		Events []event `json:"events"`
	}{[]event{{name, ids}}}))}.Frame()
}

// clientEvent carries out a client-* event: members of a private or
// presence channel tell each other, with the app's permission and within
// its rate.
func (s *Session) clientEvent(cmd command) {
	reject := func(code uint16, msg string) { s.send(errorFrame(code, msg)) }
	if !s.app.ClientEvents {
		reject(0, "To send client events, you must enable this feature in the Settings page of your dashboard.")
		return
	}
	if err := ValidateClientEventName(cmd.Event); err != nil {
		reject(0, err.Error())
		return
	}
	s.mu.Lock()
	sub := s.channels[cmd.Channel]
	s.mu.Unlock()
	switch {
	case sub == nil:
		reject(0, "Client event rejected: the connection is not subscribed to "+strconv.Quote(cmd.Channel))
		return
	case !sub.kind.AllowsClientEvents() || sub.kind.IsEncrypted():
		reject(0, "Client event rejected: client events are only supported on private and presence channels (not encrypted ones)")
		return
	case len(cmd.Data) > s.app.MaxEventData:
		reject(0, fmt.Sprintf("Client event rejected: data is %d bytes, the limit is %d", len(cmd.Data), s.app.MaxEventData))
		return
	}
	if !s.events.take(time.Now(), s.app.ClientEventRate) {
		reject(4301, "Client event rejected due to rate limit")
		return
	}
	e := Event{Event: cmd.Event, Channel: cmd.Channel, Data: cmd.Data}
	if len(e.Data) == 0 {
		e.Data = json.RawMessage("null")
	}
	if sub.member != nil {
		e.UserID = sub.member.UserID
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if _, err := s.p.publish(ctx, s.app, e, s.socketID); err != nil {
		if lt := s.p.cfg.Log; lt.Allow(ctx, slog.LevelWarn, "pusher_client_event_failed") {
			lt.Logger().LogAttrs(ctx, slog.LevelWarn, "a client event could not be published", slog.String("app", s.app.ID), slog.Any("err", err))
		}
		reject(0, errUnavailable.Error())
		return
	}
	s.p.stats.ClientEvents.Add(1)
	data := e.Data
	if data[0] != '"' {
		data = jsonString(data) // webhooks carry the data as a string
	}
	s.p.webhook(s.app, webhookEvent{Name: "client_event", Channel: e.Channel, Event: e.Event, Data: data, SocketID: s.socketID, UserID: e.UserID})
}

// tokenBucket allows rate events a second, in bursts of as many.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time, rate int) bool {
	if b.last.IsZero() {
		b.tokens = float64(rate)
	} else {
		b.tokens = min(float64(rate), b.tokens+now.Sub(b.last).Seconds()*float64(rate))
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
