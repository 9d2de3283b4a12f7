package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// fakeSub is a Subscriber that records deliveries and closes.
type fakeSub struct {
	mu     sync.Mutex
	got    []string // "topic:data"
	closes []relay.CloseReason
	n      atomic.Int64
}

func (f *fakeSub) Deliver(d *relay.Delivery) bool {
	f.mu.Lock()
	f.got = append(f.got, d.Msg.Topic+":"+string(d.Msg.Data))
	f.mu.Unlock()
	f.n.Add(1)
	return true
}

func (f *fakeSub) Close(r relay.CloseReason) {
	f.mu.Lock()
	f.closes = append(f.closes, r)
	f.mu.Unlock()
}

func (f *fakeSub) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func msg(topic, data string) *relay.Message {
	return &relay.Message{Topic: topic, Data: []byte(data)}
}

// attached registers a client for user and attaches a fake socket.
func attached(t *testing.T, h *Hub, user relay.UserID) (*Client, *fakeSub) {
	t.Helper()
	id, err := h.Register(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSub{}
	c, err := h.Attach(ctx, id, s, true)
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func TestFanoutFollowsTopics(t *testing.T) {
	h := New(Config{}, nil)
	c1, s1 := attached(t, h, 1)
	_, s2 := attached(t, h, 2)
	if err := h.SetTopics(c1, s1, []string{"dogs", "news", "dogs"}); err != nil {
		t.Fatal(err)
	}
	if got := c1.Topics(); strings.Join(got, ",") != "dogs,news" {
		t.Fatalf("topics = %v, want duplicates removed", got)
	}
	for _, tc := range []struct {
		topic string
		want  int
	}{{"cats", 1}, {"dogs", 1}, {"news", 1}, {"none", 0}} {
		if n := h.Fanout(msg(tc.topic, "x")); n != tc.want {
			t.Errorf("Fanout(%s) = %d, want %d", tc.topic, n, tc.want)
		}
	}
	if got := strings.Join(s1.received(), " "); got != "dogs:x news:x" {
		t.Errorf("client 1 received %q", got)
	}
	if got := strings.Join(s2.received(), " "); got != "cats:x" {
		t.Errorf("client 2 received %q (default topic cats)", got)
	}
	if h.Subscribers("cats") != 1 || h.Subscribers("dogs") != 1 {
		t.Errorf("subscribers: cats %d dogs %d", h.Subscribers("cats"), h.Subscribers("dogs"))
	}
}

func TestFanoutToOneUser(t *testing.T) {
	h := New(Config{}, nil)
	_, a1 := attached(t, h, 1)
	_, a2 := attached(t, h, 1)
	_, b := attached(t, h, 2)
	id, _ := h.Register(ctx, 1) // registered, never connected
	_ = id
	m := msg("cats", "hi")
	m.User, m.HasUser = 1, true
	if n := h.Fanout(m); n != 2 {
		t.Fatalf("Fanout to user 1 = %d, want 2", n)
	}
	if len(a1.received()) != 1 || len(a2.received()) != 1 || len(b.received()) != 0 {
		t.Fatalf("deliveries: %v %v %v", a1.received(), a2.received(), b.received())
	}
}

func TestSetTopicsRefusesBadInput(t *testing.T) {
	h := New(Config{MaxTopics: 3, MaxTopicLength: 8}, nil)
	c, s := attached(t, h, 1)
	tests := []struct {
		topics []string
		want   error
		text   string
	}{
		{[]string{""}, relay.ErrInvalid, "empty"},
		{[]string{"123456789"}, relay.ErrInvalid, "9 bytes long"},
		{[]string{"a\nb"}, relay.ErrInvalid, "control character"},
		{[]string{"a\xffb"}, relay.ErrInvalid, "UTF-8"},
		{[]string{"cats\u200b"}, relay.ErrInvalid, "invisible character U+200B"},
		{[]string{"a\u202eb"}, relay.ErrInvalid, "invisible character U+202E"},
		{[]string{"\ufeffcats"}, relay.ErrInvalid, "invisible character U+FEFF"},
		{[]string{"cats\ufe0f"}, relay.ErrInvalid, "invisible character U+FE0F"},
		{[]string{"a\u3164b"}, relay.ErrInvalid, "invisible character U+3164"},
		{[]string{"a\u034fb"}, relay.ErrInvalid, "invisible character U+034F"},
		{[]string{"a\u2028b"}, relay.ErrInvalid, "white space"},
		{[]string{"a", "b", "c", "d"}, relay.ErrLimit, "at most 3"},
	}
	for _, tt := range tests {
		err := h.SetTopics(c, s, tt.topics)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("SetTopics(%q) = %v, want %v mentioning %q", tt.topics, err, tt.want, tt.text)
		}
	}
	if got := c.Topics(); len(got) != 1 || got[0] != "cats" {
		t.Fatalf("topics after refusals = %v, want unchanged [cats]", got)
	}
	if err := h.SetTopics(c, s, []string{"a", "b", "a", "c"}); err != nil {
		t.Fatalf("3 distinct topics with a duplicate: %v", err)
	}
}

func TestAttachReplacesAndDetachIsIdempotent(t *testing.T) {
	h := New(Config{}, nil)
	c, old := attached(t, h, 1)
	neu := &fakeSub{}
	if _, err := h.Attach(ctx, c.ID, neu, true); err != nil {
		t.Fatal(err)
	}
	if len(old.closes) != 1 || old.closes[0] != relay.CloseReplaced {
		t.Fatalf("old socket closes = %v, want [CloseReplaced]", old.closes)
	}
	h.Detach(c, old) // the old socket's reader exits later: no effect
	if n := h.Fanout(msg("cats", "x")); n != 1 || len(neu.received()) != 1 || len(old.received()) != 0 {
		t.Fatalf("after replace: delivered %d, new %v, old %v", n, neu.received(), old.received())
	}
	if err := h.SetTopics(c, old, []string{"x"}); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("SetTopics from the replaced socket = %v, want ErrNotFound", err)
	}
	if got := h.Stats().Connections.Load(); got != 1 {
		t.Fatalf("connections = %d, want 1", got)
	}
}

