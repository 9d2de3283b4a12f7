package natsbroker_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

// Two nodes under one prefix each share a summary and both read both; a
// summary is gone once its ttl passed; an oversized one is refused.
func TestSummaries(t *testing.T) {
	prefix := newPrefix(t, sharedNATS)
	ctx := testCtx(t)
	a := newNode(t, sharedNATS, prefix, brokertest.NewRecorder(), func(c *natsbroker.Config) { c.NodeID = "node-a" })
	b := newNode(t, sharedNATS, prefix, brokertest.NewRecorder(), func(c *natsbroker.Config) { c.NodeID = "node.b" })

	// Before anyone shared: none, no error.
	if got, err := a.Summaries(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Summaries before any share = %q, %v; want none", got, err)
	}
	const ttl = time.Second // the bucket's MaxAge, set by the first share
	for _, n := range []*natsbroker.Broker{a, b} {
		if err := n.ShareSummary(ctx, n.NodeID(), []byte(`{"node":"`+n.NodeID()+`"}`), ttl); err != nil {
			t.Fatalf("ShareSummary(%s) = %v", n.NodeID(), err)
		}
	}
	for _, n := range []*natsbroker.Broker{a, b} {
		got, err := n.Summaries(ctx)
		if err != nil || len(got) != 2 || string(got["node-a"]) != `{"node":"node-a"}` || string(got["node.b"]) != `{"node":"node.b"}` {
			t.Fatalf("%s: Summaries = %q, %v; want both nodes'", n.NodeID(), got, err)
		}
	}

	big := []byte(strings.Repeat("x", natsbroker.MaxSummaryBytes+1))
	if err := a.ShareSummary(ctx, "node-a", big, ttl); err == nil {
		t.Fatal("ShareSummary of 2 KiB + 1 = nil, want an error")
	}
	if err := a.ShareSummary(ctx, "node-a", big[:natsbroker.MaxSummaryBytes], ttl); err != nil {
		t.Fatalf("ShareSummary of exactly 2 KiB = %v, want nil", err)
	}

	// Expiry: b stops sharing; its summary goes after the ttl, a's stays
	// while a keeps sharing.
	var got map[string][]byte
	gone := brokertest.Eventually(10*time.Second, func() bool {
		if err := a.ShareSummary(ctx, "node-a", []byte("again"), ttl); err != nil {
			t.Errorf("ShareSummary = %v", err)
		}
		var err error
		if got, err = b.Summaries(ctx); err != nil {
			t.Errorf("Summaries = %v", err)
		}
		_, has := got["node.b"]
		return !has
	})
	if !gone || string(got["node-a"]) != "again" {
		t.Fatalf("after node.b stopped sharing: %q; want node-a's only", got)
	}
}

// Without a connection both calls fail with relay.ErrUnavailable.
func TestSummariesUnavailable(t *testing.T) {
	e := newEngine(t, sharedNATS, "rt_unused")
	if err := e.ShareSummary(t.Context(), "x", []byte("{}"), time.Second); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("ShareSummary before Run = %v, want ErrUnavailable", err)
	}
	if _, err := e.Summaries(t.Context()); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("Summaries before Run = %v, want ErrUnavailable", err)
	}
}
