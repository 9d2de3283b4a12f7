package redisbroker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relay"
)

// transitions formats what rec was reported about user on topic.
func transitions(rec *brokertest.Recorder, topic string, user relay.UserID) []string {
	var out []string
	for _, t := range rec.Transitions(topic) {
		if t.User == user {
			kind := "left"
			if t.Joined {
				kind = "joined"
			}
			out = append(out, fmt.Sprintf("%s %q", kind, t.Info))
		}
	}
	return out
}

// expectReported waits until rec was reported want about user on topic,
// lets a stray one show, and checks it is still exactly want.
func expectReported(t *testing.T, name string, rec *brokertest.Recorder, topic string, user relay.UserID, want ...string) {
	t.Helper()
	var got []string
	brokertest.Eventually(5*time.Second, func() bool { got = transitions(rec, topic, user); return len(got) >= len(want) })
	time.Sleep(300 * time.Millisecond)
	if got = transitions(rec, topic, user); !slices.Equal(got, want) {
		t.Fatalf("%s reported %q about user %d, want %q", name, got, user, want)
	}
}

// A write retried after a timeout whose first attempt landed, and a node's
// rewrite of its whole share while Redis still holds it, set counts that
// are there already: they report nothing.
func TestTransitionsRewriteReportsNothing(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	rec := brokertest.NewRecorder()
	b := newNode(t, sharedRedis, prefix, rec, nil)
	ctx := context.Background()
	b.Watch("room")
	if err := b.Sync(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	b.Roster().(relay.InfoRoster).ChangeInfo("room", 7, 2, []byte("i7"))
	expectReported(t, "the node", rec, "room", 7, `joined "i7"`)
	redisbroker.Reassert(b)
	if _, err := b.Roster().Present(ctx, "room"); err != nil { // waits for the rewrite
		t.Fatal(err)
	}
	expectReported(t, "the node, after rewriting its share", rec, "room", 7, `joined "i7"`)

	for range 2 {
		if err := redisbroker.Write(b, ctx, "room", 8, 3, "i8"); err != nil {
			t.Fatal(err)
		}
	}
	expectReported(t, "the node, after writing 3 twice", rec, "room", 8, `joined "i8"`)
	for range 2 {
		if err := redisbroker.Write(b, ctx, "room", 8, 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	expectReported(t, "the node, after writing 0 twice", rec, "room", 8, `joined "i8"`, `left "i8"`)
	if got := rec.Count("room", relay.KindJoin, 8) + rec.Count("room", relay.KindLeave, 8); got != 2 {
		t.Errorf("the node was told of %d joins and leaves of user 8, want 2", got)
	}
}

// A node the others took for dead: the one that removed it reports its
// users' leaves, and its rewrite of its share, once it notices, reports
// the joins again.
func TestTransitionsTakenForDead(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	ra, rb := brokertest.NewRecorder(), brokertest.NewRecorder()
	a := newNode(t, sharedRedis, prefix, ra, nil)
	b := newNode(t, sharedRedis, prefix, rb, nil)
	ctx := context.Background()
	a.Roster().(relay.InfoRoster).ChangeInfo("room", 7, 1, []byte("i7"))
	expectReported(t, "a", ra, "room", 7, `joined "i7"`)
	if err := redisbroker.RemoveNode(b, ctx, a.NodeID()); err != nil {
		t.Fatal(err)
	}
	expectReported(t, "b, which removed a", rb, "room", 7, `left "i7"`)
	expectReported(t, "a, once it noticed", ra, "room", 7, `joined "i7"`, `joined "i7"`)
	expectReported(t, "b", rb, "room", 7, `left "i7"`)
}

// When Redis loses its data, the rewrite of each node's share reports the
// joins again, without a leave before them: the documented cost of a
// loss.
func TestTransitionsAfterLoss(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	rec := brokertest.NewRecorder()
	b := newNode(t, sharedRedis, prefix, rec, nil)
	b.Roster().(relay.InfoRoster).ChangeInfo("room", 7, 1, []byte("i7"))
	expectReported(t, "the node", rec, "room", 7, `joined "i7"`)
	flushPrefix(t, sharedRedis, prefix)
	expectReported(t, "the node, after Redis lost its data", rec, "room", 7, `joined "i7"`, `joined "i7"`)
}

// A node restarted under the same id removes what its earlier process
// left and reports the leaves that makes.
func TestTransitionsRestartUnderSameID(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	c := client(t)
	ctx := context.Background()
	for _, cmd := range []rueidis.Completed{
		c.B().Hset().Key(prefix+":pn:same").FieldValue().FieldValue("room\n5", "1").FieldValue("room\n6", "1").Build(),
		c.B().Hset().Key(prefix+":p:room").FieldValue().FieldValue("5", "1").FieldValue("6", "2").Build(),
		c.B().Hset().Key(prefix+":pi:room").FieldValue().FieldValue("5", "i5").Build(),
		c.B().Zadd().Key(prefix+":nodes").ScoreMember().ScoreMember(float64(time.Now().UnixMilli()), "same").Build(),
	} {
		if err := c.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	rec := brokertest.NewRecorder()
	newNode(t, sharedRedis, prefix, rec, func(cfg *redisbroker.Config) { cfg.NodeID = "same" })
	expectReported(t, "the restarted node", rec, "room", 5, `left "i5"`)
	expectReported(t, "the restarted node", rec, "room", 6) // present through another node too
}
