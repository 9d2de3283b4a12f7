package redisbroker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relay"
)

// Two nodes under one prefix each share a summary and both read both; a
// summary is gone once its ttl passed; an oversized one is refused.
func TestSummaries(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), func(c *redisbroker.Config) { c.NodeID = "node-a" })
	b := newNode(t, sharedRedis, prefix, brokertest.NewRecorder(), func(c *redisbroker.Config) { c.NodeID = "node-b" })

	if got, err := a.Summaries(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Summaries before any share = %q, %v; want none", got, err)
	}
	for _, n := range []*redisbroker.Broker{a, b} {
		if err := n.ShareSummary(ctx, n.NodeID(), []byte(`{"node":"`+n.NodeID()+`"}`), time.Minute); err != nil {
			t.Fatalf("ShareSummary(%s) = %v", n.NodeID(), err)
		}
	}
	for _, n := range []*redisbroker.Broker{a, b} {
		got, err := n.Summaries(ctx)
		if err != nil || len(got) != 2 || string(got["node-a"]) != `{"node":"node-a"}` || string(got["node-b"]) != `{"node":"node-b"}` {
			t.Fatalf("%s: Summaries = %q, %v; want both nodes'", n.NodeID(), got, err)
		}
	}

	big := []byte(strings.Repeat("x", redisbroker.MaxSummaryBytes+1))
	if err := a.ShareSummary(ctx, "node-a", big, time.Minute); err == nil {
		t.Fatal("ShareSummary of 2 KiB + 1 = nil, want an error")
	}
	if got, _ := a.Summaries(ctx); string(got["node-a"]) != `{"node":"node-a"}` {
		t.Fatalf("after the refused share, node-a's summary = %q", got["node-a"])
	}

	// Expiry: b shares with a short ttl; its summary goes after it, a's
	// (a minute) stays.
	if err := b.ShareSummary(ctx, "node-b", []byte("short"), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var got map[string][]byte
	gone := brokertest.Eventually(10*time.Second, func() bool {
		var err error
		if got, err = a.Summaries(ctx); err != nil {
			t.Errorf("Summaries = %v", err)
		}
		_, has := got["node-b"]
		return !has
	})
	if !gone || len(got) != 1 || got["node-a"] == nil {
		t.Fatalf("after node-b's ttl: %q; want node-a's only", got)
	}
}

// While Redis is unreachable both calls fail with relay.ErrUnavailable,
// within the command timeout.
func TestSummariesUnavailable(t *testing.T) {
	e, err := redisbroker.New(redisbroker.Config{URL: "redis://127.0.0.1:1/0", Timeout: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ShareSummary(t.Context(), "x", []byte("{}"), time.Second); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("ShareSummary = %v, want ErrUnavailable", err)
	}
	if _, err := e.Summaries(t.Context()); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("Summaries = %v, want ErrUnavailable", err)
	}
}
