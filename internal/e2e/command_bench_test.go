package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// BenchmarkSubscribeCommand is the cost, round trip, of the heaviest
// relay.v1 commands a client can send: an oversized subscribe (refused by
// its limits) and a large accepted one (128 topics recovering 50 messages
// each, about 600 KB of replay: more would overflow the 1 MiB send queue
// while the benchmark's client reads). Both run on a read loop other
// sockets share.
func BenchmarkSubscribeCommand(b *testing.B) {
	in := relaytest.Start(b, server.Config{})
	reg, err := in.Client.Register(b.Context(), 1)
	if err != nil {
		b.Fatal(err)
	}
	d := websocket.Dialer{Subprotocols: []string{"relay.v1"}}
	ws, _, err := d.Dial(reg.URL, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	roundTrip := func(b *testing.B, cmd []byte, frames int) {
		if err := ws.WriteMessage(websocket.TextMessage, cmd); err != nil {
			b.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for range frames {
			if _, _, err := ws.ReadMessage(); err != nil {
				b.Fatal(err)
			}
		}
	}

	b.Run("oversized-58KB", func(b *testing.B) {
		topics := make([]string, 3000)
		since := map[string]any{}
		for i := range topics {
			topics[i] = fmt.Sprintf("t%d", i)
			if i%3 == 0 {
				since[topics[i]] = map[string]any{"offset": 1, "epoch": "e"}
			}
		}
		cmd, _ := json.Marshal(map[string]any{"type": "subscribe", "topics": topics, "since": since})
		b.SetBytes(int64(len(cmd)))
		for b.Loop() {
			roundTrip(b, cmd, 1)
		}
	})

	b.Run("128-topics-recovering-50-each", func(b *testing.B) {
		topics := make([]string, 128)
		since := map[string]any{}
		for i := range topics {
			topics[i] = fmt.Sprintf("full%d", i)
			var r struct {
				Epoch string `json:"epoch"`
			}
			for j := range 50 {
				_, _, body := request(b, "POST", in.URL+"/publish", fmt.Sprintf(`{"topic":%q,"message":"message %d of a full history"}`, topics[i], j))
				json.Unmarshal([]byte(body), &r)
			}
			since[topics[i]] = map[string]any{"offset": 0, "epoch": r.Epoch}
		}
		sub, _ := json.Marshal(map[string]any{"type": "subscribe", "topics": topics, "since": since})
		unsub, _ := json.Marshal(map[string]any{"type": "unsubscribe", "topics": topics})
		for b.Loop() {
			roundTrip(b, sub, 128*51)
			roundTrip(b, unsub, 1)
		}
	})
}
