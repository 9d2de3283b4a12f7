package pusher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// The HTTP API, as Pusher's (https://pusher.com/docs/channels/library_auth_reference/rest-api/):
// every request signed with an app's key and secret; errors are a line of
// text with the status Pusher answers with.

// maxRequestBody bounds an HTTP API request: ten events of 10 KB and their
// names, with room to spare; the data limits are checked per event.
const maxRequestBody = 256 << 10

// Handler returns the HTTP API and the socket endpoint, for the routes
// /app/{key} and /apps/{app_id}/..., with and without the configured path
// prefix (a proxy may or may not strip it).
func (p *Protocol) Handler() http.Handler {
	mux := http.NewServeMux()
	bases := []string{""}
	if prefix := strings.TrimSuffix(p.cfg.PathPrefix, "/"); prefix != "" {
		bases = append(bases, prefix)
	}
	api := func(pattern string, h func(w http.ResponseWriter, r *http.Request, app *App, body []byte)) {
		method, path, _ := strings.Cut(pattern, " ")
		for _, base := range bases {
			mux.HandleFunc(method+" "+base+"/apps/{app_id}"+path, p.signed(h))
		}
	}
	for _, base := range bases {
		mux.HandleFunc("GET "+base+"/app/{key}", p.ServeWS)
	}
	api("POST /events", p.events)
	api("POST /batch_events", p.batchEvents)
	api("GET /channels", p.channels)
	api("GET /channels/{channel}", p.channel)
	api("GET /channels/{channel}/users", p.users)
	api("GET /channels/{channel}/history", p.history)
	api("POST /users/{user_id}/terminate_connections", p.terminate)
	return mux
}

// apiError answers an HTTP API request as Pusher does: the status and a
// line of text.
func apiError(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, format+"\n", args...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(mustJSON(v), '\n'))
}

// signed checks a request's signature and app before h runs.
func (p *Protocol) signed(h func(w http.ResponseWriter, r *http.Request, app *App, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				apiError(w, http.StatusRequestEntityTooLarge, "Request body is larger than %d bytes", maxRequestBody)
				return
			}
			apiError(w, http.StatusBadRequest, "Could not read the request body: %v", err)
			return
		}
		creds, err := p.verify(r, body)
		if err != nil {
			status := http.StatusUnauthorized
			if pe, ok := errors.AsType[*Error](err); ok {
				status = pe.Status()
			}
			apiError(w, status, "%s", err.Error())
			return
		}
		id := r.PathValue("app_id")
		app, ok := p.cfg.Apps.ByID(id)
		switch {
		case !ok:
			apiError(w, http.StatusNotFound, "Unknown app %q", id)
			return
		case creds.ID != app.ID:
			apiError(w, http.StatusUnauthorized, "The auth_key does not belong to app %s", id)
			return
		}
		h(w, r, app, body)
	}
}

// verify checks r's signature. An SDK signs the path it sends to: with the
// prefix of a proxy when it was told of it (pusher-php-server's path),
// without when not (pusher-http-node); the proxy may strip the prefix or
// not. So with a PathPrefix both the path as received and its other form
// are tried.
func (p *Protocol) verify(r *http.Request, body []byte) (Credentials, error) {
	now := p.cfg.Now()
	creds, err := VerifyRequest(r.Method, r.URL.Path, r.URL.RawQuery, body, p.cfg.Apps.Lookup, now)
	prefix := strings.TrimSuffix(p.cfg.PathPrefix, "/")
	if err == nil || prefix == "" || !errors.Is(err, ErrInvalidSignature) {
		return creds, err
	}
	other := prefix + r.URL.Path
	if rest, ok := strings.CutPrefix(r.URL.Path, prefix); ok {
		other = rest
	}
	if c, err2 := VerifyRequest(r.Method, other, r.URL.RawQuery, body, p.cfg.Apps.Lookup, now); err2 == nil {
		return c, nil
	}
	return creds, err
}

// trigger is one event of POST /events or /batch_events.
type trigger struct {
	Name     string          `json:"name"`
	Data     json.RawMessage `json:"data"`
	Channel  string          `json:"channel"`
	Channels []string        `json:"channels"`
	SocketID string          `json:"socket_id"`
	Info     string          `json:"info"`
}

