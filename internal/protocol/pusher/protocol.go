package pusher

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/logthrottle"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// Config is what the Pusher protocol of one node needs.
type Config struct {
	Apps   *Apps
	Hub    *hub.Hub
	Broker relay.Broker
	// Roster is the engine's cluster-wide presence, nil on the memory
	// engine (the hub is the roster there): it counts channels' occupancy
	// for webhooks.
	Roster relay.Roster
	WS     *ws.Server
	// CheckOrigin decides whether a browser's Origin may connect; a
	// refused socket is upgraded and closed with 4009, which pusher-js
	// takes as "do not reconnect" (a 403 would make it retry forever).
	// nil accepts any origin.
	CheckOrigin func(r *http.Request) bool
	// PathPrefix is stripped from request paths before they are routed
	// and before HTTP API signatures are checked, for a proxy that serves
	// Relay under a prefix (e.g. /pusher). Empty: none.
	PathPrefix string
	// Log receives the protocol's own log lines within their budgets.
	Log *logthrottle.Throttle
	// Now is the clock of signature checks; nil is time.Now.
	Now func() time.Time
	// VacateDelay is how late a channel's occupancy count drops when a
	// subscription goes (default DefaultVacateDelay): see occupancy.
	VacateDelay time.Duration
}

// Protocol is what the Pusher sessions and HTTP API of one node share.
type Protocol struct {
	cfg     Config
	profile ws.Profile
	// socketPrefix is N of the socket ids N.M this process hands out: 12
	// random digits, so ids are unique across nodes and restarts.
	socketPrefix string
	stats        Stats
	hooks        map[string]*webhooks // by app id, for the apps with a webhook_url
	occ          occupancy

	countMu  sync.Mutex
	counting map[string]bool // topics with a subscription_count event due
}

// Stats are the Pusher protocol's counters.
type Stats struct {
	Connections  atomic.Int64  // open Pusher sockets
	ClientEvents atomic.Uint64 // client events accepted
	Triggers     atomic.Uint64 // events accepted by the HTTP API

	hooks map[string]*webhooks
}

// WebhooksSent, WebhooksFailed and WebhooksDropped count webhook events:
// delivered, dropped after every retry failed, dropped unsent (a full
// queue, or a stopping node).
func (s *Stats) WebhooksSent() uint64 {
	return s.sum(func(w *webhooks) uint64 { return w.sent.Load() })
}

func (s *Stats) WebhooksFailed() uint64 {
	return s.sum(func(w *webhooks) uint64 { return w.failed.Load() })
}

func (s *Stats) WebhooksDropped() uint64 {
	return s.sum(func(w *webhooks) uint64 { return w.dropped.Load() })
}

func (s *Stats) sum(f func(*webhooks) uint64) uint64 {
	var n uint64
	for _, w := range s.hooks {
		n += f(w)
	}
	return n
}

