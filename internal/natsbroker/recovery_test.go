package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

var _ relay.StatsReporter = (*natsbroker.Broker)(nil)

// bucket opens one of prefix's buckets on the shared server.
func bucket(t *testing.T, ctx context.Context, prefix, name string) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(sharedNATS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, prefix+"_"+name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestDeclaredDeadKeepsRegistrations: a node the others took for dead
// (they removed its heartbeat and released its registrations) comes back
// with its sockets open and claims their registrations again: after the
// reconnect grace they still attach elsewhere (kicking the socket here as
// replaced) and unregister (kicking it as unregistered).
func TestDeclaredDeadKeepsRegistrations(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	const grace = 500 * time.Millisecond
	nodes := cluster(t, sharedNATS, prefix, 2, func(c *natsbroker.Config) { c.ReconnectGrace = grace })
	a, b := nodes[0], nodes[1]
	ids := []relay.ClientID{relay.ClientID("back-" + newTopic("x")), relay.ClientID("back-" + newTopic("y"))}
	for i, id := range ids {
		if err := a.Registry().Register(ctx, id, relay.Registration{User: 7, Topics: []string{"t"}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Registry().Attach(ctx, id, fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Do what the others do when b is silent for the node TTL: release its
	// registrations (they expire after the grace) and remove its heartbeat.
	regs := bucket(t, ctx, prefix, "registry")
	for _, id := range ids {
		e, err := regs.Get(ctx, natsbroker.B64(string(id)))
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		json.Unmarshal(e.Value(), &v)
		delete(v, "n")
		delete(v, "s")
		v["x"] = time.Now().Add(grace).UnixMilli()
		val, _ := json.Marshal(v)
		if _, err := regs.Update(ctx, e.Key(), val, e.Revision()); err != nil {
			t.Fatal(err)
		}
	}
	if err := bucket(t, ctx, prefix, "nodes").Purge(ctx, natsbroker.B64(b.NodeID())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * grace)
	for _, id := range ids {
		if _, err := a.Registry().Lookup(ctx, id); err != nil {
			t.Fatalf("Lookup(%s) after its node came back = %v, want it kept", id, err)
		}
	}
	if _, err := a.Registry().Attach(ctx, ids[0], "elsewhere"); err != nil {
		t.Fatalf("Attach(%s) on another node = %v", ids[0], err)
	}
	b.rec.WaitKick(t, ids[0], relay.CloseReplaced, "s0")
	if err := a.Registry().Unregister(ctx, ids[1]); err != nil {
		t.Fatalf("Unregister(%s) = %v", ids[1], err)
	}
	b.rec.WaitKick(t, ids[1], relay.CloseUnregistered, "s1")
}

// TestPresentCountsOwnChanges: Present right after Change counts it, on a
// watched topic and on one this node does not watch.
func TestPresentCountsOwnChanges(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	a := cluster(t, sharedNATS, prefix, 1)[0]
	watched, other := newTopic("own"), newTopic("own-unwatched")
	watch(t, ctx, a, a.rec, watched)
	for _, topic := range []string{watched, other} {
		for i := 1; i <= 5; i++ {
			a.Roster().Change(topic, 3, +1)
			got, err := a.Roster().Present(ctx, topic)
			if want := []relay.Present{{User: 3, Connections: i}}; err != nil || len(got) != 1 || got[0].User != want[0].User || got[0].Connections != want[0].Connections {
				t.Fatalf("Present(%q) right after change #%d = %v, %v; want %v", topic, i, got, err, want)
			}
		}
		a.Roster().Change(topic, 3, -5)
		if got, err := a.Roster().Present(ctx, topic); err != nil || len(got) != 0 {
			t.Fatalf("Present(%q) right after leaving = %v, %v; want none", topic, got, err)
		}
	}
}

// TestJoinReachesOwnNode: a user's join on a topic this node just started
// watching (its subscription not in place yet) reaches this node's
// fan-out. Other topics watched first keep the interest loop busy.
func TestJoinReachesOwnNode(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	a := cluster(t, sharedNATS, prefix, 1)[0]
	for i := range 500 {
		a.Watch(newTopic(fmt.Sprintf("busy%d", i)))
	}
	var topics []string
	for i := range 20 {
		topic := newTopic(fmt.Sprintf("ownjoin%d", i))
		topics = append(topics, topic)
		a.rec.SetWatched(topic, true)
		a.Watch(topic)
		a.Roster().Change(topic, 11, +1)
	}
	for _, topic := range topics {
		a.rec.WaitCount(t, topic, relay.KindJoin, 11, 1)
		if err := a.Sync(ctx, topic); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEpochOutlivesHistory: a topic whose history aged out (TTL 1s) keeps
// its offset and epoch: History returns no messages, and the next publish
// goes on from there, which a watching node follows without a reset.
func TestEpochOutlivesHistory(t *testing.T) {
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	short := func(c *natsbroker.Config) { c.History = []relay.HistoryRule{{Size: 10, TTL: time.Second}} }
	nodes := cluster(t, sharedNATS, prefix, 2, short)
	a, b := nodes[0], nodes[1]
	topic := newTopic("outlive")
	watch(t, ctx, b, b.rec, topic)
	var first relay.Receipt
	for i := range 2 {
		r, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte("old")}, relay.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = r
		}
	}
	time.Sleep(2 * time.Second)
	p, err := a.History(ctx, topic, 0, 0)
	if err != nil || len(p.Messages) != 0 || p.Complete || p.Latest != (relay.Position{Offset: 2, Epoch: first.Epoch}) {
		t.Fatalf("History(%q, 0) after the TTL = %+v, %v; want no messages, incomplete, latest {2 %s}", topic, p, err, first.Epoch)
	}
	if p, err := a.History(ctx, topic, 2, 0); err != nil || !p.Complete || len(p.Messages) != 0 {
		t.Fatalf("History(%q, 2) after the TTL = %+v, %v; want complete, no messages", topic, p, err)
	}
	r, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte("new")}, relay.PublishOptions{})
	if err != nil || r.Position != (relay.Position{Offset: 3, Epoch: first.Epoch}) {
		t.Fatalf("Publish after the TTL = %+v, %v; want {3 %s}", r.Position, err, first.Epoch)
	}
	checkStream(t, "b", b.rec, topic, 3, nil)
	if st := b.EngineStats(); st.Resets != 0 {
		t.Errorf("b's engine stats = %+v, want no reset", st)
	}
}

// TestEngineStats: reconnects are counted with the sequencer's stats.
func TestEngineStats(t *testing.T) {
	srv := startServer(t)
	a := cluster(t, srv.url(), newPrefix(t, srv.url()), 1)[0]
	if err := natsbroker.Reconnect(a.Broker); err != nil {
		t.Fatal(err)
	}
	if !brokertest.Eventually(5*time.Second, func() bool { return a.EngineStats().Reconnects == 1 }) {
		t.Errorf("EngineStats() after one reconnect = %+v, want Reconnects 1", a.EngineStats())
	}
	waitReady(t, a.Broker, 5*time.Second)
}
