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
	// webhookQueue and webhookQueueBytes bound the events waiting per app
	// (client events carry up to max_event_data each); past them new ones
	// are dropped and counted. Events any holder of the app key can cause
	// (channel_occupied, channel_vacated, cache_miss: subscribing to public
	// channels is enough) may take at most half of either, so that a
	// client churning through public channels cannot crowd out the
	// member and client events of signed sockets.
	webhookQueue      = 10_000
	webhookQueueBytes = 16 << 20
	// webhookBatch bounds the events of one request.
	webhookBatch = 100
	// webhookTries and webhookBackoff: a failed request (no answer, or
	// not 2xx) is tried again after 1, 2, 4 and 8 s, then dropped.
	webhookTries   = 5
	webhookBackoff = time.Second
	webhookTimeout = 10 * time.Second
	// webhookDrain bounds how long a stopping node tries, once each, to
	// send what is still queued (the leaves of its own sockets included).
	webhookDrain = 5 * time.Second
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

// size is what e counts against the queue's bytes: its data, its channel
// and a little for the rest.
func (e webhookEvent) size() int { return len(e.Data) + len(e.Channel) + 64 }

// open reports whether e is one that any holder of the app key can cause,
// which webhookQueue's half bounds.
func (e webhookEvent) open() bool {
	return e.Name == "channel_occupied" || e.Name == "channel_vacated" || e.Name == "cache_miss"
}

// queueUse is what a part of the queue holds.
type queueUse struct{ events, bytes int }

func (u *queueUse) add(e webhookEvent, sign int) {
	u.events += sign
	u.bytes += sign * e.size()
}

// webhooks is one app's sender: a bounded queue and one goroutine.
type webhooks struct {
	app    *App
	client *http.Client
	log    func(msg string, attrs ...slog.Attr)

	mu      sync.Mutex
	queue   []webhookEvent
	all     queueUse // the queued events
	opened  queueUse // those of them that are open()
	stopped bool     // run has returned: add drops
	wake    chan struct{}

	sent, failed, dropped atomic.Uint64
}

func newWebhooks(app *App, log func(string, ...slog.Attr)) *webhooks {
	return &webhooks{app: app, client: &http.Client{Timeout: webhookTimeout}, log: log, wake: make(chan struct{}, 1)}
}

// add queues e; it never blocks.
func (w *webhooks) add(e webhookEvent) {
	size := e.size()
	w.mu.Lock()
	full := w.all.events >= webhookQueue || w.all.bytes+size > webhookQueueBytes
	if e.open() {
		full = full || w.opened.events >= webhookQueue/2 || w.opened.bytes+size > webhookQueueBytes/2
	}
	if w.stopped || full {
		w.mu.Unlock()
		w.dropped.Add(1)
		return
	}
	w.queue = append(w.queue, e)
	w.count(e, 1)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// count adds (sign 1) or removes (-1) e from the queue's use. The caller
// holds w.mu.
func (w *webhooks) count(e webhookEvent, sign int) {
	w.all.add(e, sign)
	if e.open() {
		w.opened.add(e, sign)
	}
}

// run sends until ctx ends, then tries once more, within webhookDrain,
// what is still queued; the rest is dropped and counted.
func (w *webhooks) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), webhookDrain)
			defer cancel()
			for batch := w.take(); batch != nil; batch = w.take() {
				w.send(dctx, batch, 1)
			}
			w.mu.Lock()
			w.stopped = true
			w.mu.Unlock()
			return
		case <-w.wake:
		}
		for ctx.Err() == nil {
			batch := w.take()
			if batch == nil {
				break
			}
			w.send(ctx, batch, webhookTries)
		}
	}
}

// requeue puts events back at the head of the queue.
func (w *webhooks) requeue(events []webhookEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range events {
		w.count(e, 1)
	}
	w.queue = append(append([]webhookEvent(nil), events...), w.queue...)
}

// take removes the next batch from the queue; nil when it is empty.
func (w *webhooks) take() []webhookEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(len(w.queue), webhookBatch)
	if n == 0 {
		return nil
	}
	batch := append([]webhookEvent(nil), w.queue[:n]...)
	for _, e := range batch {
		w.count(e, -1)
	}
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil
	}
	return batch
}

// send posts one batch, trying up to tries times with back-off. Each
// request is bounded by reqCtx (the drain's deadline at shutdown) and the
// client's timeout, not by the node stopping: a batch whose back-off the
// stop interrupts goes back to the queue for the drain.
func (w *webhooks) send(ctx context.Context, events []webhookEvent, tries int) {
	reqCtx := ctx
	if tries > 1 {
		reqCtx = context.WithoutCancel(ctx)
	}
	body := mustJSON(struct {
		TimeMS int64          `json:"time_ms"`
		Events []webhookEvent `json:"events"`
	}{time.Now().UnixMilli(), events})
	wait := webhookBackoff
	var last string
	for try := 1; try <= tries; try++ {
		req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, w.app.WebhookURL, bytes.NewReader(body))
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
		if try == tries {
			break
		}
		select {
		case <-ctx.Done():
			w.requeue(events)
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

	mu       sync.Mutex
	counts   map[string]int         // topic → subscriptions, without a roster
	pending  map[*time.Timer]string // late decrements not yet applied, by topic
	stopping bool                   // Flush ran: decrements apply at once
}

func (o *occupancy) change(app *App, channel string, delta int) {
	if app.WebhookURL == "" {
		return
	}
	topic := Topic(app.ID, occupancyPrefix+channel)
	o.mu.Lock()
	if delta > 0 || o.stopping {
		o.mu.Unlock()
		o.apply(topic, delta)
		return
	}
	var t *time.Timer
	t = time.AfterFunc(o.p.cfg.VacateDelay, func() {
		o.mu.Lock()
		_, due := o.pending[t]
		delete(o.pending, t)
		o.mu.Unlock()
		if due {
			o.apply(topic, delta)
		}
	})
	if o.pending == nil {
		o.pending = map[*time.Timer]string{}
	}
	o.pending[t] = topic
	o.mu.Unlock()
}

// flush applies every late decrement now, and the ones to come at once:
// a stopping node's channels are vacated before its engine stops.
func (o *occupancy) flush() {
	o.mu.Lock()
	o.stopping = true
	due := make([]string, 0, len(o.pending))
	for t, topic := range o.pending {
		t.Stop()
		due = append(due, topic)
	}
	o.pending = nil
	o.mu.Unlock()
	for _, topic := range due {
		o.apply(topic, -1)
	}
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
	id := userIDOf(t.Info)
	if id == "" {
		return
	}
	name := "member_removed"
	if t.Joined {
		name = "member_added"
	}
	w.add(webhookEvent{Name: name, Channel: channel, UserID: id})
}

// webhook queues an event of app, when it has webhooks.
func (p *Protocol) webhook(app *App, e webhookEvent) {
	if w := p.hooks[app.ID]; w != nil {
		w.add(e)
	}
}

// Flush is called when the node stops, after its sockets closed and
// before its engine stops: the channels they held are vacated at once.
func (p *Protocol) Flush() { p.occ.flush() }

// Run sends the webhooks until ctx ends, then what is still queued (within
// a few seconds): end ctx after the engine stopped, so that the leaves it
// reports as it goes are sent too.
func (p *Protocol) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range p.hooks {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	return nil
}
