package natsbroker_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

// exchange waits until a publish on from reaches to, publishing again
// every 200ms (a publish may fail while the node reconnects), and
// returns the receipt of the one that arrived.
func exchange(t *testing.T, from, to member, topic string, within time.Duration) relay.Receipt {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for i := 0; time.Now().Before(deadline); i++ {
		body := fmt.Sprintf("%s-%d", from.NodeID(), i)
		r, err := from.Publish(t.Context(), &relay.Message{Topic: topic, Data: []byte(body)}, relay.PublishOptions{})
		lastErr = err
		if err == nil && brokertest.Eventually(200*time.Millisecond, func() bool {
			for _, m := range to.rec.Messages(topic) {
				if string(m.Data) == body {
					return true
				}
			}
			return false
		}) {
			return r
		}
		if err != nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Fatalf("no publish from %s reached %s on %q within %v (last error %v)", from.NodeID(), to.NodeID(), topic, within, lastErr)
	return relay.Receipt{}
}

// TestNATSDownAndBack: while NATS is down, publishes fail fast and the
// nodes are not ready; once it is back, the nodes exchange messages again
// within 10s, in order and without repeats.
func TestNATSDownAndBack(t *testing.T) {
	srv := startServer(t)
	ctx, prefix := testCtx(t), newPrefix(t, srv.url())
	nodes := cluster(t, srv.url(), prefix, 2)
	a, b := nodes[0], nodes[1]
	topic := newTopic("fault")
	for _, n := range nodes {
		watch(t, ctx, n, n.rec, topic)
	}
	exchange(t, a, b, topic, 5*time.Second)

	srv.stop()
	start := time.Now()
	_, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte("down")}, relay.PublishOptions{})
	if took := time.Since(start); !errors.Is(err, relay.ErrUnavailable) || took > 2*time.Second {
		t.Errorf("Publish while NATS is down = %v after %v, want ErrUnavailable within 2s", err, took)
	}
	for _, n := range nodes {
		if !brokertest.Eventually(2*time.Second, func() bool { return errors.Is(n.Ready(), relay.ErrUnavailable) }) {
			t.Errorf("node %s Ready() while NATS is down = %v, want ErrUnavailable", n.NodeID(), n.Ready())
		}
	}
	t.Logf("Ready() while down: %v", a.Ready())
	if err := b.Sync(ctx, topic); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("Sync while NATS is down = %v, want ErrUnavailable", err)
	}

	srv.start()
	start = time.Now()
	exchange(t, a, b, topic, 10*time.Second)
	exchange(t, b, a, topic, 10*time.Second-time.Since(start))
	t.Logf("messages flowed both ways %v after NATS restarted", time.Since(start).Round(10*time.Millisecond))
	for _, n := range nodes {
		waitReady(t, n.Broker, 5*time.Second)
		last := uint64(0)
		for _, m := range n.rec.Messages(topic) {
			if m.Offset != last+1 {
				t.Errorf("node %s got offsets out of order: %d after %d", n.NodeID(), m.Offset, last)
			}
			last = m.Offset
		}
	}
}

// TestNATSLosesData: a NATS server that comes back empty gets the stream
// and buckets again; the topic starts a new epoch, which watching nodes
// follow, and this node's presence is written again.
func TestNATSLosesData(t *testing.T) {
	srv := startServer(t)
	ctx, prefix := testCtx(t), newPrefix(t, srv.url())
	nodes := cluster(t, srv.url(), prefix, 2)
	a, b := nodes[0], nodes[1]
	topic := newTopic("lost")
	watch(t, ctx, b, b.rec, topic)
	first := exchange(t, a, b, topic, 5*time.Second)
	a.Roster().Change(topic, 4, +1)
	present(t, ctx, nodes, topic, []relay.Present{{User: 4, Connections: 1}}, 5*time.Second)

	srv.stop()
	srv.dir = t.TempDir()
	srv.start()
	r := exchange(t, a, b, topic, 10*time.Second)
	if r.Epoch == first.Epoch {
		t.Errorf("Publish after NATS lost its data = %+v, want a new epoch (was %s)", r.Position, first.Epoch)
	}
	present(t, ctx, nodes, topic, []relay.Present{{User: 4, Connections: 1}}, 10*time.Second)
}

// TestStartWhileDown: a node started while NATS is down is not ready,
// and becomes ready once NATS is up.
func TestStartWhileDown(t *testing.T) {
	srv := startServer(t)
	prefix := newPrefix(t, srv.url())
	srv.stop()
	rec := brokertest.NewRecorder()
	b := newEngine(t, srv.url(), prefix)
	brokertest.Start(t, b, rec)
	time.Sleep(300 * time.Millisecond)
	if err := b.Ready(); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("Ready() with NATS down = %v, want ErrUnavailable", err)
	}
	srv.start()
	waitReady(t, b, 10*time.Second)
}

