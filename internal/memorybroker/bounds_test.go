package memorybroker

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// heapAlloc returns the live heap after a collection.
func heapAlloc() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func history(t *testing.T, b *Broker, topic string, since uint64) relay.HistoryPage {
	t.Helper()
	p, err := b.History(context.Background(), topic, since, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Reads of topics nobody published to store no stream, and what they do
// store is bounded in count, whatever the number of topics read.
func TestReadsCreateNoStreams(t *testing.T) {
	const maxFresh, reads = 1000, 200_000
	b := New(Config{MaxFresh: maxFresh}, &counter{})
	before := heapAlloc()
	for i := range reads {
		p := history(t, b, fmt.Sprintf("probe.%d.%s", i, strings.Repeat("x", 100)), 0)
		if p.Latest.Offset != 0 || p.Latest.Epoch == "" || !p.Complete || len(p.Messages) != 0 {
			t.Fatalf("History(unpublished topic) = %+v, want offset 0, an epoch, complete, no messages", p)
		}
	}
	grown := heapAlloc() - before
	if n := b.Streams(); n != 0 {
		t.Errorf("%d reads left %d streams, want 0", reads, n)
	}
	st := b.Stats()
	if got := b.FreshEpochs(); got != maxFresh {
		t.Errorf("fresh epochs held = %d, want the cap %d", got, maxFresh)
	}
	if got := st.FreshEvicted.Load(); got != reads-maxFresh {
		t.Errorf("fresh epochs evicted = %d, want %d", got, reads-maxFresh)
	}
	// ~1000 entries of a ~110-byte topic: well under 1 MiB. 200,000
	// streams (the old behaviour) would take tens of MiB.
	if grown > 1<<20 {
		t.Errorf("heap grew by %d bytes after %d reads, want under 1 MiB", grown, reads)
	}
}

// A topic's first message carries the epoch its readers were told, so a
// subscriber of a fresh topic sees no gap.
func TestFirstPublishAdoptsTheEpochReadersSaw(t *testing.T) {
	b := New(Config{}, &counter{})
	seen := history(t, b, "fresh", 0).Latest
	if again := history(t, b, "fresh", 0).Latest; again != seen {
		t.Fatalf("second read = %+v, want the same position %+v", again, seen)
	}
	r := pub(t, b, "fresh", "x")
	if r.Offset != 1 || r.Epoch != seen.Epoch {
		t.Fatalf("first publish = %+v, want offset 1 in epoch %s", r.Position, seen.Epoch)
	}
	if n := b.FreshEpochs(); n != 0 {
		t.Fatalf("%d fresh epochs left after the publish, want 0", n)
	}
	// A recovery from the read position is complete.
	if p := history(t, b, "fresh", 0); !p.Complete || len(p.Messages) != 1 || p.Latest.Epoch != seen.Epoch {
		t.Fatalf("History(since 0) = %+v, want the message, complete, epoch %s", p, seen.Epoch)
	}
}

// Fresh epochs expire unless the topic has subscribers, and at the cap an
// unwatched one is forgotten before a watched one.
func TestFreshEpochsExpireUnlessWatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		watched := map[string]bool{"kept": true}
		b := New(Config{MaxFresh: 3, FreshTTL: time.Minute, Watched: func(topic string) bool {
			mu.Lock()
			defer mu.Unlock()
			return watched[topic]
		}}, &counter{})
		kept := history(t, b, "kept", 0).Latest.Epoch
		gone := history(t, b, "gone", 0).Latest.Epoch
		time.Sleep(2 * time.Minute)
		b.sweep(time.Now())
		if got := history(t, b, "kept", 0).Latest.Epoch; got != kept {
			t.Errorf("watched topic's epoch changed after the TTL: %s, want %s", got, kept)
		}
		if got := history(t, b, "gone", 0).Latest.Epoch; got == gone {
			t.Errorf("unwatched topic's epoch survived the TTL")
		}
		// Table: kept, gone(new). Two more reads reach the cap of 3 and
		// then force an eviction: the oldest unwatched goes, not "kept".
		history(t, b, "a", 0)
		history(t, b, "b", 0)
		if got := history(t, b, "kept", 0).Latest.Epoch; got != kept {
			t.Errorf("watched topic's epoch was evicted at the cap")
		}
		if got := b.FreshEpochs(); got != 3 {
			t.Errorf("fresh epochs held = %d, want 3", got)
		}
	})
}

