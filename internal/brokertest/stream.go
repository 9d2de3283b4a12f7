package brokertest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relay"
)

// testOffsets: publishes get offsets 1, 2, 3… per topic, from whichever
// node, in one epoch; receipts and messages carry them.
func testOffsets(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	x, y := newTopic(t), newTopic(t)
	var epoch string
	for i := 1; i <= 5; i++ {
		n := c.nodes[i%len(c.nodes)]
		r := c.publish(t, ctx, n, &relay.Message{Topic: x, Data: fmt.Appendf(nil, "x%d", i)}, "")
		if i == 1 {
			epoch = r.Epoch
		}
		if want := (relay.Position{Offset: uint64(i), Epoch: epoch}); r.Position != want || r.Duplicate {
			t.Errorf("%s.Publish(%q #%d) = %+v, want position %+v, not a duplicate", n.name, x, i, r, want)
		}
		if i == 2 { // another topic's stream starts at 1 whatever x's holds
			for j := 1; j <= 3; j++ {
				r := c.publish(t, ctx, c.b(), &relay.Message{Topic: y, Data: fmt.Appendf(nil, "y%d", j)}, "")
				if r.Offset != uint64(j) {
					t.Errorf("%s.Publish(%q #%d).Offset = %d, want %d", c.b().name, y, j, r.Offset, j)
				}
			}
		}
	}
	for _, n := range c.nodes {
		if p := history(t, ctx, n, x, 0, 0); p.Latest != (relay.Position{Offset: 5, Epoch: epoch}) {
			t.Errorf("%s.History(%q, 0, 0).Latest = %+v, want {5 %s}", n.name, x, p.Latest, epoch)
		}
		if p := history(t, ctx, n, y, 0, 0); p.Latest.Offset != 3 {
			t.Errorf("%s.History(%q, 0, 0).Latest.Offset = %d, want 3", n.name, y, p.Latest.Offset)
		}
	}
}

// testFreshTopic: a topic nobody published to reads as offset 0 with the
// epoch its first message will carry, the same on every node.
func testFreshTopic(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	topic := newTopic(t)
	p := history(t, ctx, a, topic, 0, 0)
	if len(p.Messages) != 0 || p.Latest.Offset != 0 || !p.Complete || p.Latest.Epoch == "" {
		t.Fatalf("%s.History(%q, 0, 0) before any publish = %d messages, latest %+v, complete %v; want 0 messages, offset 0 with an epoch, complete",
			a.name, topic, len(p.Messages), p.Latest, p.Complete)
	}
	epoch := p.Latest.Epoch
	for _, n := range []node{a, b} { // asking again, here or elsewhere, gives the same epoch
		if p := history(t, ctx, n, topic, 0, 0); p.Latest != (relay.Position{Epoch: epoch}) || !p.Complete {
			t.Errorf("%s.History(%q, 0, 0) again = latest %+v, complete %v; want {0 %s}, complete", n.name, topic, p.Latest, p.Complete, epoch)
		}
	}
	r := c.publish(t, ctx, b, &relay.Message{Topic: topic, Data: []byte("first")}, "")
	if want := (relay.Position{Offset: 1, Epoch: epoch}); r.Position != want {
		t.Errorf("%s.Publish(%q) after %s.History = %+v, want %+v (the epoch readers were told)", b.name, topic, a.name, r.Position, want)
	}
	if p := history(t, ctx, a, topic, 0, 0); p.Latest != r.Position || !slices.Equal(pageOffsets(p), []uint64{1}) || !p.Complete {
		t.Errorf("%s.History(%q, 0, 0) after the publish = offsets %v, latest %+v, complete %v; want [1], %+v, complete",
			a.name, topic, pageOffsets(p), p.Latest, p.Complete, r.Position)
	}
}

