package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// onEngines runs a cluster test once on each networked engine.
func onEngines(t *testing.T, test func(t *testing.T, url string)) {
	for name, url := range relaytest.Engines {
		t.Run(name, func(t *testing.T) { test(t, url) })
	}
}

// onNode rewrites a socket URL handed out by one node to reach another:
// registrations are cluster-wide, so any node accepts any id.
func onNode(url string, in *relaytest.Instance) string {
	rest := url[strings.Index(url, "/ws/"):]
	return "ws://" + in.Addr + rest
}

// inSync waits until the node's engine delivers topic here (what a
// relay.v1 subscribed reply guarantees; seed sockets get no reply).
func inSync(t *testing.T, in *relaytest.Instance, topics ...string) {
	t.Helper()
	relaytest.Eventually(t, "topics watched", func() bool {
		for _, tp := range topics {
			if in.Server.Hub.Subscribers(tp) == 0 {
				return false
			}
		}
		return true
	})
	for _, tp := range topics {
		if err := in.Server.Engine.Sync(ctxT(t), tp); err != nil {
			t.Fatalf("Sync(%s): %v", tp, err)
		}
	}
}

// collect reads n messages on topic from c and checks that their offsets
// are contiguous from first, in order, with the payloads want(offset).
func collect(t *testing.T, c *v1conn, topic string, first uint64, n int, want func(uint64) string) string {
	t.Helper()
	epoch := ""
	for i := range n {
		f := c.expect("message")
		off := first + uint64(i)
		if f.Topic != topic || f.Offset == nil || *f.Offset != off {
			t.Fatalf("message %d = %+v (offset %v), want offset %d on %s", i, f, f.Offset, off, topic)
		}
		if want != nil && f.Message != want(off) {
			t.Fatalf("message at offset %d = %q, want %q", off, f.Message, want(off))
		}
		if epoch == "" {
			epoch = *f.Epoch
		} else if *f.Epoch != epoch {
			t.Fatalf("epoch changed from %s to %s at offset %d", epoch, *f.Epoch, off)
		}
	}
	return epoch
}

func TestClusterFanoutExactlyOnceInOrder(t *testing.T) {
	onEngines(t, testClusterFanoutExactlyOnceInOrder)
}