// The stream table is capped: past MaxStreams the least recently
// published topic's stream is dropped, and its next publish starts a new
// epoch.
func TestStreamTableIsCapped(t *testing.T) {
	b := New(Config{MaxStreams: 10}, &counter{})
	first := pub(t, b, "t0", "x")
	for i := 1; i < 100; i++ {
		pub(t, b, fmt.Sprintf("t%d", i), "x")
		pub(t, b, "t99", "keep t99 recent") // never the least recent
	}
	if n := b.Streams(); n != 10 {
		t.Fatalf("streams = %d, want the cap 10", n)
	}
	if got := b.Stats().StreamsEvicted.Load(); got != 90 {
		t.Fatalf("streams evicted = %d, want 90", got)
	}
	if p := history(t, b, "t99", 0); p.Latest.Offset != 100 {
		t.Fatalf("t99 latest = %d, want 100: the busiest topic must keep its stream", p.Latest.Offset)
	}
	if r := pub(t, b, "t0", "x"); r.Offset != 1 || r.Epoch == first.Epoch {
		t.Fatalf("evicted t0 republished = %+v, want offset 1 in a new epoch (old %s)", r.Position, first.Epoch)
	}
}

// History across topics stays within the budget; the least recently
// published topics lose their oldest messages first.
func TestHistoryBudget(t *testing.T) {
	const budget, size, topics = 1 << 20, 60_000, 200
	b := New(Config{HistoryBudget: budget}, &counter{})
	payload := strings.Repeat("x", size)
	before := heapAlloc()
	for i := range topics {
		pub(t, b, fmt.Sprintf("big.%d", i), payload)
		if held, _ := b.HistoryBytes(); held > budget {
			t.Fatalf("after %d publishes history holds %d bytes, over the %d budget", i+1, held, budget)
		}
	}
	grown := heapAlloc() - before
	held, evicted := b.HistoryBytes()
	perMsg := int64(cost("big.100", []byte(payload)))
	if want := uint64(topics - budget/perMsg); evicted != want {
		t.Errorf("messages evicted = %d, want %d", evicted, want)
	}
	if held < budget-perMsg {
		t.Errorf("history holds %d bytes, want close to the %d budget", held, budget)
	}
	// 200 × 60 KB = 12 MB without the budget.
	if grown > 3*budget {
		t.Errorf("heap grew by %d bytes, want under %d", grown, 3*budget)
	}
	if p := history(t, b, "big.0", 0); len(p.Messages) != 0 || p.Complete || p.Latest.Offset != 1 {
		t.Errorf("oldest topic: %d messages, complete %v, latest %d; want its message evicted (incomplete, latest 1)", len(p.Messages), p.Complete, p.Latest.Offset)
	}
	if p := history(t, b, fmt.Sprintf("big.%d", topics-1), 0); len(p.Messages) != 1 || !p.Complete {
		t.Errorf("newest topic: %d messages, complete %v; want its message kept", len(p.Messages), p.Complete)
	}
	// A stream the budget emptied keeps no ring.
	for topic, s := range b.streams {
		s.mu.Lock()
		if s.n == 0 && s.ring != nil {
			t.Errorf("%s: emptied by the budget but still holds a ring of %d entries", topic, len(s.ring))
		}
		s.mu.Unlock()
	}
	// Clearing gives the bytes back.
	for _, s := range b.streams {
		s.mu.Lock()
		s.clear()
		s.mu.Unlock()
	}
	if held, _ := b.HistoryBytes(); held != 0 {
		t.Errorf("after clearing every stream the budget counts %d bytes, want 0", held)
	}
}

