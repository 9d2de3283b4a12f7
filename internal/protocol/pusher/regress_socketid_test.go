package pusher_test

import (
	"strings"
	"testing"
)

// TestLongSocketIDRefused: a socket_id longer than Relay's own (which a
// browser can send through Laravel's toOthers() and X-Socket-ID) is
// refused with 400, not published to nobody with a 200. Found by review.
func TestLongSocketIDRefused(t *testing.T) {
	in := start(t)
	a := connect(t, in)
	a.subscribe("orders")
	long := strings.Repeat("1", 70) + ".1"
	status, body := api(t, in, testApp.Credentials, "POST", "/apps/app1/events", nil,
		map[string]any{"name": "created", "channel": "orders", "data": `{"n":1}`, "socket_id": long})
	if status != 400 {
		t.Fatalf("trigger with a 72-byte socket_id: %d %s, want 400", status, body)
	}
	trigger(t, in, map[string]any{"name": "created", "channel": "orders", "data": `{"n":2}`})
	if f := a.expect("created"); f.str() != `{"n":2}` {
		t.Fatalf("event %+v, want the second", f)
	}
}
