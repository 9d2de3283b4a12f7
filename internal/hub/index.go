package hub

import (
	"cmp"
	"context"
	"hash/maphash"
	"slices"
	"strings"
	"sync"

	"github.com/relayhq/relay/internal/relay"
)

// shardCount spreads the topic index over independent locks so that
// publishes and subscription changes on different topics do not contend.
const shardCount = 32

var shardSeed = maphash.MakeSeed()

// shard is one part of the topic → members index. A topic's fan-out
// holds mu for reading (the broker guarantees one fan-out at a time per
// topic, so a member's pending buffer has one writer); messages to one
// user and every change hold it for writing.
type shard struct {
	mu     sync.RWMutex
	topics map[string]*topic
}

func (h *Hub) shard(name string) *shard {
	return &h.topics[maphash.String(shardSeed, name)%shardCount]
}

// topic is the set of local connections on one topic, and which users
// they belong to.
type topic struct {
	list  []member
	pos   map[relay.Subscriber]int // built once the set is large
	users map[relay.UserID]int32   // connections per user: presence
	// infos holds what the present users joined with, for members that
	// carry info (hub.Member); nil until one does.
	infos map[relay.UserID][]byte
}

// member is one connection on a topic.
type member struct {
	sub      relay.Subscriber
	user     relay.UserID
	presence bool // wants join and leave events
	// pending holds what arrives for the member while it recovers, so that
	// live messages follow the replayed ones; nil once it is live.
	pending *[]*relay.Message
	// floor is the position the member recovered up to: the replay
	// delivered every offset at or below it, so live messages there are
	// repeats. It holds until the first live message past it, since an
	// engine's live delivery may lag its history.
	floor relay.Position
}

// posThreshold is the set size above which lookups use the position map
// instead of a linear search.
const posThreshold = 16

func (t *topic) index(sub relay.Subscriber) int {
	if t.pos != nil {
		if i, ok := t.pos[sub]; ok {
			return i
		}
		return -1
	}
	for i := range t.list {
		if t.list[i].sub == sub {
			return i
		}
	}
	return -1
}

// add inserts m (not yet present) and returns whether its user just
// became present.
func (t *topic) add(m member) (joined bool) {
	t.list = append(t.list, m)
	if t.pos != nil {
		t.pos[m.sub] = len(t.list) - 1
	} else if len(t.list) > posThreshold {
		t.pos = make(map[relay.Subscriber]int, len(t.list)*2)
		for i, x := range t.list {
			t.pos[x.sub] = i
		}
	}
	if t.users == nil {
		t.users = make(map[relay.UserID]int32)
	}
	t.users[m.user]++
	return t.users[m.user] == 1
}

// remove deletes sub and returns its member and whether its user is no
// longer present.
func (t *topic) remove(sub relay.Subscriber) (m member, found, left bool) {
	i := t.index(sub)
	if i < 0 {
		return member{}, false, false
	}
	m = t.list[i]
	last := len(t.list) - 1
	if i != last {
		t.list[i] = t.list[last]
		if t.pos != nil {
			t.pos[t.list[i].sub] = i
		}
	}
	t.list[last] = member{}
	t.list = t.list[:last]
	if t.pos != nil {
		delete(t.pos, sub)
	}
	if t.users[m.user]--; t.users[m.user] <= 0 {
		delete(t.users, m.user)
		left = true
	}
	return m, true, left
}

// deliver hands d to m, or to m's pending buffer while it recovers. A
// member never receives an offset at or below the position it recovered
// to.
func (m *member) deliver(d *relay.Delivery) bool {
	if m.pending != nil {
		*m.pending = append(*m.pending, d.Msg)
		return true
	}
	if m.floor.Epoch != "" && inStream(d.Msg) {
		if d.Msg.Epoch == m.floor.Epoch && d.Msg.Offset <= m.floor.Offset {
			return false
		}
		m.floor = relay.Position{}
	}
	return m.sub.Deliver(d)
}

// inStream reports whether msg has a place in its topic's stream.
func inStream(msg *relay.Message) bool {
	return (msg.Kind == relay.KindPublish || msg.Kind == relay.KindReset) && msg.Offset > 0
}

// announce tells the members that want presence that user joined or left.
// The caller holds the shard's write lock.
func (t *topic) announce(kind relay.Kind, name string, user relay.UserID, info []byte) {
	t.tell(&relay.Delivery{Msg: &relay.Message{Kind: kind, Topic: name, User: user, HasUser: true, Data: info}})
}

// tell delivers a presence event to the members that want presence (the
// joiner included: its join follows its subscribed reply) and returns how
// many accepted it.
func (t *topic) tell(d *relay.Delivery) int {
	n := 0
	for i := range t.list {
		m := &t.list[i]
		if m.presence && m.deliver(d) {
			n++
		}
	}
	return n
}

// join adds m to topic name, announcing its user if it is new there, and
// returns the users present before it when m wants presence. A member
// already there only has its presence flag updated (added is false).
func (h *Hub) join(name string, m member, info []byte) (present []relay.Present, added bool) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.topics[name]
	if t == nil {
		t = &topic{}
		sh.topics[name] = t
		if h.cfg.Interest != nil {
			h.cfg.Interest.Watch(name)
		}
	}
	if i := t.index(m.sub); i >= 0 {
		t.list[i].presence = m.presence
		return membersOf(t, m.presence), false
	}
	present = membersOf(t, m.presence)
	joined := t.add(m)
	if joined && info != nil {
		if t.infos == nil {
			t.infos = make(map[relay.UserID][]byte)
		}
		t.infos[m.user] = info
	}
	switch r := h.cfg.Roster.(type) {
	case relay.InfoRoster:
		if info != nil {
			r.ChangeInfo(name, m.user, 1, info)
		} else {
			r.Change(name, m.user, 1)
		}
	case relay.Roster:
		r.Change(name, m.user, 1)
	default:
		if joined {
			t.announce(relay.KindJoin, name, m.user, info)
			if h.cfg.Transitions != nil {
				h.cfg.Transitions(relay.Transition{Topic: name, User: m.user, Info: info, Joined: true})
			}
		}
	}
	return present, true
}