func TestUnregisterClosesSocket(t *testing.T) {
	h := New(Config{}, nil)
	c, s := attached(t, h, 1)
	if err := h.Unregister(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if len(s.closes) != 1 || s.closes[0] != relay.CloseUnregistered {
		t.Fatalf("closes = %v", s.closes)
	}
	if h.Registered(c.ID) || h.Fanout(msg("cats", "x")) != 0 {
		t.Fatal("unregistered client still indexed")
	}
	if err := h.Unregister(ctx, c.ID); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("second Unregister = %v, want ErrNotFound", err)
	}
	if _, err := h.Attach(ctx, c.ID, &fakeSub{}, true); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Attach after Unregister = %v, want ErrNotFound", err)
	}
	h.Detach(c, s)
	if st := h.Stats(); st.Connections.Load() != 0 || st.Registrations.Load() != 0 {
		t.Fatalf("stats after unregister: %d connections, %d registrations", st.Connections.Load(), st.Registrations.Load())
	}
}

func TestRegistrationLimit(t *testing.T) {
	h := New(Config{MaxRegistrations: 2}, nil)
	for range 2 {
		if _, err := h.Register(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Register(ctx, 1); !errors.Is(err, relay.ErrLimit) {
		t.Fatalf("third Register = %v, want ErrLimit", err)
	}
}

func TestExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(Config{RegistrationTTL: time.Minute, ReconnectGrace: 10 * time.Second}, nil)
		never, _ := h.Register(ctx, 1)
		c, s := attached(t, h, 2)

		time.Sleep(time.Minute - time.Second)
		h.expire(time.Now())
		if !h.Registered(never) {
			t.Fatal("expired before its TTL")
		}
		time.Sleep(time.Second)
		h.expire(time.Now())
		if h.Registered(never) {
			t.Fatal("a registration that never connected outlived its TTL")
		}
		if !h.Registered(c.ID) {
			t.Fatal("a connected registration expired")
		}

		// After its socket closes, a registration lives for the grace.
		h.Detach(c, s)
		time.Sleep(5 * time.Second)
		h.expire(time.Now())
		s2 := &fakeSub{}
		if _, err := h.Attach(ctx, c.ID, s2, true); err != nil {
			t.Fatalf("reattach within grace: %v", err)
		}
		time.Sleep(time.Minute) // attached: the old deadline must not bite
		h.expire(time.Now())
		if !h.Registered(c.ID) {
			t.Fatal("reattached registration expired on a stale deadline")
		}
		h.Detach(c, s2)
		time.Sleep(10 * time.Second)
		h.expire(time.Now())
		if h.Registered(c.ID) {
			t.Fatal("registration outlived the reconnect grace")
		}
		if got := h.Stats().Expired.Load(); got != 2 {
			t.Fatalf("expired = %d, want 2", got)
		}
	})
}

// Many registrations of one user expiring together are removed in
// batches, each removal O(1): the user's clients are a set, not a list
// scanned under regMu (which made POST /register wait 151 ms behind
// 100,000 expiring registrations of one user).
func TestExpiryOfOneUsersManyRegistrations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 20_000
		h := New(Config{RegistrationTTL: time.Minute}, nil)
		for range n {
			if _, err := h.Register(ctx, 7); err != nil {
				t.Fatal(err)
			}
		}
		other, _ := h.Register(ctx, 8)
		if set := h.users[7]; set == nil || set.m == nil || set.len() != n {
			t.Fatalf("user 7's clients are not held as a set of %d", n)
		}
		time.Sleep(time.Minute)
		removed, more := h.expireSome(time.Now())
		if removed != expireBatch || !more {
			t.Fatalf("expireSome = %d, more %v; want a batch of %d, and more", removed, more, expireBatch)
		}
		if got := h.expire(time.Now()); got != n+1-expireBatch {
			t.Fatalf("expire = %d, want the remaining %d", got, n+1-expireBatch)
		}
		if len(h.users) != 0 || len(h.clients) != 0 || h.Registered(other) {
			t.Fatalf("after expiry: %d users, %d clients left, want none", len(h.users), len(h.clients))
		}
	})
}

