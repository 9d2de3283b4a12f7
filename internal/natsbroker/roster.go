package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/relay"
)

// roster is the relay.Roster on the presence bucket: one entry per topic
// and user, holding each node's connection count under the node's member
// name (node id, '#', incarnation), changed by compare-and-set. The
// write that takes a user's total from 0 announces the join, the one
// that brings it back to 0 removes the entry and announces the leave, so
// each happens once however many nodes race.
//
// Change only queues; apply, one goroutine, folds the queue into this
// node's counts (mine) and writes the entries whose count changed. It
// writes a count, not a delta, so a write that failed after all can be
// repeated.
type roster struct {
	b    *Broker
	wake chan struct{} // cap 1

	mu        sync.Mutex
	pending   []change
	inc       string // this node's incarnation: "" until its heartbeat exists
	reconcile bool   // rewrite every entry: after a reconnect or a new incarnation

	// Owned by apply (and by goodbye once apply returned).
	mine  map[pkey]int
	dirty []pkey
	isDty map[pkey]bool

	// Guarded by hbMu, held through a heartbeat write (by housekeep and
	// by resync); never held with mu... except to read inc, briefly.
	hbMu    sync.Mutex
	hbRev   uint64 // revision of this node's heartbeat; 0: to create
	hbCount uint64

	// rewatch restarts the clock on every node's heartbeat after this node
	// reconnects: the others were just as cut off, and get a full NodeTTL
	// to beat again before they count as dead.
	rewatch atomic.Bool

	// Owned by housekeep.
	seen     map[string]nodeSeen // other nodes' heartbeats, by key
	swept    time.Time           // the last scan for members of dead nodes
	regSwept bool                // registrations were scanned since Run began
}

// member returns this node's member name, or "" before its first
// heartbeat.
func (r *roster) member() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inc == "" {
		return ""
	}
	return memberName(r.b.cfg.NodeID, r.inc)
}

type change struct {
	key   pkey
	delta int
}

type pkey struct {
	topic string
	user  relay.UserID
}

// nodeSeen is when a node's heartbeat revision last changed, by this
// node's clock (the others' clocks are never compared).
type nodeSeen struct {
	rev uint64
	at  time.Time
}

// heartbeat is the value of a node's entry in the nodes bucket.
type heartbeat struct {
	Inc  string `json:"i"`
	Beat uint64 `json:"b"`
}

func (r *roster) init(b *Broker) {
	r.b = b
	r.wake = make(chan struct{}, 1)
	r.mine = make(map[pkey]int)
	r.isDty = make(map[pkey]bool)
	r.seen = make(map[string]nodeSeen)
}

func (r *roster) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Change implements relay.Roster. It never blocks.
func (r *roster) Change(topic string, user relay.UserID, delta int) {
	r.mu.Lock()
	r.pending = append(r.pending, change{pkey{topic, user}, delta})
	r.mu.Unlock()
	r.signal()
}

// reconnected asks apply to rewrite every entry: NATS may have lost them.
func (r *roster) reconnected() {
	r.mu.Lock()
	r.reconcile = true
	r.mu.Unlock()
	r.rewatch.Store(true)
	r.signal()
}

func (r *roster) markDirty(k pkey) {
	if !r.isDty[k] {
		r.isDty[k] = true
		r.dirty = append(r.dirty, k)
	}
}

// apply writes this node's counts until ctx is done.
func (r *roster) apply(ctx context.Context) {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-retry:
			retry = nil
		}
		r.mu.Lock()
		pending, inc, all := r.pending, r.inc, r.reconcile
		r.pending, r.reconcile = nil, false
		r.mu.Unlock()
		for _, c := range pending {
			r.mine[c.key] = max(r.mine[c.key]+c.delta, 0)
			r.markDirty(c.key)
		}
		if all {
			for k := range r.mine {
				r.markDirty(k)
			}
		}
		if inc == "" {
			retry = time.After(100 * time.Millisecond)
			continue
		}
		for len(r.dirty) > 0 && ctx.Err() == nil {
			k := r.dirty[0]
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := r.write(wctx, k, inc)
			cancel()
			if err != nil {
				if ctx.Err() == nil && r.b.connErr() == nil {
					r.b.log.Warn("writing presence failed; retrying", "topic", k.topic, "err", err)
				}
				retry = time.After(500 * time.Millisecond)
				break
			}
			r.dirty = r.dirty[1:]
			delete(r.isDty, k)
		}
		if len(r.dirty) == 0 {
			r.dirty = nil
		}
	}
}

func presenceKey(k pkey) string { return token(k.topic) + "." + k.user.String() }

func memberName(node, inc string) string { return node + "#" + inc }

func memberNode(name string) string {
	if i := strings.LastIndexByte(name, '#'); i >= 0 {
		return name[:i]
	}
	return name
}

func total(members map[string]int) int {
	n := 0
	for _, c := range members {
		n += c
	}
	return n
}

