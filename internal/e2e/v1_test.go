package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// v1conn is a bare relay.v1 client for checking frames exactly.
type v1conn struct {
	t  *testing.T
	ws *websocket.Conn
}

// frameV1 is any relay.v1 server frame.
type frameV1 struct {
	Type      string          `json:"type"`
	ID        json.RawMessage `json:"id"`
	Topic     string          `json:"topic"`
	Offset    *uint64         `json:"offset"`
	Epoch     *string         `json:"epoch"`
	Message   string          `json:"message"`
	Recovered *bool           `json:"recovered"`
	UserID    *uint64         `json:"user_id"`
	Users     []uint64        `json:"users"`
	Code      string          `json:"code"`
	Topics    []string        `json:"topics"`
}

func dialV1(t *testing.T, url string) *v1conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"relay.v1"}}
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "relay.v1" {
		t.Fatalf("Sec-WebSocket-Protocol = %q, want relay.v1 echoed", got)
	}
	t.Cleanup(func() { ws.Close() })
	return &v1conn{t: t, ws: ws}
}

func (c *v1conn) send(v any) {
	c.t.Helper()
	var b []byte
	if s, ok := v.(string); ok {
		b = []byte(s)
	} else {
		b, _ = json.Marshal(v)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *v1conn) next() frameV1 {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	var f frameV1
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatalf("frame %s is not JSON: %v", b, err)
	}
	return f
}

func (c *v1conn) expect(typ string) frameV1 {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("got %+v, want a %q frame", f, typ)
	}
	return f
}

// subscribe sends a subscribe command and returns the subscribed frame of
// each topic, in order.
func (c *v1conn) subscribe(cmd map[string]any) []frameV1 {
	c.t.Helper()
	cmd["type"] = "subscribe"
	c.send(cmd)
	var out []frameV1
	for range cmd["topics"].([]string) {
		out = append(out, c.expect("subscribed"))
	}
	return out
}

// sync proves every frame sent before it has been read: a ping's pong
// comes after them.
func (c *v1conn) pingPong(id int) {
	c.t.Helper()
	c.send(map[string]any{"type": "ping", "id": id})
	f := c.expect("pong")
	if string(f.ID) != fmt.Sprint(id) {
		c.t.Fatalf("pong id = %s, want %d", f.ID, id)
	}
}

func register(t *testing.T, in *relaytest.Instance, user uint64) client.Registration {
	t.Helper()
	reg, err := in.Client.Register(ctxT(t), user)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func publishN(t *testing.T, in *relaytest.Instance, topic string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		publish(t, in, client.Publish{Topic: topic, Message: fmt.Sprintf("m%d", i)})
	}
}

