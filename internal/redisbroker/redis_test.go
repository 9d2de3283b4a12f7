package redisbroker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relay"
)

// flushPrefix deletes every key under prefix, so tests leave the shared
// Redis as they found it.
func flushPrefix(t *testing.T, url, prefix string) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		t.Errorf("ParseURL(%s) = %v", url, err)
		return
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Logf("cleaning up %s*: %v", prefix, err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for range 10_000 {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Logf("cleaning up %s*: %v", prefix, err)
			return
		}
		if len(e.Elements) > 0 {
			c.Do(ctx, c.B().Del().Key(e.Elements...).Build())
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
	}
}

// Clusters on two databases of one Redis share its pub/sub: their channels
// must not meet.
func TestDatabasesDoNotShareChannels(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() {
		flushPrefix(t, "redis://127.0.0.1:6379/1", prefix)
		flushPrefix(t, "redis://127.0.0.1:6379/2", prefix)
	})
	ra, rb := brokertest.NewRecorder(), brokertest.NewRecorder()
	a := newNode(t, "redis://127.0.0.1:6379/1", prefix, ra, nil)
	b := newNode(t, "redis://127.0.0.1:6379/2", prefix, rb, nil)
	ctx := context.Background()
	for _, n := range []*redisbroker.Broker{a, b} {
		n.Watch("t")
		if err := n.Sync(ctx, "t"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*redisbroker.Broker{a, b} {
		if _, err := n.Publish(ctx, &relay.Message{Topic: "t", Data: []byte("x")}, relay.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for name, r := range map[string]*brokertest.Recorder{"db 1": ra, "db 2": rb} {
		if got := r.Messages("t"); len(got) != 1 || got[0].Offset != 1 {
			t.Fatalf("node on %s received %+v, want only its own database's offset 1", name, got)
		}
	}
}

// When Redis loses a node's share (its data is flushed, or other nodes
// took the node for dead), the node writes it again once, without
// counting anyone twice: the user leaves with the node's last connection.
func TestPresenceRewrittenAfterLoss(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	rec := brokertest.NewRecorder()
	b := newNode(t, sharedRedis, prefix, rec, nil)
	ctx := context.Background()
	b.Watch("room")
	if err := b.Sync(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	b.Roster().Change("room", 7, 1)
	present := func() string {
		p, err := b.Roster().Present(ctx, "room")
		if err != nil {
			t.Fatal(err)
		}
		s := "["
		for i, u := range p {
			if i > 0 {
				s += " "
			}
			s += fmt.Sprintf("{%d %d}", u.User, u.Connections)
		}
		return s + "]"
	}
	if got := present(); got != "[{7 1}]" {
		t.Fatalf("present = %s, want user 7 with 1 connection", got)
	}
	flushPrefix(t, sharedRedis, prefix) // Redis lost everything
	if !brokertest.Eventually(5*time.Second, func() bool { return present() == "[{7 1}]" }) {
		t.Fatalf("after the loss, present = %s, want user 7 with 1 connection again", present())
	}
	time.Sleep(600 * time.Millisecond) // more heartbeats: still once
	if got := present(); got != "[{7 1}]" {
		t.Fatalf("present = %s, want user 7 counted once", got)
	}
	b.Roster().Change("room", 7, -1)
	if !brokertest.Eventually(5*time.Second, func() bool { return present() == "[]" }) {
		t.Fatalf("after the last connection left, present = %s, want nobody", present())
	}
	rec.WaitCount(t, "room", relay.KindLeave, 7, 1)
}

// A node restarted under the same id removes what its earlier process
// left (here: user 5 present on "room" through it), before it serves.
func TestRestartUnderSameIDForgetsTheEarlierProcess(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	c := client(t)
	ctx := context.Background()
	for _, cmd := range []rueidis.Completed{
		c.B().Hset().Key(prefix+":pn:same").FieldValue().FieldValue("room\n5", "1").Build(),
		c.B().Hset().Key(prefix+":p:room").FieldValue().FieldValue("5", "1").Build(),
		c.B().Zadd().Key(prefix+":nodes").ScoreMember().ScoreMember(float64(time.Now().UnixMilli()), "same").Build(),
	} {
		if err := c.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	b := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), func(cfg *redisbroker.Config) { cfg.NodeID = "same" })
	p, err := b.Roster().Present(ctx, "room")
	if err != nil || len(p) != 0 {
		t.Fatalf("present after the restart = %v, %v; want nobody", p, err)
	}
}

// An info up to redisbroker.MaxInfoBytes rides on the join and the leave
// and is what Present returns; a larger one is dropped (with a warning)
// and the connection counted without it.
func TestInfoLimit(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	rec := brokertest.NewRecorder()
	b := newNode(t, sharedRedis, prefix, rec, nil)
	ctx := context.Background()
	b.Watch("room")
	if err := b.Sync(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	r := b.Roster().(relay.InfoRoster)
	limit := []byte(strings.Repeat("\n\"x", redisbroker.MaxInfoBytes/3) + strings.Repeat("y", redisbroker.MaxInfoBytes%3))
	over := []byte(strings.Repeat("z", redisbroker.MaxInfoBytes+1))
	r.ChangeInfo("room", 1, 1, limit)
	r.ChangeInfo("room", 2, 1, over)
	rec.WaitCount(t, "room", relay.KindJoin, 1, 1)
	rec.WaitCount(t, "room", relay.KindJoin, 2, 1)
	p, err := r.Present(ctx, "room")
	if err != nil || len(p) != 2 || p[0].User != 1 || string(p[0].Info) != string(limit) || p[1].User != 2 || p[1].Connections != 1 || p[1].Info != nil {
		t.Fatalf("Present = %d users, %v; want user 1 with its %d-byte info and user 2 without one", len(p), err, len(limit))
	}
	r.Change("room", 1, -1)
	r.Change("room", 2, -1)
	rec.WaitCount(t, "room", relay.KindLeave, 1, 1)
	rec.WaitCount(t, "room", relay.KindLeave, 2, 1)
	for _, m := range rec.Messages("room") {
		want := limit
		if m.User == 2 {
			want = nil
		}
		if string(m.Data) != string(want) || (want == nil) != (m.Data == nil) {
			t.Errorf("event %d of user %d carried %d bytes, want %d", m.Kind, m.User, len(m.Data), len(want))
		}
	}
}

// countKeys counts the keys matching pattern.
func countKeys(t *testing.T, c rueidis.Client, pattern string) int {
	t.Helper()
	n, cursor := 0, uint64(0)
	for range 10_000 {
		e, err := c.Do(context.Background(), c.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Fatal(err)
		}
		n += len(e.Elements)
		if cursor = e.Cursor; cursor == 0 {
			break
		}
	}
	return n
}

// Reading topics nobody published to (a relay.v1 subscribe, GET /history)
// stores their fresh epochs, but at most FreshMax of them: a client naming
// new topics cannot grow Redis without bound. A first publish takes its
// topic's epoch out of the bounded set.
func TestFreshHeadsBounded(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	b := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), func(c *redisbroker.Config) { c.FreshMax = 50 })
	c := client(t)
	ctx := context.Background()
	epochs := map[string]string{}
	for i := range 300 {
		topic := fmt.Sprintf("new-%d", i)
		p, err := b.History(ctx, topic, 0, 0)
		if err != nil || p.Latest.Offset != 0 || p.Latest.Epoch == "" {
			t.Fatalf("History(%s) = %+v, %v; want offset 0 and an epoch", topic, p.Latest, err)
		}
		epochs[topic] = p.Latest.Epoch
	}
	if n := countKeys(t, c, prefix+":s:*"); n != 50 {
		t.Fatalf("%d topic heads after reading 300 new topics, want the bound of 50", n)
	}
	if n, err := c.Do(ctx, c.B().Zcard().Key(prefix+":f").Build()).AsInt64(); err != nil || n != 50 {
		t.Fatalf("ZCARD of the fresh set = %d, %v; want 50", n, err)
	}
	// The newest reads kept their epochs; the first publish carries it.
	rc, err := b.Publish(ctx, &relay.Message{Topic: "new-299", Data: []byte("x")}, relay.PublishOptions{})
	if err != nil || rc.Offset != 1 || rc.Epoch != epochs["new-299"] {
		t.Fatalf("first publish to a kept topic = %+v, %v; want offset 1 of epoch %s", rc, err, epochs["new-299"])
	}
	if n, err := c.Do(ctx, c.B().Zcard().Key(prefix+":f").Build()).AsInt64(); err != nil || n != 49 {
		t.Fatalf("ZCARD of the fresh set after a first publish = %d, %v; want 49", n, err)
	}
	// The oldest were forgotten: their first message starts another epoch.
	rc, err = b.Publish(ctx, &relay.Message{Topic: "new-0", Data: []byte("x")}, relay.PublishOptions{})
	if err != nil || rc.Offset != 1 || rc.Epoch == epochs["new-0"] {
		t.Fatalf("first publish to a forgotten topic = %+v, %v; want offset 1 of a new epoch", rc, err)
	}
}

// A watched topic's fresh epoch outlives FreshTTL: its subscribers were
// told it, and the first message, however late, carries it.
func TestWatchedFreshEpochKept(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	b := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), func(c *redisbroker.Config) { c.FreshTTL = 500 * time.Millisecond })
	ctx := context.Background()
	b.Watch("watched")
	if err := b.Sync(ctx, "watched"); err != nil {
		t.Fatal(err)
	}
	var told [2]string
	for i, topic := range []string{"watched", "unwatched"} {
		p, err := b.History(ctx, topic, 0, 0)
		if err != nil || p.Latest.Epoch == "" {
			t.Fatalf("History(%s) = %+v, %v", topic, p.Latest, err)
		}
		told[i] = p.Latest.Epoch
	}
	time.Sleep(1500 * time.Millisecond) // three fresh TTLs, seven heartbeats
	rc, err := b.Publish(ctx, &relay.Message{Topic: "watched", Data: []byte("x")}, relay.PublishOptions{})
	if err != nil || rc.Offset != 1 || rc.Epoch != told[0] {
		t.Fatalf("first publish to the watched topic = %+v, %v; want offset 1 of the epoch told, %s", rc, err, told[0])
	}
	rc, err = b.Publish(ctx, &relay.Message{Topic: "unwatched", Data: []byte("x")}, relay.PublishOptions{})
	if err != nil || rc.Offset != 1 || rc.Epoch == told[1] {
		t.Fatalf("first publish to the unwatched topic = %+v, %v; want a new epoch (its fresh one expired)", rc, err)
	}
}

