package hub

import (
	"hash/maphash"
	"sync"

	"github.com/relayhq/relay/internal/relay"
)

// shardCount spreads the topic index over independent locks so that
// publishes and subscription changes on different topics do not contend.
const shardCount = 32

var shardSeed = maphash.MakeSeed()

// shard is one part of the topic → subscribers index.
type shard struct {
	mu     sync.RWMutex
	topics map[string]*subscribers
}

func (h *Hub) shard(topic string) *shard {
	return &h.topics[maphash.String(shardSeed, topic)%shardCount]
}

// subscribers is the set of connections on one topic. The slice makes
// fan-out a cache-friendly walk; the position map, built only once the set
// is large, keeps removal O(1).
type subscribers struct {
	list []relay.Subscriber
	pos  map[relay.Subscriber]int
}

// posThreshold is the set size above which removal uses the position map
// instead of a linear search.
const posThreshold = 16

func (s *subscribers) add(sub relay.Subscriber) {
	if s.index(sub) >= 0 {
		return
	}
	s.list = append(s.list, sub)
	if s.pos != nil {
		s.pos[sub] = len(s.list) - 1
	} else if len(s.list) > posThreshold {
		s.pos = make(map[relay.Subscriber]int, len(s.list)*2)
		for i, x := range s.list {
			s.pos[x] = i
		}
	}
}

func (s *subscribers) remove(sub relay.Subscriber) {
	i := s.index(sub)
	if i < 0 {
		return
	}
	last := len(s.list) - 1
	if i != last {
		s.list[i] = s.list[last]
		if s.pos != nil {
			s.pos[s.list[i]] = i
		}
	}
	s.list[last] = nil
	s.list = s.list[:last]
	if s.pos != nil {
		delete(s.pos, sub)
	}
}

func (s *subscribers) index(sub relay.Subscriber) int {
	if s.pos != nil {
		if i, ok := s.pos[sub]; ok {
			return i
		}
		return -1
	}
	for i, x := range s.list {
		if x == sub {
			return i
		}
	}
	return -1
}

func (h *Hub) subscribe(topic string, sub relay.Subscriber) {
	sh := h.shard(topic)
	sh.mu.Lock()
	s := sh.topics[topic]
	if s == nil {
		s = &subscribers{}
		sh.topics[topic] = s
	}
	s.add(sub)
	sh.mu.Unlock()
}

func (h *Hub) unsubscribe(topic string, sub relay.Subscriber) {
	sh := h.shard(topic)
	sh.mu.Lock()
	if s := sh.topics[topic]; s != nil {
		s.remove(sub)
		if len(s.list) == 0 {
			delete(sh.topics, topic)
		}
	}
	sh.mu.Unlock()
}

func (h *Hub) unsubscribeAll(topics []string, sub relay.Subscriber) {
	for _, t := range topics {
		h.unsubscribe(t, sub)
	}
}

// Subscribers returns how many local connections are subscribed to topic.
func (h *Hub) Subscribers(topic string) int {
	sh := h.shard(topic)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if s := sh.topics[topic]; s != nil {
		return len(s.list)
	}
	return 0
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