func testClusterFanoutExactlyOnceInOrder(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 3, url, server.Config{})
	const topic, perNode = "orders", 100
	var subs []*v1conn
	for i, n := range nodes {
		for j := range 2 {
			c := dialV1(t, onNode(register(t, nodes[0], uint64(10*i+j)).URL, n))
			if f := c.subscribe(map[string]any{"topics": []string{topic}})[0]; *f.Offset != 0 {
				t.Fatalf("subscribed at %d, want 0 on a fresh topic", *f.Offset)
			}
			subs = append(subs, c)
		}
	}
	// Each node publishes its share concurrently; offsets interleave.
	var wg sync.WaitGroup
	var mu sync.Mutex
	payload := map[uint64]string{}
	for i, n := range nodes {
		wg.Go(func() {
			for k := range perNode {
				msg := fmt.Sprintf("node%d-%d", i, k)
				res := publish(t, n, client.Publish{Topic: topic, Message: msg})
				mu.Lock()
				payload[res.Offset] = msg
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(payload) != 3*perNode {
		t.Fatalf("%d distinct offsets in receipts, want %d", len(payload), 3*perNode)
	}
	for _, c := range subs {
		collect(t, c, topic, 1, 3*perNode, func(o uint64) string { return payload[o] })
		c.pingPong(1) // and nothing more
	}
}

func TestClusterRegistrationsWorkOnEveryNode(t *testing.T) {
	onEngines(t, testClusterRegistrationsWorkOnEveryNode)
}

func testClusterRegistrationsWorkOnEveryNode(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 3, url, server.Config{})
	a, b, c := nodes[0], nodes[1], nodes[2]
	reg := register(t, a, 7)
	conn, err := b.Client.Connect(ctxT(t), onNode(reg.URL, b))
	if err != nil {
		t.Fatalf("connecting on another node: %v", err)
	}
	defer conn.Close()
	inSync(t, b, "cats")
	publish(t, c, client.Publish{Topic: "cats", Message: "meow"})
	if got := receive(t, conn); got != "meow" {
		t.Fatalf("received %q, want meow", got)
	}
	// User-targeted: user 7 only, wherever it is connected.
	other := register(t, c, 8)
	oconn, err := c.Client.Connect(ctxT(t), other.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer oconn.Close()
	inSync(t, c, "cats")
	seven := uint64(7)
	publish(t, a, client.Publish{Topic: "cats", UserID: &seven, Message: "for 7"})
	if got := receive(t, conn); got != "for 7" {
		t.Fatalf("user 7 received %q, want its message", got)
	}
	expectNothing(t, oconn)

	// Unknown ids are 404 on every node.
	for _, n := range nodes {
		code, _, _ := request(t, http.MethodGet, n.URL+"/ws/0123456789abcdef0123456789abcdef", "")
		if code != http.StatusNotFound {
			t.Fatalf("GET /ws/<unknown> on %s = %d, want 404", n.Addr, code)
		}
	}
	// DELETE on another node closes the socket where it lives, fast.
	start := time.Now()
	if err := c.Client.Unregister(ctxT(t), reg.ID); err != nil {
		t.Fatalf("Unregister on a third node: %v", err)
	}
	if code := closeCode(t, conn); code != 4000 {
		t.Fatalf("close code = %d, want 4000 (unregistered)", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("socket closed %s after DELETE, want within 1s", d)
	}
	for _, n := range nodes {
		code, _, _ := request(t, http.MethodGet, n.URL+"/ws/"+reg.ID, "")
		if code != http.StatusNotFound {
			t.Fatalf("GET /ws/<unregistered> on %s = %d, want 404", n.Addr, code)
		}
	}
}

func TestClusterNewestConnectionWinsAcrossNodes(t *testing.T) {
	onEngines(t, testClusterNewestConnectionWinsAcrossNodes)
}

func testClusterNewestConnectionWinsAcrossNodes(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 2, url, server.Config{})
	reg := register(t, nodes[0], 3)
	first, err := nodes[0].Client.Connect(ctxT(t), reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := nodes[1].Client.Connect(ctxT(t), onNode(reg.URL, nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if code := closeCode(t, first); code != 4001 {
		t.Fatalf("older socket's close code = %d, want 4001 (replaced)", code)
	}
	inSync(t, nodes[1], "cats")
	publish(t, nodes[0], client.Publish{Topic: "cats", Message: "still here"})
	if got := receive(t, second); got != "still here" {
		t.Fatalf("newer socket received %q", got)
	}
	// Closed within the grace, the registration reconnects on any node.
	second.Close()
	relaytest.Eventually(t, "socket released", func() bool { return nodes[1].Server.Hub.Stats().Connections.Load() == 0 })
	again, err := nodes[0].Client.Connect(ctxT(t), reg.URL)
	if err != nil {
		t.Fatalf("reconnecting within the grace on the first node: %v", err)
	}
	again.Close()
}

func TestClusterResumeOnAnotherNode(t *testing.T) { onEngines(t, testClusterResumeOnAnotherNode) }

func testClusterResumeOnAnotherNode(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 2, url, server.Config{})
	a, b := nodes[0], nodes[1]
	const topic = "feed"
	reg := register(t, a, 1)
	c := dialV1(t, reg.URL)
	c.subscribe(map[string]any{"topics": []string{topic}})
	msg := func(o uint64) string { return fmt.Sprint("m", o) }
	for o := uint64(1); o <= 5; o++ {
		publish(t, b, client.Publish{Topic: topic, Message: msg(o)})
	}
	epoch := collect(t, c, topic, 1, 5, msg)
	c.ws.Close()
	for o := uint64(6); o <= 9; o++ { // missed while away
		publish(t, a, client.Publish{Topic: topic, Message: msg(o)})
	}
	c2 := dialV1(t, onNode(reg.URL, b))
	f := c2.subscribe(map[string]any{"topics": []string{topic}, "since": map[string]any{topic: map[string]any{"offset": 5, "epoch": epoch}}})[0]
	if f.Recovered == nil || !*f.Recovered || *f.Offset != 9 || *f.Epoch != epoch {
		t.Fatalf("subscribed = %+v, want recovered at 9 in epoch %s", f, epoch)
	}
	collect(t, c2, topic, 6, 4, msg)
	for o := uint64(10); o <= 12; o++ { // then live, from either node
		publish(t, nodes[o%2], client.Publish{Topic: topic, Message: msg(o)})
	}
	collect(t, c2, topic, 10, 3, msg)
	c2.pingPong(2)
}

func TestClusterFreshTopicHasOneEpoch(t *testing.T) { onEngines(t, testClusterFreshTopicHasOneEpoch) }

func testClusterFreshTopicHasOneEpoch(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 3, url, server.Config{})
	var epochs []string
	var conns []*v1conn
	for i, n := range nodes[:2] {
		c := dialV1(t, register(t, n, uint64(i)).URL)
		f := c.subscribe(map[string]any{"topics": []string{"brand-new"}})[0]
		epochs = append(epochs, *f.Epoch)
		conns = append(conns, c)
	}
	if epochs[0] != epochs[1] {
		t.Fatalf("epochs of a fresh topic on two nodes = %v, want one", epochs)
	}
	res := publish(t, nodes[2], client.Publish{Topic: "brand-new", Message: "first"})
	if res.Offset != 1 || res.Epoch != epochs[0] {
		t.Fatalf("first publish = %+v, want offset 1 in epoch %s", res, epochs[0])
	}
	for _, c := range conns {
		collect(t, c, "brand-new", 1, 1, nil)
	}
}

func TestClusterPresenceIsPerUserAcrossNodes(t *testing.T) {
	onEngines(t, testClusterPresenceIsPerUserAcrossNodes)
}

func testClusterPresenceIsPerUserAcrossNodes(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 3, url, server.Config{})
	const topic = "room"
	watcher := dialV1(t, register(t, nodes[2], 100).URL)
	watcher.subscribe(map[string]any{"topics": []string{topic}, "presence": true})
	watcher.expect("join") // its own
	// User 7 on two nodes: one join.
	a := dialV1(t, register(t, nodes[0], 7).URL)
	a.subscribe(map[string]any{"topics": []string{topic}})
	b := dialV1(t, register(t, nodes[1], 7).URL)
	b.subscribe(map[string]any{"topics": []string{topic}})
	if f := watcher.expect("join"); *f.UserID != 7 {
		t.Fatalf("join = %+v, want user 7", f)
	}
	for _, n := range nodes {
		relaytest.Eventually(t, "presence on "+n.Addr, func() bool {
			p, err := n.Server.Hub.Presence(ctxT(t), topic)
			return err == nil && fmt.Sprint(p) == fmt.Sprint([]relay.Present{{User: 7, Connections: 2}, {User: 100, Connections: 1}})
		})
	}
	a.ws.Close()
	b.ws.Close()
	if f := watcher.expect("leave"); *f.UserID != 7 {
		t.Fatalf("leave = %+v, want user 7", f)
	}
	watcher.pingPong(3) // one leave, not two
}

// Subscribing and unsubscribing a topic while it is published to, on the
// node receiving it: the last socket leaving a topic (the node drops its
// engine subscription) races the topic's fan-out. Nothing may lock up.
func TestClusterChurnWhilePublishing(t *testing.T) { onEngines(t, testChurn) }

func testChurn(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 2, url, server.Config{})
	const topic = "churn"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n.Client.Publish(ctxT(t), client.Publish{Topic: topic, Message: fmt.Sprint(i)})
			}
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var cw sync.WaitGroup
		for j := range 4 {
			c := dialV1(t, register(t, nodes[1], uint64(j)).URL)
			cw.Go(func() {
				// One command at a time: each takes effect before the next.
				for i := range 300 {
					for _, typ := range []string{"subscribe", "unsubscribe"} {
						c.send(map[string]any{"type": typ, "id": i, "topics": []string{topic}})
						if !awaitReply(c, typ+"d") {
							t.Errorf("socket %d: no %sd reply", j, typ)
							return
						}
					}
				}
			})
		}
		cw.Wait()
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("subscribe/unsubscribe churn did not finish within 60s: a lock-up")
	}
	close(stop)
	wg.Wait()
	// The node still fans out.
	c := dialV1(t, register(t, nodes[1], 99).URL)
	c.subscribe(map[string]any{"topics": []string{"after"}})
	publish(t, nodes[0], client.Publish{Topic: "after", Message: "alive"})
	if f := c.expect("message"); f.Message != "alive" {
		t.Fatalf("got %+v", f)
	}
}

