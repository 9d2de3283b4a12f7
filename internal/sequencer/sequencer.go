// Package sequencer puts the messages a networked engine brings to one
// node back in order. Redis pub/sub and NATS core subjects deliver at most
// once, and a node also sees its own publishes twice (once when the engine
// answers, once from the subscription), so for every watched topic the
// sequencer hands the local fan-out each offset exactly once and in
// order: repeats are dropped, early arrivals wait for the missing offsets,
// and offsets that do not come are read from history. When history no
// longer holds them, subscribers are told with a relay.KindReset message
// where they now stand.
//
// Ownership and locks: Sequencer.mu guards the table of topics and is
// never held with another lock; each topic's track.mu orders that topic's
// fan-out and is held through Fanout (so track.mu → the hub's locks).
// Track and Forget, which the hub reaches with its shard lock held, take
// only Sequencer.mu, never a track.mu.
package sequencer

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// Config tunes a Sequencer. The zero value works.
type Config struct {
	// RepairAfter is how long a message that arrived early waits for the
	// offsets before it before they are read from history.
	RepairAfter time.Duration // default 100ms
	// MaxWaiting bounds the early messages held per topic; past it
	// history is read at once.
	MaxWaiting int // default 10,000
	// RepairTimeout bounds one history read.
	RepairTimeout time.Duration // default 5s
}

// Stats count what the sequencer corrected.
type Stats struct {
	Repeats  uint64 // messages dropped as already delivered
	Repaired uint64 // messages fanned out from history to fill a gap
	Resets   uint64 // gaps history could not fill
}

// Sequencer orders one node's incoming messages per topic. Create it with
// New.
type Sequencer struct {
	cfg     Config
	local   relay.Fanout
	history relay.HistoryReader
	log     *slog.Logger

	mu     sync.Mutex
	topics map[string]*track
	stats  Stats
}

// track is one watched topic.
type track struct {
	name string

	mu        sync.Mutex
	started   bool // the starting position is known
	epoch     string
	last      uint64                    // newest offset fanned out
	waiting   map[uint64]*relay.Message // arrived before earlier offsets, by offset
	early     []*relay.Message          // arrived before start
	repairing bool                      // a repair is scheduled or running
	timer     *time.Timer               // the scheduled repair, until it runs
	want      uint64                    // the newest offset known to exist: repair until last reaches it
	left      []string                  // epochs the topic moved away from, newest last
	gone      atomic.Bool               // forgotten: fan out nothing more (set without mu)
}

// maxLeft bounds the epochs remembered as left behind.
const maxLeft = 4

// newEpochLocked follows the topic into epoch, from its beginning.
func (t *track) newEpochLocked(epoch string) {
	if t.epoch != "" {
		t.left = append(t.left, t.epoch)
		if len(t.left) > maxLeft {
			t.left = t.left[1:]
		}
	}
	t.epoch, t.last, t.want = epoch, 0, 0
	clear(t.waiting)
}

// stale reports whether epoch is one the topic moved away from: epochs are
// random, so a stream never returns to one, and a message of it arriving
// late (a node offers its own publish after the engine answered) is old.
func (t *track) stale(epoch string) bool {
	for _, e := range t.left {
		if e == epoch {
			return true
		}
	}
	return false
}

// New returns a sequencer fanning out to local and reading history to
// repair gaps.
func New(cfg Config, local relay.Fanout, history relay.HistoryReader, log *slog.Logger) *Sequencer {
	if cfg.RepairAfter <= 0 {
		cfg.RepairAfter = 100 * time.Millisecond
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = 10_000
	}
	if cfg.RepairTimeout <= 0 {
		cfg.RepairTimeout = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sequencer{cfg: cfg, local: local, history: history, log: log, topics: make(map[string]*track)}
}

// Stats returns a copy of the counters.
func (s *Sequencer) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Sequencer) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// Track starts ordering topic's messages. Until Start gives its position,
// what arrives is held.
func (s *Sequencer) Track(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.topics[topic] == nil {
		s.topics[topic] = &track{name: topic, waiting: make(map[uint64]*relay.Message)}
	}
}

