package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// tail reads a relay.v1 socket in the background and keeps every message
// of one topic, for tests that publish while faults happen.
type tail struct {
	mu     sync.Mutex
	msgs   []frameV1
	resets []frameV1 // unsolicited subscribed frames: gaps history could not fill
	err    error
}

func follow(c *v1conn, topic string) *tail {
	tl := &tail{}
	go func() {
		for {
			c.ws.SetReadDeadline(time.Now().Add(time.Minute))
			_, b, err := c.ws.ReadMessage()
			if err != nil {
				tl.mu.Lock()
				tl.err = err
				tl.mu.Unlock()
				return
			}
			var f frameV1
			if json.Unmarshal(b, &f) != nil || f.Topic != topic {
				continue
			}
			tl.mu.Lock()
			switch f.Type {
			case "message":
				tl.msgs = append(tl.msgs, f)
			case "subscribed":
				tl.resets = append(tl.resets, f)
			}
			tl.mu.Unlock()
		}
	}()
	return tl
}

func (tl *tail) count() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return len(tl.msgs)
}

// check waits until the tail holds one message per acknowledged payload
// (acked[i] published with payload acked[i]) and verifies each arrived
// exactly once, in publish offset order.
func (tl *tail) check(t *testing.T, name string, acked map[uint64]string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for tl.count() < len(acked) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // and nothing more
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.resets) > 0 {
		t.Errorf("%s: %d gaps reported (%+v), want none", name, len(tl.resets), tl.resets[0])
	}
	seen := map[uint64]bool{}
	var last uint64
	for i, f := range tl.msgs {
		off := *f.Offset
		if seen[off] {
			t.Fatalf("%s: offset %d delivered twice", name, off)
		}
		seen[off] = true
		if off <= last {
			t.Fatalf("%s: offset %d after %d (message %d): out of order", name, off, last, i)
		}
		last = off
		if want, ok := acked[off]; ok && f.Message != want {
			t.Fatalf("%s: offset %d = %q, want %q", name, off, f.Message, want)
		}
	}
	missing := 0
	for off := range acked {
		if !seen[off] {
			missing++
		}
	}
	if missing > 0 || len(tl.msgs) != len(acked) {
		t.Fatalf("%s: received %d messages, %d of %d acknowledged publishes missing (read error: %v)", name, len(tl.msgs), missing, len(acked), tl.err)
	}
}

// publisher publishes to topic on the nodes in turn, n messages spaced by
// every, and keeps the acknowledged ones by offset.
func publishSteadily(t *testing.T, nodes []*relaytest.Instance, topic string, n int, every time.Duration, maxFailed int, during func(i int)) map[uint64]string {
	t.Helper()
	acked := map[uint64]string{}
	failed := 0
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		if during != nil {
			during(i)
		}
		msg := fmt.Sprint("msg-", i)
		res, err := nodes[i%len(nodes)].Client.Publish(ctxT(t), client.Publish{Topic: topic, Message: msg})
		if err != nil {
			failed++
			continue
		}
		acked[res.Offset] = msg
	}
	t.Logf("%d of %d publishes acknowledged", len(acked), n)
	if failed > maxFailed {
		t.Fatalf("%d of %d publishes failed, want at most %d", failed, n, maxFailed)
	}
	return acked
}

const steadyTopic = "steady"

// steadyCluster starts two nodes on the engine at url, with history long
// enough to repair any gap of the steady tests, and one relay.v1
// subscriber of steadyTopic on each.
func steadyCluster(t *testing.T, url string) ([]*relaytest.Instance, []*tail) {
	cfg := server.Config{Memory: memorybroker.Config{History: []memorybroker.HistoryRule{{Size: 10_000, TTL: time.Minute, Bytes: 1 << 20}}}}
	nodes := relaytest.Cluster(t, 2, url, cfg)
	var tails []*tail
	for i, n := range nodes {
		c := dialV1(t, register(t, n, uint64(i)).URL)
		c.subscribe(map[string]any{"topics": []string{steadyTopic}})
		tails = append(tails, follow(c, steadyTopic))
	}
	return nodes, tails
}

func TestClusterLosesNothingWhenPubSubIsKilledOrPaused(t *testing.T) {
	redis := relaytest.StartRedis(t)
	nodes, tails := steadyCluster(t, redis.URL())
	acked := publishSteadily(t, nodes, steadyTopic, 1500, time.Millisecond, 0, func(i int) {
		switch i {
		case 200, 500, 800:
			if err := redis.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
				t.Errorf("CLIENT KILL TYPE pubsub: %v", err)
			}
		case 1100:
			if err := redis.Do("CLIENT", "PAUSE", "500", "ALL"); err != nil {
				t.Errorf("CLIENT PAUSE: %v", err)
			}
		}
	})
	for i, tl := range tails {
		tl.check(t, fmt.Sprint("subscriber on node ", i), acked)
	}
	// The faults happened: connections were replaced and gaps repaired.
	var st relay.EngineStats
	for _, n := range nodes {
		s := n.Server.Engine.(relay.StatsReporter).EngineStats()
		st.Reconnects += s.Reconnects
		st.Repaired += s.Repaired
	}
	t.Logf("engine: %+v", st)
	if st.Reconnects < 3 || st.Repaired == 0 {
		t.Fatalf("engine stats %+v: want the pub/sub kills to show as reconnects and repairs", st)
	}
}

