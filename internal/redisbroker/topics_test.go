package redisbroker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relay"
)

// topicsOf returns b's Roster as a relay.TopicLister.
func topicsOf(t *testing.T, b *redisbroker.Broker) relay.TopicLister {
	t.Helper()
	l, ok := b.Roster().(relay.TopicLister)
	if !ok {
		t.Fatalf("Roster() = %T, want a relay.TopicLister", b.Roster())
	}
	return l
}

// Topics reads the index P:pt by byte range: a prefix ending in 0xff
// bytes (no valid topic has them, but nothing relies on it) still finds
// exactly the members that start with it, and the bound keeps the first
// ones in byte order.
func TestTopicsByteRangeAndBound(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	b := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), nil)
	ctx := context.Background()
	members := []string{"p", "p\xfe", "p\xff", "p\xff\x00", "p\xff\xff", "p\xff\xffz", "p\xffz", "q", "o\xff", "\xff", "\xff\xff"}
	c := client(t)
	for _, m := range members {
		if err := c.Do(ctx, c.B().Zadd().Key(prefix+":pt").ScoreMember().ScoreMember(0, m).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	l := topicsOf(t, b)
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"p\xff", []string{"p\xff", "p\xff\x00", "p\xff\xff", "p\xff\xffz", "p\xffz"}},
		{"p\xff\xff", []string{"p\xff\xff", "p\xff\xffz"}},
		{"\xff", []string{"\xff", "\xff\xff"}},
		{"\xff\xff", []string{"\xff\xff"}},
		{"p", []string{"p", "p\xfe", "p\xff", "p\xff\x00", "p\xff\xff", "p\xff\xffz", "p\xffz"}},
		{"", []string{"o\xff", "p", "p\xfe", "p\xff", "p\xff\x00", "p\xff\xff", "p\xff\xffz", "p\xffz", "q", "\xff", "\xff\xff"}},
		{"r", nil},
	} {
		slices.Sort(tc.want) // Go compares strings by byte, as Redis does
		if got, err := l.Topics(ctx, tc.prefix); err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Topics(%q) = %q, %v; want %q, nil", tc.prefix, got, err, tc.want)
		}
	}
	if got, err := redisbroker.TopicsLimit(b, ctx, "p", 3); err != nil || !slices.Equal(got, []string{"p", "p\xfe", "p\xff"}) {
		t.Errorf("Topics(p) bounded to 3 = %q, %v; want the first 3", got, err)
	}
}

// A node restarted under the same id removes its earlier process's
// topics from the index with its presence; a topic that also has
// connections on a live node stays.
func TestTopicsOfAnEarlierProcess(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	ctx := context.Background()
	other := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), nil)
	other.Watch("shared")
	if err := other.Sync(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	other.Roster().Change("shared", 6, +1)
	if !brokertest.Eventually(5*time.Second, func() bool {
		got, err := topicsOf(t, other).Topics(ctx, "")
		return err == nil && slices.Equal(got, []string{"shared"})
	}) {
		t.Fatal("the live node's topic was not listed")
	}
	c := client(t)
	for _, cmd := range []rueidis.Completed{
		c.B().Hset().Key(prefix+":pn:same").FieldValue().FieldValue("room\n5", "1").FieldValue("shared\n5", "1").Build(),
		c.B().Hset().Key(prefix+":p:room").FieldValue().FieldValue("5", "1").Build(),
		c.B().Hset().Key(prefix+":p:shared").FieldValue().FieldValue("5", "1").Build(),
		c.B().Zadd().Key(prefix+":pt").ScoreMember().ScoreMember(0, "room").ScoreMember(0, "shared").Build(),
		c.B().Zadd().Key(prefix+":nodes").ScoreMember().ScoreMember(float64(time.Now().UnixMilli()), "same").Build(),
	} {
		if err := c.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	b := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), func(cfg *redisbroker.Config) { cfg.NodeID = "same" })
	for _, n := range []*redisbroker.Broker{b, other} {
		if got, err := topicsOf(t, n).Topics(ctx, ""); err != nil || !slices.Equal(got, []string{"shared"}) {
			t.Errorf("Topics after the restart = %q, %v; want [shared]", got, err)
		}
	}
	other.Roster().Change("shared", 6, -1)
	if !brokertest.Eventually(5*time.Second, func() bool {
		got, err := topicsOf(t, b).Topics(ctx, "")
		return err == nil && len(got) == 0
	}) {
		t.Error("the last connection left, but the topic is still listed")
	}
}

// client returns a plain client of the shared Redis, closed when the test
// ends.
func client(t *testing.T) rueidis.Client {
	t.Helper()
	opt, err := rueidis.ParseURL(sharedRedis)
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