// testHistoryPaging: history keeps the default rule's newest messages and
// pages through them; Complete says whether anything after since is gone.
func testHistoryPaging(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	topic := newTopic(t)
	kept := uint64(memorybroker.DefaultHistory.Size)
	last := kept + 20
	oldest := last - kept + 1
	var epoch string
	for i := uint64(1); i <= last; i++ {
		r := c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: fmt.Appendf(nil, "m%d", i)}, "")
		if r.Offset != i {
			t.Fatalf("%s.Publish(%q #%d).Offset = %d, want %d", a.name, topic, i, r.Offset, i)
		}
		epoch = r.Epoch
	}
	tests := []struct {
		since       uint64
		limit       int
		first, last uint64 // the offsets returned; first > last: none
		complete    bool
		future      bool // Complete is not checked
	}{
		{0, 0, oldest, last, false, false},                // the first messages were trimmed
		{oldest - 2, 0, oldest, last, false, false},       // oldest-1 was trimmed
		{oldest - 1, 0, oldest, last, true, false},        // exactly what is kept
		{oldest - 1, 10, oldest, oldest + 9, true, false}, // a page
		{50, 5, 51, 55, true, false},
		{last - 5, 0, last - 4, last, true, false},
		{last, 0, 1, 0, true, false},        // up to date
		{last + 1, 0, 1, 0, false, true},    // from the future
		{last + 1000, 0, 1, 0, false, true}, // far in the future
	}
	for _, n := range []node{a, b} {
		for _, tt := range tests {
			p := history(t, ctx, n, topic, tt.since, tt.limit)
			got, want := pageOffsets(p), span(tt.first, tt.last)
			if !slices.Equal(got, want) || p.Latest != (relay.Position{Offset: last, Epoch: epoch}) || !tt.future && p.Complete != tt.complete {
				t.Errorf("%s.History(%q, %d, %d) = offsets %v, latest %+v, complete %v; want %v, {%d %s}, complete %v",
					n.name, topic, tt.since, tt.limit, got, p.Latest, p.Complete, want, last, epoch, tt.complete)
			}
			for _, m := range p.Messages {
				if m.Topic != topic || m.Epoch != epoch || string(m.Data) != fmt.Sprintf("m%d", m.Offset) || m.Kind != relay.KindPublish {
					t.Fatalf("%s.History(%q, %d, %d) holds %+v, want topic %q, epoch %s, data m%d", n.name, topic, tt.since, tt.limit, *m, topic, epoch, m.Offset)
				}
			}
		}
	}
	// Walking pages from the oldest kept reaches the newest, gapless.
	var walked runs
	for since, i := oldest-1, 0; i <= int(kept); i++ {
		p := history(t, ctx, b, topic, since, 7)
		if !p.Complete {
			t.Fatalf("%s.History(%q, %d, 7).Complete = false, want true", b.name, topic, since)
		}
		if len(p.Messages) == 0 {
			break
		}
		walked = append(walked, pageOffsets(p)...)
		since = p.Messages[len(p.Messages)-1].Offset
	}
	if want := span(oldest, last); !slices.Equal(walked, want) {
		t.Errorf("History pages of 7 from %d = %v, want %v", oldest-1, walked, want)
	}
}

// testIdempotency: a repeated key answers the first publish's receipt and
// stores nothing; the key is scoped to the topic and the audience.
func testIdempotency(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	topic, other := newTopic(t), newTopic(t)
	watch(t, ctx, b, topic)
	key := "key-" + string(newID())

	first := c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("first")}, key)
	if first.Duplicate || first.Offset != 1 {
		t.Fatalf("%s.Publish(%q, key) = %+v, want offset 1, not a duplicate", a.name, topic, first)
	}
	again := c.publish(t, ctx, b, &relay.Message{Topic: topic, Data: []byte("again")}, key)
	if !again.Duplicate || again.Position != first.Position {
		t.Errorf("%s.Publish(%q, same key) = %+v, want a duplicate at %+v", b.name, topic, again, first.Position)
	}
	if p := history(t, ctx, a, topic, 0, 0); !slices.Equal(pageOffsets(p), []uint64{1}) || string(p.Messages[0].Data) != "first" {
		t.Fatalf("%s.History(%q) after a duplicate = offsets %v, want [1] holding \"first\"", a.name, topic, pageOffsets(p))
	}
	if r := c.publish(t, ctx, a, &relay.Message{Topic: other, Data: []byte("other")}, key); r.Duplicate || r.Offset != 1 {
		t.Errorf("%s.Publish(%q, same key, another topic) = %+v, want offset 1, not a duplicate", a.name, other, r)
	}
	for i, tt := range []struct {
		user relay.UserID
		dup  bool
	}{{7, false}, {7, true}, {8, false}} {
		n := c.nodes[i%len(c.nodes)]
		m := &relay.Message{Topic: topic, User: tt.user, HasUser: true, Data: fmt.Appendf(nil, "user %d", tt.user)}
		if r := c.publish(t, ctx, n, m, key); r.Duplicate != tt.dup {
			t.Errorf("%s.Publish(%q for user %d, same key) #%d = %+v, want Duplicate %v", n.name, topic, tt.user, i+1, r, tt.dup)
		}
	}
	if r := c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("next")}, key+"-2"); r.Duplicate || r.Offset != 2 {
		t.Errorf("%s.Publish(%q, another key) after the duplicates = %+v, want offset 2, not a duplicate", a.name, topic, r)
	}
	if r := c.publish(t, ctx, b, &relay.Message{Topic: topic, Data: []byte("unkeyed")}, ""); r.Offset != 3 {
		t.Errorf("%s.Publish(%q, no key) = offset %d, want 3", b.name, topic, r.Offset)
	}
	// b saw each publish once: offsets 1 to 3 and one message per user.
	b.rec.WaitMessages(t, topic, 5)
	wait(c)
	var stream []uint64
	users := map[relay.UserID]int{}
	for _, m := range b.rec.Messages(topic) {
		if m.HasUser {
			users[m.User]++
		} else {
			stream = append(stream, m.Offset)
		}
	}
	if !slices.Equal(stream, []uint64{1, 2, 3}) || users[7] != 1 || users[8] != 1 || len(users) != 2 {
		t.Errorf("%s received offsets %v and per-user messages %v, want [1 2 3] and map[7:1 8:1]", b.name, stream, users)
	}
}

