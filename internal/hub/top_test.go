package hub

import (
	"fmt"
	"slices"
	"testing"

	"github.com/relayhq/relay/internal/relay"
)

func TestTopTopics(t *testing.T) {
	h := New(Config{MaxTopics: 200}, nil)
	// Topic t<i> gets i subscribers (users 1..i, user 1 twice on t5).
	for i := 1; i <= 12; i++ {
		for u := 1; u <= i; u++ {
			c, s := attached(t, h, relay.UserID(u))
			if err := h.Subscribe(ctx, c, s, []string{fmt.Sprintf("t%02d", i)}, SubscribeOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, s := attached(t, h, 1)
	if err := h.Subscribe(ctx, c, s, []string{"t05"}, SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	top, topics := h.TopTopics(3)
	// Every client also holds the default topic "cats": 79 connections
	// of 12 users.
	want := []TopicCount{{"cats", 79, 12}, {"t12", 12, 12}, {"t11", 11, 11}}
	if !slices.Equal(top, want) {
		t.Errorf("TopTopics(3) = %v, want %v", top, want)
	}
	if topics != 13 {
		t.Errorf("topics = %d, want 13", topics)
	}
	all, _ := h.TopTopics(1000)
	if len(all) != 13 || all[0].Topic != "cats" {
		t.Fatalf("TopTopics(1000) = %v", all)
	}
	for _, tc := range all {
		if tc.Topic == "t05" && (tc.Subscribers != 6 || tc.Users != 5) {
			t.Errorf("t05 = %+v, want 6 subscribers and 5 users", tc)
		}
	}
	if !slices.IsSortedFunc(all, func(a, b TopicCount) int { return b.Subscribers - a.Subscribers }) {
		t.Errorf("not sorted: %v", all)
	}
	if top, _ := h.TopTopics(0); len(top) != 0 {
		t.Errorf("TopTopics(0) = %v", top)
	}
	// Ties rank by name.
	h2 := New(Config{}, nil)
	for _, name := range []string{"b", "a", "c"} {
		c, s := attached(t, h2, 1)
		if err := h2.Subscribe(ctx, c, s, []string{name}, SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if top, _ := h2.TopTopics(3); len(top) != 3 || top[0].Topic != "cats" || top[1].Topic != "a" || top[2].Topic != "b" || top[1].Subscribers != 1 {
		t.Errorf("ties: %v", top)
	}
}