// awaitReply reads c's frames until one of type typ, skipping messages;
// false when the socket fails or stays silent for 20s.
func awaitReply(c *v1conn, typ string) bool {
	for {
		c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return false
		}
		if strings.Contains(string(b), `"type":"`+typ+`"`) {
			return true
		}
	}
}

// History and idempotency keys are the cluster's: a retry on another node
// is recognised, and every node serves the same history.
func TestClusterHistoryAndIdempotencyAcrossNodes(t *testing.T) { onEngines(t, testHistoryAcross) }

func testHistoryAcross(t *testing.T, url string) {
	nodes := relaytest.Cluster(t, 3, url, server.Config{})
	body := `{"topic":"ledger","message":"entry 1","idempotency_key":"op-1"}`
	var answers []string
	for _, n := range nodes[:2] {
		code, _, b := request(t, http.MethodPost, n.URL+"/publish", body)
		if code != http.StatusOK {
			t.Fatalf("publish on %s = %d %s", n.Addr, code, b)
		}
		answers = append(answers, b)
	}
	if !strings.Contains(answers[0], `"offset":1`) || strings.Contains(answers[0], "duplicate") ||
		!strings.Contains(answers[1], `"offset":1`) || !strings.Contains(answers[1], `"duplicate":true`) {
		t.Fatalf("answers = %v, want offset 1, then the same offset as a duplicate", answers)
	}
	publish(t, nodes[1], client.Publish{Topic: "ledger", Message: "entry 2"})
	for _, n := range nodes {
		code, _, b := request(t, http.MethodGet, n.URL+"/history/ledger?since=0", "")
		if code != http.StatusOK || !strings.Contains(b, `"offset":2`) || !strings.Contains(b, `"messages":[{"offset":1,"message":"entry 1"},{"offset":2,"message":"entry 2"}]`) {
			t.Fatalf("GET /history on %s = %d %s", n.Addr, code, b)
		}
	}
}