// testUserMessage: a message for one user lives outside the stream: no
// offset, no history, and the next publish still gets offset 1.
func testUserMessage(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	topic := newTopic(t)
	watch(t, ctx, b, topic)
	m := &relay.Message{Topic: topic, User: 7, HasUser: true, Data: []byte("private")}
	r := c.publish(t, ctx, a, m, "")
	if r.Position != (relay.Position{}) || m.Offset != 0 || m.Epoch != "" {
		t.Errorf("%s.Publish(%q for user 7) = position %+v, message at {%d %s}; want both zero", a.name, topic, r.Position, m.Offset, m.Epoch)
	}
	for _, n := range []node{a, b} {
		if p := history(t, ctx, n, topic, 0, 0); len(p.Messages) != 0 || p.Latest.Offset != 0 {
			t.Errorf("%s.History(%q) after a message for one user = offsets %v, latest %+v; want none, offset 0", n.name, topic, pageOffsets(p), p.Latest)
		}
	}
	if r := c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("public")}, ""); r.Offset != 1 {
		t.Errorf("%s.Publish(%q) after a message for one user = offset %d, want 1", a.name, topic, r.Offset)
	}
	b.rec.WaitMessages(t, topic, 2)
	wait(c)
	got := b.rec.Messages(topic)
	var private, public int
	for _, m := range got {
		switch {
		case m.HasUser && m.User == 7 && m.Offset == 0 && string(m.Data) == "private":
			private++
		case !m.HasUser && m.Offset == 1 && string(m.Data) == "public":
			public++
		}
	}
	if len(got) != 2 || private != 1 || public != 1 {
		t.Errorf("%s received %+v, want the message for user 7 (offset 0) and the public one (offset 1), once each", b.name, got)
	}
}

// testTransient: a transient publish reaches every node's subscribers
// once, with no offset, takes no place in the stream and creates none.
func testTransient(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	topic, fresh := newTopic(t), newTopic(t)
	watch(t, ctx, b, topic)
	watch(t, ctx, b, fresh)
	first := c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("m1")}, "")
	for _, tt := range []struct{ topic, data string }{{topic, "notice"}, {fresh, "notice"}} {
		m := &relay.Message{Topic: tt.topic, Data: []byte(tt.data)}
		r, err := a.Publish(ctx, m, relay.PublishOptions{Transient: true})
		if err != nil || r.Position != (relay.Position{}) || m.Offset != 0 || m.Epoch != "" {
			t.Fatalf("%s.Publish(%q, transient) = %+v, %v, message at {%d %s}; want no position", a.name, tt.topic, r, err, m.Offset, m.Epoch)
		}
	}
	if r := c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("m2")}, ""); r.Offset != 2 || r.Epoch != first.Epoch {
		t.Errorf("%s.Publish(%q) after a transient one = %+v, want offset 2 of epoch %s", a.name, topic, r.Position, first.Epoch)
	}
	b.rec.WaitMessages(t, topic, 3)
	b.rec.WaitMessages(t, fresh, 1)
	wait(c)
	var offsets []uint64
	for _, m := range b.rec.Messages(topic) {
		if m.HasUser || m.Kind != relay.KindPublish || (m.Offset == 0) != (string(m.Data) == "notice") {
			t.Errorf("%s received %+v on %q", b.name, m, topic)
		}
		offsets = append(offsets, m.Offset)
	}
	if got := b.rec.Messages(fresh); len(got) != 1 || got[0].Offset != 0 || string(got[0].Data) != "notice" || len(offsets) != 3 || offsets[0] != 1 || offsets[2] != 2 {
		t.Errorf("%s received offsets %v on %q (want 1, 0, 2) and %+v on %q (want one notice)", b.name, offsets, topic, got, fresh)
	}
	for _, n := range []node{a, b} {
		if p := history(t, ctx, n, topic, 0, 0); len(p.Messages) != 2 || p.Latest.Offset != 2 {
			t.Errorf("%s.History(%q) = offsets %v, latest %+v; want 1 and 2", n.name, topic, pageOffsets(p), p.Latest)
		}
		if p := history(t, ctx, n, fresh, 0, 0); len(p.Messages) != 0 || p.Latest.Offset != 0 {
			t.Errorf("%s.History(%q) after only a transient publish = offsets %v, latest %+v; want no stream", n.name, fresh, pageOffsets(p), p.Latest)
		}
	}
}

// wait lets stray deliveries show before a count, on engines that deliver
// after Publish returns.
func wait(c *cluster) {
	if !c.single {
		time.Sleep(settle)
	}
}