// write sets this node's count for k to mine[k] (dropping the counts of
// its earlier incarnations), announcing a join or a leave when the user's
// total crosses 0.
func (r *roster) write(ctx context.Context, k pkey, inc string) error {
	want := r.mine[k]
	me := memberName(r.b.cfg.NodeID, inc)
	err := r.update(ctx, k, func(members map[string]int) bool {
		changed := false
		for name := range members {
			if name != me && memberNode(name) == r.b.cfg.NodeID {
				delete(members, name)
				changed = true
			}
		}
		if want > 0 && members[me] != want {
			members[me] = want
			changed = true
		} else if _, ok := members[me]; ok && want == 0 {
			delete(members, me)
			changed = true
		}
		return changed
	})
	if err == nil && want == 0 {
		delete(r.mine, k)
	}
	return err
}

// update applies edit to k's entry by compare-and-set, retrying on
// conflict, and announces the join or leave the write caused. edit
// reports whether it changed anything.
func (r *roster) update(ctx context.Context, k pkey, edit func(map[string]int) bool) error {
	_, inf, err := r.b.use()
	if err != nil {
		return err
	}
	key := presenceKey(k)
	for range casAttempts {
		members := make(map[string]int)
		var rev uint64
		e, err := inf.presence.Get(ctx, key)
		switch {
		case err == nil:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &members); err != nil {
				members = make(map[string]int) // corrupt: start over
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return err
		}
		before := total(members)
		if !edit(members) {
			return nil
		}
		after := total(members)
		switch {
		case len(members) == 0 && rev == 0:
			return nil
		case len(members) == 0:
			removed, err := r.b.remove(ctx, r.b.n.presence, key, rev)
			if err != nil {
				return err
			}
			if !removed {
				continue
			}
		default:
			val, _ := json.Marshal(members)
			if rev == 0 {
				_, err = inf.presence.Create(ctx, key, val)
			} else {
				_, err = inf.presence.Update(ctx, key, val, rev)
			}
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			}
			if err != nil {
				return err
			}
		}
		switch {
		case before == 0 && after > 0:
			r.announce(k, relay.KindJoin)
		case before > 0 && after == 0:
			r.announce(k, relay.KindLeave)
		}
		return nil
	}
	return fmt.Errorf("the presence of user %d on %q keeps changing", k.user, k.topic)
}

// announce tells every node's fan-out that a user joined or left: this
// node's directly, the others' through the topic's core subject. Like any
// core publish it is lost for a node that is disconnected at the time.
func (r *roster) announce(k pkey, kind relay.Kind) {
	name := "join"
	if kind == relay.KindLeave {
		name = "leave"
	}
	if c := r.b.conn.Load(); c != nil {
		msg := nats.NewMsg(r.b.n.topic + "." + token(k.topic))
		msg.Header.Set(hdrKind, name)
		msg.Header.Set(hdrUser, k.user.String())
		msg.Header.Set(hdrNode, r.b.cfg.NodeID)
		if err := c.nc.PublishMsg(msg); err != nil {
			r.b.log.Warn("announcing presence to the other nodes failed", "topic", k.topic, "err", err)
		}
	}
	r.b.seq.Offer(&relay.Message{Kind: kind, Topic: k.topic, User: k.user})
}

// Present implements relay.Roster: the users with connections on topic on
// any node, including nodes that died within the node timeout.
func (r *roster) Present(ctx context.Context, topic string) ([]relay.Present, error) {
	_, inf, err := r.b.use()
	if err != nil {
		return nil, err
	}
	var out []relay.Present
	err = r.entries(ctx, inf.presence, token(topic)+".*", func(key string, members map[string]int) {
		_, u, _ := cutLast(key)
		user, err := parseUser(u)
		if n := total(members); err == nil && n > 0 {
			out = append(out, relay.Present{User: user, Connections: n})
		}
	})
	if err != nil {
		return nil, unavailable("reading presence", err)
	}
	slices.SortFunc(out, func(a, b relay.Present) int { return cmpUint(uint64(a.User), uint64(b.User)) })
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// entries calls f for every presence entry whose key matches pattern.
func (r *roster) entries(ctx context.Context, kv jetstream.KeyValue, pattern string, f func(key string, members map[string]int)) error {
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
				return errors.New("the presence watch ended early")
			}
			if e == nil {
				return nil // every current entry was delivered
			}
			members := make(map[string]int)
			if json.Unmarshal(e.Value(), &members) == nil {
				f(e.Key(), members)
			}
		}
	}
}

// leaveAll removes this node's counts, announcing the leaves, and its
// heartbeat. It runs on shutdown, after apply returned.
func (r *roster) leaveAll(ctx context.Context) error {
	r.mu.Lock()
	pending, inc := r.pending, r.inc
	r.pending = nil
	r.mu.Unlock()
	if inc == "" {
		return nil
	}
	for _, c := range pending {
		r.mine[c.key] = max(r.mine[c.key]+c.delta, 0)
	}
	var firstErr error
	for k := range r.mine {
		r.mine[k] = 0
		if err := r.write(ctx, k, inc); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	r.hbMu.Lock()
	defer r.hbMu.Unlock()
	if r.hbRev != 0 {
		if _, err := r.b.remove(ctx, r.b.n.nodes, token(r.b.cfg.NodeID), r.hbRev); err != nil && firstErr == nil {
			firstErr = err
		}
		r.hbRev = 0
	}
	r.mu.Lock()
	r.inc = ""
	r.mu.Unlock()
	return firstErr
}
