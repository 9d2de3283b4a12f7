package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/relay"
)

// sweepEvery is how often each node scans the presence bucket for members
// of nodes that are gone even when it saw none go: a backstop for a node
// that died while no other was running, or a scan cut short.
const sweepEvery = time.Minute

// sweepTimeout bounds one sweep; a sweep that fails is tried again after
// a pause that doubles, from sweepRetry up to sweepEvery.
const (
	sweepTimeout = time.Minute
	sweepRetry   = 5 * time.Second
)

// heartbeat writes this node's heartbeat every Heartbeat, on a goroutine
// of its own: nothing slow may make the node miss its own NodeTTL.
func (b *Broker) heartbeat(ctx context.Context) {
	tick := time.NewTicker(b.cfg.Heartbeat)
	defer tick.Stop()
	for {
		if b.connErr() == nil && b.infra.Load() != nil {
			hctx, cancel := context.WithTimeout(ctx, max(b.cfg.Heartbeat, b.cfg.Timeout))
			b.roster.beat(hctx)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// watchNodes finds nodes whose heartbeat stopped and removes their
// presence and their hold on registrations, until ctx is done.
func (b *Broker) watchNodes(ctx context.Context) {
	tick := time.NewTicker(b.cfg.Heartbeat)
	defer tick.Stop()
	for {
		if b.connErr() == nil && b.infra.Load() != nil {
			b.roster.detect(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// beat writes this node's heartbeat by compare-and-set. When the entry is
// gone or was overwritten (the others found this node silent for too long
// and removed it, with its presence and registrations), the node starts a
// new incarnation and writes its presence again.
func (r *roster) beat(ctx context.Context) error {
	_, inf, err := r.b.use()
	if err != nil {
		return err
	}
	r.hbMu.Lock()
	defer r.hbMu.Unlock()
	key := token(r.b.cfg.NodeID)
	r.hbCount++
	if r.hbRev != 0 {
		r.mu.Lock()
		inc := r.inc
		r.mu.Unlock()
		val, _ := json.Marshal(heartbeat{Inc: inc, Beat: r.hbCount})
		rev, err := inf.nodesKV.Update(ctx, key, val, r.hbRev)
		if err == nil {
			r.hbRev = rev
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err // NATS is unreachable: try again next beat
		}
		r.b.log.Warn("the other nodes declared this node gone; joining again with a new incarnation")
	}
	inc := newEpoch()
	val, _ := json.Marshal(heartbeat{Inc: inc, Beat: r.hbCount})
	rev, err := inf.nodesKV.Put(ctx, key, val)
	if err != nil {
		return err
	}
	r.hbRev = rev
	r.mu.Lock()
	r.inc, r.reconcile = inc, true
	r.mu.Unlock()
	r.signal()
	r.b.registry.reclaimSoon() // the others may have released what this node holds
	return nil
}

// detect lists the nodes' heartbeats, removes those that stood still for
// NodeTTL, and scans presence when a node went (or a sweep is due).
func (r *roster) detect(ctx context.Context) {
	_, inf, err := r.b.use()
	if err != nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, max(r.b.cfg.Heartbeat, r.b.cfg.Timeout))
	beats, err := r.heartbeats(lctx, inf.nodesKV)
	cancel()
	if err != nil {
		return
	}
	now := time.Now()
	if r.rewatch.Swap(false) {
		for key, s := range r.seen {
			r.seen[key] = nodeSeen{rev: s.rev, at: now}
		}
	}
	self := token(r.b.cfg.NodeID)
	gone := false
	for key := range r.seen {
		if _, ok := beats[key]; !ok {
			delete(r.seen, key) // removed by another node, or left
			gone = true
		}
	}
	for key, e := range beats {
		if key == self {
			continue
		}
		s, ok := r.seen[key]
		if !ok || s.rev != e.rev {
			r.seen[key] = nodeSeen{rev: e.rev, at: now}
			continue
		}
		if now.Sub(s.at) < r.b.cfg.NodeTTL {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, r.b.cfg.Timeout)
		removed, err := r.b.remove(rctx, r.b.n.nodes, key, e.rev)
		cancel()
		if err != nil {
			return
		}
		delete(r.seen, key)
		gone = true
		if removed {
			node, _ := untoken(key)
			r.b.log.Info("a node stopped beating; removing its presence", "gone_node", node, "silent_for", now.Sub(s.at).Round(time.Second))
		}
	}
	if gone {
		r.sweepDue, r.sweepAt = true, time.Time{}
	}
	if !r.sweepDue && now.Sub(r.swept) <= sweepEvery || now.Before(r.sweepAt) {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, sweepTimeout)
	err = r.sweep(sctx, inf, r.sweepDue || !r.regSwept)
	cancel()
	if err != nil {
		// Try again later, not every heartbeat: a sweep that fails on a
		// large bucket would fail again at once.
		r.sweepBackoff = min(max(2*r.sweepBackoff, sweepRetry), sweepEvery)
		r.sweepAt = time.Now().Add(r.sweepBackoff)
		if ctx.Err() == nil {
			r.b.log.Warn("scanning for the presence of nodes that are gone failed; retrying", "retry_in", r.sweepBackoff, "err", err)
		}
		return
	}
	r.regSwept, r.sweepDue, r.sweepBackoff = true, false, 0
	// Spread the nodes' sweeps over time.
	r.swept = now.Add(time.Duration(rand.Int64N(int64(sweepEvery / 4))))
}

// beatEntry is one node's heartbeat as listed.
type beatEntry struct {
	inc string
	rev uint64
}

// heartbeats lists the nodes bucket, by key.
func (r *roster) heartbeats(ctx context.Context, kv jetstream.KeyValue) (map[string]beatEntry, error) {
	out := make(map[string]beatEntry)
	err := scan(ctx, kv, ">", "heartbeat", func(e jetstream.KeyValueEntry) {
		var hb heartbeat
		json.Unmarshal(e.Value(), &hb)
		out[e.Key()] = beatEntry{inc: hb.Inc, rev: e.Revision()}
	})
	return out, err
}

// scan calls f with every entry kv holds now whose key matches pattern
// (">" for all; what names the bucket in errors).
func scan(ctx context.Context, kv jetstream.KeyValue, pattern, what string, f func(jetstream.KeyValueEntry)) error {
	w, err := kv.Watch(ctx, pattern, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("the %s watch ended early", what)
			}
			if e == nil {
				return nil
			}
			f(e)
		}
	}
}

// sweep removes from every presence entry the members whose node
// incarnation has no heartbeat, announcing the leaves that causes (with
// the info their users joined with, which goes with the entry), and
// with regs releases the registrations such nodes held: they expire after
// ReconnectGrace unless attached again. The entries are read before the
// heartbeats: a member is written only after its node's heartbeat exists,
// so a live node's members always find it.
func (r *roster) sweep(ctx context.Context, inf *infra, regs bool) error {
	type entry struct {
		key     pkey
		members map[string]int
	}
	var all []entry
	var held []heldEntry
	if regs {
		var err error
		if held, err = r.b.registry.heldEntries(ctx, inf.reg); err != nil {
			return err
		}
	}
	err := r.entries(ctx, inf.presence, ">", func(key string, members map[string]int, _ []byte) {
		tok, u, ok := cutLast(key)
		topic, ok2 := untoken(tok)
		if !ok || !ok2 {
			return
		}
		user, err := parseUser(u)
		if err != nil {
			return
		}
		all = append(all, entry{pkey{topic, user}, members})
	})
	if err != nil {
		return err
	}
	beats, err := r.heartbeats(ctx, inf.nodesKV)
	if err != nil {
		return err
	}
	alive := make(map[string]bool, len(beats))
	for key, e := range beats {
		if node, ok := untoken(key); ok {
			alive[memberName(node, e.inc)] = true
		}
	}
	dead := func(name string) bool { return !alive[name] }
	for _, e := range all {
		if !hasAny(e.members, dead) {
			continue
		}
		err := r.update(ctx, e.key, nil, func(members map[string]int) bool {
			changed := false
			for name := range members {
				if dead(name) {
					delete(members, name)
					changed = true
				}
			}
			return changed
		})
		if err != nil {
			return err
		}
	}
	for _, h := range held {
		if dead(h.holder) {
			if err := r.b.registry.release(ctx, inf.reg, h); err != nil {
				return err
			}
		}
	}
	return nil
}

func hasAny(members map[string]int, f func(string) bool) bool {
	for name := range members {
		if f(name) {
			return true
		}
	}
	return false
}

// cutLast splits a presence key into its topic token and user.
func cutLast(key string) (tok, user string, ok bool) {
	return strings.Cut(key, ".")
}

func parseUser(s string) (relay.UserID, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	return relay.UserID(n), err
}