// Idempotency keys are scoped to the topic and the audience.
func TestIdempotencyKeysArePerTopicAndAudience(t *testing.T) {
	c := &counter{}
	b := New(Config{}, c)
	do := func(topic string, user *relay.UserID) relay.Receipt {
		m := &relay.Message{Topic: topic, Data: []byte("x")}
		if user != nil {
			m.User, m.HasUser = *user, true
		}
		r, err := b.Publish(context.Background(), m, relay.PublishOptions{IdempotencyKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	one, two := relay.UserID(1), relay.UserID(2)
	tests := []struct {
		topic string
		user  *relay.UserID
		dup   bool
	}{
		{"orders", nil, false},
		{"alerts", nil, false}, // the finding: this one was answered as a duplicate of orders
		{"orders", nil, true},
		{"orders", &one, false},
		{"orders", &two, false},
		{"orders", &one, true},
	}
	for i, tt := range tests {
		if r := do(tt.topic, tt.user); r.Duplicate != tt.dup {
			t.Errorf("publish %d (%s, user %v) duplicate = %v, want %v", i, tt.topic, tt.user, r.Duplicate, tt.dup)
		}
	}
	if got := len(c.offsets["alerts"]); got != 1 {
		t.Errorf("alerts got %d messages, want 1", got)
	}
	if r := pub(t, b, "alerts", "y"); r.Offset != 2 {
		t.Errorf("next alerts offset = %d, want 2", r.Offset)
	}
}

// An idle stream is kept while its topic has subscribers, and dropped
// once it has none.
func TestIdleStreamKeptWhileWatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		watched := true
		b := New(Config{StreamIdle: time.Hour, History: []HistoryRule{{Size: 10, TTL: time.Minute, Bytes: 1 << 20}}, Watched: func(string) bool {
			mu.Lock()
			defer mu.Unlock()
			return watched
		}}, &counter{})
		first := pub(t, b, "t", "x")
		time.Sleep(2 * time.Hour)
		b.sweep(time.Now())
		if r := pub(t, b, "t", "x"); r.Offset != 2 || r.Epoch != first.Epoch {
			t.Fatalf("watched idle stream was dropped: next publish %+v", r.Position)
		}
		mu.Lock()
		watched = false
		mu.Unlock()
		time.Sleep(2 * time.Hour)
		b.sweep(time.Now())
		if n := b.Streams(); n != 0 {
			t.Fatalf("%d streams after two idle, unwatched hours, want 0", n)
		}
	})
}

// Many idle streams are dropped in batches by one sweep.
func TestSweepDropsManyIdleStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{StreamIdle: time.Minute, History: []HistoryRule{{Size: 0, TTL: time.Minute, Bytes: 1}, {Prefix: "long.", Size: 10, TTL: 24 * time.Hour, Bytes: 1 << 20}}}, &counter{})
		for i := range 3 * sweepBatch {
			pub(t, b, fmt.Sprintf("long.%d", i), "x") // history outlives the idle time: kept
		}
		for i := range 3 * sweepBatch {
			pub(t, b, fmt.Sprintf("t%d", i), "x")
		}
		time.Sleep(2 * time.Minute)
		b.sweep(time.Now())
		if n := b.Streams(); n != 3*sweepBatch {
			t.Fatalf("streams after the sweep = %d, want the %d with history", n, 3*sweepBatch)
		}
	})
}

// A one-message history replaces its message on every publish (the ring
// is emptied and refilled each time).
func TestOneMessageHistory(t *testing.T) {
	b := New(Config{History: []HistoryRule{{Size: 1, TTL: time.Hour, Bytes: 1 << 20}}}, &counter{})
	for i := 1; i <= 3; i++ {
		pub(t, b, "t", fmt.Sprint(i))
		p := history(t, b, "t", 0)
		if len(p.Messages) != 1 || string(p.Messages[0].Data) != fmt.Sprint(i) || p.Latest.Offset != uint64(i) {
			t.Fatalf("after publish %d: %d messages, latest %d; want only message %d", i, len(p.Messages), p.Latest.Offset, i)
		}
	}
	if held, _ := b.HistoryBytes(); held != cost("t", []byte("3")) {
		t.Fatalf("budget counts %d bytes, want one message's %d", held, cost("t", []byte("3")))
	}
}

// A stream dropped between its creation and its first publish's lock
// gives its epoch back, so the retried publish still carries the epoch
// readers were told.
func TestEvictedBeforeFirstPublishKeepsTheEpoch(t *testing.T) {
	b := New(Config{MaxStreams: 1}, &counter{})
	told := history(t, b, "T", 0).Latest.Epoch
	b.publishing("T", time.Now()) // the publish of T has created its stream, not yet locked it
	pub(t, b, "U", "x")           // the cap of 1 drops T's stream
	r, err := b.Publish(context.Background(), &relay.Message{Topic: "T", Data: []byte("x")}, relay.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Offset != 1 || r.Epoch != told {
		t.Fatalf("T's first publish = %+v, want offset 1 in the epoch readers were told, %s", r.Position, told)
	}
}
