package natsbroker_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

// member is one node of a test cluster.
type member struct {
	*natsbroker.Broker
	rec *brokertest.Recorder
}

func cluster(t *testing.T, url, prefix string, n int, tune ...func(*natsbroker.Config)) []member {
	t.Helper()
	out := make([]member, n)
	for i := range out {
		rec := brokertest.NewRecorder()
		out[i] = member{newNode(t, url, prefix, rec, tune...), rec}
	}
	return out
}

// checkStream checks that rec got exactly the offsets 1..n of topic, in
// order, once each, each carrying the data published at that offset.
func checkStream(t *testing.T, name string, rec *brokertest.Recorder, topic string, n int, data map[uint64]string) {
	t.Helper()
	if !brokertest.Eventually(10*time.Second, func() bool { return len(rec.Messages(topic)) >= n }) {
		t.Errorf("%s got %d messages on %q within 10s, want %d", name, len(rec.Messages(topic)), topic, n)
		return
	}
	time.Sleep(300 * time.Millisecond) // let a repeat show
	got := rec.Messages(topic)
	if len(got) != n {
		t.Errorf("%s got %d messages on %q, want %d", name, len(got), topic, n)
	}
	for i, m := range got {
		if m.Offset != uint64(i+1) {
			t.Errorf("%s message #%d on %q has offset %d, want %d (offsets 1..%d once each, in order)", name, i+1, topic, m.Offset, i+1, n)
			return
		}
		if data != nil && string(m.Data) != data[m.Offset] {
			t.Errorf("%s offset %d on %q = %q, want %q", name, m.Offset, topic, m.Data, data[m.Offset])
			return
		}
	}
	if o := rec.Overlaps(); o != 0 {
		t.Errorf("%s had %d overlapping Fanout calls, want 0", name, o)
	}
}

// TestExactlyOnceThreeNodes: three nodes publish concurrently to several
// topics they all watch; every node fans out every offset once, in order.
func TestExactlyOnceThreeNodes(t *testing.T) {
	const topics, writers, each = 4, 2, 25 // per node and topic
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	nodes := cluster(t, sharedNATS, prefix, 3)
	names := make([]string, topics)
	for i := range names {
		names[i] = newTopic(fmt.Sprintf("three.%d", i))
		for _, n := range nodes {
			watch(t, ctx, n, n.rec, names[i])
		}
	}
	var mu sync.Mutex
	data := make(map[string]map[uint64]string)
	for _, topic := range names {
		data[topic] = make(map[uint64]string)
	}
	var wg sync.WaitGroup
	for ni, n := range nodes {
		for _, topic := range names {
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						body := fmt.Sprintf("n%d-w%d-%d", ni, w, i)
						r, err := n.Publish(ctx, &relay.Message{Topic: topic, Data: []byte(body)}, relay.PublishOptions{})
						if err != nil {
							t.Errorf("node %d Publish(%q) = %v", ni, topic, err)
							return
						}
						mu.Lock()
						if prev, dup := data[topic][r.Offset]; dup {
							t.Errorf("offset %d of %q given to %q and %q", r.Offset, topic, prev, body)
						}
						data[topic][r.Offset] = body
						mu.Unlock()
					}
				})
			}
		}
	}
	wg.Wait()
	total := len(nodes) * writers * each
	for i, n := range nodes {
		for _, topic := range names {
			checkStream(t, fmt.Sprintf("node %d", i), n.rec, topic, total, data[topic])
		}
	}
}

// TestRepairsDroppedMessages: a node whose inbox overflows (its
// subscription drops messages) still fans out every offset once, in order,
// reading what it missed from history.
func TestRepairsDroppedMessages(t *testing.T) {
	const n = 300
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	keep := func(c *natsbroker.Config) { c.History = []relay.HistoryRule{{Size: 2 * n, TTL: time.Minute}} }
	a := cluster(t, sharedNATS, prefix, 1, keep)[0]
	b := cluster(t, sharedNATS, prefix, 1, keep, func(c *natsbroker.Config) { c.InboxSize = 1 })[0]
	topic := newTopic("drops")
	watch(t, ctx, b, b.rec, topic)
	data := make(map[uint64]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range n / 8 {
				body := fmt.Sprintf("w%d-%d", w, i)
				r, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte(body)}, relay.PublishOptions{})
				if err != nil {
					t.Errorf("Publish = %v", err)
					return
				}
				mu.Lock()
				data[r.Offset] = body
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	checkStream(t, "b", b.rec, topic, n/8*8, data)
	st := b.SequencerStats()
	t.Logf("b's sequencer: %+v", st)
	if st.Resets != 0 {
		t.Errorf("b's sequencer reset %d times, want 0: history holds every message", st.Resets)
	}
}

// TestTopicNames: any printable name without white space or '*' works as
// a topic, however NATS would read it as a subject.
func TestTopicNames(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	nodes := cluster(t, sharedNATS, prefix, 2)
	a, b := nodes[0], nodes[1]
	suffix := newTopic("")
	for _, name := range []string{"a.b.c", "x>y", ">", "ü/€#1", "a:b|c$d", "..", "_", strings.Repeat("long", 64)} {
		topic := name + suffix
		watch(t, ctx, b, b.rec, topic)
		r, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte(name)}, relay.PublishOptions{})
		if err != nil || r.Offset != 1 {
			t.Errorf("Publish(%q) = %+v, %v; want offset 1", topic, r, err)
			continue
		}
		checkStream(t, "b", b.rec, topic, 1, map[uint64]string{1: name})
		p, err := b.History(ctx, topic, 0, 0)
		if err != nil || len(p.Messages) != 1 || p.Messages[0].Topic != topic || string(p.Messages[0].Data) != name {
			t.Errorf("History(%q) = %+v, %v; want the one message", topic, p, err)
		}
	}
}

