package pusher_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/protocol/pusher"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// TestCountEventsOutOfHistory: subscription_count events take no place in
// the channel's stream.
func TestCountEventsOutOfHistory(t *testing.T) {
	in := start(t)
	trigger(t, in, map[string]any{"name": "e", "channel": "news", "data": `1`})
	for i := 0; i < 3; i++ {
		s := connect(t, in)
		s.subscribe("news")
		time.Sleep(600 * time.Millisecond)
		s.c.Close()
		time.Sleep(600 * time.Millisecond)
	}
	_, body := api(t, in, testApp.Credentials, "GET", "/apps/app1/channels/news/history", nil, nil)
	if !strings.Contains(body, `"offset":1}`) || strings.Count(body, `"offset"`) != 2 {
		t.Fatalf("history after one event and three subscribers: %s, want offset 1", body)
	}
}

// metric returns the value of the unlabelled metric name on in's /metrics.
func metric(t *testing.T, in *relaytest.Instance, name string) float64 {
	t.Helper()
	resp, err := http.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// TestCountEventsCreateNoStreams: subscribing to channels, which anyone
// holding the app key may do, must not create topic streams through their
// subscription_count events (a stored publish made one per channel, kept
// for an hour: 3,500 new channels a second from one address reached the
// stream cap and evicted real topics' history). The events still reach
// the subscribers.
func TestCountEventsCreateNoStreams(t *testing.T) {
	set, err := pusher.NewApps([]pusher.App{testApp})
	if err != nil {
		t.Fatal(err)
	}
	in := relaytest.Start(t, server.Config{Pusher: set, Metrics: true})
	trigger(t, in, map[string]any{"name": "e", "channel": "legit", "data": `1`})
	before := metric(t, in, "relay_streams")
	s := connect(t, in)
	s.counts = true
	const churned = 200
	for i := range churned {
		ch := "churn-" + strconv.Itoa(i)
		s.subscribe(ch)
		s.send("pusher:unsubscribe", map[string]any{"channel": ch})
	}
	s.subscribe("kept")
	if f := s.expect("pusher_internal:subscription_count"); f.Channel != "kept" || f.str() != `{"subscription_count":1}` {
		t.Fatalf("count event %+v, want kept's count of 1", f)
	}
	time.Sleep(700 * time.Millisecond) // every churned channel's count is due by now
	if after := metric(t, in, "relay_streams"); after != before {
		t.Fatalf("relay_streams went from %v to %v after subscribes to %d channels, want no new stream", before, after, churned+1)
	}
	_, body := api(t, in, testApp.Credentials, "GET", "/apps/app1/channels/legit/history", nil, nil)
	if strings.Count(body, `"offset"`) != 2 {
		t.Fatalf("legit's history after the churn: %s, want its one event", body)
	}
}