// check validates t before anything is published: what is wrong (in
// Pusher's words where it has some) and the status to answer; "" when
// nothing is.
func (t *trigger) check(app *App, batch bool) (status int, problem string) {
	if t.Name == "" {
		return 400, "Missing parameter: name"
	}
	if err := ValidateEventName(t.Name); err != nil {
		return 400, err.Error()
	}
	if len(t.Data) == 0 {
		return 400, "Missing parameter: data"
	}
	if t.Data[0] == '"' {
		var s string
		if json.Unmarshal(t.Data, &s) != nil {
			return 400, "Invalid parameter: data must be a string"
		}
		if len(s) > app.MaxEventData {
			return 413, fmt.Sprintf("Event data is %d bytes; the limit is %d", len(s), app.MaxEventData)
		}
	} else if len(t.Data) > app.MaxEventData {
		return 413, fmt.Sprintf("Event data is %d bytes; the limit is %d", len(t.Data), app.MaxEventData)
	}
	if t.Channel != "" {
		if t.Channels != nil {
			return 400, "Give channel or channels, not both"
		}
		t.Channels = []string{t.Channel}
	}
	switch {
	case len(t.Channels) == 0:
		return 400, "Missing parameter: channels"
	case batch && len(t.Channels) > 1:
		return 400, "A batch event names one channel"
	case len(t.Channels) > app.MaxTriggerChannels:
		return 400, fmt.Sprintf("Too many channels: %d given, at most %d per event", len(t.Channels), app.MaxTriggerChannels)
	}
	for _, c := range t.Channels {
		if _, err := ParseChannel(c); err != nil {
			return 400, err.Error()
		}
	}
	if t.SocketID != "" {
		if err := ValidateSocketID(t.SocketID); err != nil {
			return 400, err.Error()
		}
	}
	for a := range strings.SplitSeq(t.Info, ",") {
		switch a {
		case "", "user_count":
		case "subscription_count":
			if !app.SubscriptionCount {
				return 400, errSubscriptionCount
			}
		default:
			return 400, fmt.Sprintf("Invalid info attribute %q: use subscription_count, user_count", a)
		}
	}
	return 0, ""
}

// errSubscriptionCount refuses the subscription_count attribute of an app
// without it, as Pusher does.
const errSubscriptionCount = "The subscription_count attribute is not enabled for this app (subscription_count: true in its options)"

// publishAll publishes t on each of its channels.
func (p *Protocol) publishAll(ctx context.Context, app *App, t trigger) error {
	for _, c := range t.Channels {
		if _, err := p.publish(ctx, app, Event{Event: t.Name, Channel: c, Data: t.Data}, t.SocketID); err != nil {
			return err
		}
		p.stats.Triggers.Add(1)
	}
	return nil
}

// channelInfo is the attributes of one channel in API answers.
type channelInfo struct {
	Occupied          *bool `json:"occupied,omitempty"`
	SubscriptionCount *int  `json:"subscription_count,omitempty"`
	UserCount         *int  `json:"user_count,omitempty"`
}

// info reads the attributes attrs (comma-separated) of channel.
func (p *Protocol) info(ctx context.Context, app *App, channel, attrs string, occupied bool) (channelInfo, error) {
	present, err := p.cfg.Hub.Presence(ctx, Topic(app.ID, channel))
	if err != nil {
		return channelInfo{}, err
	}
	subs := 0
	for _, m := range present {
		subs += m.Connections
	}
	var ci channelInfo
	if occupied {
		o := subs > 0
		ci.Occupied = &o
	}
	isPresence := strings.HasPrefix(channel, "presence-")
	for a := range strings.SplitSeq(attrs, ",") {
		switch {
		case a == "subscription_count":
			ci.SubscriptionCount = &subs
		case a == "user_count" && isPresence:
			n := len(present)
			ci.UserCount = &n
		}
	}
	return ci, nil
}

// apiContext bounds what one HTTP API call waits for the engine.
func apiContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

func (p *Protocol) unavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	apiError(w, http.StatusServiceUnavailable, "The engine is unavailable: %s", relay.Detail(err))
}

// events is POST /apps/{app_id}/events.
func (p *Protocol) events(w http.ResponseWriter, r *http.Request, app *App, body []byte) {
	var t trigger
	if err := json.Unmarshal(body, &t); err != nil {
		apiError(w, http.StatusBadRequest, "Invalid JSON body: %v", err)
		return
	}
	if status, problem := t.check(app, false); problem != "" {
		apiError(w, status, "%s", problem)
		return
	}
	ctx, cancel := apiContext(r)
	defer cancel()
	if err := p.publishAll(ctx, app, t); err != nil {
		p.unavailable(w, err)
		return
	}
	if t.Info == "" {
		writeJSON(w, struct{}{})
		return
	}
	out := map[string]channelInfo{}
	for _, c := range t.Channels {
		ci, err := p.info(ctx, app, c, t.Info, false)
		if err != nil {
			p.unavailable(w, err)
			return
		}
		out[c] = ci
	}
	writeJSON(w, map[string]any{"channels": out})
}

