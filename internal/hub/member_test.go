package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/relay"
)

// TestMemberInfo: sockets that subscribe as a Member count as that member,
// not as their client's user; the first connection's Info is what the
// join, the member list and the leave carry, until the last connection of
// the member leaves.
func TestMemberInfo(t *testing.T) {
	h := hub.New(hub.Config{}, nil)
	ctx := context.Background()
	topic := "*pusher/app/presence-room"
	watcher := &recorder{}
	wc, err := h.Connect(0, watcher, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	record := &eventSub{events: &events}
	rc, _ := h.Connect(0, record, nil, false)
	if err := h.Subscribe(ctx, rc, record, []string{topic}, hub.SubscribeOptions{Presence: true, Checked: true, Member: &hub.Member{User: 1, Info: []byte("w")}}); err != nil {
		t.Fatal(err)
	}
	subscribe := func(sub relay.Subscriber, c *hub.Client, info string) hub.Subscribed {
		var got hub.Subscribed
		err := h.Subscribe(ctx, c, sub, []string{topic}, hub.SubscribeOptions{Presence: true, Checked: true,
			Member: &hub.Member{User: 7, Info: []byte(info)}, Ready: func(_ string, r hub.Subscribed) { got = r }})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := subscribe(watcher, wc, "first")
	if len(first.Members) != 1 || first.Members[0].User != 1 || string(first.Members[0].Info) != "w" {
		t.Fatalf("members before the first socket of 7 = %+v, want member 1 with its info", first.Members)
	}
	other := &recorder{}
	oc, _ := h.Connect(0, other, nil, false)
	second := subscribe(other, oc, "second")
	if len(second.Members) != 2 || string(second.Members[1].Info) != "first" || second.Members[1].Connections != 1 {
		t.Fatalf("members before the second socket of 7 = %+v, want 1 and 7 (info first, one connection)", second.Members)
	}
	h.Detach(wc, watcher)
	h.Detach(oc, other)
	if got, want := strings.Join(events, " "), "join 1 w join 7 first leave 7 first"; got != want {
		t.Fatalf("events = %q, want %q", got, want)
	}
	if p, _ := h.Presence(ctx, topic); len(p) != 1 || p[0].User != 1 {
		t.Fatalf("presence = %+v, want member 1 only", p)
	}
}

// TestCheckedTopics: Relay's topic rules refuse '*' unless the caller
// checked the names by its own protocol's rules.
func TestCheckedTopics(t *testing.T) {
	h := hub.New(hub.Config{}, nil)
	s := &recorder{}
	c, _ := h.Connect(0, s, nil, false)
	ctx := context.Background()
	if err := h.Subscribe(ctx, c, s, []string{"*pusher/a/b"}, hub.SubscribeOptions{}); !errors.Is(err, relay.ErrInvalid) {
		t.Fatalf("unchecked '*' topic: %v, want ErrInvalid", err)
	}
	if err := h.Subscribe(ctx, c, s, []string{"*pusher/a/b"}, hub.SubscribeOptions{Checked: true}); err != nil {
		t.Fatalf("checked topic: %v", err)
	}
	if n := h.Fanout(&relay.Message{Topic: "*pusher/a/b", Data: []byte("x")}); n != 1 {
		t.Fatalf("fan-out reached %d, want 1", n)
	}
}

type eventSub struct{ events *[]string }

func (e *eventSub) Deliver(d *relay.Delivery) bool {
	switch d.Msg.Kind {
	case relay.KindJoin:
		*e.events = append(*e.events, fmt.Sprintf("join %d %s", d.Msg.User, d.Msg.Data))
	case relay.KindLeave:
		*e.events = append(*e.events, fmt.Sprintf("leave %d %s", d.Msg.User, d.Msg.Data))
	}
	return true
}

func (e *eventSub) Close(relay.CloseReason) {}

// TestInternalTopicsOutsideLimit: internal topics do not count against
// MaxTopics, and unsubscribing them gives nothing back to the client's own
// topics: the limit holds after any number of internal comings and goings.
func TestInternalTopicsOutsideLimit(t *testing.T) {
	h := hub.New(hub.Config{MaxTopics: 2}, nil)
	s := &recorder{}
	c := h.ConnectForeign(s)
	ctx := context.Background()
	for i := range 5 {
		internal := fmt.Sprintf("*internal/%d", i)
		if err := h.Subscribe(ctx, c, s, []string{internal}, hub.SubscribeOptions{Checked: true, Internal: true}); err != nil {
			t.Fatal(err)
		}
		if err := h.Unsubscribe(c, s, []string{internal}); err != nil {
			t.Fatal(err)
		}
	}
	h.Subscribe(ctx, c, s, []string{"*keep"}, hub.SubscribeOptions{Checked: true, Internal: true})
	for _, topic := range []string{"a", "b"} {
		if err := h.Subscribe(ctx, c, s, []string{topic}, hub.SubscribeOptions{}); err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
	}
	if err := h.Subscribe(ctx, c, s, []string{"c"}, hub.SubscribeOptions{}); !errors.Is(err, relay.ErrLimit) {
		t.Fatalf("a third topic with MaxTopics 2: %v, want ErrLimit", err)
	}
}
