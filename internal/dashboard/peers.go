package dashboard

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Peers is an optional interface of a networked engine that lets every
// node's dashboard list every node: each node shares a small summary of
// itself under its id, for a few seconds, and reads those of the others.
// An engine without it leaves each dashboard showing its own node only
// ("per-node view: this node").
type Peers interface {
	// ShareSummary stores this node's summary under its id until ttl
	// passes.
	ShareSummary(ctx context.Context, node string, summary []byte, ttl time.Duration) error
	// Summaries returns the summaries that have not expired, by node id
	// (this node's included).
	Summaries(ctx context.Context) (map[string][]byte, error)
}

// NodeSummary is what a node shares of itself through Peers.
type NodeSummary struct {
	Node          string  `json:"node"`
	Ready         bool    `json:"ready"`
	Uptime        int64   `json:"uptime_seconds"`
	Connections   int64   `json:"connections"`
	Registrations int64   `json:"registrations"`
	PublishRate   float64 `json:"publish_rate"`
	DeliveryRate  float64 `json:"delivery_rate"`
	Time          int64   `json:"time"` // Unix milliseconds of the sample
}

// Peer summaries are shared every peerInterval and expire after peerTTL.
const (
	peerInterval = 2 * time.Second
	peerTTL      = 3 * peerInterval
	maxPeers     = 256
)

// sharePeers shares this node's summary and reads the others' every
// peerInterval until ctx ends. It runs beside the sampler, so that the
// engine's round trips never delay a sample.
func (d *Dashboard) sharePeers(ctx context.Context, p Peers) {
	t := time.NewTicker(peerInterval)
	defer t.Stop()
	for {
		d.exchange(ctx, p)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// exchange does one round of sharePeers.
func (d *Dashboard) exchange(ctx context.Context, p Peers) {
	ctx, cancel := context.WithTimeout(ctx, peerInterval)
	defer cancel()
	s := d.cur.Load().snap
	mine, _ := json.Marshal(NodeSummary{Node: s.Node, Ready: s.Ready, Uptime: s.Uptime, Connections: s.Connections,
		Registrations: s.Registrations, PublishRate: s.PublishRate, DeliveryRate: s.DeliveryRate, Time: s.Time})
	if err := p.ShareSummary(ctx, s.Node, mine, peerTTL); err != nil {
		d.cfg.Log.Debug("sharing this node's dashboard summary failed", "err", err)
	}
	all, err := p.Summaries(ctx)
	if err != nil {
		d.cfg.Log.Debug("reading the nodes' dashboard summaries failed", "err", err)
		d.peers.Store(nil) // the table falls back to this node
		return
	}
	nodes := make([]NodeSummary, 0, min(len(all), maxPeers))
	for id, b := range all {
		var n NodeSummary
		if json.Unmarshal(b, &n) != nil || n.Node != id {
			continue
		}
		nodes = append(nodes, n)
		if len(nodes) == maxPeers {
			break
		}
	}
	slices.SortFunc(nodes, func(a, b NodeSummary) int { return strings.Compare(a.Node, b.Node) })
	d.peers.Store(&nodes)
}