// batchEvents is POST /apps/{app_id}/batch_events: every event is checked
// before any is published, so a bad one publishes none.
func (p *Protocol) batchEvents(w http.ResponseWriter, r *http.Request, app *App, body []byte) {
	var b struct {
		Batch []trigger `json:"batch"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		apiError(w, http.StatusBadRequest, "Invalid JSON body: %v", err)
		return
	}
	switch {
	case b.Batch == nil:
		apiError(w, http.StatusBadRequest, "Missing parameter: batch")
		return
	case len(b.Batch) > app.MaxBatch:
		apiError(w, http.StatusBadRequest, "Batch too large: %d events, at most %d", len(b.Batch), app.MaxBatch)
		return
	}
	infos := false
	for i := range b.Batch {
		if status, problem := b.Batch[i].check(app, true); problem != "" {
			apiError(w, status, "Event %d: %s", i, problem)
			return
		}
		infos = infos || b.Batch[i].Info != ""
	}
	ctx, cancel := apiContext(r)
	defer cancel()
	for _, t := range b.Batch {
		if err := p.publishAll(ctx, app, t); err != nil {
			p.unavailable(w, err)
			return
		}
	}
	if !infos {
		writeJSON(w, struct{}{})
		return
	}
	out := make([]channelInfo, len(b.Batch))
	for i, t := range b.Batch {
		if t.Info == "" {
			continue
		}
		ci, err := p.info(ctx, app, t.Channels[0], t.Info, false)
		if err != nil {
			p.unavailable(w, err)
			return
		}
		out[i] = ci
	}
	writeJSON(w, map[string]any{"batch": out})
}

// channels is GET /apps/{app_id}/channels: the occupied channels.
func (p *Protocol) channels(w http.ResponseWriter, r *http.Request, app *App, _ []byte) {
	q, err := ParseQuery(r.URL.RawQuery)
	if err != nil {
		apiError(w, http.StatusBadRequest, "%s", err.Error())
		return
	}
	prefix, attrs := q.Get("filter_by_prefix"), q.Get("info")
	for a := range strings.SplitSeq(attrs, ",") {
		switch {
		case a == "":
		case a == "user_count" && strings.HasPrefix(prefix, "presence-"):
		case a == "user_count":
			apiError(w, http.StatusBadRequest, "info=user_count needs filter_by_prefix=presence-")
			return
		default:
			apiError(w, http.StatusBadRequest, "Invalid info attribute %q: only user_count is supported here", a)
			return
		}
	}
	ctx, cancel := apiContext(r)
	defer cancel()
	names, err := p.occupied(ctx, app, prefix)
	if err != nil {
		p.unavailable(w, err)
		return
	}
	out := make(map[string]channelInfo, len(names))
	for _, name := range names {
		ci := channelInfo{}
		if attrs != "" {
			if ci, err = p.info(ctx, app, name, attrs, false); err != nil {
				p.unavailable(w, err)
				return
			}
		}
		out[name] = ci
	}
	writeJSON(w, map[string]any{"channels": out})
}

// occupied lists app's channels with a subscriber, starting with prefix:
// cluster-wide when the engine can list topics with presence, else this
// node's.
func (p *Protocol) occupied(ctx context.Context, app *App, prefix string) ([]string, error) {
	topics, err := p.cfg.Hub.Topics(ctx, Topic(app.ID, prefix))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, t := range topics {
		if _, ch, ok := SplitTopic(t); ok && !strings.HasPrefix(ch, "#") {
			names = append(names, ch)
		}
	}
	slices.Sort(names)
	return names, nil
}

// channel is GET /apps/{app_id}/channels/{channel}.
func (p *Protocol) channel(w http.ResponseWriter, r *http.Request, app *App, _ []byte) {
	name := r.PathValue("channel")
	ch, err := ParseChannel(name)
	if err != nil {
		apiError(w, http.StatusBadRequest, "%s", err.Error())
		return
	}
	q, err := ParseQuery(r.URL.RawQuery)
	if err != nil {
		apiError(w, http.StatusBadRequest, "%s", err.Error())
		return
	}
	attrs := q.Get("info")
	for a := range strings.SplitSeq(attrs, ",") {
		switch {
		case a == "subscription_count" && !app.SubscriptionCount:
			apiError(w, http.StatusBadRequest, "%s", errSubscriptionCount)
			return
		case a == "" || a == "subscription_count" || a == "cache":
		case a == "user_count" && ch.Kind.IsPresence():
		case a == "user_count":
			apiError(w, http.StatusBadRequest, "info=user_count is only for presence channels")
			return
		default:
			apiError(w, http.StatusBadRequest, "Invalid info attribute %q: use subscription_count, user_count, cache", a)
			return
		}
	}
	ctx, cancel := apiContext(r)
	defer cancel()
	ci, err := p.info(ctx, app, name, attrs, true)
	if err != nil {
		p.unavailable(w, err)
		return
	}
	out := map[string]any{"occupied": *ci.Occupied}
	if ci.SubscriptionCount != nil {
		out["subscription_count"] = *ci.SubscriptionCount
	}
	if ci.UserCount != nil {
		out["user_count"] = *ci.UserCount
	}
	if slices.Contains(strings.Split(attrs, ","), "cache") && ch.Kind.IsCache() {
		if cached, ok := p.lastEvent(ctx, Topic(app.ID, name)); ok {
			out["cache"] = map[string]any{"data": cached.Data, "ttl": 0}
		}
	}
	writeJSON(w, out)
}

// lastEvent reads a topic's last event.
func (p *Protocol) lastEvent(ctx context.Context, topic string) (Event, bool) {
	head, err := p.cfg.Broker.History(ctx, topic, ^uint64(0), 0)
	if err != nil || head.Latest.Offset == 0 {
		return Event{}, false
	}
	page, err := p.cfg.Broker.History(ctx, topic, head.Latest.Offset-1, 1)
	if err != nil || len(page.Messages) != 1 {
		return Event{}, false
	}
	_, frame, ok := SplitMessage(page.Messages[0].Data)
	var e Event
	if !ok || json.Unmarshal(frame, &e) != nil {
		return Event{}, false
	}
	return e, true
}

// users is GET /apps/{app_id}/channels/{channel}/users.
func (p *Protocol) users(w http.ResponseWriter, r *http.Request, app *App, _ []byte) {
	name := r.PathValue("channel")
	ch, err := ParseChannel(name)
	if err != nil {
		apiError(w, http.StatusBadRequest, "%s", err.Error())
		return
	}
	if !ch.Kind.IsPresence() {
		apiError(w, http.StatusBadRequest, "Users can only be listed for presence channels")
		return
	}
	ctx, cancel := apiContext(r)
	defer cancel()
	present, err := p.cfg.Hub.Presence(ctx, Topic(app.ID, name))
	if err != nil {
		p.unavailable(w, err)
		return
	}
	type user struct {
		ID string `json:"id"`
	}
	out := make([]user, 0, len(present))
	for _, m := range present {
		if id := userIDOf(m.Info); id != "" {
			out = append(out, user{id})
		}
	}
	writeJSON(w, map[string]any{"users": out})
}

// terminate is POST /apps/{app_id}/users/{user_id}/terminate_connections:
// every node closes the user's signed-in sockets with 4009.
func (p *Protocol) terminate(w http.ResponseWriter, r *http.Request, app *App, _ []byte) {
	user := r.PathValue("user_id")
	if err := ValidateUserID(user); err != nil {
		apiError(w, http.StatusBadRequest, "%s", err.Error())
		return
	}
	ctx, cancel := apiContext(r)
	defer cancel()
	m := &relay.Message{Topic: controlTopic(app.ID, user), Data: []byte(terminateMessage)}
	if _, err := p.cfg.Broker.Publish(ctx, m, relay.PublishOptions{}); err != nil {
		p.unavailable(w, err)
		return
	}
	writeJSON(w, struct{}{})
}

// history is GET /apps/{app_id}/channels/{channel}/history?since=N: the
// events after offset N that the channel still holds, so that a pusher-js
// app can fetch what it missed when pusher:subscription_succeeded fires
// again after a reconnect. A Relay extension.
func (p *Protocol) history(w http.ResponseWriter, r *http.Request, app *App, _ []byte) {
	name := r.PathValue("channel")
	if _, err := ParseChannel(name); err != nil {
		apiError(w, http.StatusBadRequest, "%s", err.Error())
		return
	}
	q, err := ParseQuery(r.URL.RawQuery)
	if err != nil {
		apiError(w, http.StatusBadRequest, "%s", err.Error())
		return
	}
	var since uint64
	if v := q.Get("since"); v != "" {
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			apiError(w, http.StatusBadRequest, "since must be an offset: a non-negative integer")
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			apiError(w, http.StatusBadRequest, "limit must be 1 to 1000")
			return
		}
	}
	ctx, cancel := apiContext(r)
	defer cancel()
	page, err := p.cfg.Broker.History(ctx, Topic(app.ID, name), since, limit)
	if err != nil {
		p.unavailable(w, err)
		return
	}
	type entry struct {
		Offset uint64          `json:"offset"`
		Event  string          `json:"event"`
		Data   json.RawMessage `json:"data"`
		UserID string          `json:"user_id,omitempty"`
	}
	events := make([]entry, 0, len(page.Messages))
	for _, m := range page.Messages {
		_, frame, ok := SplitMessage(m.Data)
		var e Event
		if !ok || json.Unmarshal(frame, &e) != nil || strings.HasPrefix(e.Event, "pusher_internal:") {
			continue
		}
		events = append(events, entry{m.Offset, e.Event, e.Data, e.UserID})
	}
	writeJSON(w, map[string]any{
		"events":   events,
		"offset":   page.Latest.Offset,
		"epoch":    page.Latest.Epoch,
		"complete": page.Complete,
	})
}
