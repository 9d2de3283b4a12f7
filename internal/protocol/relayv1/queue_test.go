package relayv1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// gatedEngine is the memory engine with a slow network in front of the
// history of topics starting with "slow.": reading it waits until gate is
// closed, so a subscribe to such a topic keeps the socket's worker busy.
type gatedEngine struct {
	*memorybroker.Broker
	gate    chan struct{}
	entered chan struct{} // receives once per read that started waiting
}

func newGatedEngine() *gatedEngine {
	return &gatedEngine{
		Broker:  memorybroker.New(memorybroker.Config{}, nil),
		gate:    make(chan struct{}),
		entered: make(chan struct{}, 100),
	}
}

func (e *gatedEngine) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	if strings.HasPrefix(topic, "slow.") {
		select {
		case e.entered <- struct{}{}:
		default:
		}
		select {
		case <-e.gate:
		case <-ctx.Done():
			return relay.HistoryPage{}, ctx.Err()
		}
	}
	return e.Broker.History(ctx, topic, since, limit)
}

// waitEntered waits until a history read of a "slow." topic is waiting.
func (e *gatedEngine) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-e.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no subscribe reached the engine's history within 5s")
	}
}

// v1Frame is any relay.v1 server frame, as far as these tests look.
type v1Frame struct {
	Type   string          `json:"type"`
	ID     json.RawMessage `json:"id"`
	Topic  string          `json:"topic"`
	Topics []string        `json:"topics"`
	Code   string          `json:"code"`
}

// String names the frame by type, id and topic, e.g. "subscribed s1 slow.a".
func (f v1Frame) String() string {
	s := f.Type
	if f.ID != nil {
		s += " " + strings.Trim(string(f.ID), `"`)
	}
	switch {
	case f.Topic != "":
		s += " " + f.Topic
	case f.Topics != nil:
		s += " " + strings.Join(f.Topics, ",")
	}
	if f.Code != "" {
		s += " " + f.Code
	}
	return s
}

type v1Socket struct {
	t  *testing.T
	ws *websocket.Conn
}

// dialRelayV1 registers user 1 on in and connects to it with relay.v1.
func dialRelayV1(t *testing.T, in *relaytest.Instance) *v1Socket {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := in.Client.Register(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{Subprotocols: []string{"relay.v1"}}
	ws, _, err := d.DialContext(ctx, reg.URL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", reg.URL, err)
	}
	t.Cleanup(func() { ws.Close() })
	if ws.Subprotocol() != "relay.v1" {
		t.Fatalf("subprotocol %q, want relay.v1", ws.Subprotocol())
	}
	return &v1Socket{t: t, ws: ws}
}

func (s *v1Socket) send(cmd string) {
	s.t.Helper()
	if err := s.ws.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
		s.t.Fatal(err)
	}
}

func (s *v1Socket) next() v1Frame {
	s.t.Helper()
	s.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := s.ws.ReadMessage()
	if err != nil {
		s.t.Fatalf("reading a frame: %v", err)
	}
	var f v1Frame
	if err := json.Unmarshal(b, &f); err != nil {
		s.t.Fatalf("frame %s is not JSON: %v", b, err)
	}
	return f
}

// TestV1RepliesInCommandOrder sends commands without waiting for replies:
// although subscribes run on the socket's worker and the others could be
// answered at once, every reply comes in the order its command was sent.
func TestV1RepliesInCommandOrder(t *testing.T) {
	for _, tt := range []struct {
		name  string
		gated bool // subscribes wait for the engine until the pings are in
	}{
		{"fast engine", false},
		{"slow engine", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newGatedEngine()
			if !tt.gated {
				close(e.gate)
			}
			in := relaytest.Start(t, server.Config{Engine: e})
			c := dialRelayV1(t, in)
			for _, cmd := range []string{
				`{"type":"subscribe","id":"s1","topics":["slow.a"]}`,
				`{"type":"ping","id":1}`,
				`{"type":"unsubscribe","id":"u1","topics":["slow.a"]}`,
				`{"type":"ping","id":2}`,
				`{"type":"subscribe","id":"s2","topics":["slow.b"]}`,
				`{"type":"ping","id":3}`,
			} {
				c.send(cmd)
			}
			if tt.gated {
				e.waitEntered(t)
				time.Sleep(100 * time.Millisecond) // the pings and the unsubscribe arrive meanwhile
				close(e.gate)
			}
			want := []string{"subscribed s1 slow.a", "pong 1", "unsubscribed u1 slow.a", "pong 2", "subscribed s2 slow.b", "pong 3"}
			var got []string
			for range want {
				got = append(got, c.next().String())
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("replies\n  %q\nwant\n  %q", got, want)
			}
			hub := in.Server.Hub
			if a, b := hub.Subscribers("slow.a"), hub.Subscribers("slow.b"); a != 0 || b != 1 {
				t.Errorf("subscribers: slow.a %d, slow.b %d; want 0 and 1", a, b)
			}
		})
	}
}

