package natsbroker_test

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

// Topics lists each occupied topic once, however many users (with info
// or without) are present on it, and the bound keeps the first ones in
// byte order.
func TestTopicsDistinctAndBounded(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	rec := brokertest.NewRecorder()
	b := newNode(t, sharedNATS, prefix, rec)
	base := newTopic("topics") + "/"
	var want []string
	for _, name := range []string{"e", "a", "d", "b", "c"} {
		topic := base + name
		want = append(want, topic)
		watch(t, ctx, b, rec, topic)
		for user := range relay.UserID(3) {
			b.Roster().(relay.InfoRoster).ChangeInfo(topic, user, +1, []byte(`{"n":"`+name+`"}`))
		}
		b.Roster().Change(topic, 9, +1)
	}
	slices.Sort(want)
	l := b.Roster().(relay.TopicLister)
	var got []string
	var err error
	if !brokertest.Eventually(5*time.Second, func() bool {
		got, err = l.Topics(ctx, base)
		return err == nil && slices.Equal(got, want)
	}) {
		t.Fatalf("Topics(%q) = %q, %v; want %q", base, got, err, want)
	}
	for _, limit := range []int{0, 1, 3, 5, 6} {
		got, err := natsbroker.TopicsLimit(b, ctx, base, limit)
		if w := want[:min(limit, len(want))]; err != nil || !slices.Equal(got, w) {
			t.Errorf("Topics(%q) bounded to %d = %q, %v; want %q", base, limit, got, err, w)
		}
	}
}

// Topics reads the keys in pages (the server names at most 100,000
// subjects per reply) and returns the first MaxTopics in byte order.
func TestTopicsPages(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,050 presence entries")
	}
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	b := newNode(t, sharedNATS, prefix, brokertest.NewRecorder())
	nc, err := nats.Connect(sharedNATS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const n = 100_050
	all := make([]string, 0, n)
	for i := range n {
		topic := "big/" + strconv.Itoa(i)
		all = append(all, topic)
		// Not a valid value: the sweep leaves it alone.
		if err := nc.Publish("$KV."+prefix+"_presence."+natsbroker.B64(topic)+".1", []byte("-")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	js, _ := jetstream.New(nc)
	if !brokertest.Eventually(30*time.Second, func() bool {
		s, err := js.Stream(ctx, "KV_"+prefix+"_presence")
		return err == nil && s.CachedInfo().State.Msgs == n
	}) {
		t.Fatalf("the %d entries were not stored", n)
	}
	start := time.Now()
	got, err := b.Roster().(relay.TopicLister).Topics(ctx, "big/")
	t.Logf("listing %d entries took %v", n, time.Since(start).Round(time.Millisecond))
	if err != nil || !slices.Equal(got, all[:natsbroker.MaxTopics]) {
		t.Fatalf("Topics(big/) = %d topics, %v; want the first %d of %d", len(got), err, natsbroker.MaxTopics, n)
	}
	got, err = natsbroker.TopicsLimit(b, ctx, "big/", 2*n)
	if err != nil || !slices.Equal(got, all) {
		t.Fatalf("Topics(big/) bounded to %d = %d topics, %v; want all %d", 2*n, len(got), err, n)
	}
}
