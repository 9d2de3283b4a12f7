package hub

import (
	"cmp"
	"slices"
)

// TopicCount is one topic's local audience, as TopTopics reports it.
type TopicCount struct {
	Topic       string `json:"topic"`
	Subscribers int    `json:"subscribers"` // connections on this node
	Users       int    `json:"users"`       // distinct users among them
}

// maxTop bounds what TopTopics returns.
const maxTop = 100

// TopTopics returns up to n (at most 100) topics with the most local
// subscribers, most first (ties by name), and how many topics have local
// subscribers. It holds one shard's read lock at a time, never the whole
// index, and keeps at most n candidates, so it costs O(topics · log n)
// without blocking publishes; it is meant for a dashboard's once-a-second
// sample, not a hot path.
func (h *Hub) TopTopics(n int) (top []TopicCount, topics int) {
	n = min(max(n, 0), maxTop)
	// top is kept sorted least first while it fills, so the weakest
	// candidate is top[0].
	less := func(a, b TopicCount) int {
		if c := cmp.Compare(a.Subscribers, b.Subscribers); c != 0 {
			return c
		}
		return cmp.Compare(b.Topic, a.Topic) // a lower name ranks higher
	}
	top = make([]TopicCount, 0, n)
	for i := range h.topics {
		sh := &h.topics[i]
		sh.mu.RLock()
		topics += len(sh.topics)
		for name, t := range sh.topics {
			if n == 0 || len(t.list) == 0 {
				continue
			}
			c := TopicCount{Topic: name, Subscribers: len(t.list)}
			if len(top) == n && less(c, top[0]) <= 0 {
				continue
			}
			c.Users = len(t.users)
			at, _ := slices.BinarySearchFunc(top, c, less)
			if len(top) < n {
				top = slices.Insert(top, at, c)
				continue
			}
			// Full: drop the weakest, top[0], and shift in c.
			copy(top[:at-1], top[1:at])
			top[at-1] = c
		}
		sh.mu.RUnlock()
	}
	slices.Reverse(top)
	return top, topics
}
