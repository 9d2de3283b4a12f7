package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// listen registers a seed client for user on topic and returns it once
// the server has applied its topics.
func listen(t *testing.T, c *client.Client, user uint64, topic string) *client.Conn {
	t.Helper()
	ctx := ctxT(t)
	reg, err := c.Register(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetTopics(ctx, topic); err != nil {
		t.Fatal(err)
	}
	return conn
}

// drain returns what conn received up to and including a marker message
// published after everything else, so that nothing still in flight is
// missed and nothing extra goes unnoticed.
func drain(t *testing.T, c *client.Client, conn *client.Conn, topic string) []string {
	t.Helper()
	ctx := ctxT(t)
	if _, err := c.Publish(ctx, client.Publish{Topic: topic, Message: "end-marker"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := conn.Receive(ctx)
		if err != nil {
			t.Fatalf("receiving after %q: %v", got, err)
		}
		if m == "end-marker" {
			return got
		}
		got = append(got, m)
	}
}

func TestPublishBatch(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	conn := listen(t, c, 1, "orders")
	ps := []client.Publish{
		{Topic: "orders", Message: "a"},
		{Topic: "", Message: "refused"},
		{Topic: "orders", Message: "b", IdempotencyKey: "k1"},
		{Topic: "orders", Message: "b again", IdempotencyKey: "k1"},
		{Topic: "orders", Message: "c"},
	}
	res, err := c.PublishBatch(ctxT(t), ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(ps) {
		t.Fatalf("%d results for %d events", len(res), len(ps))
	}
	var ce *client.Error
	if !errors.As(res[1].Err, &ce) || ce.Status != 400 || ce.Message != "topic must not be empty" {
		t.Fatalf("the empty topic's result = %+v (%v), want a 400 without the event index", res[1], res[1].Err)
	}
	epoch := res[0].Epoch
	want := []struct {
		offset uint64
		dup    bool
	}{{1, false}, {0, false}, {2, false}, {2, true}, {3, false}}
	for i, w := range want {
		if i == 1 {
			continue
		}
		r := res[i]
		if r.Err != nil || r.Offset != w.offset || r.Duplicate != w.dup || r.Epoch != epoch || epoch == "" {
			t.Errorf("result %d = %+v, want offset %d duplicate %v in epoch %q", i, r, w.offset, w.dup, epoch)
		}
		if !w.dup && r.Delivered != 1 {
			t.Errorf("result %d delivered to %d connections, want 1", i, r.Delivered)
		}
	}
	if got := drain(t, c, conn, "orders"); strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("the subscriber received %q, want a, b, c once each", got)
	}

	// An empty batch sends nothing; one over MaxBatch is refused whole.
	if res, err := c.PublishBatch(ctxT(t), nil); res != nil || err != nil {
		t.Fatalf("empty batch = %v, %v", res, err)
	}
	big := make([]client.Publish, client.MaxBatch+1)
	for i := range big {
		big[i] = client.Publish{Topic: "orders", Message: "x"}
	}
	if _, err := c.PublishBatch(ctxT(t), big); !errors.As(err, &ce) || ce.Status != 413 {
		t.Fatalf("a batch of %d = %v, want 413", len(big), err)
	}
	if got := drain(t, c, conn, "orders"); len(got) != 0 {
		t.Fatalf("the refused batch delivered %d messages", len(got))
	}
}

// TestPublishReceipt: every field of a publish's answer, against what the
// subscribers received.
func TestPublishReceipt(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	one := listen(t, c, 1, "t")
	two := listen(t, c, 2, "t")
	r1, err := c.Publish(ctxT(t), client.Publish{Topic: "t", Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Offset != 1 || r1.Epoch == "" || r1.Delivered != 2 || r1.Duplicate || r1.Err != nil {
		t.Fatalf("first receipt %+v, want offset 1, an epoch, delivered to 2", r1)
	}
	r2, err := c.Publish(ctxT(t), client.Publish{Topic: "t", Message: "second"})
	if err != nil || r2.Offset != 2 || r2.Epoch != r1.Epoch || r2.Delivered != 2 || r2.Duplicate {
		t.Fatalf("second receipt %+v, %v, want offset 2 in epoch %s, delivered to 2", r2, err, r1.Epoch)
	}
	// To one user: outside the topic's stream, so no offset and no epoch.
	u := uint64(1)
	rp, err := c.Publish(ctxT(t), client.Publish{Topic: "t", UserID: &u, Message: "for 1"})
	if err != nil || rp.Offset != 0 || rp.Epoch != "" || rp.Delivered != 1 || rp.Duplicate {
		t.Fatalf("receipt to user 1 %+v, %v, want no offset, delivered to 1", rp, err)
	}
	// Nobody listening: stored all the same, delivered to none.
	rn, err := c.Publish(ctxT(t), client.Publish{Topic: "empty", Message: "x"})
	if err != nil || rn.Offset != 1 || rn.Epoch == "" || rn.Delivered != 0 {
		t.Fatalf("receipt on a topic without subscribers %+v, %v", rn, err)
	}
	if got := drain(t, c, one, "t"); strings.Join(got, ",") != "first,second,for 1" {
		t.Fatalf("user 1 received %q", got)
	}
	if got := drain(t, c, two, "t"); strings.Join(got, ",") != "first,second" {
		t.Fatalf("user 2 received %q", got)
	}
	// A receipt's position is where reading picks up: after r1 comes
	// exactly r2's message.
	h, err := c.History(ctxT(t), "t", client.HistoryOptions{Since: r1.Offset, Limit: 1})
	if err != nil || h.Epoch != r1.Epoch || len(h.Messages) != 1 || h.Messages[0] != (client.HistoryMessage{Offset: r2.Offset, Message: "second"}) {
		t.Fatalf("history after the first receipt = %+v, %v", h, err)
	}
}

func TestPublishIdempotencyKey(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	conn := listen(t, c, 1, "t")
	first, err := c.Publish(ctxT(t), client.Publish{Topic: "t", Message: "once", IdempotencyKey: "order-42"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Publish(ctxT(t), client.Publish{Topic: "t", Message: "once", IdempotencyKey: "order-42"})
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !again.Duplicate || again.Offset != first.Offset || again.Epoch != first.Epoch {
		t.Fatalf("first %+v, repeat %+v: want the repeat to answer the first's offset as a duplicate", first, again)
	}
	// A key is scoped to its topic and audience: the same key elsewhere
	// is another publish, itself deduplicated.
	other, err := c.Publish(ctxT(t), client.Publish{Topic: "u", Message: "other topic", IdempotencyKey: "order-42"})
	if err != nil || other.Duplicate || other.Offset != 1 {
		t.Fatalf("the same key on another topic = %+v, %v, want a new publish", other, err)
	}
	user := uint64(1)
	for i, wantDup := range []bool{false, true} {
		r, err := c.Publish(ctxT(t), client.Publish{Topic: "t", UserID: &user, Message: "to user 1", IdempotencyKey: "order-42"})
		if err != nil || r.Duplicate != wantDup || r.Offset != 0 {
			t.Fatalf("publish %d of the key to user 1 = %+v, %v, want duplicate %v", i, r, err, wantDup)
		}
	}
	if got := drain(t, c, conn, "t"); strings.Join(got, ",") != "once,to user 1" {
		t.Fatalf("received %q, want each message once", got)
	}
}

// TestTokenConnect: a seed connection on TokenURL is the token's user
// (publishes to that user reach it, others' do not) and starts on the
// default topics its token allows; a refused token is an *Error 401.
func TestTokenConnect(t *testing.T) {
	const secret = "token-secret-0123456789abcdef0123456789"
	a, _ := auth.New(auth.Config{TokenSecret: []byte(secret)})
	in := relaytest.Start(t, server.Config{API: apiWithAuth(a)})
	c := in.Client
	tok, err := auth.Mint([]byte(secret), 12, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Connect(ctxT(t), c.TokenURL(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	p, err := c.Presence(ctxT(t), "cats") // the seed's default topic
	if err != nil || len(p.Users) != 1 || p.Users[0].UserID != 12 {
		t.Fatalf("presence on cats = %+v, %v, want the token's user 12", p, err)
	}
	u12, u13 := uint64(12), uint64(13)
	for _, pub := range []client.Publish{
		{Topic: "cats", Message: "to all"},
		{Topic: "cats", UserID: &u12, Message: "to 12"},
		{Topic: "cats", UserID: &u13, Message: "to 13"},
	} {
		if _, err := c.Publish(ctxT(t), pub); err != nil {
			t.Fatal(err)
		}
	}
	if got := drain(t, c, conn, "cats"); strings.Join(got, ",") != "to all,to 12" {
		t.Fatalf("received %q, want the message to all and the one to user 12", got)
	}

	expired, _ := auth.Mint([]byte(secret), 12, -time.Minute, nil)
	var ce *client.Error
	if _, err := c.Connect(ctxT(t), c.TokenURL(expired)); !errors.As(err, &ce) || ce.Status != 401 || !strings.Contains(ce.Message, "expired") {
		t.Fatalf("an expired token = %v, want a 401 saying it expired", err)
	}
}

func TestHistory(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	const topic = "news/eu" // a slash must be escaped in the path
	var epoch string
	for i := 1; i <= 5; i++ {
		r, err := c.Publish(ctxT(t), client.Publish{Topic: topic, Message: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		epoch = r.Epoch
	}
	h, err := c.History(ctxT(t), topic, client.HistoryOptions{Since: 2, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if h.Topic != topic || h.Offset != 5 || h.Epoch != epoch || !h.Complete || len(h.Messages) != 2 ||
		h.Messages[0] != (client.HistoryMessage{Offset: 3, Message: "m3"}) || h.Messages[1] != (client.HistoryMessage{Offset: 4, Message: "m4"}) {
		t.Fatalf("history since 2 limit 2 = %+v", h)
	}
	all, err := c.History(ctxT(t), topic, client.HistoryOptions{})
	if err != nil || len(all.Messages) != 5 || all.Messages[4].Message != "m5" {
		t.Fatalf("whole history = %+v, %v", all, err)
	}
	// A topic nobody published to: offset 0, no messages (not nil).
	empty, err := c.History(ctxT(t), "quiet", client.HistoryOptions{})
	if err != nil || empty.Offset != 0 || empty.Messages == nil || len(empty.Messages) != 0 || empty.Epoch == "" {
		t.Fatalf("history of an unused topic = %+v, %v", empty, err)
	}
	var ce *client.Error
	if _, err := c.History(ctxT(t), topic, client.HistoryOptions{Limit: 1001}); !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("limit 1001 = %v, want 400", err)
	}
}

func TestPresence(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	listen(t, c, 100, "room")
	listen(t, c, 7, "room")
	listen(t, c, 7, "room")
	listen(t, c, 8, "elsewhere")
	p, err := c.Presence(ctxT(t), "room")
	if err != nil {
		t.Fatal(err)
	}
	want := []client.PresentUser{{UserID: 7, Connections: 2}, {UserID: 100, Connections: 1}}
	if p.Topic != "room" || p.Connections != 3 || len(p.Users) != 2 || p.Users[0] != want[0] || p.Users[1] != want[1] {
		t.Fatalf("presence = %+v, want %+v and 3 connections", p, want)
	}
	none, err := c.Presence(ctxT(t), "nobody-here")
	if err != nil || none.Users == nil || len(none.Users) != 0 || none.Connections != 0 {
		t.Fatalf("presence of an empty topic = %+v, %v", none, err)
	}
}

// TestAPIKey: every new call sends the client's header, and the server's
// refusal without it is an *Error with status 401.
func TestAPIKey(t *testing.T) {
	a, err := auth.New(auth.Config{APIKeys: []string{"key-0123456789abcdef0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	in := relaytest.Start(t, server.Config{API: apiWithAuth(a)})
	open, _ := client.New(in.URL)
	keyed, _ := client.New(in.URL, client.WithHeader("Authorization", "Bearer key-0123456789abcdef0123456789"))
	calls := map[string]func(*client.Client) error{
		"batch": func(c *client.Client) error {
			_, err := c.PublishBatch(ctxT(t), []client.Publish{{Topic: "t", Message: "m"}})
			return err
		},
		"history":  func(c *client.Client) error { _, err := c.History(ctxT(t), "t", client.HistoryOptions{}); return err },
		"presence": func(c *client.Client) error { _, err := c.Presence(ctxT(t), "t"); return err },
	}
	for name, call := range calls {
		var ce *client.Error
		if err := call(open); !errors.As(err, &ce) || ce.Status != 401 {
			t.Errorf("%s without a key = %v, want 401", name, err)
		}
		if err := call(keyed); err != nil {
			t.Errorf("%s with the key: %v", name, err)
		}
	}
}

// TestTokenStream: a Stream on TokenURL receives like one on a
// registration, a forged token is refused at connect with a 401, and a
// token the server stops accepting ends the stream instead of retrying.
func TestTokenStream(t *testing.T) {
	const secret = "token-secret-0123456789abcdef0123456789"
	a, err := auth.New(auth.Config{TokenSecret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	in := relaytest.Start(t, server.Config{API: apiWithAuth(a)})
	c := in.Client
	tok, err := auth.Mint([]byte(secret), 9, time.Minute, []string{"chat.*"})
	if err != nil {
		t.Fatal(err)
	}
	u := c.TokenURL(tok)
	if !strings.HasPrefix(u, "ws://"+in.Addr+"/ws?token=") {
		t.Fatalf("TokenURL = %q", u)
	}
	s, err := c.OpenStream(ctxT(t), u, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Subscribe(ctxT(t), true, "chat.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctxT(t), false, "news"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("subscribing outside the token's topics = %v, want forbidden", err)
	}
	if p, err := c.Presence(ctxT(t), "chat.1"); err != nil || len(p.Users) != 1 || p.Users[0].UserID != 9 {
		t.Fatalf("presence = %+v, %v, want the token's user 9", p, err)
	}
	for i := range 3 {
		if _, err := c.Publish(ctxT(t), client.Publish{Topic: "chat.1", Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		ev := next(t, s)
		for ev.Type == "join" { // its own join, user 9
			ev = next(t, s)
		}
		if ev.Type != "message" || ev.Message != fmt.Sprint(i) || ev.Offset != uint64(i+1) {
			t.Fatalf("event %d = %+v", i, ev)
		}
	}

	forged, _ := auth.Mint([]byte("another-secret-0123456789abcdefghij"), 9, time.Minute, nil)
	var ce *client.Error
	if _, err := c.OpenStream(ctxT(t), c.TokenURL(forged), client.StreamOptions{}); !errors.As(err, &ce) || ce.Status != 401 {
		t.Fatalf("a forged token = %v, want 401", err)
	}

	// The server restarts with another secret: the stream's token is now
	// refused, and the stream ends saying so.
	short, _ := auth.Mint([]byte(secret), 9, time.Minute, nil)
	s2, err := c.OpenStream(ctxT(t), c.TokenURL(short), client.StreamOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Subscribe(ctxT(t), false, "x"); err != nil {
		t.Fatal(err)
	}
	in.Stop()
	a2, _ := auth.New(auth.Config{TokenSecret: []byte("a-new-secret-0123456789abcdef0123456")})
	startAt(t, in.Addr, server.Config{API: apiWithAuth(a2)})
	select {
	case _, ok := <-s2.Events():
		for ok {
			_, ok = <-s2.Events()
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream kept retrying a refused token")
	}
	if err := s2.Err(); !errors.As(err, &ce) || ce.Status != 401 || !strings.Contains(err.Error(), "token") {
		t.Fatalf("the stream ended with %v, want the 401 naming the token", err)
	}
}

func next(t *testing.T, s *client.Stream) client.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("the stream ended: %v", s.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return client.Event{}
}

// TestSubscribeSince: a stream that starts from a position gets exactly
// the messages after it, then live ones; from a position in another
// epoch it starts with a gap.
func TestSubscribeSince(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	var epoch string
	for i := 1; i <= 4; i++ {
		r, err := c.Publish(ctxT(t), client.Publish{Topic: "t", Message: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		epoch = r.Epoch
	}
	reg, err := c.Register(ctxT(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenStream(ctxT(t), reg.URL, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SubscribeSince(ctxT(t), false, map[string]client.Position{"t": {Offset: 2, Epoch: epoch}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctxT(t), client.Publish{Topic: "t", Message: "m5"}); err != nil {
		t.Fatal(err)
	}
	for off := uint64(3); off <= 5; off++ {
		if ev := next(t, s); ev.Type != "message" || ev.Offset != off || ev.Message != fmt.Sprint("m", off) {
			t.Fatalf("event for offset %d = %+v", off, ev)
		}
	}

	reg2, _ := c.Register(ctxT(t), 1)
	s2, err := c.OpenStream(ctxT(t), reg2.URL, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.SubscribeSince(ctxT(t), false, map[string]client.Position{"t": {Offset: 2, Epoch: "another-epoch"}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s2); ev.Type != "gap" || ev.Offset != 5 || ev.Epoch != epoch {
		t.Fatalf("first event from another epoch = %+v, want a gap resuming after 5 of %s", ev, epoch)
	}
}

// TestStreamRefusedWhileReconnecting: a topic subscribed while the stream
// is reconnecting goes out with the resubscribe of the others; when the
// server refuses it, Subscribe (or SubscribeSince, whose topic has a
// position before the server ever confirmed it) returns the refusal
// instead of waiting forever, and the other topics are subscribed again.
func TestStreamRefusedWhileReconnecting(t *testing.T) {
	const secret = "token-secret-0123456789abcdef0123456789"
	a, _ := auth.New(auth.Config{TokenSecret: []byte(secret)})
	in := relaytest.Start(t, server.Config{API: apiWithAuth(a)})
	c := in.Client
	tok, _ := auth.Mint([]byte(secret), 9, time.Minute, []string{"ok"})
	s, err := c.OpenStream(ctxT(t), c.TokenURL(tok), client.StreamOptions{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Refused on the first connection, right after OpenStream.
	if err := s.Subscribe(ctxT(t), false, "nope"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("first subscribe to a refused topic = %v, want forbidden", err)
	}
	if err := s.Subscribe(ctxT(t), false, "ok"); err != nil {
		t.Fatal(err)
	}
	in.Stop()
	refused := make(chan error, 2)
	go func() { refused <- s.Subscribe(ctxT(t), false, "nope") }()
	go func() {
		refused <- s.SubscribeSince(ctxT(t), false, map[string]client.Position{"nope.since": {Offset: 3, Epoch: "old"}})
	}()
	startAt(t, in.Addr, server.Config{API: apiWithAuth(a)})
	for range 2 {
		select {
		case err := <-refused:
			if err == nil || !strings.Contains(err.Error(), "forbidden") {
				t.Fatalf("subscribe while reconnecting = %v, want forbidden", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Subscribe of a refused topic did not return after the reconnect")
		}
	}
	if _, ok := s.Position("nope.since"); ok {
		t.Fatal("the refused SubscribeSince topic is still held")
	}
	// The restarted server has a new epoch: a gap, then live messages.
	if ev := next(t, s); ev.Type != "gap" || ev.Topic != "ok" {
		t.Fatalf("first event after the restart = %+v, want a gap on ok", ev)
	}
	// The resubscribe may still be on its way: publish until it arrives.
	c2, _ := client.New("http://" + in.Addr)
	if _, err := c2.Publish(ctxT(t), client.Publish{Topic: "ok", Message: "back"}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s); ev.Type != "message" || ev.Message != "back" {
		t.Fatalf("after the gap = %+v, want the live message", ev)
	}
}
