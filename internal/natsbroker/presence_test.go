package natsbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

// present waits until every node lists want on topic.
func present(t *testing.T, ctx context.Context, nodes []member, topic string, want []relay.Present, within time.Duration) {
	t.Helper()
	for i, n := range nodes {
		var got []relay.Present
		var err error
		if !brokertest.Eventually(within, func() bool {
			got, err = n.Roster().Present(ctx, topic)
			return err == nil && (slices.EqualFunc(got, want, func(a, b relay.Present) bool {
				return a.User == b.User && a.Connections == b.Connections && string(a.Info) == string(b.Info)
			}) || len(got) == 0 && len(want) == 0)
		}) {
			t.Fatalf("node %d Present(%q) = %v, %v after %v; want %v", i, topic, got, err, within, want)
		}
	}
}

// count checks, after a pause for strays, that rec was told of n events
// of kind about user.
func count(t *testing.T, name string, rec *brokertest.Recorder, topic string, kind relay.Kind, user relay.UserID, n int) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	if got := rec.Count(topic, kind, user); got != n {
		t.Errorf("%s was told of %d events of kind %d for user %d, want %d: %+v", name, got, kind, user, n, rec.Messages(topic))
	}
}

// TestDeadNodePresence: a node that dies without a goodbye loses its
// presence within the node TTL (one leave per user whose last connections
// were there) and its registrations are released.
func TestDeadNodePresence(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	grace := func(c *natsbroker.Config) { c.ReconnectGrace = 300 * time.Millisecond }
	nodes := cluster(t, sharedNATS, prefix, 3, grace)
	a, b, c := nodes[0], nodes[1], nodes[2]
	topic := newTopic("dead")
	for _, n := range nodes {
		watch(t, ctx, n, n.rec, topic)
	}
	c.Roster().Change(topic, 5, +1)
	c.Roster().Change(topic, 5, +1)
	c.Roster().Change(topic, 6, +1)
	a.Roster().Change(topic, 6, +1)
	present(t, ctx, nodes, topic, []relay.Present{{User: 5, Connections: 2}, {User: 6, Connections: 2}}, 5*time.Second)
	for _, n := range nodes {
		n.rec.WaitCount(t, topic, relay.KindJoin, 5, 1)
		n.rec.WaitCount(t, topic, relay.KindJoin, 6, 1)
	}
	id := relay.ClientID("dead-" + newTopic("id"))
	if err := a.Registry().Register(ctx, id, relay.Registration{User: 5}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry().Attach(ctx, id, "s1"); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	natsbroker.Crash(c.Broker)
	survivors := nodes[:2]
	present(t, ctx, survivors, topic, []relay.Present{{User: 6, Connections: 1}}, 15*time.Second)
	t.Logf("the dead node's presence was gone after %v", time.Since(start).Round(10*time.Millisecond))
	for i, n := range survivors {
		n.rec.WaitCount(t, topic, relay.KindLeave, 5, 1)
		count(t, []string{"a", "b"}[i], n.rec, topic, relay.KindLeave, 5, 1)
		count(t, []string{"a", "b"}[i], n.rec, topic, relay.KindLeave, 6, 0)
	}
	var err error
	if !brokertest.Eventually(10*time.Second, func() bool {
		_, err = b.Registry().Lookup(ctx, id)
		return errors.Is(err, relay.ErrNotFound)
	}) {
		t.Errorf("Lookup(%s) held by the dead node = %v after its grace, want ErrNotFound", id, err)
	}
}

// TestGoodbye: a node that stops cleanly removes its presence at once.
func TestGoodbye(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	a := cluster(t, sharedNATS, prefix, 1)[0]
	topic := newTopic("bye")
	watch(t, ctx, a, a.rec, topic)
	rec := brokertest.NewRecorder()
	b := newEngine(t, sharedNATS, prefix, func(c *natsbroker.Config) { c.NodeTTL = time.Minute })
	b.Bind(rec)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	waitReady(t, b, 10*time.Second)
	b.Roster().Change(topic, 9, +1)
	a.rec.WaitCount(t, topic, relay.KindJoin, 9, 1)
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run() = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run() did not return within 10s of cancel")
	}
	if !brokertest.Eventually(2*time.Second, func() bool { return a.rec.Count(topic, relay.KindLeave, 9) == 1 }) {
		t.Errorf("a was told of %d leaves of user 9 within 2s of b stopping, want 1", a.rec.Count(topic, relay.KindLeave, 9))
	}
	present(t, ctx, []member{a}, topic, nil, time.Second)
}

