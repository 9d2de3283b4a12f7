package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
	"github.com/relayhq/relay/internal/ws"
)

// TestBadSocketInput sends each kind of bad frame on its own connection and
// checks the documented close code, while a neighbour on the same topic
// keeps receiving every message. (Seed texts that are no command are
// ignored, not refused: TestSeedIgnoresNonCommands.)
func TestBadSocketInput(t *testing.T) {
	in := relaytest.Start(t, server.Config{
		Hub: hub.Config{MaxTopics: 4},
		WS:  ws.Config{MaxMessageBytes: 4096},
	})
	_, neighbour := connect(t, in, 100)
	if err := neighbour.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		typ    int
		msg    string
		code   int
		reason string
	}{
		{"binary frame", websocket.BinaryMessage, "\x00\x01", 1003, "binary"},
		{"oversized frame", websocket.TextMessage, strings.Repeat("x", 5000), 1009, "too large"},
		// Texts that are no topics command at all ("hello?", {"topics":
		// "cats"}, {"type": "hello"}) are ignored: TestSeedIgnoresNonCommands.
		{"topics of the wrong type", websocket.TextMessage, `{"topics": ["cats", 5]}`, 1008, "array of strings"},
		{"too many topics", websocket.TextMessage, `{"topics": ["a","b","c","d","e"]}`, 1008, "at most 4"},
		{"empty topic", websocket.TextMessage, `{"topics": [""]}`, 1008, "must not be empty"},
		{"invalid UTF-8", websocket.TextMessage, "\xff\xfe", 1007, "UTF-8"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := in.Client.Register(ctxT(t), uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			c, _, err := websocket.DefaultDialer.Dial(reg.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.WriteMessage(tt.typ, []byte(tt.msg)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _, err = c.ReadMessage()
			ce, ok := err.(*websocket.CloseError)
			if !ok || ce.Code != tt.code || !strings.Contains(ce.Text, tt.reason) {
				t.Fatalf("got %v, want close %d mentioning %q", err, tt.code, tt.reason)
			}
			msg := fmt.Sprintf("still here %d", i)
			if res := publish(t, in, client.Publish{Topic: "cats", Message: msg}); res.Delivered != 1 {
				t.Fatalf("delivered %d, want 1 (the neighbour)", res.Delivered)
			}
			if m := receive(t, neighbour); m != msg {
				t.Fatalf("neighbour received %q, want %q", m, msg)
			}
		})
	}
	relaytest.Eventually(t, "bad connections to close", func() bool { return in.Server.WS.Len() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := neighbour.Sync(ctx); err != nil {
		t.Fatalf("neighbour after all bad input: %v", err)
	}
}
