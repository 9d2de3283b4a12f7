package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The dashboard's node summaries (dashboard.Peers, implemented without
// importing the dashboard) live in the key-value bucket P_dashboard, keyed
// by the node id's token, in memory, one revision per key. NATS 2.9 has no
// per-key TTL: the bucket's MaxAge is the ttl given to the first
// ShareSummary after each (re)connect of this node (the dashboard always
// gives 6 s, three of its 2 s rounds), so every summary expires that long
// after it was written. The bucket is made on first use, not in setup:
// nodes without a dashboard sharing summaries never create it.
const (
	// MaxSummaries bounds the summaries Summaries returns.
	MaxSummaries = 256
	// MaxSummaryBytes bounds one summary; ShareSummary refuses larger
	// (and the bucket's MaxValueSize enforces it on the server).
	MaxSummaryBytes = 2 << 10
	// minSummaryTTL is the shortest bucket MaxAge used.
	minSummaryTTL = 100 * time.Millisecond
)

// dashBucket is the dashboard bucket as found or created on one infra (one
// connection's setup): a reconnect makes the next call look again, since
// NATS may have lost it.
type dashBucket struct {
	inf *infra
	kv  jetstream.KeyValue
}

// ShareSummary stores node's dashboard summary until ttl passes (see
// above for how ttl sets the bucket's MaxAge).
func (b *Broker) ShareSummary(ctx context.Context, node string, summary []byte, ttl time.Duration) error {
	if len(summary) > MaxSummaryBytes {
		return fmt.Errorf("natsbroker: the dashboard summary of node %q is %d bytes, over the limit of %d", node, len(summary), MaxSummaryBytes)
	}
	if node == "" {
		return errors.New("natsbroker: sharing a dashboard summary: empty node id")
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	kv, err := b.dashboardKV(ctx, max(ttl, minSummaryTTL))
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, token(node), summary); err != nil {
		b.dash.Store(nil) // look the bucket up again next time
		return unavailable("sharing the dashboard summary", err)
	}
	return nil
}

// Summaries returns the summaries that have not expired, by node id (this
// node's included), at most MaxSummaries; none before any node shared one.
func (b *Broker) Summaries(ctx context.Context) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	out := make(map[string][]byte)
	kv, err := b.dashboardKV(ctx, 0)
	if err != nil || kv == nil {
		return out, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		b.dash.Store(nil)
		return nil, unavailable("reading the dashboard summaries", err)
	}
	defer w.Stop()
	for len(out) < MaxSummaries {
		select {
		case <-ctx.Done():
			return nil, unavailable("reading the dashboard summaries", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, unavailable("reading the dashboard summaries", errors.New("the watch ended early"))
			}
			if e == nil { // every current entry seen
				return out, nil
			}
			if node, ok := untoken(e.Key()); ok {
				out[node] = e.Value()
			}
		}
	}
	return out, nil
}

// dashboardKV returns the dashboard bucket of the current connection:
// created (or updated) with MaxAge ttl when ttl > 0, else only looked up,
// nil without error when it does not exist yet.
func (b *Broker) dashboardKV(ctx context.Context, ttl time.Duration) (jetstream.KeyValue, error) {
	c, inf, err := b.use()
	if err != nil {
		return nil, err
	}
	if d := b.dash.Load(); d != nil && d.inf == inf {
		return d.kv, nil
	}
	var kv jetstream.KeyValue
	if ttl > 0 {
		kv, err = c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:       b.n.dashboard,
			Description:  "Relay dashboard: each node's summary",
			TTL:          ttl,
			MaxValueSize: MaxSummaryBytes,
			Storage:      jetstream.MemoryStorage,
			Replicas:     b.cfg.Replicas,
		})
		if err != nil {
			return nil, unavailable("creating bucket "+b.n.dashboard, err)
		}
	} else {
		kv, err = c.js.KeyValue(ctx, b.n.dashboard)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, unavailable("looking up bucket "+b.n.dashboard, err)
		}
	}
	b.dash.Store(&dashBucket{inf: inf, kv: kv})
	return kv, nil
}
