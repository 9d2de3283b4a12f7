package memorybroker

import (
	"container/list"
	"sync"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// stream is one topic's offsets and history: a ring of the newest
// messages, bounded by the topic's rule in count, age and bytes, and by
// the broker's total budget. Offsets in the ring are contiguous, ending at
// offset. Only a publish creates a stream.
type stream struct {
	topic string
	rule  HistoryRule
	acct  *budget

	// Guarded by Broker.mu.
	touched time.Time     // the last publish
	lruElem *list.Element // in Broker.lru

	mu       sync.Mutex
	epoch    string
	offset   uint64 // the newest offset
	ring     []entry
	head     int           // index of the oldest entry
	n        int           // entries held
	bytes    int           // payload bytes held
	histElem *list.Element // in acct.lru while n > 0 (also guarded by acct.mu)
	dropped  bool          // removed from the table: look it up again
}

type entry struct {
	m  *relay.Message
	at time.Time
}

// append adds m (whose offset is s.offset) and drops what the rule no
// longer allows.
func (s *stream) append(m *relay.Message, now time.Time) {
	if s.rule.Size <= 0 || len(m.Data) > s.rule.Bytes {
		s.clear() // offsets must stay contiguous: a gap empties the ring
		return
	}
	if s.ring == nil {
		s.ring = make([]entry, min(s.rule.Size, 4)) // most topics hold a few messages
	}
	if s.n == len(s.ring) {
		if len(s.ring) < s.rule.Size { // grow toward the rule's size
			grown := make([]entry, min(2*len(s.ring), s.rule.Size))
			for i := range s.n {
				grown[i] = s.ring[(s.head+i)%len(s.ring)]
			}
			s.ring, s.head = grown, 0
		} else {
			s.dropOldest()
			if s.ring == nil { // a one-message ring was emptied
				s.ring = make([]entry, s.rule.Size)
			}
		}
	}
	s.ring[(s.head+s.n)%len(s.ring)] = entry{m: m, at: now}
	s.n++
	s.bytes += len(m.Data)
	s.acct.bytes.Add(cost(s.topic, m.Data))
	s.acct.touch(s)
	for s.bytes > s.rule.Bytes {
		s.dropOldest()
	}
	s.trim(now)
}

func (s *stream) dropOldest() {
	e := &s.ring[s.head]
	s.bytes -= len(e.m.Data)
	s.acct.bytes.Add(-cost(s.topic, e.m.Data))
	*e = entry{}
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	if s.n == 0 {
		s.acct.forget(s)
		s.ring, s.head = nil, 0 // an empty stream gives its ring back at once
	}
}

func (s *stream) clear() {
	for s.n > 0 {
		s.dropOldest()
	}
	s.ring, s.head = nil, 0
}

// trim drops the messages older than the rule's TTL.
func (s *stream) trim(now time.Time) {
	for s.n > 0 && now.Sub(s.ring[s.head].at) > s.rule.TTL {
		s.dropOldest()
	}
	if s.n == 0 && s.ring != nil {
		s.ring, s.head = nil, 0 // an idle topic gives its memory back
	}
}

// page returns the messages after since, at most limit of them.
func (s *stream) page(since uint64, limit int) relay.HistoryPage {
	p := relay.HistoryPage{Latest: relay.Position{Offset: s.offset, Epoch: s.epoch}}
	oldest := s.offset - uint64(s.n) + 1 // offset of ring's first entry
	switch {
	case since > s.offset: // from the future: not this stream's history
		return p
	case since+1 < oldest: // trimmed: the messages right after since are gone
		p.Complete = false
	default:
		p.Complete = true
	}
	first := max(since+1, oldest)
	count := int(s.offset - first + 1)
	if s.offset < first {
		count = 0
	}
	if limit > 0 && count > limit {
		count = limit
	}
	p.Messages = make([]*relay.Message, count)
	start := int(first - oldest)
	for i := range count {
		p.Messages[i] = s.ring[(s.head+start+i)%len(s.ring)].m
	}
	return p
}