// TestHistoryRules: each rule is its own stream: the longest prefix
// decides how much a topic keeps; size 0 keeps only the offset.
func TestHistoryRules(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	rules := func(c *natsbroker.Config) {
		c.History = []relay.HistoryRule{
			{Prefix: "", Size: 10, TTL: time.Minute},
			{Prefix: "short/", Size: 3, TTL: time.Minute},
			{Prefix: "short/none/", Size: 0, TTL: time.Minute},
		}
	}
	a := cluster(t, sharedNATS, prefix, 2, rules)[1]
	tests := []struct {
		topic     string
		published int
		kept      []uint64
	}{
		{newTopic("long"), 12, []uint64{3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{newTopic("short/x"), 5, []uint64{3, 4, 5}},
		{newTopic("short/none/x"), 4, nil},
	}
	for _, tt := range tests {
		for i := 1; i <= tt.published; i++ {
			r, err := a.Publish(ctx, &relay.Message{Topic: tt.topic, Data: []byte("m")}, relay.PublishOptions{})
			if err != nil || r.Offset != uint64(i) {
				t.Fatalf("Publish(%q #%d) = %+v, %v; want offset %d", tt.topic, i, r, err, i)
			}
		}
		p, err := a.History(ctx, tt.topic, 0, 0)
		var got []uint64
		for _, m := range p.Messages {
			got = append(got, m.Offset)
		}
		if err != nil || !slices.Equal(got, tt.kept) || p.Complete || p.Latest.Offset != uint64(tt.published) {
			t.Errorf("History(%q, 0, 0) = offsets %v, latest %+v, complete %v, %v; want %v, offset %d, incomplete",
				tt.topic, got, p.Latest, p.Complete, err, tt.kept, tt.published)
		}
		if p, err := a.History(ctx, tt.topic, uint64(tt.published), 0); err != nil || !p.Complete || len(p.Messages) != 0 {
			t.Errorf("History(%q, latest, 0) = %+v, %v; want no messages, complete", tt.topic, p, err)
		}
	}
}

// TestNewEpochAfterAgeOut: once a topic's messages aged out (TTL and
// StreamIdle), readers are
// told offset 0 in a new epoch, which the next publish carries, and a
// watching node follows it.
func TestNewEpochAfterAgeOut(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	short := func(c *natsbroker.Config) {
		c.History = []relay.HistoryRule{{Size: 10, TTL: time.Second}}
		c.StreamIdle = time.Second
	}
	nodes := cluster(t, sharedNATS, prefix, 2, short)
	a, b := nodes[0], nodes[1]
	topic := newTopic("ageout")
	watch(t, ctx, b, b.rec, topic)
	var old string
	for i := 1; i <= 2; i++ {
		r, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte("old")}, relay.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		old = r.Epoch
	}
	var p relay.HistoryPage
	if !brokertest.Eventually(10*time.Second, func() bool {
		var err error
		p, err = a.History(ctx, topic, 0, 0)
		return err == nil && p.Latest.Offset == 0
	}) {
		t.Fatalf("History(%q) 10s after publishing with TTL 1s = %+v, want offset 0", topic, p)
	}
	if p.Latest.Epoch == old || p.Latest.Epoch == "" {
		t.Fatalf("History(%q) after age-out = epoch %q, want a new one (not %q)", topic, p.Latest.Epoch, old)
	}
	r, err := b.Publish(ctx, &relay.Message{Topic: topic, Data: []byte("new")}, relay.PublishOptions{})
	if err != nil || r.Position != (relay.Position{Offset: 1, Epoch: p.Latest.Epoch}) {
		t.Fatalf("Publish(%q) after age-out = %+v, %v; want {1 %s}", topic, r.Position, err, p.Latest.Epoch)
	}
	if !brokertest.Eventually(5*time.Second, func() bool { return len(b.rec.Messages(topic)) >= 3 }) {
		t.Fatalf("b got %v, want 3 messages", b.rec.Messages(topic))
	}
	got := b.rec.Messages(topic)
	want := []relay.Position{{Offset: 1, Epoch: old}, {Offset: 2, Epoch: old}, {Offset: 1, Epoch: r.Epoch}}
	for i, m := range got {
		if i >= len(want) || (relay.Position{Offset: m.Offset, Epoch: m.Epoch}) != want[i] || m.Kind != relay.KindPublish {
			t.Fatalf("b got %+v, want positions %v", got, want)
		}
	}
}

// TestSyncNeedsWatch: Sync on a topic nobody watches fails at once.
func TestSyncNeedsWatch(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	a := cluster(t, sharedNATS, prefix, 1)[0]
	if err := a.Sync(ctx, newTopic("unwatched")); !errors.Is(err, relay.ErrInvalid) {
		t.Errorf("Sync(unwatched) = %v, want ErrInvalid", err)
	}
}

// TestNotRunning: before Run, the engine says it is unavailable.
func TestNotRunning(t *testing.T) {
	b, err := natsbroker.New(natsbroker.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("Ready() before Run = %v, want ErrUnavailable", err)
	}
	if _, err := b.Publish(t.Context(), &relay.Message{Topic: "x"}, relay.PublishOptions{}); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("Publish before Run = %v, want ErrUnavailable", err)
	}
	if _, err := natsbroker.New(natsbroker.Config{Prefix: "a.b"}, nil); err == nil {
		t.Errorf("New(Prefix %q) = nil error, want one", "a.b")
	}
}
