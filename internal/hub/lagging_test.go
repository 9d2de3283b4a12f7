package hub_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/relay"
)

// streamRecorder is a Subscriber that keeps every message it is given, one
// line each: "e:3" for a publish, "reset e:2", "user 1" for a message to
// one user.
type streamRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *streamRecorder) Deliver(d *relay.Delivery) bool {
	m := d.Msg
	var s string
	switch {
	case m.Kind == relay.KindReset:
		s = fmt.Sprintf("reset %s:%d", m.Epoch, m.Offset)
	case m.Kind == relay.KindJoin || m.Kind == relay.KindLeave:
		return true
	case m.Offset == 0:
		s = fmt.Sprintf("user %d", m.User)
	default:
		s = fmt.Sprintf("%s:%d", m.Epoch, m.Offset)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
	return true
}

func (r *streamRecorder) Close(relay.CloseReason) {}

func (r *streamRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, " ")
}

// laggingHistory is an engine whose history is ahead of its live
// fan-out: it holds offsets 1..5 of epoch "e" while the live messages it
// fans out have only reached 3. during, if set, runs while the history is
// read (after the subscriber joined, before it goes live).
type laggingHistory struct {
	during func()
}

func (l laggingHistory) History(_ context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	if l.during != nil {
		l.during()
	}
	page := relay.HistoryPage{Latest: relay.Position{Offset: 5, Epoch: "e"}, Complete: true}
	for o := since + 1; o <= 5 && since < 5; o++ {
		page.Messages = append(page.Messages, live("e", o))
	}
	return page, nil
}

func live(epoch string, offset uint64) *relay.Message {
	return &relay.Message{Topic: "t", Offset: offset, Epoch: epoch, Data: fmt.Appendf(nil, "m%d", offset)}
}

// subscribeLagging subscribes a new socket to "t" with since (nil: no
// recovery) on a hub whose live fan-out has reached offset 3, and returns
// the hub, the socket and what Subscribe reported.
func subscribeLagging(t *testing.T, since map[string]relay.Position, during func(h *hub.Hub)) (*hub.Hub, *streamRecorder, hub.Subscribed) {
	t.Helper()
	h := hub.New(hub.Config{}, nil)
	ctx := context.Background()
	for o := uint64(1); o <= 3; o++ {
		h.Fanout(live("e", o)) // nobody on "t" yet
	}
	id, err := h.Register(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	rec := &streamRecorder{}
	c, err := h.Attach(ctx, id, rec, false)
	if err != nil {
		t.Fatal(err)
	}
	hist := laggingHistory{}
	if during != nil {
		hist.during = func() { during(h) }
	}
	var got hub.Subscribed
	opts := hub.SubscribeOptions{History: hist, Since: since, Ready: func(_ string, r hub.Subscribed) { got = r }}
	if err := h.Subscribe(ctx, c, rec, []string{"t"}, opts); err != nil {
		t.Fatal(err)
	}
	return h, rec, got
}

// TestLaggingEngineNeverRepeatsRecoveredOffsets proves that a member never
// delivers an offset at or below the position it recovered to, although
// the engine's live fan-out delivers those offsets after the history read
// (during it, or after Subscribe returned).
func TestLaggingEngineNeverRepeatsRecoveredOffsets(t *testing.T) {
	since := map[string]relay.Position{"t": {Offset: 2, Epoch: "e"}}
	for _, tt := range []struct {
		name      string
		since     map[string]relay.Position
		during    []uint64 // live offsets fanned out while history is read
		after     []uint64 // live offsets fanned out after Subscribe
		recovered bool
		want      string
	}{
		{"recovered, live after subscribe", since, nil, []uint64{4, 5, 6}, true, "e:3 e:4 e:5 e:6"},
		{"recovered, live while recovering", since, []uint64{4}, []uint64{5, 6}, true, "e:3 e:4 e:5 e:6"},
		{"recovered, all live while recovering", since, []uint64{4, 5, 6}, nil, true, "e:3 e:4 e:5 e:6"},
		{"recovered, live goes on past the floor", since, nil, []uint64{4, 5, 6, 7}, true, "e:3 e:4 e:5 e:6 e:7"},
		{"no since: from the latest", nil, []uint64{4}, []uint64{5, 6}, false, "e:6"},
		{"since of another epoch", map[string]relay.Position{"t": {Offset: 2, Epoch: "old"}}, nil, []uint64{4, 5, 6}, false, "e:6"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var during func(*hub.Hub)
			if tt.during != nil {
				during = func(h *hub.Hub) {
					for _, o := range tt.during {
						h.Fanout(live("e", o))
					}
				}
			}
			h, rec, got := subscribeLagging(t, tt.since, during)
			if got.Recovered != tt.recovered || got.Position != (relay.Position{Offset: 5, Epoch: "e"}) {
				t.Fatalf("Subscribed = %+v, want recovered %v at e:5", got, tt.recovered)
			}
			for _, o := range tt.after {
				h.Fanout(live("e", o))
			}
			if got := rec.String(); got != tt.want {
				t.Errorf("delivered %q, want %q", got, tt.want)
			}
		})
	}
}

// TestFloorDoesNotHideNewEpoch: the floor is a position in one epoch; a
// live message of another epoch is a new stream and is delivered, even at
// an offset below the floor.
func TestFloorDoesNotHideNewEpoch(t *testing.T) {
	since := map[string]relay.Position{"t": {Offset: 2, Epoch: "e"}}
	h, rec, _ := subscribeLagging(t, since, nil)
	h.Fanout(live("e", 4)) // lagging repeat: dropped
	h.Fanout(live("f", 1))
	h.Fanout(live("f", 2))
	if got, want := rec.String(), "e:3 e:4 e:5 f:1 f:2"; got != want {
		t.Errorf("delivered %q, want %q", got, want)
	}
}

// TestFloorHidesStaleReset: a reset at or below the recovered position
// tells the socket nothing it lacks (its replay went further) and is not
// delivered; a reset past it is.
func TestFloorHidesStaleReset(t *testing.T) {
	since := map[string]relay.Position{"t": {Offset: 2, Epoch: "e"}}
	h, rec, _ := subscribeLagging(t, since, nil)
	for _, o := range []uint64{3, 5} {
		h.Fanout(&relay.Message{Kind: relay.KindReset, Topic: "t", Offset: o, Epoch: "e"})
	}
	if got, want := rec.String(), "e:3 e:4 e:5"; got != want {
		t.Fatalf("delivered %q, want %q: a reset at or below e:5 must not be delivered", got, want)
	}
	h.Fanout(&relay.Message{Kind: relay.KindReset, Topic: "t", Offset: 8, Epoch: "e"})
	h.Fanout(live("e", 9))
	if got, want := rec.String(), "e:3 e:4 e:5 reset e:8 e:9"; got != want {
		t.Errorf("delivered %q, want %q", got, want)
	}
}

// TestFloorLetsUserMessagesThrough: a message to one user has no offset
// and is not held back by the floor.
func TestFloorLetsUserMessagesThrough(t *testing.T) {
	since := map[string]relay.Position{"t": {Offset: 2, Epoch: "e"}}
	h, rec, _ := subscribeLagging(t, since, nil)
	h.Fanout(&relay.Message{Topic: "t", User: 1, HasUser: true, Data: []byte("psst")})
	h.Fanout(live("e", 5)) // the floor still holds
	h.Fanout(live("e", 6))
	if got, want := rec.String(), "e:3 e:4 e:5 user 1 e:6"; got != want {
		t.Errorf("delivered %q, want %q", got, want)
	}
}
