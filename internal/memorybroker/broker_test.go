package memorybroker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// counter is a Fanout that records offsets per topic.
type counter struct {
	mu      sync.Mutex
	offsets map[string][]uint64
}

func (c *counter) Fanout(m *relay.Message) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.offsets == nil {
		c.offsets = map[string][]uint64{}
	}
	c.offsets[m.Topic] = append(c.offsets[m.Topic], m.Offset)
	return 1
}

func pub(t *testing.T, b *Broker, topic, data string) relay.Receipt {
	t.Helper()
	r, err := b.Publish(context.Background(), &relay.Message{Topic: topic, Data: []byte(data)}, relay.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func offsets(p relay.HistoryPage) []uint64 {
	var o []uint64
	for _, m := range p.Messages {
		o = append(o, m.Offset)
	}
	return o
}

func TestHistoryBoundsAndPages(t *testing.T) {
	b := New(Config{History: []HistoryRule{
		{Size: 5, TTL: time.Hour, Bytes: 1 << 20},
		{Prefix: "small.", Size: 100, TTL: time.Hour, Bytes: 10},
		{Prefix: "none.", Size: 0, TTL: time.Hour, Bytes: 1 << 20},
	}}, &counter{})
	ctx := context.Background()
	for i := 1; i <= 8; i++ {
		if r := pub(t, b, "t", "x"); r.Offset != uint64(i) || r.Epoch == "" {
			t.Fatalf("publish %d: %+v", i, r)
		}
	}
	tests := []struct {
		since    uint64
		limit    int
		want     string
		complete bool
	}{
		{3, 0, "[4 5 6 7 8]", true},  // exactly what history holds
		{2, 0, "[4 5 6 7 8]", false}, // 3 was trimmed
		{8, 0, "[]", true},           // up to date
		{5, 2, "[6 7]", true},        // a page
		{9, 0, "[]", false},          // from the future
	}
	for _, tt := range tests {
		p, _ := b.History(ctx, "t", tt.since, tt.limit)
		if fmt.Sprint(offsets(p)) != tt.want && !(tt.want == "[]" && len(p.Messages) == 0) || p.Complete != tt.complete || p.Latest.Offset != 8 {
			t.Errorf("History(since %d, limit %d) = %v complete %v latest %d; want %s complete %v latest 8",
				tt.since, tt.limit, offsets(p), p.Complete, p.Latest.Offset, tt.want, tt.complete)
		}
	}
	// The byte bound: 4-byte payloads, 10 bytes kept.
	for range 4 {
		pub(t, b, "small.t", "abcd")
	}
	if p, _ := b.History(ctx, "small.t", 0, 0); fmt.Sprint(offsets(p)) != "[3 4]" {
		t.Errorf("small.t history = %v, want the last 2 (8 of 10 bytes)", offsets(p))
	}
	// No history: offsets still advance; only "up to date" is complete.
	pub(t, b, "none.t", "x")
	pub(t, b, "none.t", "x")
	if p, _ := b.History(ctx, "none.t", 1, 0); p.Complete || len(p.Messages) != 0 || p.Latest.Offset != 2 {
		t.Errorf("none.t from 1: %+v", p)
	}
	if p, _ := b.History(ctx, "none.t", 2, 0); !p.Complete {
		t.Errorf("none.t from its latest offset should be complete")
	}
}

func TestPrivateMessagesStayOutOfTheStream(t *testing.T) {
	b := New(Config{}, &counter{})
	pub(t, b, "t", "a")
	r, _ := b.Publish(context.Background(), &relay.Message{Topic: "t", HasUser: true, User: 1, Data: []byte("p")}, relay.PublishOptions{})
	if r.Offset != 0 || r.Epoch != "" {
		t.Fatalf("private receipt %+v, want no position", r)
	}
	if r := pub(t, b, "t", "b"); r.Offset != 2 {
		t.Fatalf("next public offset %d, want 2", r.Offset)
	}
}

func TestHistoryExpiresAndIdleStreamsGo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{History: []HistoryRule{{Size: 10, TTL: time.Minute, Bytes: 1 << 20}}, StreamIdle: time.Hour}, &counter{})
		ctx := context.Background()
		first := pub(t, b, "t", "x")
		time.Sleep(30 * time.Second)
		pub(t, b, "t", "x")
		time.Sleep(31 * time.Second)
		if p, _ := b.History(ctx, "t", 0, 0); fmt.Sprint(offsets(p)) != "[2]" || p.Complete {
			t.Fatalf("after 61s: %v complete %v, want [2], incomplete", offsets(p), p.Complete)
		}
		time.Sleep(2 * time.Hour)
		b.sweep(time.Now())
		if n := b.Streams(); n != 0 {
			t.Fatalf("%d streams after two idle hours", n)
		}
		if r := pub(t, b, "t", "x"); r.Offset != 1 || r.Epoch == first.Epoch {
			t.Fatalf("a dropped stream restarts with a new epoch at 1, got %+v (old epoch %s)", r, first.Epoch)
		}
	})
}

func TestIdempotency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &counter{}
		b := New(Config{IdempotencyWindow: time.Minute, MaxIdempotencyKeys: 2}, c)
		ctx := context.Background()
		do := func(key string) relay.Receipt {
			r, err := b.Publish(ctx, &relay.Message{Topic: "t", Data: []byte("x")}, relay.PublishOptions{IdempotencyKey: key})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		a := do("a")
		if again := do("a"); again.Offset != a.Offset || !again.Duplicate {
			t.Fatalf("retry = %+v, want offset %d, duplicate", again, a.Offset)
		}
		time.Sleep(61 * time.Second)
		b.idem.sweep(time.Now())
		if late := do("a"); late.Duplicate || late.Offset != 2 {
			t.Fatalf("after the window = %+v, want a new publish", late)
		}
		do("b")
		do("c") // a third key: the oldest is forgotten early
		if r := do("a"); r.Duplicate {
			t.Fatalf("key a survived past the key limit")
		}
		if got := len(c.offsets["t"]); got != 5 {
			t.Fatalf("%d messages fanned out, want 5", got)
		}
	})
}

func TestConcurrentPublishesStayOrdered(t *testing.T) {
	c := &counter{}
	b := New(Config{}, c)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				pub(t, b, "t", "x")
			}
		})
	}
	wg.Wait()
	for i, o := range c.offsets["t"] {
		if o != uint64(i+1) {
			t.Fatalf("fan-out %d carried offset %d: offsets must reach the fan-out in order", i, o)
		}
	}
}
