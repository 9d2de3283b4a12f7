package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// The dashboard's node summaries (dashboard.Peers, implemented without
// importing the dashboard): one string key per node, P:d:{node}, written
// with SET … PX ttl. Summaries reads the nodes the engine already tracks
// (P:nodes, most recent heartbeat first, at most MaxSummaries) and MGETs
// their keys: two round trips, no SCAN. A node that shares a summary but
// sends no heartbeat (it is not this engine's node) is not listed.
const (
	// MaxSummaries bounds the summaries Summaries returns.
	MaxSummaries = 256
	// MaxSummaryBytes bounds one summary; ShareSummary refuses larger.
	MaxSummaryBytes = 2 << 10
)

// ShareSummary stores node's dashboard summary until ttl passes.
func (b *Broker) ShareSummary(ctx context.Context, node string, summary []byte, ttl time.Duration) error {
	if len(summary) > MaxSummaryBytes {
		return fmt.Errorf("the dashboard summary of node %q is %d bytes, over the limit of %d", node, len(summary), MaxSummaryBytes)
	}
	if node == "" {
		return fmt.Errorf("sharing a dashboard summary: empty node id")
	}
	ms := max(ttl.Milliseconds(), 1)
	cmd := b.client.B().Set().Key(b.keys.summary(node)).Value(string(summary)).PxMilliseconds(ms).Build()
	return unavailable("sharing the dashboard summary", b.call(ctx, cmd).Error())
}

// Summaries returns the summaries of the live nodes that have one, by
// node id (this node's included), at most MaxSummaries.
func (b *Broker) Summaries(ctx context.Context) (map[string][]byte, error) {
	cmd := b.client.B().Zrange().Key(b.keys.nodes()).Min("0").Max(strconv.Itoa(MaxSummaries - 1)).Rev().Build()
	nodes, err := b.call(ctx, cmd).AsStrSlice()
	if err != nil {
		return nil, unavailable("listing the nodes for the dashboard", err)
	}
	out := make(map[string][]byte, len(nodes))
	if len(nodes) == 0 {
		return out, nil
	}
	keys := make([]string, len(nodes))
	for i, n := range nodes {
		keys[i] = b.keys.summary(n)
	}
	vals, err := b.call(ctx, b.client.B().Mget().Key(keys...).Build()).ToArray()
	if err != nil {
		return nil, unavailable("reading the dashboard summaries", err)
	}
	for i, v := range vals {
		if i >= len(nodes) {
			break
		}
		s, err := v.ToString()
		if err != nil { // nil: no summary, or it expired
			continue
		}
		out[nodes[i]] = []byte(s)
	}
	return out, nil
}
