package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// TestStreamCloseCodes: the close codes by which the server says the
// client cannot come back, or broke the protocol, end the stream with
// that code after one connection; the others are retried. The two
// clients share the list (clients/js FINAL_CLOSE_CODES).
func TestStreamCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code  int
		final bool
	}{
		{4000, true}, {4001, true}, {1002, true}, {1003, true}, {1007, true}, {1008, true}, {1009, true},
		{1001, false}, {1011, false}, {4002, false}, {4003, false}, {4004, false},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			f := startFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
				ws, err := upgradeV1.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				if n == 1 {
					closeWith(ws, tc.code)
					return
				}
				readUntilGone(ws) // later connections stay open
			})
			s, err := f.Client.OpenStream(ctxT(t), f.URL, client.StreamOptions{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if tc.final {
				var ce *client.CloseError
				if err := ended(t, s); !errors.As(err, &ce) || ce.Code != tc.code {
					t.Fatalf("the stream ended with %v, want close %d", err, tc.code)
				}
				if n := f.Conns(); n != 1 {
					t.Fatalf("%d connections after close %d, want no reconnect", n, tc.code)
				}
				return
			}
			relaytest.Eventually(t, "a reconnect", func() bool { return f.Conns() >= 2 })
			if err := s.Close(); err != nil || s.Err() != nil {
				t.Fatalf("close = %v, Err = %v after a reconnect", err, s.Err())
			}
		})
	}
}

// TestStreamBackoff: the reconnect waits are drawn under a bound that
// starts at MinBackoff and doubles up to MaxBackoff. A connection that
// opened restarts the count, unless the server closed it to push back
// (4002 slow consumer, 4004 rate limit).
func TestStreamBackoff(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		code int
		want []time.Duration
	}{
		{4004, []time.Duration{ms, 2 * ms, 4 * ms, 8 * ms, 8 * ms}},
		{4002, []time.Duration{ms, 2 * ms, 4 * ms, 8 * ms, 8 * ms}},
		{1011, []time.Duration{ms, ms, ms, ms, ms}},
		{4003, []time.Duration{ms, ms, ms, ms, ms}},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			bounds, restore := client.RecordWaits()
			f := startFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if ws, err := upgradeV1.Upgrade(w, r, nil); err == nil {
					closeWith(ws, tc.code)
				}
			})
			s, err := f.Client.OpenStream(ctxT(t), f.URL, client.StreamOptions{MinBackoff: ms, MaxBackoff: 8 * ms})
			if err != nil {
				restore()
				t.Fatal(err)
			}
			relaytest.Eventually(t, "six connections", func() bool { return f.Conns() >= 6 })
			s.Close()
			restore()
			if got := bounds(); len(got) < len(tc.want) || !slices.Equal(got[:len(tc.want)], tc.want) {
				t.Fatalf("after close %d the wait bounds were %v, want %v first", tc.code, got, tc.want)
			}
		})
	}
}

