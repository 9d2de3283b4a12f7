package pusher_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/protocol/pusher"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

func hookedApps(t *testing.T, sink *hookSink) *pusher.Apps {
	hs := httptest.NewServer(sink)
	t.Cleanup(hs.Close)
	app := testApp
	app.WebhookURL = hs.URL
	set, err := pusher.NewApps([]pusher.App{app})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestRefusedSubscribeNoWebhooks: a subscription the hub refuses (here
// -max-topics) sends no channel_occupied or channel_vacated.
func TestRefusedSubscribeNoWebhooks(t *testing.T) {
	sink := &hookSink{t: t}
	in := relaytest.Start(t, server.Config{Pusher: hookedApps(t, sink), PusherVacateDelay: 100 * time.Millisecond,
		Hub: hub.Config{MaxTopics: 1}})
	a := connect(t, in)
	if f := a.subscribe("a"); f.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("%+v", f)
	}
	f := a.subscribe("b")
	t.Logf("second subscribe answered %s %s", f.Event, f.Data)
	time.Sleep(800 * time.Millisecond)
	t.Logf("webhooks: %q", sink.got())
	for _, e := range sink.got() {
		if strings.HasSuffix(e, " b") {
			t.Errorf("webhook %q for channel b, which no socket was ever subscribed to", e)
		}
	}
}

// TestSubscribeCloseRace: sockets that close while their subscribe is
// still running never take the channel's occupancy down twice, so no
// channel_vacated comes while another socket is subscribed. Found by review.
func TestSubscribeCloseRace(t *testing.T) {
	sink := &hookSink{t: t}
	in := relaytest.Start(t, server.Config{Pusher: hookedApps(t, sink), PusherVacateDelay: 50 * time.Millisecond})
	keeper := connect(t, in)
	keeper.subscribe("room")
	sink.waitFor(t, "channel_occupied room")
	for i := 0; i < 3000; i++ {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+in.Addr+"/app/"+testApp.Key+"?protocol=7", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.ReadMessage() // connection_established
		c.WriteJSON(map[string]any{"event": "pusher:subscribe", "data": map[string]string{"channel": "room"}})
		c.UnderlyingConn().Close()
		if i%200 == 0 {
			time.Sleep(100 * time.Millisecond)
			if got := sink.got(); len(got) > 1 {
				t.Fatalf("after %d quick sockets, keeper still subscribed, webhooks: %q", i+1, got)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	if got := sink.got(); len(got) > 1 {
		t.Fatalf("keeper still subscribed, webhooks: %q", got)
	}
}

// TestShutdownSendsLeaves: a node that stops gracefully still sends the
// member_removed and channel_vacated webhooks of the users and channels
// only it held (its engine reports them as it stops, and no other node
// would send them). Found by review.
func TestShutdownSendsLeaves(t *testing.T) {
	for name, url := range relaytest.Engines {
		t.Run(name, func(t *testing.T) {
			sink := &hookSink{t: t}
			set := hookedApps(t, sink)
			nodes := relaytest.Cluster(t, 2, url, server.Config{Pusher: set, PusherVacateDelay: 100 * time.Millisecond})
			a := connect(t, nodes[0])
			presence(t, a, "presence-x", "u1", "{}")
			waitSet(t, sink, []string{"channel_occupied presence-x", "member_added presence-x u1"})
			if err := nodes[0].Stop(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(4 * time.Second) // well past heartbeats' node TTL (2s) too
			t.Logf("webhooks after node 0 stopped: %q", sink.got())
			waitSet(t, sink, []string{"channel_occupied presence-x", "member_added presence-x u1", "member_removed presence-x u1", "channel_vacated presence-x"})
		})
	}
}
