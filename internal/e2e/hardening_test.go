package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// Subscribing to topics nobody published to, and reading their history,
// stores no stream; what it does store is bounded. A subscriber of such a
// topic still gets its first message in the epoch it was told.
func TestReadsOfUnpublishedTopicsStoreNoStreams(t *testing.T) {
	const maxFresh, rounds, perRound = 500, 40, 128
	in := relaytest.Start(t, server.Config{Metrics: true, Memory: memorybroker.Config{MaxFresh: maxFresh}})
	reg := register(t, in, 1)
	c := dialV1(t, reg.URL)
	for r := range rounds {
		topics := make([]string, perRound)
		for i := range topics {
			topics[i] = fmt.Sprintf("probe.%d.%d", r, i)
		}
		for _, f := range c.subscribe(map[string]any{"topics": topics}) {
			if f.Offset == nil || *f.Offset != 0 || f.Epoch == nil || *f.Epoch == "" {
				t.Fatalf("subscribed to a fresh topic: %+v, want offset 0 and an epoch", f)
			}
		}
		c.send(map[string]any{"type": "unsubscribe", "topics": topics})
		c.expect("unsubscribed")
	}
	for i := range 1000 {
		code, _, body := request(t, "GET", fmt.Sprintf("%s/history/probe.http.%d", in.URL, i), "")
		if code != http.StatusOK || !strings.Contains(body, `"offset":0`) {
			t.Fatalf("GET /history of a fresh topic = %d %s, want 200 at offset 0", code, body)
		}
	}
	b := in.Server.Broker
	if n := b.Streams(); n != 0 {
		t.Errorf("%d subscribes and 1000 history reads left %d streams, want 0", rounds*perRound, n)
	}
	if n := b.FreshEpochs(); n > maxFresh {
		t.Errorf("fresh epochs held = %d, want at most %d", n, maxFresh)
	}
	_, _, metrics := request(t, "GET", in.URL+"/metrics", "")
	for _, want := range []string{"relay_streams 0\n", fmt.Sprintf("relay_fresh_epochs %d\n", maxFresh), "relay_fresh_epochs_evicted_total ", "relay_listener_connections{kind=\"all\"} "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A subscriber waiting on a fresh topic gets its first message in the
	// epoch it was told, though many other topics were read meanwhile: a
	// watched topic's epoch is kept.
	sub := c.subscribe(map[string]any{"topics": []string{"orders"}})[0]
	for i := range 2000 {
		request(t, "GET", fmt.Sprintf("%s/history/probe.more.%d", in.URL, i), "")
	}
	publish(t, in, client.Publish{Topic: "orders", Message: "m1"})
	c.expectMessages("orders", 1, 1, *sub.Epoch)
	if n := b.Streams(); n != 1 {
		t.Errorf("streams = %d after one publish, want 1", n)
	}
}

// A subscribe naming far more topics than a connection may have is refused
// before any of them is looked at, and the socket goes on working.
func TestOversizedSubscribeIsRefusedFirst(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	reg := register(t, in, 1)
	c := dialV1(t, reg.URL)
	// About 58 KB, like the probe: 3000 topics, 1000 of them in since.
	topics := make([]string, 3000)
	since := make(map[string]any, 1000)
	for i := range topics {
		topics[i] = fmt.Sprintf("t%d", i)
		if i%3 == 0 {
			since[topics[i]] = map[string]any{"offset": 1, "epoch": "e"}
		}
	}
	c.send(map[string]any{"type": "subscribe", "id": 1, "topics": topics, "since": since})
	if f := c.expect("error"); f.Code != "limit_exceeded" || string(f.ID) != "1" {
		t.Fatalf("oversized subscribe answered %+v, want error limit_exceeded for id 1", f)
	}
	c.send(map[string]any{"type": "subscribe", "id": 2, "topics": []string{"a"}, "since": map[string]any{"a": map[string]any{"offset": 0, "epoch": "e"}, "b": map[string]any{"offset": 0, "epoch": "e"}}})
	if f := c.expect("error"); f.Code != "invalid" {
		t.Fatalf("since naming more topics than topics answered %+v, want error invalid", f)
	}
	c.pingPong(3)
	for _, topic := range []string{"t0", "t2999", "a"} {
		if n := in.Server.Hub.Subscribers(topic); n != 0 {
			t.Errorf("%s has %d subscribers after refused subscribes, want 0", topic, n)
		}
	}
	if n := in.Server.Broker.FreshEpochs(); n != 0 {
		t.Errorf("refused subscribes left %d fresh epochs, want 0", n)
	}
}

// An idempotency key is scoped to its topic (and audience): reusing one
// on another topic publishes there.
func TestIdempotencyKeysArePerTopic(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	body := func(topic string) string {
		return fmt.Sprintf(`{"topic":%q,"message":"x","idempotency_key":"k1"}`, topic)
	}
	for _, tt := range []struct {
		topic, want string
	}{
		{"orders", `"offset":1`},
		{"alerts", `"offset":1`},
		{"orders", `"duplicate":true`},
	} {
		code, _, got := request(t, "POST", in.URL+"/publish", body(tt.topic))
		if code != http.StatusOK || !strings.Contains(got, tt.want) {
			t.Fatalf("publish to %s with key k1 = %d %s, want %s", tt.topic, code, got, tt.want)
		}
	}
	code, _, got := request(t, "GET", in.URL+"/history/alerts", "")
	if code != http.StatusOK || !strings.Contains(got, `"offset":1`) || !strings.Contains(got, `"message":"x"`) {
		t.Fatalf("alerts history = %d %s, want the message at offset 1", code, got)
	}
}

// Topic names with invisible characters are refused everywhere.
func TestTopicsWithInvisibleCharactersAreRefused(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	for _, topic := range []string{"cats\u200b", "a\u202eb", "cats\ufe0f"} {
		code, _, got := request(t, "POST", in.URL+"/publish", fmt.Sprintf(`{"topic":%q,"message":"x"}`, topic))
		if code != http.StatusBadRequest || !strings.Contains(got, "invisible character") {
			t.Errorf("publish to %q = %d %s, want 400 naming the invisible character", topic, code, got)
		}
	}
	reg := register(t, in, 1)
	c := dialV1(t, reg.URL)
	c.send(map[string]any{"type": "subscribe", "topics": []string{"cats\u200b"}})
	if f := c.expect("error"); f.Code != "invalid" {
		t.Errorf("subscribe to cats+U+200B answered %+v, want error invalid", f)
	}
}
