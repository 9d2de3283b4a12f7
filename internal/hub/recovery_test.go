package hub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relay"
)

// recorder is a Subscriber that keeps the offsets it is given.
type recorder struct {
	mu      sync.Mutex
	offsets []uint64
	events  []string
}

func (r *recorder) Deliver(d *relay.Delivery) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch d.Msg.Kind {
	case relay.KindPublish:
		r.offsets = append(r.offsets, d.Msg.Offset)
	case relay.KindJoin:
		r.events = append(r.events, fmt.Sprintf("join %d", d.Msg.User))
	case relay.KindLeave:
		r.events = append(r.events, fmt.Sprintf("leave %d", d.Msg.User))
	}
	return true
}
func (r *recorder) Close(relay.CloseReason) {}

// racingHistory publishes while the hub reads history: the messages land
// between the subscriber's registration and the history read, so they
// reach it both live (held back while it recovers) and in the history
// page. Each must be delivered exactly once, in order.
type racingHistory struct {
	b     *memorybroker.Broker
	topic string
	extra int
}

func (r racingHistory) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	for i := range r.extra {
		r.b.Publish(ctx, &relay.Message{Topic: r.topic, Data: []byte(fmt.Sprint(i))}, relay.PublishOptions{})
	}
	return r.b.History(ctx, topic, since, limit)
}

func TestRecoveryDeliversOverlapOnce(t *testing.T) {
	for _, tt := range []struct {
		name      string
		since     uint64
		before    int // published before the subscribe
		recovered bool
	}{
		{"recover from 3", 3, 10, true},
		{"recover from the latest", 10, 10, true},
		{"no since", 0, 10, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := hub.New(hub.Config{}, nil)
			b := memorybroker.New(memorybroker.Config{}, h)
			ctx := context.Background()
			for i := range tt.before {
				b.Publish(ctx, &relay.Message{Topic: "t", Data: []byte(fmt.Sprint(i))}, relay.PublishOptions{})
			}
			page, _ := b.History(ctx, "t", 0, 0)
			id, _ := h.Register(ctx, 1)
			rec := &recorder{}
			c, _ := h.Attach(ctx, id, rec, false)
			opts := hub.SubscribeOptions{History: racingHistory{b, "t", 5}}
			if tt.recovered {
				opts.Since = map[string]relay.Position{"t": {Offset: tt.since, Epoch: page.Latest.Epoch}}
			}
			var got hub.Subscribed
			opts.Ready = func(_ string, r hub.Subscribed) { got = r }
			if err := h.Subscribe(ctx, c, rec, []string{"t"}, opts); err != nil {
				t.Fatal(err)
			}
			b.Publish(ctx, &relay.Message{Topic: "t", Data: []byte("live")}, relay.PublishOptions{})
			last := uint64(tt.before + 5 + 1)
			first := got.Position.Offset + 1
			if tt.recovered {
				first = tt.since + 1
			}
			if got.Recovered != tt.recovered || got.Position.Offset != uint64(tt.before+5) {
				t.Fatalf("Subscribed = %+v, want recovered %v at %d", got, tt.recovered, tt.before+5)
			}
			var want []uint64
			for o := first; o <= last; o++ {
				want = append(want, o)
			}
			if fmt.Sprint(rec.offsets) != fmt.Sprint(want) {
				t.Fatalf("offsets delivered %v, want %v", rec.offsets, want)
			}
		})
	}
}

