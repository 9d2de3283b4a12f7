package pusher_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/protocol/pusher"
	"github.com/relayhq/relay/internal/relaytest"
)

// TestMemberEventsAfterSucceeded: no presence event reaches a subscribing
// socket before its pusher_internal:subscription_succeeded (pusher-js
// rebuilds its member list from that frame's hash, so an event before it
// would lose or resurrect a member). Found by review.
func TestMemberEventsAfterSucceeded(t *testing.T) {
	onEachEngine(t, func(t *testing.T, in *relaytest.Instance) {
		var stop atomic.Bool
		done := make(chan struct{})
		go func() { // churn: members join and leave all the time
			defer close(done)
			ys := make([]*sock, 8)
			for i := range ys {
				ys[i] = connect(t, in)
			}
			for n := 0; !stop.Load(); n++ {
				y := ys[n%len(ys)]
				id := fmt.Sprintf("y%d", n%len(ys))
				data := `{"user_id":"` + id + `"}`
				y.send("pusher:subscribe", map[string]string{"channel": "presence-r", "auth": pusher.ChannelAuth(testApp.Credentials, y.socketID, "presence-r", data), "channel_data": data})
				time.Sleep(200 * time.Microsecond)
				y.send("pusher:unsubscribe", map[string]string{"channel": "presence-r"})
			}
		}()
		bad := 0
		for i := 0; i < 300 && bad == 0; i++ {
			x := connect(t, in)
			data := `{"user_id":"x"}`
			x.send("pusher:subscribe", map[string]string{"channel": "presence-r", "auth": pusher.ChannelAuth(testApp.Credentials, x.socketID, "presence-r", data), "channel_data": data})
			for {
				f := x.next()
				if f.Event == "pusher_internal:subscription_succeeded" {
					break
				}
				if f.Event == "pusher_internal:member_added" || f.Event == "pusher_internal:member_removed" {
					t.Logf("iteration %d: %s %s before subscription_succeeded", i, f.Event, f.str())
					bad++
				}
			}
			x.c.Close()
		}
		stop.Store(true)
		<-done
		if bad > 0 {
			t.Errorf("member events before subscription_succeeded")
		}
	})
}