// TestStreamUnavailableReconnects: a subscribe the server answers with
// "unavailable" (its engine unreachable) is not a refusal of the topic:
// the stream reconnects and subscribes again, and Subscribe returns once
// that succeeded.
func TestStreamUnavailableReconnects(t *testing.T) {
	f := startFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		ws, err := upgradeV1.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		var cmd struct {
			Type   string          `json:"type"`
			ID     json.RawMessage `json:"id"`
			Topics []string        `json:"topics"`
		}
		if err := ws.ReadJSON(&cmd); err != nil || cmd.Type != "subscribe" || len(cmd.Topics) != 1 {
			t.Errorf("connection %d: first command %+v, %v; want a subscribe of one topic", n, cmd, err)
			ws.Close()
			return
		}
		if n == 1 {
			ws.WriteJSON(map[string]any{"type": "error", "code": "unavailable", "message": "subscribing: Redis: connection refused", "id": cmd.ID})
		} else {
			ws.WriteJSON(map[string]any{"type": "subscribed", "id": cmd.ID, "topic": cmd.Topics[0], "offset": 0, "epoch": "e1", "recovered": false})
			ws.WriteJSON(map[string]any{"type": "message", "topic": cmd.Topics[0], "offset": 1, "epoch": "e1", "message": "after the outage"})
		}
		readUntilGone(ws)
	})
	s, err := f.Client.OpenStream(ctxT(t), f.URL, client.StreamOptions{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Subscribe(ctxT(t), false, "orders"); err != nil {
		t.Fatalf("subscribe across an unavailable engine = %v, want it to succeed after the reconnect", err)
	}
	if ev := next(t, s); ev.Type != "message" || ev.Offset != 1 || ev.Message != "after the outage" {
		t.Fatalf("event %+v, want the message of the second connection", ev)
	}
	if n := f.Conns(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// TestStreamEndsWithoutRelayV1: a reconnect to a server (or a proxy) that
// no longer accepts relay.v1 ends the stream instead of retrying forever.
func TestStreamEndsWithoutRelayV1(t *testing.T) {
	f := startFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			if ws, err := upgradeV1.Upgrade(w, r, nil); err == nil {
				closeWith(ws, 1001)
			}
			return
		}
		if ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil); err == nil {
			readUntilGone(ws)
		}
	})
	s, err := f.Client.OpenStream(ctxT(t), f.URL, client.StreamOptions{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := ended(t, s); err == nil || !strings.Contains(err.Error(), "relay.v1") {
		t.Fatalf("the stream ended with %v, want the refused relay.v1", err)
	}
	if n := f.Conns(); n != 2 {
		t.Fatalf("%d connections, want 2 (no retry after the protocol was refused)", n)
	}
}

// TestStreamEndsWhenResubscribeRefused: after a reconnect with a token
// that no longer allows a topic, the stream ends naming that topic,
// rather than carrying on without its messages.
func TestStreamEndsWhenResubscribeRefused(t *testing.T) {
	const secret = "token-secret-0123456789abcdef0123456789"
	a, _ := auth.New(auth.Config{TokenSecret: []byte(secret)})
	in := relaytest.Start(t, server.Config{API: apiWithAuth(a)})
	c := in.Client
	wide, _ := auth.Mint([]byte(secret), 9, time.Minute, []string{"a", "b"})
	narrow, _ := auth.Mint([]byte(secret), 9, time.Minute, []string{"b"})
	s, err := c.OpenStream(ctxT(t), c.TokenURL(wide), client.StreamOptions{
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Reconnect: func(context.Context) (string, error) { return c.TokenURL(narrow), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, topic := range []string{"a", "b"} {
		if err := s.Subscribe(ctxT(t), false, topic); err != nil {
			t.Fatal(err)
		}
	}
	in.Stop()
	startAt(t, in.Addr, server.Config{API: apiWithAuth(a)})
	if err := ended(t, s); err == nil || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("the stream ended with %v, want the refusal of topic a", err)
	}
}

// TestStreamPresenceAcrossReconnect: who came and went while the stream
// was away arrives as join and leave events once it is back, so that an
// application following the events agrees with Present.
func TestStreamPresenceAcrossReconnect(t *testing.T) {
	const secret = "token-secret-0123456789abcdef0123456789"
	a, _ := auth.New(auth.Config{TokenSecret: []byte(secret)})
	cfg := server.Config{API: apiWithAuth(a)}
	in := relaytest.Start(t, cfg)
	c := in.Client
	tok, _ := auth.Mint([]byte(secret), 9, time.Minute, nil)
	proceed := make(chan struct{})
	s, err := c.OpenStream(ctxT(t), c.TokenURL(tok), client.StreamOptions{
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Reconnect: func(ctx context.Context) (string, error) {
			select {
			case <-proceed:
				return c.TokenURL(tok), nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	listen(t, c, 8, "room")
	if err := s.Subscribe(ctxT(t), true, "room"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s); ev.Type != "join" || ev.UserID != 9 {
		t.Fatalf("first event %+v, want its own join", ev)
	}
	if got := fmt.Sprint(s.Present("room")); got != "[8 9]" {
		t.Fatalf("present %s, want [8 9]", got)
	}

	// The server restarts: user 8 is gone, user 5 arrives before the
	// stream is back.
	in.Stop()
	startAt(t, in.Addr, cfg)
	listen(t, c, 5, "room")
	close(proceed)
	var got []string
	for len(got) < 5 {
		ev := next(t, s)
		got = append(got, fmt.Sprintf("%s %d", ev.Type, ev.UserID))
	}
	// The snapshot lists users present before this socket: 9 itself is
	// not among them until its own join follows. The topic's stream
	// restarted too, hence the gap.
	want := []string{"leave 8", "leave 9", "join 5", "gap 0", "join 9"}
	if !slices.Equal(got, want) {
		t.Fatalf("events after the reconnect %q, want %q", got, want)
	}
	if got := fmt.Sprint(s.Present("room")); got != "[5 9]" {
		t.Fatalf("present %s, want [5 9]", got)
	}
}