// TestV1DecodeErrorWaitsForEarlierCommands: a command that cannot be
// decoded is answered in its turn too, not before the subscribe sent
// ahead of it.
func TestV1DecodeErrorWaitsForEarlierCommands(t *testing.T) {
	e := newGatedEngine()
	in := relaytest.Start(t, server.Config{Engine: e})
	c := dialRelayV1(t, in)
	c.send(`{"type":"subscribe","id":"s1","topics":["slow.a"]}`)
	c.send(`{"type":"subscribe","id":"bad","topics":"slow.b"}`)
	c.send(`{"type":"ping","id":1}`)
	e.waitEntered(t)
	time.Sleep(100 * time.Millisecond)
	close(e.gate)
	want := []string{"subscribed s1 slow.a", "error bad bad_request", "pong 1"}
	var got []string
	for range want {
		got = append(got, c.next().String())
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replies\n  %q\nwant\n  %q", got, want)
	}
}

// TestV1QueueLimit sends more subscribes than may wait for the engine:
// those past the limit are refused at once with code "limit_exceeded", every
// command gets exactly one reply, the accepted ones in order, and the
// connection stays usable.
func TestV1QueueLimit(t *testing.T) {
	const (
		sent  = 40
		limit = 32 // relayv1.maxQueuedCommands
	)
	e := newGatedEngine()
	in := relaytest.Start(t, server.Config{Engine: e})
	c := dialRelayV1(t, in)
	for i := range sent {
		c.send(fmt.Sprintf(`{"type":"subscribe","id":%d,"topics":["slow.%d"]}`, i, i))
	}
	e.waitEntered(t) // subscribe 0 holds the worker; the rest queue or are refused
	replies := map[int]int{}
	var subscribed, refused []int
	record := func(f v1Frame) {
		var id int
		if err := json.Unmarshal(f.ID, &id); err != nil {
			t.Fatalf("reply %s has id %s, want one of the commands' ids", f, f.ID)
		}
		replies[id]++
		switch {
		case f.Type == "subscribed" && f.Topic == fmt.Sprintf("slow.%d", id):
			subscribed = append(subscribed, id)
		case f.Type == "error" && f.Code == "limit_exceeded":
			refused = append(refused, id)
		default:
			t.Fatalf("reply %s, want subscribed to slow.%d or an error with code limit", f, id)
		}
	}
	// While the engine holds the first subscribe, only refusals can come:
	// at least sent-1-limit of them (sent-limit when the worker had not
	// taken the first command off the queue yet).
	for range sent - 1 - limit {
		if f := c.next(); f.Type != "error" {
			t.Fatalf("reply %s while the engine holds the first subscribe, want a limit error", f)
		} else {
			record(f)
		}
	}
	close(e.gate)
	for len(replies) < sent {
		record(c.next())
	}
	c.send(`{"type":"ping","id":"last"}`)
	if f := c.next(); f.String() != "pong last" {
		t.Fatalf("reply %s to the last ping, want pong last", f)
	}
	for id, n := range replies {
		if n != 1 {
			t.Errorf("command %d got %d replies, want 1", id, n)
		}
	}
	if n := len(refused); n < sent-1-limit || n > sent-limit {
		t.Errorf("%d commands refused (%v), want %d or %d", n, refused, sent-1-limit, sent-limit)
	}
	for i := 1; i < len(subscribed); i++ {
		if subscribed[i] <= subscribed[i-1] {
			t.Fatalf("subscribed replies in order %v, want the commands' order", subscribed)
		}
	}
	if len(subscribed) == 0 || subscribed[0] != 0 {
		t.Errorf("subscribed %v, want the first subscribe among them", subscribed)
	}
	hub := in.Server.Hub
	for _, id := range subscribed {
		if n := hub.Subscribers(fmt.Sprintf("slow.%d", id)); n != 1 {
			t.Errorf("slow.%d has %d subscribers, want 1", id, n)
		}
	}
	for _, id := range refused {
		if n := hub.Subscribers(fmt.Sprintf("slow.%d", id)); n != 0 {
			t.Errorf("refused slow.%d has %d subscribers, want 0", id, n)
		}
	}
}
