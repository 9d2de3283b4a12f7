package pusher

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// Webhooks (https://pusher.com/docs/channels/server_api/webhooks/): each
// app with a webhook_url gets its events in batches, {"time_ms": …,
// "events": […]}, signed with X-Pusher-Key and X-Pusher-Signature.
//
// Each event is sent by one node: member_added and member_removed by the
// node whose change made the user present or absent anywhere (the
// roster's transitions), channel_occupied and channel_vacated likewise
// from the channel's occupancy count, client_event by the node the client
// sent it to, cache_miss by the node that found the cache empty.

// Webhook tuning.
const (
	// DefaultVacateDelay is how long after a channel's last subscription goes
	// its occupancy count drops: a page that reloads, or a client that
	// reconnects, within it causes neither channel_vacated nor a second
	// channel_occupied.
	DefaultVacateDelay = 3 * time.Second
	// webhookQueue bounds the events waiting per app; past it new ones are
	// dropped and counted.
	webhookQueue = 10_000
	// webhookBatch bounds the events of one request.
	webhookBatch = 100
	// webhookTries and webhookBackoff: a failed request (no answer, or
	// not 2xx) is tried again after 1, 2, 4 and 8 s, then dropped.
	webhookTries   = 5
	webhookBackoff = time.Second
	webhookTimeout = 10 * time.Second
)

// webhookEvent is one event of a webhook request.
type webhookEvent struct {
	Name     string          `json:"name"`
	Channel  string          `json:"channel"`
	UserID   string          `json:"user_id,omitempty"`
	Event    string          `json:"event,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	SocketID string          `json:"socket_id,omitempty"`
}

// webhooks is one app's sender: a bounded queue and one goroutine.
type webhooks struct {
	app    *App
	client *http.Client
	log    func(msg string, attrs ...slog.Attr)

	mu    sync.Mutex
	queue []webhookEvent
	wake  chan struct{}

	sent, failed, dropped atomic.Uint64
}

func newWebhooks(app *App, log func(string, ...slog.Attr)) *webhooks {
	return &webhooks{app: app, client: &http.Client{Timeout: webhookTimeout}, log: log, wake: make(chan struct{}, 1)}
}

// add queues e; it never blocks.
func (w *webhooks) add(e webhookEvent) {
	w.mu.Lock()
	if len(w.queue) >= webhookQueue {
		w.mu.Unlock()
		w.dropped.Add(1)
		return
	}
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run sends until ctx ends; what is still queued then is dropped.
func (w *webhooks) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.dropped.Add(uint64(len(w.queue)))
			w.queue = nil
			w.mu.Unlock()
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			n := min(len(w.queue), webhookBatch)
			batch := append([]webhookEvent(nil), w.queue[:n]...)
			w.queue = w.queue[n:]
			if len(w.queue) == 0 {
				w.queue = nil
			}
			w.mu.Unlock()
			if n == 0 {
				break
			}
			w.send(ctx, batch)
		}
	}
}

// send posts one batch, retrying with back-off.
func (w *webhooks) send(ctx context.Context, events []webhookEvent) {
	body := mustJSON(struct {
		TimeMS int64          `json:"time_ms"`
		Events []webhookEvent `json:"events"`
	}{time.Now().UnixMilli(), events})
	wait := webhookBackoff
	var last string
	for try := 1; try <= webhookTries; try++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.app.WebhookURL, bytes.NewReader(body))
		if err != nil {
			last = err.Error()
			break
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(HeaderWebhookKey, w.app.Key)
		req.Header.Set(HeaderWebhookSignature, WebhookSignature(w.app.Credentials, body))
		resp, err := w.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				w.sent.Add(uint64(len(events)))
				return
			}
			last = "status " + strconv.Itoa(resp.StatusCode)
		} else {
			last = err.Error()
		}
		if try == webhookTries {
			break
		}
		select {
		case <-ctx.Done():
			w.dropped.Add(uint64(len(events)))
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
	w.failed.Add(uint64(len(events)))
	w.log("a webhook could not be delivered; its events are dropped", slog.String("app", w.app.ID),
		slog.Int("events", len(events)), slog.String("last_error", last))
}

// occupancyPrefix starts the topic whose presence counts a channel's
// subscriptions for channel_occupied and channel_vacated (no one
// subscribes to it: only the roster counts it).
const occupancyPrefix = "#occupancy/"

// occupancy counts each channel's subscriptions of the apps with webhooks,
// dropping a count Config.VacateDelay late. With a networked engine the roster
// counts them across nodes (user 0 of the channel's occupancy topic) and
// reports the transitions; on the memory engine the counts are here.
type occupancy struct {
	p      *Protocol
	roster relay.Roster // nil: counted here

	mu     sync.Mutex
	counts map[string]int // topic → subscriptions, without a roster
}

func (o *occupancy) change(app *App, channel string, delta int) {
	if app.WebhookURL == "" {
		return
	}
	topic := Topic(app.ID, occupancyPrefix+channel)
	if delta < 0 {
		time.AfterFunc(o.p.cfg.VacateDelay, func() { o.apply(topic, delta) })
		return
	}
	o.apply(topic, delta)
}

func (o *occupancy) apply(topic string, delta int) {
	if o.roster != nil {
		o.roster.Change(topic, 0, delta)
		return
	}
	o.mu.Lock()
	before := o.counts[topic]
	after := before + delta
	if after <= 0 {
		delete(o.counts, topic)
	} else {
		o.counts[topic] = after
	}
	o.mu.Unlock()
	switch {
	case before <= 0 && after > 0:
		o.p.Transition(relay.Transition{Topic: topic, Joined: true})
	case before > 0 && after <= 0:
		o.p.Transition(relay.Transition{Topic: topic})
	}
}

// Transition turns the roster's (or the hub's) transitions of Pusher
// topics into webhooks: members of presence channels, and channels'
// occupancy. It never blocks.
func (p *Protocol) Transition(t relay.Transition) {
	app, channel, ok := SplitTopic(t.Topic)
	if !ok {
		return
	}
	a, ok := p.cfg.Apps.ByID(app)
	if !ok || a.WebhookURL == "" {
		return
	}
	w := p.hooks[a.ID]
	if c, ok := strings.CutPrefix(channel, occupancyPrefix); ok {
		name := "channel_vacated"
		if t.Joined {
			name = "channel_occupied"
		}
		w.add(webhookEvent{Name: name, Channel: c})
		return
	}
	if !strings.HasPrefix(channel, "presence-") {
		return
	}
	var m struct {
		UserID string `json:"user_id"`
	}
	if json.Unmarshal(t.Info, &m) != nil || m.UserID == "" {
		return
	}
	name := "member_removed"
	if t.Joined {
		name = "member_added"
	}
	w.add(webhookEvent{Name: name, Channel: channel, UserID: m.UserID})
}

// webhook queues an event of app, when it has webhooks.
func (p *Protocol) webhook(app *App, e webhookEvent) {
	if w := p.hooks[app.ID]; w != nil {
		w.add(e)
	}
}

// Run sends the webhooks until ctx ends.
func (p *Protocol) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range p.hooks {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	return nil
}