// New returns the Pusher protocol.
func New(cfg Config) *Protocol {
	if cfg.Log == nil {
		cfg.Log = logthrottle.New(nil, logthrottle.Config{})
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.VacateDelay <= 0 {
		cfg.VacateDelay = DefaultVacateDelay
	}
	n, err := rand.Int(rand.Reader, big.NewInt(9e11))
	if err != nil {
		panic(err)
	}
	p := &Protocol{cfg: cfg, socketPrefix: strconv.FormatInt(n.Int64()+1e11, 10), hooks: map[string]*webhooks{}}
	p.occ = occupancy{p: p, roster: cfg.Roster, counts: map[string]int{}}
	for _, a := range cfg.Apps.All() {
		if a.WebhookURL != "" {
			p.hooks[a.ID] = newWebhooks(a, p.warn)
		}
	}
	p.stats.hooks = p.hooks
	p.profile = ws.Profile{
		Format: relay.FormatPusher,
		Ping:   ws.EncodeText([]byte(`{"event":"pusher:ping","data":"{}"}`)),
		// Relay's own 4000–4004 never reach a Pusher socket: pusher-js
		// reads 4000 as "use TLS" and 4001–4099 as "do not reconnect".
		// 4100–4199 make it reconnect after a back-off, 4200–4299 at once.
		CloseCodes: map[relay.CloseReason]ws.CloseCode{
			relay.CloseShutdown:     {Code: 4200, Text: "Server shutting down; reconnect"},
			relay.CloseUnregistered: {Code: 4200, Text: "Connection reset; reconnect"},
			relay.CloseReplaced:     {Code: 4200, Text: "Connection reset; reconnect"},
			relay.CloseSlowConsumer: {Code: 4100, Text: "Over capacity: the connection did not keep up"},
			relay.CloseIdle:         {Code: 4201, Text: "Pong reply not received"},
			relay.CloseRateLimited:  {Code: 4100, Text: "Over capacity: too many messages"},
		},
	}
	return p
}

// warn logs a line at Warn within the log budget of its message.
func (p *Protocol) warn(msg string, attrs ...slog.Attr) {
	if lt, ctx := p.cfg.Log, context.Background(); lt.Allow(ctx, slog.LevelWarn, "pusher:"+msg) {
		lt.Logger().LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
	}
}

// Stats returns the protocol's counters.
func (p *Protocol) Stats() *Stats { return &p.stats }

// Encode is the Pusher frame of a message or presence event, built once
// per message for every Pusher subscriber (the WebSocket server's encoder
// of relay.FormatPusher). Messages that are no Pusher event have none.
func Encode(m *relay.Message) []byte {
	switch m.Kind {
	case relay.KindPublish:
		if _, frame, ok := SplitMessage(m.Data); ok {
			return ws.EncodeText(frame)
		}
	case relay.KindJoin, relay.KindLeave:
		_, channel, ok := SplitTopic(m.Topic)
		if !ok || len(m.Data) == 0 {
			return nil
		}
		e := Event{Event: "pusher_internal:member_added", Channel: channel, Data: jsonString(m.Data)}
		if m.Kind == relay.KindLeave {
			id := userIDOf(m.Data)
			if id == "" {
				return nil
			}
			e.Event, e.Data = "pusher_internal:member_removed", jsonString(mustJSON(struct {
				UserID string `json:"user_id"`
			}{id}))
		}
		return ws.EncodeText(e.Frame())
	}
	return nil
}

// memberKey is the roster's key of a presence member: the first 64 bits of
// SHA-256 of its user id (two ids of one channel collide with a chance of
// about 2^-64).
func memberKey(userID string) relay.UserID {
	sum := sha256.Sum256([]byte(userID))
	return relay.UserID(binary.BigEndian.Uint64(sum[:8]))
}

// memberInfo is what a presence member joins with, and what
// pusher_internal:member_added carries: {"user_id":…,"user_info":…}.
func memberInfo(m Member) []byte {
	type info struct {
		UserID   string          `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info,omitempty"`
	}
	return mustJSON(info(m))
}

// userIDOf reads the user_id of a member's info; "" when there is none.
func userIDOf(info []byte) string {
	if len(info) == 0 {
		return ""
	}
	var m struct {
		UserID string `json:"user_id"`
	}
	if json.Unmarshal(info, &m) != nil {
		return ""
	}
	return m.UserID
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// jsonString returns s as a JSON string: pusher-js expects the data of
// pusher_internal events as a string holding JSON.
func jsonString(s []byte) json.RawMessage { return mustJSON(string(s)) }

// ServeWS upgrades GET /app/{key}: a Pusher socket. Everything wrong after
// the handshake is answered in the protocol (pusher:error and a close
// code pusher-js understands), not with an HTTP status that would only
// make it retry.
func (p *Protocol) ServeWS(w http.ResponseWriter, r *http.Request) {
	if err := p.cfg.Broker.Ready(); err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"the engine is unreachable; retry later"}`, http.StatusServiceUnavailable)
		return
	}
	c, err := p.cfg.WS.UpgradeAs(w, r, &p.profile)
	if err != nil {
		return // answered by the upgrader
	}
	key := r.PathValue("key")
	app, ok := p.cfg.Apps.ByKey(key)
	code, msg := uint16(0), ""
	switch v := r.URL.Query().Get("protocol"); {
	case !ok:
		code, msg = 4001, "App key "+key+" not in this cluster. Did you forget to specify the cluster?"
	case p.cfg.CheckOrigin != nil && !p.cfg.CheckOrigin(r):
		code, msg = 4009, "Origin "+r.Header.Get("Origin")+" is not allowed to connect to this app"
	case v == "":
		code, msg = 4008, "No protocol version supplied"
	case v != "5" && v != "6" && v != "7":
		code, msg = 4007, "Unsupported protocol version "+v+"; this server speaks 7"
	}
	if code != 0 {
		c.SendText(errorFrame(code, msg))
		c.CloseCode(code, msg)
		c.Start(closing{})
		return
	}
	s := p.newSession(app, c)
	c.SetLogAttrs(slog.String("protocol", "pusher"), slog.String("app", app.ID), slog.String("socket_id", s.socketID))
	data := mustJSON(struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}{s.socketID, max(1, int(app.ActivityTimeout/time.Second))})
	c.SendText(Event{Event: "pusher:connection_established", Data: jsonString(data)}.Frame())
	p.stats.Connections.Add(1)
	c.Start(s)
}

// closing is the handler of a socket refused after its handshake.
type closing struct{}

func (closing) HandleText(*ws.Conn, []byte) {}
func (closing) HandleClose(*ws.Conn)        {}

// errorFrame is pusher:error with a code (0: null) and a message.
func errorFrame(code uint16, msg string) []byte {
	type data struct {
		Code    *uint16 `json:"code"`
		Message string  `json:"message"`
	}
	d := data{Message: msg}
	if code != 0 {
		d.Code = &code
	}
	return Event{Event: "pusher:error", Data: mustJSON(d)}.Frame()
}

// subscriptionError is pusher:subscription_error on channel.
func subscriptionError(channel, kind, msg string, status int) []byte {
	return Event{Event: "pusher:subscription_error", Channel: channel, Data: mustJSON(struct {
		Type   string `json:"type"`
		Error  string `json:"error"`
		Status int    `json:"status"`
	}{kind, msg, status})}.Frame()
}

// publish hands an event to the engine, and to the bridge's topic when
// the app bridges its public channels.
func (p *Protocol) publish(ctx context.Context, app *App, e Event, exclude string) (relay.Receipt, error) {
	r, err := p.cfg.Broker.Publish(ctx, &relay.Message{Topic: Topic(app.ID, e.Channel), Data: e.Encode(exclude)}, relay.PublishOptions{})
	if err != nil || !app.Bridge {
		return r, err
	}
	if ch, perr := ParseChannel(e.Channel); perr == nil && !ch.Kind.RequiresAuth() && !ch.Kind.IsServerToUser() {
		// The event is published: a failed copy to the bridge is logged,
		// not answered as a failure the client would retry (a duplicate).
		if _, berr := p.cfg.Broker.Publish(ctx, &relay.Message{Topic: BridgeTopic(app.ID, e.Channel), Data: e.Frame()}, relay.PublishOptions{}); berr != nil {
			p.warn("an event could not be copied to its bridge topic", slog.String("app", app.ID), slog.String("channel", e.Channel), slog.Any("err", berr))
		}
	}
	return r, nil
}

// BridgeTopic is the Relay topic that bridges a public channel to seed and
// relay.v1 clients.
func BridgeTopic(app, channel string) string { return "pusher/" + app + "/" + channel }

// errUnavailable is what sockets are told when the engine fails.
var errUnavailable = errors.New("the server could not reach its engine; retry")

// countDelay gathers the subscription changes of a channel into one
// subscription_count event.
const countDelay = 500 * time.Millisecond

// countChanged schedules a pusher_internal:subscription_count event for a
// public or private channel of an app that asked for them: one per
// countDelay at most, from each node where subscriptions changed, with the
// count of every node.
func (p *Protocol) countChanged(app *App, channel string) {
	ch, err := ParseChannel(channel)
	if err != nil || !counts(app, ch) {
		return
	}
	topic := Topic(app.ID, channel)
	p.countMu.Lock()
	if p.counting == nil {
		p.counting = map[string]bool{}
	}
	due := p.counting[topic]
	p.counting[topic] = true
	p.countMu.Unlock()
	if due {
		return
	}
	time.AfterFunc(countDelay, func() {
		p.countMu.Lock()
		delete(p.counting, topic)
		p.countMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		present, err := p.cfg.Hub.Presence(ctx, topic)
		if err != nil {
			return
		}
		n := 0
		for _, m := range present {
			n += m.Connections
		}
		data := jsonString(mustJSON(struct {
			Count int `json:"subscription_count"`
		}{n}))
		p.cfg.Broker.Publish(ctx, &relay.Message{Topic: countTopic(app.ID, channel), Data: Event{Event: "pusher_internal:subscription_count", Channel: channel, Data: data}.Encode("")},
			relay.PublishOptions{Transient: true}) // a stored publish would let subscribes create streams
	})
}

// counts reports whether the subscribers of ch are sent its
// subscription_count: on public and private channels of the apps that ask
// for it (presence channels have member counts).
func counts(app *App, ch Channel) bool {
	return app.SubscriptionCount && !ch.Kind.IsPresence() && !ch.Kind.IsServerToUser()
}

// countTopic carries a channel's subscription_count events, apart from
// the channel's own stream and history; they are transient, so the topic
// never has a stream of its own.
func countTopic(app, channel string) string { return Topic(app, "#count/"+channel) }