// engineServer is a private Redis or NATS server a test stops and starts.
type engineServer interface {
	URL() string
	Stop()
	Start()
}

// privateEngines start a private server of each networked engine: Redis
// without persistence (a restart loses every key), NATS with its store
// (a restart keeps the streams).
var privateEngines = map[string]func(testing.TB) engineServer{
	"redis": func(t testing.TB) engineServer { return relaytest.StartRedis(t) },
	"nats":  func(t testing.TB) engineServer { return relaytest.StartNATS(t) },
}

func TestClusterComesBackAfterEngineRestarts(t *testing.T) {
	for name, start := range privateEngines {
		t.Run(name, func(t *testing.T) { testComesBack(t, start(t)) })
	}
}

func testComesBack(t *testing.T, engine engineServer) {
	nodes := relaytest.Cluster(t, 2, engine.URL(), server.Config{})
	a, b := nodes[0], nodes[1]
	const topic = "news"
	subA := dialV1(t, register(t, a, 1).URL)
	subA.subscribe(map[string]any{"topics": []string{topic}})
	subB := dialV1(t, register(t, b, 2).URL)
	subB.subscribe(map[string]any{"topics": []string{topic}})
	unused := register(t, a, 3)

	engine.Stop()
	start := time.Now()
	code, _, body := request(t, http.MethodPost, a.URL+"/publish", `{"topic":"news","message":"lost?"}`)
	if code != http.StatusServiceUnavailable || time.Since(start) > 4*time.Second {
		t.Fatalf("POST /publish with Redis down = %d %s after %s, want 503 within 2s", code, body, time.Since(start))
	}
	for _, n := range nodes {
		relaytest.Eventually(t, "/readyz 503", func() bool {
			code, _, body := request(t, http.MethodGet, n.URL+"/readyz", "")
			return code == http.StatusServiceUnavailable && strings.Contains(body, `"error"`)
		})
		if code, _, _ := request(t, http.MethodGet, n.URL+"/health", ""); code != http.StatusOK {
			t.Fatalf("/health with Redis down = %d, want 200 (it is a liveness check)", code)
		}
		if code, _, _ := request(t, http.MethodPost, n.URL+"/register", `{"user_id":5}`); code != http.StatusServiceUnavailable {
			t.Fatalf("POST /register with Redis down = %d, want 503", code)
		}
	}
	d := websocket.Dialer{Subprotocols: []string{"relay.v1"}}
	if _, resp, err := d.Dial(onNode(unused.URL, b), nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connecting with Redis down: %v (%v), want 503", err, resp)
	}
	subA.pingPong(1) // existing sockets stay open
	subB.pingPong(1)

	engine.Start()
	back := time.Now()
	for _, n := range nodes {
		relaytest.Eventually(t, "/readyz 200 again", func() bool {
			code, _, _ := request(t, http.MethodGet, n.URL+"/readyz", "")
			return code == http.StatusOK
		})
	}
	// No isolated node: a publish on each reaches both subscribers.
	publish(t, a, client.Publish{Topic: topic, Message: "from a"})
	publish(t, b, client.Publish{Topic: topic, Message: "from b"})
	for _, sub := range []*v1conn{subA, subB} {
		for _, want := range []string{"from a", "from b"} {
			if f := sub.expect("message"); f.Message != want {
				t.Fatalf("received %+v, want %q", f, want)
			}
		}
	}
	t.Logf("nodes served across the cluster %s after Redis came back", time.Since(back).Round(time.Millisecond))
	if time.Since(back) > 10*time.Second {
		t.Fatalf("took %s after Redis came back, want within 10s", time.Since(back))
	}
}

// A NATS restart during steady publishing: publishes fail while it is
// down, and every one that was acknowledged reaches every subscriber once,
// in order.
func TestClusterLosesNothingWhenNATSRestarts(t *testing.T) {
	nats := relaytest.StartNATS(t)
	nodes, tails := steadyCluster(t, nats.URL())
	// Down for about half a second (the restart and the nodes' reconnect):
	// the publishes meanwhile fail with 503.
	acked := publishSteadily(t, nodes, steadyTopic, 1500, time.Millisecond, 1000, func(i int) {
		switch i {
		case 400:
			nats.Stop()
		case 450:
			nats.Start()
		}
	})
	for i, tl := range tails {
		tl.check(t, fmt.Sprint("subscriber on node ", i), acked)
	}
}
