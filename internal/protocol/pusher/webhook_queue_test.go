package pusher

import (
	"log/slog"
	"strconv"
	"testing"
)

// Events any holder of the app key can cause take at most half the
// webhook queue: a client churning through public channels while the
// endpoint is slow gets its occupancy events dropped, and signed sockets'
// member events still find room.
func TestWebhookQueueHalfForOpenEvents(t *testing.T) {
	w := newWebhooks(&App{Credentials: Credentials{ID: "1"}}, func(string, ...slog.Attr) {})
	for i := range webhookQueue {
		name := "channel_occupied"
		if i%3 == 1 {
			name = "channel_vacated"
		} else if i%3 == 2 {
			name = "cache_miss"
		}
		w.add(webhookEvent{Name: name, Channel: "c-" + strconv.Itoa(i)})
	}
	if len(w.queue) != webhookQueue/2 || w.dropped.Load() != webhookQueue/2 {
		t.Fatalf("after %d open events: %d queued, %d dropped; want half of each", webhookQueue, len(w.queue), w.dropped.Load())
	}
	for i := range webhookQueue / 2 {
		w.add(webhookEvent{Name: "member_added", Channel: "presence-room", UserID: strconv.Itoa(i)})
	}
	if len(w.queue) != webhookQueue || w.dropped.Load() != webhookQueue/2 {
		t.Fatalf("after member events: %d queued, %d dropped; want the queue full and no member event dropped", len(w.queue), w.dropped.Load())
	}
	w.add(webhookEvent{Name: "member_added", Channel: "presence-room", UserID: "x"})
	if w.dropped.Load() != webhookQueue/2+1 {
		t.Fatalf("a member event past the whole queue's bound was not dropped")
	}
	// Taking a batch frees room for both kinds, counted as they leave.
	batch := w.take()
	if len(batch) != webhookBatch || w.opened.events != webhookQueue/2-webhookBatch || w.all.events != webhookQueue-webhookBatch {
		t.Fatalf("after taking %d: open %+v, all %+v", len(batch), w.opened, w.all)
	}
	w.requeue(batch)
	if w.opened.events != webhookQueue/2 || w.all.events != webhookQueue || w.all.bytes <= w.opened.bytes {
		t.Fatalf("after putting them back: open %+v, all %+v", w.opened, w.all)
	}
}