// The bound on fresh heads spares the topics nodes watch: reads of many
// new topics evict only unwatched heads, so a watched topic's first
// message still carries the epoch its subscribers were told.
func TestFreshBoundSparesWatchedTopics(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	b := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), func(c *redisbroker.Config) { c.FreshMax = 50 })
	c := client(t)
	ctx := context.Background()
	told := map[string]string{}
	for i := range 40 {
		topic := fmt.Sprintf("watched-%d", i)
		b.Watch(topic)
		if err := b.Sync(ctx, topic); err != nil {
			t.Fatal(err)
		}
		p, err := b.History(ctx, topic, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		told[topic] = p.Latest.Epoch
	}
	time.Sleep(500 * time.Millisecond) // two heartbeats: the watched heads are refreshed
	for i := range 200 {
		if _, err := b.History(ctx, fmt.Sprintf("unwatched-%d", i), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.Do(ctx, c.B().Zcard().Key(prefix+":f").Build()).AsInt64(); err != nil || n != 50 {
		t.Fatalf("ZCARD of the fresh set = %d, %v; want the bound of 50", n, err)
	}
	for topic, epoch := range told {
		rc, err := b.Publish(ctx, &relay.Message{Topic: topic, Data: []byte("x")}, relay.PublishOptions{})
		if err != nil || rc.Offset != 1 || rc.Epoch != epoch {
			t.Fatalf("first publish to %s = %+v, %v; want offset 1 of the epoch its subscribers were told, %s", topic, rc.Position, err, epoch)
		}
	}
}