// TestRejoinAfterDeclaredDead: a node whose heartbeat the others removed
// (it was cut off too long) comes back with a new incarnation and writes
// its presence again.
func TestRejoinAfterDeclaredDead(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	nodes := cluster(t, sharedNATS, prefix, 2)
	a, b := nodes[0], nodes[1]
	topic := newTopic("rejoin")
	watch(t, ctx, a, a.rec, topic)
	b.Roster().Change(topic, 3, +1)
	present(t, ctx, nodes, topic, []relay.Present{{User: 3, Connections: 1}}, 5*time.Second)

	nc, err := nats.Connect(sharedNATS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, prefix+"_nodes")
	if err != nil {
		t.Fatal(err)
	}
	key := natsbroker.B64(b.NodeID())
	incarnation := func() string {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return ""
		}
		var hb struct {
			Inc string `json:"i"`
		}
		json.Unmarshal(e.Value(), &hb)
		return hb.Inc
	}
	before := incarnation()
	if err := kv.Purge(ctx, key); err != nil {
		t.Fatalf("purging %s's heartbeat: %v", b.NodeID(), err)
	}
	var after string
	if !brokertest.Eventually(5*time.Second, func() bool { after = incarnation(); return after != "" && after != before }) {
		t.Fatalf("%s's heartbeat incarnation = %q after it was purged, want a new one (was %q)", b.NodeID(), after, before)
	}
	// a may see the user leave and join again; in the end it is present.
	time.Sleep(2 * time.Second)
	present(t, ctx, nodes, topic, []relay.Present{{User: 3, Connections: 1}}, 5*time.Second)
	if joins, leaves := a.rec.Count(topic, relay.KindJoin, 3), a.rec.Count(topic, relay.KindLeave, 3); joins != leaves+1 {
		t.Errorf("a was told of %d joins and %d leaves of user 3, want one join more than leaves", joins, leaves)
	}
}

// An info up to natsbroker.MaxInfoBytes rides on the join and the leave,
// on every node, and is what Present returns; a larger one is dropped
// (with a warning) and the connection counted without it.
func TestInfoLimit(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	nodes := cluster(t, sharedNATS, prefix, 2)
	a := nodes[0]
	topic := newTopic("limit")
	for _, n := range nodes {
		watch(t, ctx, n, n.rec, topic)
	}
	r := a.Roster().(relay.InfoRoster)
	limit := []byte(strings.Repeat("\n\"x", natsbroker.MaxInfoBytes/3) + strings.Repeat("y", natsbroker.MaxInfoBytes%3))
	over := []byte(strings.Repeat("z", natsbroker.MaxInfoBytes+1))
	r.ChangeInfo(topic, 1, 1, limit)
	r.ChangeInfo(topic, 2, 1, over)
	present(t, ctx, nodes, topic, []relay.Present{{User: 1, Connections: 1, Info: limit}, {User: 2, Connections: 1}}, 5*time.Second)
	r.Change(topic, 1, -1)
	r.Change(topic, 2, -1)
	for i, n := range nodes {
		n.rec.WaitCount(t, topic, relay.KindLeave, 1, 1)
		n.rec.WaitCount(t, topic, relay.KindLeave, 2, 1)
		for _, m := range n.rec.Messages(topic) {
			want := limit
			if m.User == 2 {
				want = nil
			}
			if string(m.Data) != string(want) || (want == nil) != (m.Data == nil) {
				t.Errorf("node %d: event %d of user %d carried %d bytes, want %d", i, m.Kind, m.User, len(m.Data), len(want))
			}
		}
	}
}

// A sweep whose listing of heartbeats left a live node out (a heartbeat
// rewritten while the listing ran) reads that node's heartbeat before
// removing its members: a live node's presence stays; a dead
// incarnation's, or an unknown node's, goes.
func TestSweepChecksAMissingHeartbeat(t *testing.T) {
	prefix := newPrefix(t, sharedNATS)
	b := newNode(t, sharedNATS, prefix, brokertest.NewRecorder())
	ctx := context.Background()
	live := natsbroker.MemberName(b)
	if natsbroker.GoneForSure(b, ctx, live) {
		t.Fatalf("member %s of a live node taken for gone", live)
	}
	node, _, _ := strings.Cut(live, "#")
	for _, name := range []string{node + "#otherincarnation", "nosuchnode#x", "no-separator"} {
		if !natsbroker.GoneForSure(b, ctx, name) {
			t.Errorf("member %s kept, want it gone", name)
		}
	}
}
