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

	"github.com/nats-io/nats.go"
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
func (r *roster) beat(ctx context.Context) (err error) {
	_, inf, err := r.b.use()
	if err != nil {
		return err
	}
	defer func() { // what Ready judges NATS's silence by
		if err == nil {
			r.b.answered.Store(time.Now().UnixNano())
		}
		r.b.beatFailed.Store(err != nil)
	}()
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
	err := r.b.scan(ctx, kv, ">", "heartbeat", func(e kvEntry) {
		var hb heartbeat
		json.Unmarshal(e.value, &hb)
		out[e.key] = beatEntry{inc: hb.Inc, rev: e.rev}
	})
	return out, err
}

// kvEntry is a bucket entry as scan lists it.
type kvEntry struct {
	key   string
	value []byte
	rev   uint64
}

// scanBatch is how many entries one request of scan asks for, and
// scanWait how long the server may take to fill it.
const (
	scanBatch = 500
	scanWait  = 100 * time.Millisecond
)

// scanInactive is how long the consumer of a scan that could not delete
// it outlives its last request.
const scanInactive = time.Minute

// scan calls f with every entry kv holds now whose key matches pattern
// (">" for all; what names the bucket in errors), and possibly with some
// written while it runs.
//
// It reads an ephemeral pull consumer of the bucket's stream that starts
// at the last message of each key (one per key: every bucket keeps one
// revision), scanBatch entries per request, and ends once it read an entry
// that says none is left after it, or as many as were pending when it
// began. Entries purged meanwhile (users leaving, nodes swept) are never
// delivered, and the server may go on counting them as pending: a request
// that ends short of its batch (after scanWait) without either is
// followed by a look at the stream, for the first message on the filter
// after the last one read; if there is none the scan is complete, else it
// asks for more. So it never waits for entries that are gone (a KV watch
// does: it waits for as many as were pending when it began, or for one
// that says none is left, and could wait until ctx ends while users left
// the topic). Entries written while it runs come after those it began
// with, in the order they were written, and it stops after reading as
// many as were pending at the start: like a KV watch, it may leave out an
// entry rewritten meanwhile (its earlier revision is gone) when as many
// others were written before it. The consumer is deleted when the scan
// ends (the server drops it after scanInactive if that fails). A gap in
// the consumer's sequence (a delivery lost by the client) fails the scan.
func (b *Broker) scan(ctx context.Context, kv jetstream.KeyValue, pattern, what string, f func(kvEntry)) error {
	c := b.conn.Load()
	if c == nil {
		return errors.New("not running")
	}
	stream := "KV_" + kv.Bucket()
	prefix := "$KV." + kv.Bucket() + "."
	filter := prefix + pattern
	cctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	cons, err := c.js.CreateConsumer(cctx, stream, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: scanInactive,
		MemoryStorage:     true,
		Replicas:          1,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("listing the %s bucket: %w", what, err)
	}
	info := cons.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.Timeout)
		c.js.DeleteConsumer(dctx, stream, info.Name)
		cancel()
	}()
	if info.NumPending == 0 {
		return nil
	}
	var read, last uint64 // entries read; the stream sequence of the last
	for {
		batch, err := cons.Fetch(scanBatch, jetstream.FetchMaxWait(scanWait))
		if err != nil {
			return fmt.Errorf("listing the %s bucket: %w", what, err)
		}
		n, msgs := 0, batch.Messages()
	fetch:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case m, ok := <-msgs:
				if !ok {
					break fetch
				}
				meta, err := m.Metadata()
				if err != nil {
					return fmt.Errorf("listing the %s bucket: %w", what, err)
				}
				if meta.Sequence.Consumer != read+1 {
					return fmt.Errorf("listing the %s bucket: entries %d to %d were lost on the way", what, read+1, meta.Sequence.Consumer-1)
				}
				n, read, last = n+1, read+1, meta.Sequence.Stream
				if !isMarker(m.Headers()) {
					f(kvEntry{key: strings.TrimPrefix(m.Subject(), prefix), value: m.Data(), rev: meta.Sequence.Stream})
				}
				if meta.NumPending == 0 || read >= info.NumPending {
					return nil
				}
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("listing the %s bucket: %w", what, err)
		}
		if n == scanBatch {
			continue
		}
		more, err := b.anyAfter(ctx, stream, filter, last+1)
		if err != nil {
			return fmt.Errorf("listing the %s bucket: %w", what, err)
		}
		if !more {
			return nil
		}
	}
}

// anyAfter reports whether stream holds a message on a subject matching
// filter at sequence seq or later.
func (b *Broker) anyAfter(ctx context.Context, stream, filter string, seq uint64) (bool, error) {
	c := b.conn.Load()
	if c == nil {
		return false, errors.New("not running")
	}
	req, err := json.Marshal(struct {
		Seq  uint64 `json:"seq"`
		Next string `json:"next_by_subj"`
	}{seq, filter})
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	resp, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return false, err
	}
	var r struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return false, err
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return false, nil
	case r.Error != nil:
		return false, r.Error
	}
	return r.Message != nil, nil
}

// isMarker reports whether a bucket message with headers h marks a
// deleted or purged key (or one removed by age) rather than a value.
func isMarker(h nats.Header) bool {
	switch h.Get("KV-Operation") {
	case "DEL", "PURGE":
		return true
	}
	return h.Get("Nats-Marker-Reason") != ""
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
	// The listing may leave out a heartbeat rewritten while it ran (all
	// nodes beat at once after NATS comes back): a node missing from it is
	// read directly before its members go, or a live node would lose its
	// presence for good (it sees its own heartbeat intact, so it never
	// writes its presence again).
	checked := map[string]bool{}
	dead := func(name string) bool {
		if alive[name] {
			return false
		}
		d, ok := checked[name]
		if !ok {
			d = r.goneForSure(ctx, inf, name)
			checked[name] = d
		}
		return d
	}
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

// goneForSure reads the heartbeat of a member's node: the member is gone
// when the node has none, or one of another incarnation. Any other
// failure keeps it, for a later sweep to decide.
func (r *roster) goneForSure(ctx context.Context, inf *infra, name string) bool {
	i := strings.LastIndexByte(name, '#')
	if i < 0 {
		return true // not a member name this engine writes
	}
	ctx, cancel := context.WithTimeout(ctx, r.b.cfg.Timeout)
	defer cancel()
	e, err := inf.nodesKV.Get(ctx, token(name[:i]))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return true
	}
	if err != nil {
		return false
	}
	var hb heartbeat
	return json.Unmarshal(e.Value(), &hb) == nil && hb.Inc != name[i+1:]
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
