package natsbroker

import (
	"bytes"
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
// Change only counts, in memory, and marks the count dirty; apply, one
// goroutine, writes the dirty counts in batches. It writes a count, not a
// delta, so a write that failed after all can be repeated. A count that
// rises waits until this node's subscription to its topic is ready, so
// that the join it may announce reaches this node's fan-out too; Present
// waits (for at most Timeout) until the topic's counts are written, so
// that it counts every Change made before it.
//
// It is a relay.InfoRoster too: each count is written with the info this
// node's connections of the user joined with (that of the change that
// made the count positive here). The write that takes the user's total
// from 0 stores it in the entry (presenceValue) and the join carries it;
// later writes keep it; the write that empties the entry (a leave, or the
// sweep of a dead node's members) carries it in the leave.
//
// It is a relay.TopicLister too: a topic is occupied while it has an
// entry, and Topics lists the bucket's keys (no index: presence changes
// pay nothing, one call scans every key; see Topics).
//
// It is a relay.TransitionReporter too: the node whose compare-and-set
// write announces a join or a leave reports it (see its Transitions).
type roster struct {
	b    *Broker
	wake chan struct{} // cap 1
	// Transitions makes the roster a relay.TransitionReporter: the function
	// set is called, on the goroutine that wrote the entry (the roster's
	// writer, the sweep of dead nodes, or Run's goodbye at shutdown), with
	// each transition a write of this node made:
	//
	//   - a join when its write took the user's total across all members of
	//     the entry from 0, with the info that write stored;
	//   - a leave when its write took the total back to 0 and removed the
	//     entry (this node's last connection going, its goodbye, or its sweep
	//     of the members of nodes that are gone), with the info the user
	//     joined with.
	//
	// Every write is a compare-and-set on the entry's revision (a removal is a
	// purge up to that revision), so of nodes racing for one user exactly one
	// write crosses 0: the others conflict, read the entry again and find it
	// crossed already. Sweeps racing over one dead member are the same. A
	// node writes its count as a value, so a write retried after a timeout
	// whose first attempt landed finds the count already there, changes
	// nothing and reports nothing; so does a rewrite of its presence after a
	// reconnect while NATS still holds it, and one under a new incarnation
	// (it replaces the old incarnation's count in the same write, so the
	// total does not cross 0). A transition is thus never reported twice; it
	// is not reported at all when NATS took the write but its answer was lost
	// (the retry changes nothing), which the join and leave messages share.
	//
	// When NATS loses the presence bucket, the nodes' rewrites take each user
	// from 0 again and report joins for users that were present all along,
	// without a leave before them: webhooks then see member_added
	// (channel_occupied) twice. When the others swept this node's members as
	// gone, they reported those leaves, and the joins its rewrite reports
	// pair with them.
	relay.Transitions

	mu          sync.Mutex
	counts      map[pkey]int      // this node's connections per topic and user
	infos       map[pkey][]byte   // the info the user joined with here, while counted
	dirty       map[pkey]struct{} // counts not written yet
	dirtyTopics map[string]int    // the number of dirty counts per topic
	inflight    map[string]int    // the number of counts per topic being written
	inc         string            // this node's incarnation: "" until its heartbeat exists
	reconcile   bool              // rewrite every count: after a reconnect or a new incarnation

	// Guarded by hbMu, held through a heartbeat write (by heartbeat and
	// by resync); never held with mu... except to read inc, briefly.
	hbMu    sync.Mutex
	hbRev   uint64 // revision of this node's heartbeat; 0: to create
	hbCount uint64

	// rewatch restarts the clock on every node's heartbeat after this node
	// reconnects: the others were just as cut off, and get a full NodeTTL
	// to beat again before they count as dead.
	rewatch atomic.Bool

	// Owned by watchNodes.
	seen         map[string]nodeSeen // other nodes' heartbeats, by key
	swept        time.Time           // the last scan for members of dead nodes
	regSwept     bool                // registrations were scanned since Run began
	sweepDue     bool                // a node went: scan presence and registrations
	sweepAt      time.Time           // not before: a failed scan waits
	sweepBackoff time.Duration       // the wait after the last failed scan
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

var (
	_ relay.InfoRoster         = (*roster)(nil)
	_ relay.TopicLister        = (*roster)(nil)
	_ relay.TransitionReporter = (*roster)(nil)
)

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
	r.counts = make(map[pkey]int)
	r.infos = make(map[pkey][]byte)
	r.dirty = make(map[pkey]struct{})
	r.dirtyTopics = make(map[string]int)
	r.inflight = make(map[string]int)
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
	r.change(topic, user, delta, nil)
}

// MaxInfoBytes bounds the info ChangeInfo keeps for a user (Pusher's
// user_info, which the caller already limits to 1 KiB): a larger info is
// dropped, with a warning in the log, and the connection counted without
// it (its join and leave carry no Data, Present no Info). Nothing is ever
// truncated.
const MaxInfoBytes = 64 << 10

// ChangeInfo implements relay.InfoRoster. It never blocks. The info
// counts only when this change makes the user's count on this node
// positive (it is then what this node's writes carry); the entry keeps it
// only when such a write makes the user present anywhere. An info over
// MaxInfoBytes is dropped, with a warning.
func (r *roster) ChangeInfo(topic string, user relay.UserID, delta int, info []byte) {
	if len(info) > MaxInfoBytes {
		r.b.log.Warn("presence info over the limit dropped; the connection counts without it",
			"topic", topic, "user", user, "bytes", len(info), "limit", MaxInfoBytes)
		info = nil
	}
	r.change(topic, user, delta, info)
}

func (r *roster) change(topic string, user relay.UserID, delta int, info []byte) {
	k := pkey{topic, user}
	r.mu.Lock()
	before := r.counts[k]
	r.counts[k] += delta
	switch {
	case r.counts[k] <= 0:
		delete(r.infos, k)
	case before <= 0 && len(info) > 0:
		r.infos[k] = bytes.Clone(info)
	case before <= 0:
		delete(r.infos, k)
	}
	r.markDirtyLocked(k)
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

func (r *roster) markDirtyLocked(k pkey) {
	if _, ok := r.dirty[k]; !ok {
		r.dirty[k] = struct{}{}
		r.dirtyTopics[k.topic]++
	}
}

func (r *roster) cleanLocked(k pkey) {
	if _, ok := r.dirty[k]; ok {
		delete(r.dirty, k)
		if r.dirtyTopics[k.topic]--; r.dirtyTopics[k.topic] <= 0 {
			delete(r.dirtyTopics, k.topic)
		}
	}
}

// writeBatch bounds the counts apply writes at once.
const writeBatch = 256

// pwrite is what apply writes for one key: this node's count and the info
// it joined with (nil for none).
type pwrite struct {
	count int
	info  []byte
}

// take returns up to writeBatch dirty counts that can be written now, with
// their values and infos, and marks them in flight. A count that rises on
// a topic whose subscription is not ready yet stays dirty: the interest
// loop wakes apply once it is. A count back at 0 is written and forgotten.
func (r *roster) take() map[pkey]pwrite {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := make(map[pkey]pwrite)
	for k := range r.dirty {
		if len(batch) == writeBatch {
			break
		}
		n := r.counts[k]
		if n > 0 && r.b.interest.syncing(k.topic) { // roster.mu → interest.mu, never the reverse
			continue
		}
		batch[k] = pwrite{count: max(n, 0), info: r.infos[k]}
		r.cleanLocked(k)
		if n <= 0 {
			delete(r.counts, k)
			delete(r.infos, k)
		}
		r.inflight[k.topic]++
	}
	return batch
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
		inc := r.inc
		if r.reconcile && inc != "" {
			r.reconcile = false
			for k := range r.counts {
				r.markDirtyLocked(k)
			}
		}
		r.mu.Unlock()
		if inc == "" {
			retry = time.After(100 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			batch := r.take()
			if len(batch) == 0 {
				break
			}
			failed := r.writeAll(ctx, batch, inc)
			r.mu.Lock()
			for k := range batch {
				if r.inflight[k.topic]--; r.inflight[k.topic] <= 0 {
					delete(r.inflight, k.topic)
				}
			}
			for _, k := range failed {
				r.markDirtyLocked(k)
			}
			r.mu.Unlock()
			if len(failed) > 0 {
				if ctx.Err() == nil && r.b.connErr() == nil {
					r.b.log.Warn("writing presence failed; retrying", "failed", len(failed), "topic", failed[0].topic)
				}
				retry = time.After(500 * time.Millisecond)
				break
			}
		}
	}
}

// writeAll writes batch, parallelism at a time, and returns the keys whose
// write failed.
func (r *roster) writeAll(ctx context.Context, batch map[pkey]pwrite, inc string) []pkey {
	keys := make([]pkey, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	var mu sync.Mutex
	var failed []pkey
	parallel(ctx, keys, max(r.b.cfg.Timeout, 2*time.Second), func(ctx context.Context, k pkey) {
		// A write under way finishes though the node stops, so that its
		// transition is reported: leaveAll would find it done and report
		// nothing.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(r.b.cfg.Timeout, 2*time.Second))
		defer cancel()
		if err := r.write(wctx, k, batch[k].count, batch[k].info, inc); err != nil {
			mu.Lock()
			failed = append(failed, k)
			mu.Unlock()
		}
	})
	if ctx.Err() != nil { // parallel stopped early: what it skipped is not written
		return keys
	}
	return failed
}

// settle waits until none of this node's counts on topic is dirty or being
// written, or Timeout passes.
func (r *roster) settle(ctx context.Context, topic string) {
	deadline := time.Now().Add(r.b.cfg.Timeout)
	for {
		r.mu.Lock()
		busy := r.dirtyTopics[topic] > 0 || r.inflight[topic] > 0
		r.mu.Unlock()
		if !busy || ctx.Err() != nil || !time.Now().Before(deadline) {
			return
		}
		time.Sleep(2 * time.Millisecond)
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

// write sets this node's count for k to want (dropping the counts of its
// earlier incarnations), announcing a join or a leave when the user's
// total crosses 0; info is what a join stores and carries.
func (r *roster) write(ctx context.Context, k pkey, want int, info []byte, inc string) error {
	me := memberName(r.b.cfg.NodeID, inc)
	return r.update(ctx, k, info, func(members map[string]int) bool {
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
}

// update applies edit to k's entry by compare-and-set, retrying on
// conflict, and announces and reports the join or leave the write caused.
// edit reports whether it changed anything. A write that takes the user's
// total from 0 stores joinInfo in the entry; every other write keeps the
// entry's info; the join and the leave carry the entry's info.
func (r *roster) update(ctx context.Context, k pkey, joinInfo []byte, edit func(map[string]int) bool) error {
	_, inf, err := r.b.use()
	if err != nil {
		return err
	}
	key := presenceKey(k)
	for range casAttempts {
		members := make(map[string]int)
		var info []byte
		var rev uint64
		e, err := inf.presence.Get(ctx, key)
		switch {
		case err == nil:
			rev = e.Revision()
			var ok bool
			if members, info, ok = decodePresence(e.Value()); !ok {
				members, info = make(map[string]int), nil // corrupt: start over
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return err
		}
		before := total(members)
		if !edit(members) {
			return nil
		}
		after := total(members)
		if before == 0 && after > 0 {
			info = joinInfo // the write that makes the user present: its info stays
		}
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
			val := encodePresence(members, info)
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
			r.announce(k, relay.KindJoin, info)
			r.Report(relay.Transition{Topic: k.topic, User: k.user, Info: bytes.Clone(info), Joined: true})
		case before > 0 && after == 0:
			r.announce(k, relay.KindLeave, info)
			r.Report(relay.Transition{Topic: k.topic, User: k.user, Info: bytes.Clone(info)})
		}
		return nil
	}
	return fmt.Errorf("the presence of user %d on %q keeps changing", k.user, k.topic)
}

// announce tells every node's fan-out that a user joined or left, with
// the info it joined with as the message's data (nil for none): this
// node's directly, the others' through the topic's core subject. Like any
// core publish it is lost for a node that is disconnected at the time.
func (r *roster) announce(k pkey, kind relay.Kind, info []byte) {
	name := "join"
	if kind == relay.KindLeave {
		name = "leave"
	}
	if c := r.b.conn.Load(); c != nil {
		msg := nats.NewMsg(r.b.n.topic + "." + token(k.topic))
		msg.Header.Set(hdrKind, name)
		msg.Header.Set(hdrUser, k.user.String())
		msg.Header.Set(hdrNode, r.b.cfg.NodeID)
		msg.Data = info
		if err := c.nc.PublishMsg(msg); err != nil {
			r.b.log.Warn("announcing presence to the other nodes failed", "topic", k.topic, "err", err)
		}
	}
	r.b.seq.Offer(&relay.Message{Kind: kind, Topic: k.topic, User: k.user, Data: info})
}

// Present implements relay.Roster: the users with connections on topic on
// any node, including nodes that died within the node timeout. It first
// lets this node's changes to topic reach NATS (for at most Timeout), so
// that a socket that just subscribed finds itself counted.
func (r *roster) Present(ctx context.Context, topic string) ([]relay.Present, error) {
	_, inf, err := r.b.use()
	if err != nil {
		return nil, err
	}
	r.settle(ctx, topic)
	var out []relay.Present
	err = r.entries(ctx, inf.presence, token(topic)+".*", func(key string, members map[string]int, info []byte) {
		_, u, _ := cutLast(key)
		user, err := parseUser(u)
		if n := total(members); err == nil && n > 0 {
			out = append(out, relay.Present{User: user, Connections: n, Info: info})
		}
	})
	if err != nil {
		return nil, unavailable("reading presence", err)
	}
	slices.SortFunc(out, func(a, b relay.Present) int { return cmpUint(uint64(a.User), uint64(b.User)) })
	return out, nil
}

// MaxTopics bounds what one Topics call returns: the first MaxTopics
// occupied topics with the prefix, in byte order; the rest are left out.
const MaxTopics = 10_000

// topicsTimeout bounds one Topics call.
const topicsTimeout = 10 * time.Second

// Topics implements relay.TopicLister: the topics starting with prefix
// that have a presence entry (some user with a connection on a node that
// was alive at the last sweep), sorted by byte, at most MaxTopics of
// them. The prefix is matched byte for byte, never as a pattern.
//
// Keys are base64url tokens, which a subject filter cannot match by
// prefix, so it lists every key of the presence bucket, without values:
// the stream info of the bucket's stream with a subjects filter, which
// names each subject holding a message, at most 100,000 per reply (the
// server's page; a key is purged when its user leaves, never deleted
// with a marker, so every subject listed is a live entry). It decodes
// each topic token here. Its cost is O(E) for the E presence entries
// (topic and user pairs) of the whole cluster, in 1 + E/100,000 round
// trips carrying each key's subject (about 0.8 s per 100,000 entries on
// a laptop), plus O(E' log MaxTopics) for the E' with the prefix; its
// memory is one page and O(MaxTopics); presence changes pay nothing for
// it. Pages are read by offset in the server's subject order, so with
// more than 100,000 entries a topic whose entries change between pages
// may be missed by that call. A call longer than 10 s fails with
// relay.ErrUnavailable. It reads what the nodes have written: this
// node's latest changes show once apply wrote them (normally within a
// round trip).
func (r *roster) Topics(ctx context.Context, prefix string) ([]string, error) {
	return r.topics(ctx, prefix, MaxTopics)
}

func (r *roster) topics(ctx context.Context, prefix string, limit int) ([]string, error) {
	c, _, err := r.b.use()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, topicsTimeout)
	defer cancel()
	kept := newSmallest(limit)
	subject := "$KV." + r.b.n.presence + "."
	for offset := 0; ; {
		page, total, err := subjects(ctx, c, "KV_"+r.b.n.presence, subject+">", offset)
		if err != nil {
			return nil, unavailable("listing occupied topics", err)
		}
		for s := range page {
			tok, _, ok := cutLast(strings.TrimPrefix(s, subject))
			if !ok {
				continue
			}
			if topic, ok := untoken(tok); ok && strings.HasPrefix(topic, prefix) {
				kept.add(topic)
			}
		}
		offset += len(page)
		if len(page) == 0 || offset >= total {
			return kept.sorted(), nil
		}
	}
}

// subjects returns a page of the subjects of stream that match filter
// and hold a message, from offset in the server's order, and how many
// there are in all.
func subjects(ctx context.Context, c *conn, stream, filter string, offset int) (map[string]uint64, int, error) {
	req, err := json.Marshal(struct {
		Filter string `json:"subjects_filter"`
		Offset int    `json:"offset,omitempty"`
	}{filter, offset})
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.INFO."+stream, req)
	if err != nil {
		return nil, 0, err
	}
	var info struct {
		Total int `json:"total"`
		State struct {
			Subjects map[string]uint64 `json:"subjects"`
		} `json:"state"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &info); err != nil {
		return nil, 0, err
	}
	if info.Error != nil {
		return nil, 0, info.Error
	}
	return info.State.Subjects, info.Total, nil
}

// smallest keeps the n smallest distinct strings added, in O(n) memory:
// it holds up to 2n, and when full sorts them, keeps the n smallest and
// from then on refuses any string above the largest of those.
type smallest struct {
	n     int
	set   map[string]struct{}
	above string // once full: strings above it are refused
	full  bool
}

func newSmallest(n int) *smallest {
	return &smallest{n: max(n, 0), set: make(map[string]struct{})}
}

func (s *smallest) add(v string) {
	if s.n == 0 || s.full && v > s.above {
		return
	}
	s.set[v] = struct{}{}
	if len(s.set) >= 2*s.n {
		keep := s.sorted()
		clear(s.set)
		for _, k := range keep {
			s.set[k] = struct{}{}
		}
		s.above, s.full = keep[len(keep)-1], true
	}
}

// sorted returns the n smallest strings added, sorted.
func (s *smallest) sorted() []string {
	out := make([]string, 0, len(s.set))
	for k := range s.set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out[:min(len(out), s.n)]
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
func (r *roster) entries(ctx context.Context, kv jetstream.KeyValue, pattern string, f func(key string, members map[string]int, info []byte)) error {
	return r.b.scan(ctx, kv, pattern, "presence", func(e kvEntry) {
		if members, info, ok := decodePresence(e.value); ok {
			f(e.key, members, info)
		}
	})
}

// presenceValue is the value of a presence entry whose user joined with
// an info: {"m": {member: connections}, "i": base64 info}. An entry
// without info is the members object alone, as before InfoRoster, so that
// nodes of earlier versions read and write it as ever; they cannot read
// this form (member names always hold a '#', so "m" is never one).
type presenceValue struct {
	Members map[string]int `json:"m"`
	Info    []byte         `json:"i,omitempty"`
}

// encodePresence returns an entry's value: the members object, or a
// presenceValue when there is an info.
func encodePresence(members map[string]int, info []byte) []byte {
	var val []byte
	if len(info) == 0 {
		val, _ = json.Marshal(members)
	} else {
		val, _ = json.Marshal(presenceValue{Members: members, Info: info})
	}
	return val
}

// decodePresence reads either form of an entry's value.
func decodePresence(val []byte) (members map[string]int, info []byte, ok bool) {
	members = make(map[string]int)
	if json.Unmarshal(val, &members) == nil {
		return members, nil, true
	}
	var v presenceValue
	if json.Unmarshal(val, &v) != nil || v.Members == nil {
		return nil, nil, false
	}
	if len(v.Info) == 0 {
		v.Info = nil
	}
	return v.Members, v.Info, true
}

// leaveAll removes this node's counts, announcing the leaves, and its
// heartbeat. It runs on shutdown, after apply returned.
func (r *roster) leaveAll(ctx context.Context) error {
	r.mu.Lock()
	inc := r.inc
	keys := make([]pkey, 0, len(r.counts))
	for k := range r.counts {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	if inc == "" {
		return nil
	}
	var mu sync.Mutex
	var firstErr error
	parallel(ctx, keys, r.b.cfg.Timeout, func(ctx context.Context, k pkey) {
		if err := r.write(ctx, k, 0, nil, inc); err != nil {
			mu.Lock()
			firstErr = cmpOr(firstErr, err)
			mu.Unlock()
		}
	})
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
