package memorybroker

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// messageOverhead is what a message held in history costs beside its
// payload and topic: the relay.Message (96 bytes) and its ring entry (32).
// The budget counts it so that many tiny messages cannot hide behind a
// small payload total.
const messageOverhead = 128

// cost is what holding m in history counts against the budget.
func cost(topic string, data []byte) int64 {
	return int64(len(data) + len(topic) + messageOverhead)
}

// budget bounds the history held across all topics. Per-topic rules bound
// one topic; without a total, many topics times their rules could take
// any amount of memory. When the total passes the limit, the oldest
// messages of the least recently published topics go first, so active
// topics keep their history the longest.
//
// bytes is updated by streams under their own lock; mu guards only the
// list of streams holding history and is never held while taking another
// lock (a leaf).
type budget struct {
	limit   int64
	bytes   atomic.Int64
	evicted atomic.Uint64 // messages dropped to stay within the limit

	mu  sync.Mutex
	lru list.List // of *stream holding history, most recently appended first
}

// touch moves s to the front: it just had a message appended. The caller
// holds s.mu.
func (b *budget) touch(s *stream) {
	b.mu.Lock()
	if s.histElem == nil {
		s.histElem = b.lru.PushFront(s)
	} else {
		b.lru.MoveToFront(s.histElem)
	}
	b.mu.Unlock()
}

// forget removes s, which holds no history any more. The caller holds
// s.mu.
func (b *budget) forget(s *stream) {
	if s.histElem == nil {
		return
	}
	b.mu.Lock()
	b.lru.Remove(s.histElem)
	b.mu.Unlock()
	s.histElem = nil
}

// oldest returns the least recently appended stream holding history.
func (b *budget) oldest() *stream {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.lru.Back(); e != nil {
		return e.Value.(*stream)
	}
	return nil
}

// each calls f with every stream holding history, from a snapshot taken
// into buf (returned for reuse), so that f may lock the streams.
func (b *budget) each(buf []*stream, f func(*stream)) []*stream {
	b.mu.Lock()
	buf = buf[:0]
	for e := b.lru.Front(); e != nil; e = e.Next() {
		buf = append(buf, e.Value.(*stream))
	}
	b.mu.Unlock()
	for _, s := range buf {
		f(s)
	}
	clear(buf)
	return buf
}

// enforce drops the oldest messages of the least recently published
// topics until the total is within the limit. It takes no lock of the
// caller's: call it after releasing the stream just published to.
func (b *budget) enforce() {
	for b.bytes.Load() > b.limit {
		s := b.oldest()
		if s == nil {
			return
		}
		s.mu.Lock()
		if s.n > 0 {
			s.dropOldest()
			b.evicted.Add(1)
		} else {
			b.forget(s) // cannot happen: a stream leaves the list with its last message
		}
		s.mu.Unlock()
	}
}