func TestPresenceEventsWaitForRecovery(t *testing.T) {
	h := hub.New(hub.Config{}, nil)
	b := memorybroker.New(memorybroker.Config{}, h)
	ctx := context.Background()
	watcherID, _ := h.Register(ctx, 100)
	w := &recorder{}
	wc, _ := h.Attach(ctx, watcherID, w, false)
	if err := h.Subscribe(ctx, wc, w, []string{"room"}, hub.SubscribeOptions{Presence: true, History: b}); err != nil {
		t.Fatal(err)
	}
	aID, _ := h.Register(ctx, 7)
	a := &recorder{}
	ac, _ := h.Attach(ctx, aID, a, false)
	h.Subscribe(ctx, ac, a, []string{"room"}, hub.SubscribeOptions{History: b})
	bID, _ := h.Register(ctx, 7)
	bs := &recorder{}
	bc, _ := h.Attach(ctx, bID, bs, false)
	h.Subscribe(ctx, bc, bs, []string{"room"}, hub.SubscribeOptions{History: b})
	h.Detach(ac, a)
	h.Unsubscribe(bc, bs, []string{"room"})
	if got := fmt.Sprint(w.events); got != "[join 100 join 7 leave 7]" {
		t.Fatalf("watcher's events = %s, want its own join, then one join and one leave for user 7", got)
	}
	if p, _ := h.Presence(ctx, "room"); len(p) != 1 || p[0].User != 100 {
		t.Fatalf("presence = %+v", p)
	}
}

// TestPrivateMessageWaitsForRecovery publishes to the subscriber's user
// while it recovers: the message must reach it after the acknowledgement,
// like the topic's own messages, not before.
func TestPrivateMessageWaitsForRecovery(t *testing.T) {
	h := hub.New(hub.Config{}, nil)
	b := memorybroker.New(memorybroker.Config{}, h)
	ctx := context.Background()
	id, _ := h.Register(ctx, 1)
	rec := &recorder{}
	c, _ := h.Attach(ctx, id, rec, false)
	hist := privateDuringHistory{b: b}
	var order []string
	opts := hub.SubscribeOptions{History: hist, Ready: func(string, hub.Subscribed) {
		rec.mu.Lock()
		order = append(order, fmt.Sprintf("ready after %d deliveries", len(rec.offsets)))
		rec.mu.Unlock()
	}}
	if err := h.Subscribe(ctx, c, rec, []string{"t"}, opts); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(order) != "[ready after 0 deliveries]" || fmt.Sprint(rec.offsets) != "[0]" {
		t.Fatalf("order %v, offsets delivered %v: the private message must follow the acknowledgement", order, rec.offsets)
	}
}

// privateDuringHistory publishes to user 1 on "t" while history is read.
type privateDuringHistory struct{ b *memorybroker.Broker }

func (p privateDuringHistory) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	p.b.Publish(ctx, &relay.Message{Topic: "t", HasUser: true, User: 1, Data: []byte("psst")}, relay.PublishOptions{})
	return p.b.History(ctx, topic, since, limit)
}

// transientDuringHistory publishes, from several goroutines at once,
// stored and transient messages to "t" while history is read: the
// transient ones come outside the engine's per-topic order and must still
// be appended to the recovering member's pending buffer one at a time.
type transientDuringHistory struct {
	b    *memorybroker.Broker
	each int
}

func (p transientDuringHistory) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range p.each {
				m := &relay.Message{Topic: "t", Data: []byte("x")}
				p.b.Publish(ctx, m, relay.PublishOptions{Transient: g%2 == 0})
			}
		})
	}
	wg.Wait()
	return p.b.History(ctx, topic, since, limit)
}

func TestTransientMessagesDuringRecovery(t *testing.T) {
	h := hub.New(hub.Config{}, nil)
	b := memorybroker.New(memorybroker.Config{}, h)
	ctx := context.Background()
	id, _ := h.Register(ctx, 1)
	rec := &recorder{}
	c, _ := h.Attach(ctx, id, rec, false)
	const each = 45 // the default history (100) holds every stored one
	first, _ := b.Publish(ctx, &relay.Message{Topic: "t", Data: []byte("before")}, relay.PublishOptions{})
	opts := hub.SubscribeOptions{History: transientDuringHistory{b, each}, Since: map[string]relay.Position{"t": first.Position}}
	if err := h.Subscribe(ctx, c, rec, []string{"t"}, opts); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	transient, stored := 0, 0
	for _, o := range rec.offsets {
		if o == 0 {
			transient++
		} else {
			stored++
			if uint64(stored)+1 != o { // from offset 2, after the recovered position
				t.Fatalf("stored offsets out of order or repeated: %v", rec.offsets)
			}
		}
	}
	if transient != 2*each || stored != 2*each {
		t.Fatalf("delivered %d transient and %d stored messages, want %d of each", transient, stored, 2*each)
	}
}