// expectMessages reads message frames for offsets from..to on topic.
func (c *v1conn) expectMessages(topic string, from, to uint64, epoch string) {
	c.t.Helper()
	for off := from; off <= to; off++ {
		f := c.expect("message")
		if f.Topic != topic || f.Offset == nil || *f.Offset != off || f.Epoch == nil || *f.Epoch != epoch || f.Message != fmt.Sprintf("m%d", off) {
			c.t.Fatalf("got %+v (offset %v), want message m%d at offset %d, epoch %s", f, deref(f.Offset), off, off, epoch)
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestV1CommandsAndErrors(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := dialV1(t, register(t, in, 1).URL)
	c.pingPong(7)
	for _, tt := range []struct {
		send string
		code string
	}{
		{`not json`, "bad_request"},
		{`{"type":"dance"}`, "invalid"},
		{`{"type":"subscribe"}`, "invalid"},
		{`{"type":"subscribe","topics":[""]}`, "invalid"},
		{`{"type":"subscribe","topics":["a"],"since":{"b":{"offset":1,"epoch":"x"}}}`, "invalid"},
		{`{"type":"subscribe","topics":"cats"}`, "bad_request"},
		{`{"id":5}`, "invalid"},
	} {
		c.send(tt.send)
		f := c.expect("error")
		if f.Code != tt.code {
			t.Errorf("%s: error code %q, want %q", tt.send, f.Code, tt.code)
		}
	}
	// The connection stays open and keeps working.
	c.pingPong(8)
	subs := c.subscribe(map[string]any{"id": "s1", "topics": []string{"news"}})
	if f := subs[0]; f.Topic != "news" || *f.Offset != 0 || *f.Epoch == "" || *f.Recovered || string(f.ID) != `"s1"` {
		t.Fatalf("subscribed = %+v", f)
	}
	c.send(map[string]any{"type": "unsubscribe", "topics": []string{"news"}, "id": 2})
	if f := c.expect("unsubscribed"); len(f.Topics) != 1 || f.Topics[0] != "news" {
		t.Fatalf("unsubscribed = %+v", f)
	}
	if n := in.Server.Hub.Subscribers("news"); n != 0 {
		t.Fatalf("%d subscribers left on news", n)
	}
	// A relay.v1 socket starts with no topics: the seed default "cats"
	// applies to seed sockets only.
	if n := in.Server.Hub.Subscribers("cats"); n != 0 {
		t.Fatalf("relay.v1 socket subscribed to cats by default")
	}
}

func TestV1MessagesCarryOffsetsAndEpoch(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	v1 := dialV1(t, register(t, in, 1).URL)
	sub := v1.subscribe(map[string]any{"topics": []string{"news"}})[0]
	_, seed := connect(t, in, 2)
	if err := seed.SetTopics(ctxT(t), "news"); err != nil {
		t.Fatal(err)
	}
	publishN(t, in, "news", 1, 3)
	v1.expectMessages("news", 1, 3, *sub.Epoch)
	for i := 1; i <= 3; i++ { // seed sockets still get the raw text
		if m := receive(t, seed); m != fmt.Sprintf("m%d", i) {
			t.Fatalf("seed received %q", m)
		}
	}
	// The publish answer names the position.
	status, _, body := doJSON(t, in, "POST", "/publish", `{"topic":"news","message":"m4"}`)
	want := fmt.Sprintf(`{"offset":4,"epoch":%q,"delivered":2}`, *sub.Epoch)
	if status != 200 || body != want {
		t.Fatalf("publish answered %d %s, want %s", status, body, want)
	}
	v1.expectMessages("news", 4, 4, *sub.Epoch)
}

// TestV1RecoveryAfterDisconnect drops the socket, publishes while it is
// away and reconnects with since: exactly the missed messages come back,
// in order, then live ones, with no duplicate.
func TestV1RecoveryAfterDisconnect(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	reg := register(t, in, 1)
	c := dialV1(t, reg.URL)
	epoch := *c.subscribe(map[string]any{"topics": []string{"news"}})[0].Epoch
	publishN(t, in, "news", 1, 3)
	c.expectMessages("news", 1, 3, epoch)
	c.ws.Close()
	relaytest.Eventually(t, "the socket to detach", func() bool { return in.Server.Hub.Subscribers("news") == 0 })
	publishN(t, in, "news", 4, 10)

	c = dialV1(t, reg.URL)
	f := c.subscribe(map[string]any{"topics": []string{"news"}, "since": map[string]any{"news": map[string]any{"offset": 3, "epoch": epoch}}})[0]
	if !*f.Recovered || *f.Offset != 10 || *f.Epoch != epoch {
		t.Fatalf("subscribed = recovered %v offset %d epoch %s; want true, 10, %s", *f.Recovered, *f.Offset, *f.Epoch, epoch)
	}
	c.expectMessages("news", 4, 10, epoch)
	publishN(t, in, "news", 11, 12)
	c.expectMessages("news", 11, 12, epoch)
	c.pingPong(1) // and nothing else arrived in between
}

func TestV1RecoveryRefused(t *testing.T) {
	in := relaytest.Start(t, server.Config{Memory: memorybroker.Config{History: []memorybroker.HistoryRule{
		{Prefix: "", Size: 5, TTL: time.Minute, Bytes: 1 << 20},
	}}})
	reg := register(t, in, 1)
	c := dialV1(t, reg.URL)
	epoch := *c.subscribe(map[string]any{"topics": []string{"news"}})[0].Epoch
	publishN(t, in, "news", 1, 3)
	c.expectMessages("news", 1, 3, epoch)
	c.ws.Close()
	relaytest.Eventually(t, "the socket to detach", func() bool { return in.Server.Hub.Subscribers("news") == 0 })
	publishN(t, in, "news", 4, 20) // history keeps 16..20 only

	for _, tt := range []struct {
		name  string
		since map[string]any
	}{
		{"history trimmed", map[string]any{"offset": 3, "epoch": epoch}},
		{"epoch changed", map[string]any{"offset": 19, "epoch": "another"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialV1(t, reg.URL)
			f := c.subscribe(map[string]any{"topics": []string{"news"}, "since": map[string]any{"news": tt.since}})[0]
			if *f.Recovered || *f.Offset != 20 || *f.Epoch != epoch {
				t.Fatalf("subscribed = recovered %v offset %d; want false at 20", *f.Recovered, *f.Offset)
			}
			c.pingPong(1) // nothing replayed
			c.ws.Close()
			relaytest.Eventually(t, "the socket to detach", func() bool { return in.Server.Hub.Subscribers("news") == 0 })
		})
	}
	// Within what history still holds, recovery works.
	c = dialV1(t, reg.URL)
	f := c.subscribe(map[string]any{"topics": []string{"news"}, "since": map[string]any{"news": map[string]any{"offset": 15, "epoch": epoch}}})[0]
	if !*f.Recovered {
		t.Fatalf("recovery from 15 with history 16..20 refused")
	}
	c.expectMessages("news", 16, 20, epoch)
}

// TestV1ReplayRacesLive subscribes with since while a publisher keeps
// publishing, many times: the messages seen are exactly since+1 onwards,
// contiguous, whatever the interleaving of replay and live delivery.
func TestV1ReplayRacesLive(t *testing.T) {
	// History deep enough that a slow machine cannot outrun it: this test
	// is about ordering, not trimming.
	in := relaytest.Start(t, server.Config{Memory: memorybroker.Config{History: []memorybroker.HistoryRule{{Size: 1 << 20, TTL: time.Hour, Bytes: 1 << 30}}}})
	_, epoch := latest(t, in, "race")
	for round := range 25 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := in.Client.Publish(context.Background(), client.Publish{Topic: "race", Message: "x"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
		time.Sleep(time.Millisecond)
		last, _ := latest(t, in, "race")
		since := last - min(last, uint64(round*3))
		c := dialV1(t, register(t, in, uint64(round)).URL)
		f := c.subscribe(map[string]any{"topics": []string{"race"}, "since": map[string]any{"race": map[string]any{"offset": since, "epoch": epoch}}})[0]
		time.Sleep(2 * time.Millisecond)
		close(stop)
		wg.Wait()
		if !*f.Recovered {
			t.Fatalf("round %d: recovery from %d refused", round, since)
		}
		end, _ := latest(t, in, "race")
		for want := since + 1; want <= end; want++ {
			m := c.expect("message")
			if *m.Offset != want {
				t.Fatalf("round %d: got offset %d, want %d (since %d, subscribed at %d)", round, *m.Offset, want, since, *f.Offset)
			}
		}
		c.pingPong(round) // no duplicate after the last
		c.ws.Close()
	}
}

func latest(t *testing.T, in *relaytest.Instance, topic string) (uint64, string) {
	t.Helper()
	p, err := in.Server.Broker.History(context.Background(), topic, ^uint64(0), 1)
	if err != nil {
		t.Fatal(err)
	}
	return p.Latest.Offset, p.Latest.Epoch
}

// TestV1PrivateMessagesLeaveNoGap publishes to one user between broadcasts:
// the other users' offsets stay contiguous, and the private message
// carries no offset.
func TestV1PrivateMessagesLeaveNoGap(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	alice := dialV1(t, register(t, in, 1).URL)
	bob := dialV1(t, register(t, in, 2).URL)
	epoch := *alice.subscribe(map[string]any{"topics": []string{"room"}})[0].Epoch
	bob.subscribe(map[string]any{"topics": []string{"room"}})
	publish(t, in, client.Publish{Topic: "room", Message: "m1"})
	one := uint64(1)
	res := publish(t, in, client.Publish{Topic: "room", UserID: &one, Message: "psst"})
	if res.Delivered != 1 {
		t.Fatalf("private publish delivered %d", res.Delivered)
	}
	publish(t, in, client.Publish{Topic: "room", Message: "m2"})
	bob.expectMessages("room", 1, 2, epoch)
	alice.expectMessages("room", 1, 1, epoch)
	if f := alice.expect("message"); f.Message != "psst" || f.Offset != nil || f.Epoch != nil {
		t.Fatalf("private message = %+v, want no offset or epoch", f)
	}
	alice.expectMessages("room", 2, 2, epoch)
	status, _, body := doJSON(t, in, "POST", "/publish", `{"topic":"room","user_id":1,"message":"again"}`)
	if status != 200 || body != `{"delivered":1}` {
		t.Fatalf("private publish answered %d %s", status, body)
	}
}

func TestV1Presence(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	watcher := dialV1(t, register(t, in, 100).URL)
	sub := watcher.subscribe(map[string]any{"topics": []string{"room"}, "presence": true})[0]
	if len(sub.Users) != 0 {
		t.Fatalf("users before anyone = %v", sub.Users)
	}
	if f := watcher.expect("join"); *f.UserID != 100 {
		t.Fatalf("own join = %+v", f)
	}
	tab1 := dialV1(t, register(t, in, 7).URL)
	tab2 := dialV1(t, register(t, in, 7).URL)
	tab1.subscribe(map[string]any{"topics": []string{"room"}})
	if f := watcher.expect("join"); *f.UserID != 7 || f.Topic != "room" {
		t.Fatalf("join = %+v", f)
	}
	tab2.subscribe(map[string]any{"topics": []string{"room"}})
	tab2.pingPong(1)
	if got := presenceOf(t, in, "room"); got != `{"topic":"room","users":[{"user_id":7,"connections":2},{"user_id":100,"connections":1}],"connections":3}` {
		t.Fatalf("GET /presence/room = %s", got)
	}
	tab1.ws.Close()
	relaytest.Eventually(t, "the first tab to leave", func() bool { return in.Server.Hub.Subscribers("room") == 2 })
	watcher.pingPong(2) // the user's second tab is still there: no leave
	tab2.send(map[string]any{"type": "unsubscribe", "topics": []string{"room"}})
	tab2.expect("unsubscribed")
	if f := watcher.expect("leave"); *f.UserID != 7 {
		t.Fatalf("leave = %+v", f)
	}
	// A later subscriber with presence sees who is there.
	late := dialV1(t, register(t, in, 8).URL)
	if f := late.subscribe(map[string]any{"topics": []string{"room"}, "presence": true})[0]; len(f.Users) != 1 || f.Users[0] != 100 {
		t.Fatalf("users for a late subscriber = %v, want [100]", f.Users)
	}
}

func presenceOf(t *testing.T, in *relaytest.Instance, topic string) string {
	t.Helper()
	status, _, body := doJSON(t, in, "GET", "/presence/"+topic, "")
	if status != 200 {
		t.Fatalf("GET /presence/%s = %d %s", topic, status, body)
	}
	return body
}

func doJSON(t *testing.T, in *relaytest.Instance, method, path, body string) (int, http.Header, string) {
	t.Helper()
	return request(t, method, in.URL+path, body)
}

func TestIdempotentPublish(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := dialV1(t, register(t, in, 1).URL)
	epoch := *c.subscribe(map[string]any{"topics": []string{"t"}})[0].Epoch
	first := `{"topic":"t","message":"m1","idempotency_key":"order-17"}`
	_, _, a := doJSON(t, in, "POST", "/publish", first)
	_, _, b := doJSON(t, in, "POST", "/publish", first)
	if want := fmt.Sprintf(`{"offset":1,"epoch":%q,"delivered":1}`, epoch); a != want {
		t.Fatalf("first publish = %s, want %s", a, want)
	}
	if want := fmt.Sprintf(`{"offset":1,"epoch":%q,"delivered":1,"duplicate":true}`, epoch); b != want {
		t.Fatalf("retry = %s, want %s", b, want)
	}
	_, _, d := doJSON(t, in, "POST", "/publish", `{"topic":"t","message":"m2","idempotency_key":"order-18"}`)
	if !strings.HasPrefix(d, `{"offset":2,`) {
		t.Fatalf("another key = %s", d)
	}
	c.expectMessages("t", 1, 2, epoch)
	c.pingPong(1) // the retry delivered nothing
	if status, _, body := doJSON(t, in, "POST", "/publish", `{"topic":"t","message":"x","idempotency_key":""}`); status != 400 || !strings.Contains(body, "idempotency_key") {
		t.Fatalf("empty key = %d %s", status, body)
	}
}

func TestBatchPublish(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := dialV1(t, register(t, in, 1).URL)
	epoch := *c.subscribe(map[string]any{"topics": []string{"t"}})[0].Epoch
	status, _, body := doJSON(t, in, "POST", "/publish/batch", `{"events":[
		{"topic":"t","message":"m1"},
		{"topic":"","message":"bad"},
		{"topic":"t","message":5},
		{"topic":"t","message":"m2"}]}`)
	want := fmt.Sprintf(`{"results":[{"offset":1,"epoch":%q,"delivered":1},`+
		`{"status":400,"error":"event 1: topic must not be empty"},`+
		`{"status":400,"error":"event 2: message must be a string, got 5"},`+
		`{"offset":2,"epoch":%q,"delivered":1}]}`, epoch, epoch)
	if status != 200 || body != want {
		t.Fatalf("batch = %d\n%s\nwant\n%s", status, body, want)
	}
	c.expectMessages("t", 1, 2, epoch)
	c.pingPong(1)
	// A bare array works too; an empty or malformed batch is refused.
	if status, _, body := doJSON(t, in, "POST", "/publish/batch", `[{"topic":"t","message":"m3"}]`); status != 200 || !strings.Contains(body, `"offset":3`) {
		t.Fatalf("array batch = %d %s", status, body)
	}
	for _, bad := range []string{`{"events":[]}`, `{"events":5}`, `"x"`, `{`} {
		if status, _, body := doJSON(t, in, "POST", "/publish/batch", bad); status != 400 {
			t.Fatalf("batch %s = %d %s, want 400", bad, status, body)
		}
	}
}

func TestHistoryEndpoint(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	publishN(t, in, "log", 1, 5)
	_, epoch := latest(t, in, "log")
	status, _, body := doJSON(t, in, "GET", "/history/log?since=2&limit=2", "")
	want := fmt.Sprintf(`{"topic":"log","offset":5,"epoch":%q,"complete":true,"messages":[{"offset":3,"message":"m3"},{"offset":4,"message":"m4"}]}`, epoch)
	if status != 200 || body != want {
		t.Fatalf("history = %d %s\nwant %s", status, body, want)
	}
	for _, q := range []string{"since=-1", "since=x", "limit=0", "limit=1001"} {
		if status, _, body := doJSON(t, in, "GET", "/history/log?"+q, ""); status != 400 || !strings.Contains(body, strings.Split(q, "=")[0]) {
			t.Fatalf("history?%s = %d %s, want 400 naming the parameter", q, status, body)
		}
	}
	// Topics with a slash are path-escaped.
	publish(t, in, client.Publish{Topic: "a/b", Message: "m1"})
	if status, _, body := doJSON(t, in, "GET", "/history/a%2Fb", ""); status != 200 || !strings.Contains(body, `"topic":"a/b"`) {
		t.Fatalf("history of a/b = %d %s", status, body)
	}
}