// Forget stops ordering topic: the node no longer has subscribers on it.
func (s *Sequencer) Forget(topic string) {
	s.mu.Lock()
	t := s.topics[topic]
	delete(s.topics, topic)
	s.mu.Unlock()
	if t != nil {
		// Without t.mu: the hub calls Forget (through Unwatch) with its
		// shard lock held, and a fan-out holds t.mu while it waits for that
		// lock. The track's buffers go with the track.
		t.gone.Store(true)
	}
}

// Close forgets every topic: the engine stopped. Scheduled repairs then
// do nothing.
func (s *Sequencer) Close() {
	s.mu.Lock()
	topics := s.topics
	s.topics = make(map[string]*track)
	s.mu.Unlock()
	for _, t := range topics {
		t.gone.Store(true)
	}
}

// Tracked returns the topics being ordered.
func (s *Sequencer) Tracked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.topics))
	for name := range s.topics {
		out = append(out, name)
	}
	return out
}

// Started reports whether topic is tracked and its position known.
func (s *Sequencer) Started(topic string) bool {
	t := s.track(topic)
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.started
}

func (s *Sequencer) track(topic string) *track {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topics[topic]
}

// Start gives topic's position when its subscription took effect: what
// arrived before at or below it is dropped, the rest fanned out in order.
// A topic already started keeps its position.
func (s *Sequencer) Start(topic string, pos relay.Position) {
	t := s.track(topic)
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.gone.Load() {
		return
	}
	t.started, t.epoch, t.last = true, pos.Epoch, pos.Offset
	early := t.early
	t.early = nil
	for _, m := range early {
		s.offerLocked(t, m)
	}
}

// Offer hands the sequencer one message from the engine and returns how
// many local connections it was queued for now (0 when it is a repeat,
// waits for earlier offsets, or nobody here watches its topic).
func (s *Sequencer) Offer(m *relay.Message) int {
	t := s.track(m.Topic)
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gone.Load() {
		return 0
	}
	if !t.started {
		t.early = append(t.early, m)
		if len(t.early) > s.cfg.MaxWaiting {
			t.early = t.early[1:]
		}
		return 0
	}
	return s.offerLocked(t, m)
}

func (s *Sequencer) offerLocked(t *track, m *relay.Message) int {
	if m.Kind != relay.KindPublish || m.Offset == 0 {
		// Presence events and messages to one user are outside the stream.
		return s.local.Fanout(m)
	}
	if m.Epoch != t.epoch {
		if t.stale(m.Epoch) {
			s.count(func(st *Stats) { st.Repeats++ })
			return 0
		}
		// The stream was started again (the engine lost it, or dropped
		// it when idle): follow the new epoch from its beginning.
		t.newEpochLocked(m.Epoch)
	}
	switch {
	case m.Offset <= t.last:
		s.count(func(st *Stats) { st.Repeats++ })
		return 0
	case m.Offset > t.last+1:
		t.waiting[m.Offset] = m
		t.want = max(t.want, m.Offset)
		if len(t.waiting) > s.cfg.MaxWaiting {
			s.repairLocked(t, 0)
		} else {
			s.repairLocked(t, s.cfg.RepairAfter)
		}
		return 0
	}
	n := s.local.Fanout(m)
	t.last = m.Offset
	s.drainLocked(t)
	return n
}

// drainLocked fans out the waiting messages that are now next, and calls
// off a scheduled repair that nothing is missing for any more.
func (s *Sequencer) drainLocked(t *track) {
	for len(t.waiting) > 0 {
		next := t.waiting[t.last+1]
		if next == nil {
			return
		}
		delete(t.waiting, t.last+1)
		s.local.Fanout(next)
		t.last++
	}
	if t.last >= t.want && t.timer != nil && t.timer.Stop() {
		t.timer, t.repairing = nil, false
	}
}