// membersOf lists t's present users, by id, when want.
func membersOf(t *topic, want bool) []relay.Present {
	if !want {
		return nil
	}
	out := make([]relay.Present, 0, len(t.users))
	for u, n := range t.users {
		out = append(out, relay.Present{User: u, Connections: int(n), Info: t.infos[u]})
	}
	slices.SortFunc(out, func(a, b relay.Present) int { return cmp.Compare(a.User, b.User) })
	return out
}

// leave removes sub from topic name, announcing its user's departure if it
// was the user's last connection there.
func (h *Hub) leave(name string, sub relay.Subscriber) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.topics[name]
	if t == nil {
		return
	}
	m, found, left := t.remove(sub)
	var info []byte
	if left && t.infos != nil {
		info = t.infos[m.user]
		delete(t.infos, m.user)
	}
	switch {
	case !found:
	case h.cfg.Roster != nil:
		h.cfg.Roster.Change(name, m.user, -1)
	case left:
		t.announce(relay.KindLeave, name, m.user, info)
		if h.cfg.Transitions != nil {
			h.cfg.Transitions(relay.Transition{Topic: name, User: m.user, Info: info})
		}
	}
	if len(t.list) == 0 {
		delete(sh.topics, name)
		if h.cfg.Interest != nil {
			h.cfg.Interest.Unwatch(name)
		}
	}
}

func (h *Hub) leaveAll(topics []string, sub relay.Subscriber) {
	for _, t := range topics {
		h.leave(t, sub)
	}
}

// goLive delivers what waited for sub on topic name while it recovered,
// skipping publishes at or before after (the replay covered those), and
// makes it live. A member that left meanwhile is ignored.
func (h *Hub) goLive(name string, sub relay.Subscriber, after relay.Position) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.topics[name]
	if t == nil {
		return
	}
	i := t.index(sub)
	if i < 0 || t.list[i].pending == nil {
		return
	}
	m := &t.list[i]
	waiting := *m.pending
	m.pending = nil
	m.floor = after
	for _, msg := range waiting {
		m.deliver(&relay.Delivery{Msg: msg})
	}
}

// Subscribers returns how many local connections are subscribed to topic.
func (h *Hub) Subscribers(name string) int {
	sh := h.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if t := sh.topics[name]; t != nil {
		return len(t.list)
	}
	return 0
}

// Watched reports whether topic has local subscribers without ever
// waiting: the broker asks while holding its own lock, and a shard lock
// can be held through a large fan-out (or queued behind a writer that
// is). When the shard is busy it answers true, the safe answer: the
// broker then keeps the topic's stream or epoch a little longer.
func (h *Hub) Watched(name string) bool {
	sh := h.shard(name)
	if !sh.mu.TryRLock() {
		return true
	}
	defer sh.mu.RUnlock()
	t := sh.topics[name]
	return t != nil && len(t.list) > 0
}

// Presence returns the users with a connection subscribed to topic, by
// user id: from the Roster (every node) when there is one, else this
// node's index.
func (h *Hub) Presence(ctx context.Context, name string) ([]relay.Present, error) {
	if h.cfg.Roster != nil {
		return h.cfg.Roster.Present(ctx, name)
	}
	sh := h.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	t := sh.topics[name]
	if t == nil {
		return []relay.Present{}, nil
	}
	return membersOf(t, true), nil
}

// set is a string set that stays a slice while small, since most clients
// have a handful of topics.
type set struct {
	list []string
	m    map[string]struct{}
}

const setThreshold = 16

func newSet(items []string) set {
	s := set{}
	for _, x := range items {
		s.add(x)
	}
	return s
}

func (s *set) add(x string) {
	if s.m != nil {
		s.m[x] = struct{}{}
		return
	}
	s.list = append(s.list, x)
	if len(s.list) > setThreshold {
		s.m = make(map[string]struct{}, len(s.list)*2)
		for _, y := range s.list {
			s.m[y] = struct{}{}
		}
		s.list = nil
	}
}

func (s *set) has(x string) bool {
	if s.m != nil {
		_, ok := s.m[x]
		return ok
	}
	for _, y := range s.list {
		if y == x {
			return true
		}
	}
	return false
}

// Topics returns the topics starting with prefix that have subscribers:
// on every node when the Roster can list them, else on this one.
func (h *Hub) Topics(ctx context.Context, prefix string) ([]string, error) {
	if l, ok := h.cfg.Roster.(relay.TopicLister); ok {
		return l.Topics(ctx, prefix)
	}
	var out []string
	for i := range h.topics {
		sh := &h.topics[i]
		sh.mu.RLock()
		for name, t := range sh.topics {
			if len(t.list) > 0 && strings.HasPrefix(name, prefix) {
				out = append(out, name)
			}
		}
		sh.mu.RUnlock()
	}
	slices.Sort(out)
	return out, nil
}