// TestDeadNodePresenceDefaults: with the default heartbeat and node TTL, a
// dead node's presence is gone within 15s.
func TestDeadNodePresenceDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("takes the default node TTL")
	}
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	defaults := func(c *natsbroker.Config) { *c = natsbroker.Config{URL: c.URL, Prefix: c.Prefix} }
	nodes := cluster(t, sharedNATS, prefix, 2, defaults)
	a, b := nodes[0], nodes[1]
	topic := newTopic("defaults")
	watch(t, ctx, a, a.rec, topic)
	b.Roster().Change(topic, 1, +1)
	a.rec.WaitCount(t, topic, relay.KindJoin, 1, 1)
	start := time.Now()
	natsbroker.Crash(b.Broker)
	if !brokertest.Eventually(15*time.Second, func() bool { return a.rec.Count(topic, relay.KindLeave, 1) == 1 }) {
		t.Fatalf("no leave within 15s of a node dying")
	}
	t.Logf("leave announced %v after the node died", time.Since(start).Round(100*time.Millisecond))
	present(t, ctx, nodes[:1], topic, nil, time.Second)
}

// TestNodeReconnects: a node whose own connection drops (twice) while
// another publishes misses nothing: it resubscribes, and what was
// published meanwhile is read from history.
func TestNodeReconnects(t *testing.T) {
	const n = 200
	srv := startServer(t)
	ctx, prefix := testCtx(t), newPrefix(t, srv.url())
	keep := func(c *natsbroker.Config) {
		c.History = []relay.HistoryRule{{Size: 2 * n, TTL: time.Minute}}
		c.CheckInterval = time.Hour // only the check after reconnecting repairs a lost tail
	}
	nodes := cluster(t, srv.url(), prefix, 2, keep)
	a, b := nodes[0], nodes[1]
	topic := newTopic("reconnect")
	watch(t, ctx, b, b.rec, topic)
	data := make(map[uint64]string)
	for i := range n {
		if i == n/4 || i == n/2 {
			if err := natsbroker.Reconnect(b.Broker); err != nil {
				t.Fatalf("ForceReconnect: %v", err)
			}
		}
		body := fmt.Sprintf("m%d", i)
		r, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte(body)}, relay.PublishOptions{})
		if err != nil {
			t.Fatalf("Publish #%d = %v", i, err)
		}
		data[r.Offset] = body
	}
	checkStream(t, "b", b.rec, topic, n, data)
	waitReady(t, b.Broker, 5*time.Second)
	st := b.SequencerStats()
	t.Logf("b's sequencer: %+v", st)
	if st.Resets != 0 {
		t.Errorf("b's sequencer reset %d times, want 0: history holds every message", st.Resets)
	}
	// The subscription itself is back: new messages arrive without repair.
	for i := n; i < n+20; i++ {
		body := fmt.Sprintf("m%d", i)
		r, err := a.Publish(ctx, &relay.Message{Topic: topic, Data: []byte(body)}, relay.PublishOptions{})
		if err != nil {
			t.Fatalf("Publish #%d = %v", i, err)
		}
		data[r.Offset] = body
		if !brokertest.Eventually(2*time.Second, func() bool { return len(b.rec.Messages(topic)) == i+1 }) {
			t.Fatalf("b did not get message #%d", i)
		}
	}
	checkStream(t, "b", b.rec, topic, n+20, data)
	if after := b.SequencerStats(); after.Repaired != st.Repaired {
		t.Errorf("b repaired %d messages after the reconnects settled, want 0: the subscription is not live", after.Repaired-st.Repaired)
	}
}

// TestNATSFrozen: a NATS server that stops answering without closing the
// connection (SIGSTOP here; a firewall dropping packets alike) makes the
// node not ready once a few heartbeats went unanswered, well before the
// client's pings give up (10-15 s); it is ready again once NATS answers.
func TestNATSFrozen(t *testing.T) {
	srv := startServer(t)
	_, prefix := testCtx(t), newPrefix(t, srv.url())
	n := newNode(t, srv.url(), prefix, brokertest.NewRecorder(), func(c *natsbroker.Config) {
		c.Heartbeat, c.Timeout = 300*time.Millisecond, 500*time.Millisecond
	})
	if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			srv.cmd.Process.Signal(syscall.SIGCONT)
			resumed = true
		}
	}
	t.Cleanup(resume)
	// 2 beats and a timeout (1.1 s), plus the beat that notices.
	if !brokertest.Eventually(4*time.Second, func() bool { return errors.Is(n.Ready(), relay.ErrUnavailable) }) {
		t.Fatalf("Ready() %v after NATS froze = %v, want ErrUnavailable", time.Since(stopped).Round(time.Millisecond), n.Ready())
	}
	t.Logf("not ready %v after NATS froze: %v", time.Since(stopped).Round(time.Millisecond), n.Ready())
	resume()
	waitReady(t, n, 10*time.Second)
}
