package pusher_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/protocol/pusher"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// hookSink receives webhooks, checks their signature, and fails the
// first failFirst requests with 500 (to prove the retry).
type hookSink struct {
	t         *testing.T
	mu        sync.Mutex
	events    []string
	requests  int
	failFirst int
	bad       int
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	if err := pusher.VerifyWebhook(testApp.Credentials, r.Header.Get("X-Pusher-Key"), r.Header.Get("X-Pusher-Signature"), body); err != nil {
		h.bad++
		w.WriteHeader(401)
		return
	}
	if h.requests <= h.failFirst {
		w.WriteHeader(500)
		return
	}
	var b struct {
		TimeMS int64 `json:"time_ms"`
		Events []struct {
			Name     string `json:"name"`
			Channel  string `json:"channel"`
			UserID   string `json:"user_id"`
			Event    string `json:"event"`
			Data     string `json:"data"`
			SocketID string `json:"socket_id"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil || b.TimeMS == 0 {
		h.t.Errorf("webhook body %s: %v", body, err)
	}
	for _, e := range b.Events {
		s := e.Name + " " + e.Channel
		if e.UserID != "" {
			s += " " + e.UserID
		}
		if e.Event != "" {
			s += " " + e.Event + " " + e.Data
		}
		h.events = append(h.events, s)
	}
}

func (h *hookSink) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

func (h *hookSink) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := h.got()
		if strings.Join(got, "|") == strings.Join(want, "|") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startHooked(t *testing.T, sink *hookSink, delay time.Duration) *relaytest.Instance {
	t.Helper()
	hs := httptest.NewServer(sink)
	t.Cleanup(hs.Close)
	app := testApp
	app.WebhookURL = hs.URL
	set, err := pusher.NewApps([]pusher.App{app})
	if err != nil {
		t.Fatal(err)
	}
	return relaytest.Start(t, server.Config{Pusher: set, PusherVacateDelay: delay, Metrics: true})
}

func TestWebhooks(t *testing.T) {
	sink := &hookSink{t: t, failFirst: 1}
	in := startHooked(t, sink, 300*time.Millisecond)
	a := connect(t, in)
	a.subscribe("news")
	sink.waitFor(t, "channel_occupied news") // after one 500 and a retry
	// A second subscriber, and a reconnect within the delay: nothing.
	b := connect(t, in)
	b.subscribe("news")
	b.c.Close()
	c := connect(t, in)
	a.c.Close()
	c.subscribe("news")
	time.Sleep(600 * time.Millisecond)
	sink.waitFor(t, "channel_occupied news")
	c.send("pusher:unsubscribe", map[string]string{"channel": "news"})
	sink.waitFor(t, "channel_occupied news", "channel_vacated news")

	// Presence: one member_added per user, member_removed after its last
	// socket; client events; cache misses.
	p1, p2, q := connect(t, in), connect(t, in), connect(t, in)
	presence(t, p1, "presence-room", "u1", "{}")
	presence(t, p2, "presence-room", "u1", "{}")
	presence(t, q, "presence-room", "u2", "{}")
	p1.expect("pusher_internal:member_added")
	q.c.WriteJSON(map[string]any{"event": "client-hi", "channel": "presence-room", "data": map[string]int{"n": 1}})
	p1.expect("client-hi")
	p1.c.Close()
	p2.c.Close()
	q.subscribe("cache-x")
	base := []string{"channel_occupied news", "channel_vacated news"}
	want := append(base, "channel_occupied presence-room", "member_added presence-room u1", "member_added presence-room u2",
		`client_event presence-room u2 client-hi {"n":1}`, "member_removed presence-room u1", "channel_occupied cache-x", "cache_miss cache-x")
	waitSet(t, sink, want)
	if sink.bad != 0 {
		t.Fatalf("%d webhooks with a bad signature", sink.bad)
	}
	resp, err := http.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	if line := fmt.Sprintf("relay_pusher_webhook_events_sent_total %d\n", len(want)); !strings.Contains(string(metrics), line) {
		t.Fatalf("/metrics lacks %q:\n%s", line, metrics)
	}
}

// waitSet waits for exactly the events of want, in any order: events from
// separate transitions are not ordered with each other.
func waitSet(t *testing.T, sink *hookSink, want []string) {
	t.Helper()
	count := func(l []string) map[string]int {
		m := map[string]int{}
		for _, s := range l {
			m[s]++
		}
		return m
	}
	w := count(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := sink.got()
		if fmt.Sprint(count(got)) == fmt.Sprint(w) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook events:\n%s\nwant (any order):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWebhooksAcrossNodes: two nodes on each networked engine send each
// webhook once: the channel is occupied once and vacated once though its
// subscribers are on both nodes, and a user with sockets on both is added
// and removed once.
func TestWebhooksAcrossNodes(t *testing.T) {
	for name, url := range relaytest.Engines {
		t.Run(name, func(t *testing.T) {
			sink := &hookSink{t: t}
			hs := httptest.NewServer(sink)
			t.Cleanup(hs.Close)
			app := testApp
			app.WebhookURL = hs.URL
			set, _ := pusher.NewApps([]pusher.App{app})
			nodes := relaytest.Cluster(t, 2, url, server.Config{Pusher: set, PusherVacateDelay: 200 * time.Millisecond})
			a, b := connect(t, nodes[0]), connect(t, nodes[1])
			presence(t, a, "presence-x", "u1", "{}")
			presence(t, b, "presence-x", "u1", "{}")
			waitSet(t, sink, []string{"channel_occupied presence-x", "member_added presence-x u1"})
			a.c.Close()
			time.Sleep(500 * time.Millisecond) // past the vacate delay: b still holds the channel
			b.c.Close()
			waitSet(t, sink, []string{"channel_occupied presence-x", "member_added presence-x u1", "member_removed presence-x u1", "channel_vacated presence-x"})
			time.Sleep(500 * time.Millisecond)
			if got := sink.got(); len(got) != 4 {
				t.Fatalf("webhook events after the last socket: %v, want 4", got)
			}
		})
	}
}
