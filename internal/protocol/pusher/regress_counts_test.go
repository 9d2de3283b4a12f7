package pusher_test

import (
	"strings"
	"testing"
	"time"
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