func TestForgetAtOnceWithNegativeGrace(t *testing.T) {
	h := New(Config{ReconnectGrace: -1}, nil)
	c, s := attached(t, h, 1)
	h.Detach(c, s)
	if h.Registered(c.ID) {
		t.Fatal("registration kept after its socket closed with no grace")
	}
}

// TestConcurrentSubscribePublish races subscription changes against
// publishes and unsubscribes under -race. Each subscriber may only ever
// receive messages on topics it chose, and once the churn stops a publish
// reaches exactly the subscribers of its topic.
func TestConcurrentSubscribePublish(t *testing.T) {
	h := New(Config{}, nil)
	const clients, rounds = 32, 200
	topics := []string{"a", "b", "c", "d"}
	cs := make([]*Client, clients)
	subs := make([]*fakeSub, clients)
	for i := range cs {
		cs[i], subs[i] = attached(t, h, relay.UserID(i%4))
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := msg(topics[(i+p)%len(topics)], fmt.Sprint(i))
				if i%5 == 0 {
					m.User, m.HasUser = relay.UserID(i%4), true
				}
				h.Fanout(m)
			}
		})
	}
	for i := range cs {
		wg.Go(func() {
			for r := range rounds {
				// client i only ever picks from topics[i%2] and topics[i%2+2]
				pick := []string{topics[i%2+2*(r%2)]}
				if err := h.SetTopics(cs[i], subs[i], pick); err != nil {
					t.Error(err)
				}
				if r%50 == 49 { // drop and restore the socket now and then
					h.Detach(cs[i], subs[i])
					if _, err := h.Attach(ctx, cs[i].ID, subs[i], true); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	// Let the subscribers finish, then stop the publishers.
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	for i, s := range subs {
		allowed := map[string]bool{"cats": true, topics[i%2]: true, topics[i%2+2]: true}
		for _, g := range s.received() {
			if topic, _, _ := strings.Cut(g, ":"); !allowed[topic] {
				t.Fatalf("client %d received %q on a topic it never chose", i, g)
			}
		}
	}
	for _, topic := range topics {
		want := 0
		for _, c := range cs {
			if ts := c.Topics(); len(ts) == 1 && ts[0] == topic {
				want++
			}
		}
		if n := h.Fanout(msg(topic, "final")); n != want || h.Subscribers(topic) != want {
			t.Fatalf("final Fanout(%s) = %d, subscribers %d; want %d", topic, n, h.Subscribers(topic), want)
		}
	}
}

func TestTopicMembersRemoval(t *testing.T) {
	// Grow past the position-map threshold and remove in a scattered order.
	var tp topic
	subs := make([]*fakeSub, 50)
	for i := range subs {
		subs[i] = &fakeSub{}
		tp.add(member{sub: subs[i], user: relay.UserID(i % 5)})
	}
	if len(tp.list) != 50 || len(tp.users) != 5 {
		t.Fatalf("len = %d, users %d; want 50, 5", len(tp.list), len(tp.users))
	}
	for i := 0; i < 50; i += 3 {
		tp.remove(subs[i])
	}
	for i, x := range subs {
		if got, want := tp.index(x) >= 0, i%3 != 0; got != want {
			t.Fatalf("member %d present = %v, want %v", i, got, want)
		}
	}
	for i, x := range tp.list {
		if tp.pos[x.sub] != i {
			t.Fatalf("position map out of step at %d", i)
		}
	}
	total := int32(0)
	for _, n := range tp.users {
		total += n
	}
	if int(total) != len(tp.list) {
		t.Fatalf("user counts sum to %d, want %d", total, len(tp.list))
	}
}

func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := New(Config{}, nil)
			for range n {
				id, _ := h.Register(ctx, 1)
				h.Attach(ctx, id, &nopSub{}, true)
			}
			m := msg("cats", "hello")
			b.ReportAllocs()
			for b.Loop() {
				h.Fanout(m)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

type nopSub struct{ _ int }

func (nopSub) Deliver(*relay.Delivery) bool { return true }
func (nopSub) Close(relay.CloseReason)      {}

// Watched answers without waiting: true while a subscriber is there, false
// once it has left, and true (the safe answer) while the shard is locked.
func TestWatched(t *testing.T) {
	h := New(Config{}, nil)
	if h.Watched("cats") {
		t.Fatal("Watched(cats) before anyone subscribed = true")
	}
	c, s := attached(t, h, 1) // on cats, the default
	if !h.Watched("cats") || h.Watched("dogs") {
		t.Fatalf("Watched(cats), Watched(dogs) = %v, %v; want true, false", h.Watched("cats"), h.Watched("dogs"))
	}
	sh := h.shard("dogs")
	sh.mu.Lock()
	busy := h.Watched("dogs")
	sh.mu.Unlock()
	if !busy {
		t.Fatal("Watched(dogs) with its shard locked = false, want true rather than wait")
	}
	h.Detach(c, s)
	if h.Watched("cats") {
		t.Fatal("Watched(cats) after the subscriber left = true")
	}
}

// ctx is the context of the hub calls in tests: the hub's own registry
// never waits.
var ctx = context.Background()
