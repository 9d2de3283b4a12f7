package pusher_test

import (
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relaytest"
)

// TestPresenceResubscribe: a second subscribe of the same socket changes
// nothing; unsubscribe and resubscribe give one member_removed, then one
// member_added with the new info, on every engine.
func TestPresenceResubscribe(t *testing.T) {
	onEachEngine(t, func(t *testing.T, in *relaytest.Instance) {
		o := connect(t, in)
		presence(t, o, "presence-r", "o", "{}")
		x := connect(t, in)
		f1 := presence(t, x, "presence-r", "x", `{"n":1}`)
		f2 := presence(t, x, "presence-r", "x2", `{"n":2}`)
		if f1.Event != "pusher_internal:subscription_succeeded" || f2.Event != "pusher_internal:subscription_succeeded" {
			t.Fatalf("subscribes: %+v %+v", f1, f2)
		}
		if f := o.next(); f.Event != "pusher_internal:member_added" || f.str() != `{"user_id":"x","user_info":{"n":1}}` {
			t.Fatalf("o got %+v", f)
		}
		o.quiet(300 * time.Millisecond)
		x.send("pusher:unsubscribe", map[string]string{"channel": "presence-r"})
		if f := o.next(); f.Event != "pusher_internal:member_removed" || f.str() != `{"user_id":"x"}` {
			t.Fatalf("o after unsubscribe: %+v", f)
		}
		presence(t, x, "presence-r", "x", `{"n":3}`)
		if f := o.next(); f.Event != "pusher_internal:member_added" || f.str() != `{"user_id":"x","user_info":{"n":3}}` {
			t.Fatalf("o after resubscribe: %+v", f)
		}
		code, body := api(t, in, testApp.Credentials, "GET", "/apps/app1/channels/presence-r/users", nil, nil)
		if code != 200 || !strings.Contains(body, `{"id":"x"}`) || !strings.Contains(body, `{"id":"o"}`) || strings.Count(body, `"id"`) != 2 {
			t.Fatalf("users: %d %s", code, body)
		}
	})
}
