package natsbroker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
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
func expectReported(t *testing.T, name string, rec *brokertest.Recorder, topic string, user relay.UserID, within time.Duration, want ...string) {
	t.Helper()
	var got []string
	brokertest.Eventually(within, func() bool { got = transitions(rec, topic, user); return len(got) >= len(want) })
	time.Sleep(300 * time.Millisecond)
	if got = transitions(rec, topic, user); !slices.Equal(got, want) {
		t.Fatalf("%s reported %q about user %d, want %q", name, got, user, want)
	}
}

// A write retried after a timeout whose first attempt landed, and a node's
// rewrite of its presence after a reconnect while NATS still holds it,
// set counts that are there already: they report nothing.
func TestTransitionsRewriteReportsNothing(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	a := cluster(t, sharedNATS, prefix, 1)[0]
	topic := newTopic("rewrite")
	watch(t, ctx, a, a.rec, topic)
	a.Roster().(relay.InfoRoster).ChangeInfo(topic, 7, 2, []byte("i7"))
	expectReported(t, "the node", a.rec, topic, 7, 5*time.Second, `joined "i7"`)
	if err := natsbroker.Reconnect(a.Broker); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a.Broker, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // the rewrite after the reconnect
	if _, err := a.Roster().Present(ctx, topic); err != nil {
		t.Fatal(err)
	}
	expectReported(t, "the node, after a reconnect", a.rec, topic, 7, 0, `joined "i7"`)

	for range 2 {
		if err := natsbroker.Write(a.Broker, ctx, topic, 8, 3, []byte("i8")); err != nil {
			t.Fatal(err)
		}
	}
	expectReported(t, "the node, after writing 3 twice", a.rec, topic, 8, 5*time.Second, `joined "i8"`)
	for range 2 {
		if err := natsbroker.Write(a.Broker, ctx, topic, 8, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	expectReported(t, "the node, after writing 0 twice", a.rec, topic, 8, 5*time.Second, `joined "i8"`, `left "i8"`)
	if got := a.rec.Count(topic, relay.KindJoin, 8) + a.rec.Count(topic, relay.KindLeave, 8); got != 2 {
		t.Errorf("the node was told of %d joins and leaves of user 8, want 2", got)
	}
}

// TestTransitionsDeclaredDead: a node whose heartbeat the others removed
// comes back with a new incarnation. Whether a survivor swept its
// members first (reporting the leave, then the node the join again) or
// the node replaced them first (nothing to report), the cluster reports
// one more join than leaves.
func TestTransitionsDeclaredDead(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	nodes := cluster(t, sharedNATS, prefix, 2)
	a, b := nodes[0], nodes[1]
	topic := newTopic("dead-again")
	b.Roster().Change(topic, 3, +1)
	expectReported(t, "b", b.rec, topic, 3, 5*time.Second, `joined ""`)
	if err := bucket(t, ctx, prefix, "nodes").Purge(ctx, natsbroker.B64(b.NodeID())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	present(t, ctx, nodes, topic, []relay.Present{{User: 3, Connections: 1}}, 5*time.Second)
	var all []relay.Transition
	for _, n := range nodes {
		all = append(all, n.rec.Transitions(topic)...)
	}
	joins, leaves := 0, 0
	for _, t := range all {
		if t.Joined {
			joins++
		} else {
			leaves++
		}
	}
	t.Logf("a reported %q, b %q", transitions(a.rec, topic, 3), transitions(b.rec, topic, 3))
	if joins != leaves+1 || joins > 2 {
		t.Errorf("the nodes reported %d joins and %d leaves of user 3, want one join more than leaves (at most 2)", joins, leaves)
	}
}

// TestTransitionsAfterLoss: when NATS loses its data, the nodes' rewrites
// of their presence report the joins again, without a leave before them:
// the documented cost of a loss.
func TestTransitionsAfterLoss(t *testing.T) {
	srv := startServer(t)
	ctx, prefix := testCtx(t), newPrefix(t, srv.url())
	nodes := cluster(t, srv.url(), prefix, 2)
	a := nodes[0]
	topic := newTopic("lost")
	a.Roster().(relay.InfoRoster).ChangeInfo(topic, 4, +1, []byte("i4"))
	expectReported(t, "a", a.rec, topic, 4, 5*time.Second, `joined "i4"`)
	srv.stop()
	srv.dir = t.TempDir()
	srv.start()
	waitReady(t, a.Broker, 10*time.Second)
	present(t, ctx, nodes, topic, []relay.Present{{User: 4, Connections: 1, Info: []byte("i4")}}, 10*time.Second)
	expectReported(t, "a, after NATS lost its data", a.rec, topic, 4, 5*time.Second, `joined "i4"`, `joined "i4"`)
	expectReported(t, "b", nodes[1].rec, topic, 4, 0)
}
