package memorybroker

import (
	"container/list"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// fresh remembers the epochs handed out for topics that have no stream:
// a subscribe (or GET /history) on a topic nobody has published to learns
// offset 0 and the epoch the topic's first message will carry, without a
// stream being stored for it. Reads must not create lasting state, so an
// entry is small, lives FreshTTL (longer only while the topic has local
// subscribers, who were told its epoch), and the table holds at most
// MaxFresh entries, oldest forgotten first. A forgotten entry costs a
// subscriber a gap, never a lost message: the first publish then carries
// a new epoch, which the client reports as a gap.
//
// It is guarded by Broker.mu.
type fresh struct {
	ttl     time.Duration
	max     int
	entries map[string]*list.Element // of *freshEntry
	order   list.List                // by creation or last extension, oldest first
}

type freshEntry struct {
	topic   string
	epoch   string
	expires int64 // unix nanoseconds
}

func (f *fresh) init(ttl time.Duration, max int) {
	f.ttl, f.max = ttl, max
	f.entries = make(map[string]*list.Element)
	f.order.Init()
}

// epoch returns topic's fresh epoch, creating it. At the cap it first
// forgets an old entry, preferring one watched reports unused; the second
// result reports that an entry was evicted.
func (f *fresh) epoch(topic string, now time.Time, watched func(string) bool) (epoch string, evicted bool) {
	if e := f.entries[topic]; e != nil {
		return e.Value.(*freshEntry).epoch, false
	}
	if len(f.entries) >= f.max {
		f.remove(oldestUnwatched(&f.order, watched))
		evicted = true
	}
	fe := &freshEntry{topic: topic, epoch: relay.NewEpoch(), expires: now.Add(f.ttl).UnixNano()}
	f.entries[topic] = f.order.PushBack(fe)
	return fe.epoch, evicted
}

// put remembers epoch for topic, which has none, without evicting: a
// stream dropped before its first publish gives its epoch back. The
// table may pass its cap by the few publishes in flight.
func (f *fresh) put(topic, epoch string, now time.Time) {
	f.entries[topic] = f.order.PushBack(&freshEntry{topic: topic, epoch: epoch, expires: now.Add(f.ttl).UnixNano()})
}

// take removes topic's entry and returns its epoch ("" when there is
// none): the first publish adopts it.
func (f *fresh) take(topic string) string {
	e := f.entries[topic]
	if e == nil {
		return ""
	}
	f.remove(e)
	return e.Value.(*freshEntry).epoch
}

func (f *fresh) remove(e *list.Element) {
	delete(f.entries, e.Value.(*freshEntry).topic)
	f.order.Remove(e)
}

// expire forgets up to limit expired entries, keeping (and extending)
// those whose topic still has local subscribers. It returns how many it
// looked at, so the caller can release the lock between batches.
func (f *fresh) expire(now time.Time, limit int, watched func(string) bool) int {
	n := 0
	for ; n < limit; n++ {
		e := f.order.Front()
		if e == nil {
			break
		}
		fe := e.Value.(*freshEntry)
		if fe.expires > now.UnixNano() {
			break
		}
		if watched(fe.topic) {
			fe.expires = now.Add(f.ttl).UnixNano()
			f.order.MoveToBack(e)
			continue
		}
		f.remove(e)
	}
	return n
}