// Check compares topic's latest position in the engine with what was fanned
// out, and repairs from history if messages are missing: the last
// messages of a burst have no successor to reveal their loss.
func (s *Sequencer) Check(topic string, latest relay.Position) {
	t := s.track(topic)
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.started || t.gone.Load() || latest.Epoch == "" {
		return
	}
	if latest.Epoch != t.epoch || latest.Offset > t.last {
		if latest.Epoch == t.epoch {
			t.want = max(t.want, latest.Offset)
		} else {
			t.want = ^uint64(0) // until the repair follows the new epoch
		}
		s.repairLocked(t, s.cfg.RepairAfter)
	}
}

// repairLocked schedules a history read for t after delay, unless one is
// pending; a pending one is brought forward to delay 0 when asked.
func (s *Sequencer) repairLocked(t *track, delay time.Duration) {
	if t.repairing {
		if delay == 0 && t.timer != nil && t.timer.Stop() {
			t.timer.Reset(0)
		}
		return
	}
	t.repairing = true
	t.timer = time.AfterFunc(delay, func() { s.repair(t) })
}

// repair reads what t is missing from history and fans it out.
func (s *Sequencer) repair(t *track) {
	if t.gone.Load() {
		return
	}
	t.mu.Lock()
	t.timer = nil // running: no longer to be called off
	since, epoch := t.last, t.epoch
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RepairTimeout)
	defer cancel()
	page, err := s.history.History(ctx, t.name, since, 0)
	if err == nil && page.Latest.Epoch != epoch {
		since = 0 // a new epoch: everything in it is missing
		page, err = s.history.History(ctx, t.name, 0, 0)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.repairing = false
	if t.gone.Load() {
		return
	}
	if err != nil {
		s.log.Warn("reading history to fill a gap failed; retrying", "topic", t.name, "err", err)
		s.repairLocked(t, time.Second)
		return
	}
	if page.Latest.Epoch != t.epoch {
		if t.epoch != epoch || t.stale(page.Latest.Epoch) {
			// The topic changed epoch while history was read: the page
			// may be of another stream. Read again.
			s.repairLocked(t, 0)
			return
		}
		t.newEpochLocked(page.Latest.Epoch)
	} else if t.last != since {
		// Messages arrived meanwhile: fan out only what is still after.
		since = t.last
	}
	msgs := page.Messages
	if !page.Complete || (len(msgs) > 0 && msgs[0].Offset > since+1) {
		// History lost what came right after since: say where
		// subscribers now stand and go on from there.
		at := page.Latest.Offset
		if len(msgs) > 0 {
			at = msgs[0].Offset - 1
		} else if len(t.waiting) > 0 {
			at = slices.Min(slices.Collect(maps.Keys(t.waiting))) - 1 // they reached the node: keep them
		}
		if at > t.last {
			s.local.Fanout(&relay.Message{Kind: relay.KindReset, Topic: t.name, Offset: at, Epoch: t.epoch})
			t.last = at
			s.count(func(st *Stats) { st.Resets++ })
		}
	}
	repaired := uint64(0)
	for _, m := range msgs {
		if m.Offset == t.last+1 {
			s.local.Fanout(m)
			t.last = m.Offset
			if _, arrived := t.waiting[m.Offset]; arrived {
				delete(t.waiting, m.Offset) // delivered now; it was not missing
			} else {
				repaired++
			}
		}
	}
	if repaired > 0 {
		s.count(func(st *Stats) { st.Repaired += repaired })
	}
	// Drop what the repair made stale, then go on with what is next.
	for off := range t.waiting {
		if off <= t.last {
			delete(t.waiting, off)
		}
	}
	s.drainLocked(t)
	if len(t.waiting) > 0 {
		// Still missing some (published after the read): look again.
		s.repairLocked(t, s.cfg.RepairAfter)
	} else {
		t.want = t.last // the next Check tells if more is missing
	}
}
