// Package memorybroker is the embedded engine: a single node, no network,
// nothing to run beside Relay. It keeps each topic's stream (offset
// counter, epoch, bounded history) in memory and hands publishes straight
// to the local fan-out.
//
// Every table is bounded: streams (MaxStreams, least recently published
// dropped first), history bytes across topics (HistoryBudget), epochs
// handed out for topics nobody published to (MaxFresh, FreshTTL) and
// idempotency keys (MaxIdempotencyKeys). Only a publish creates a stream:
// reading a topic that has none stores at most a small fresh entry.
//
// Ownership and locks: Broker.mu guards the stream table, its LRU list and
// the fresh table; each stream's mu orders its topic's publishes (offset
// assignment, history append and fan-out happen under it, so every
// subscriber sees offsets in order); budget.mu guards the list of streams
// holding history and is a leaf; idempotency.mu guards the idempotency
// table. Lock order: Broker.mu → stream.mu → budget.mu, and stream.mu →
// the hub's locks (inside Fanout). Watched is called under Broker.mu and
// only tries the hub's locks, never waits for them. idempotency.mu is
// never held with another.
package memorybroker

import (
	"container/list"
	"context"
	"crypto/sha256"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// HistoryRule bounds the history of the topics starting with Prefix.
type HistoryRule = relay.HistoryRule

// Config tunes the broker. The zero value works.
type Config struct {
	// History rules; without a rule for the empty prefix the default is
	// DefaultHistory.
	History []HistoryRule
	// HistoryBudget bounds the history held across all topics: payloads,
	// topic names and 128 bytes per message. Past it the oldest messages
	// of the least recently published topics are dropped.
	HistoryBudget int64 // default 64 MiB
	// MaxStreams bounds the topics with a stream (topics published to);
	// past it the least recently published topic's stream is dropped, and
	// its next publish starts a new epoch.
	MaxStreams int // default 100,000
	// MaxFresh and FreshTTL bound the epochs remembered for topics that
	// were read (subscribed to, or asked for history) but never published
	// to, so their first message carries the epoch readers were told.
	MaxFresh int           // default 100,000
	FreshTTL time.Duration // default 5m; longer while the topic has subscribers
	// Watched reports whether topic has subscribers on this node: their
	// stream or fresh epoch is kept while they wait. It is called with
	// Broker.mu held, so it must not wait (the hub's Watched answers true
	// rather than wait). Nil: none has.
	Watched func(topic string) bool
	// IdempotencyWindow is how long a publish's idempotency key is
	// remembered.
	IdempotencyWindow time.Duration // default 2m
	// MaxIdempotencyKeys bounds the keys remembered; past it the oldest
	// are forgotten early.
	MaxIdempotencyKeys int  // default 100,000
	watchedUnset       bool // Bind takes the node's Watched
	// StreamIdle is how long a stream with no history left, no publish
	// and no subscriber is kept before it is dropped; its next publish
	// starts a new epoch.
	StreamIdle time.Duration // default 1h
	// SweepInterval is how often expired history, keys, fresh epochs and
	// idle streams are dropped.
	SweepInterval time.Duration // default 1s
}

// Defaults for the zero Config.
const (
	DefaultHistoryBudget = 64 << 20
	DefaultMaxStreams    = 100_000
	DefaultMaxFresh      = 100_000
	DefaultFreshTTL      = 5 * time.Minute
)

// DefaultHistory is the history kept when no rule says otherwise.
var DefaultHistory = relay.DefaultHistory

func (c Config) withDefaults() Config {
	hasDefault := false
	for _, r := range c.History {
		hasDefault = hasDefault || r.Prefix == ""
	}
	if !hasDefault {
		c.History = append([]HistoryRule{DefaultHistory}, c.History...)
	}
	if c.HistoryBudget <= 0 {
		c.HistoryBudget = DefaultHistoryBudget
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxFresh <= 0 {
		c.MaxFresh = DefaultMaxFresh
	}
	if c.FreshTTL <= 0 {
		c.FreshTTL = DefaultFreshTTL
	}
	if c.Watched == nil {
		c.Watched = func(string) bool { return false }
		c.watchedUnset = true
	}
	if c.IdempotencyWindow <= 0 {
		c.IdempotencyWindow = 2 * time.Minute
	}
	if c.MaxIdempotencyKeys <= 0 {
		c.MaxIdempotencyKeys = 100_000
	}
	if c.StreamIdle <= 0 {
		c.StreamIdle = time.Hour
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	return c
}

// Stats are the broker's counters, read by the metrics exporter. The
// sizes of its tables are Streams and FreshEpochs.
type Stats struct {
	StreamsEvicted atomic.Uint64 // streams dropped because MaxStreams was reached
	FreshEvicted   atomic.Uint64 // fresh epochs forgotten early because MaxFresh was reached
}

// Broker is the in-memory relay.Broker. Create it with New.
type Broker struct {
	cfg   Config
	local relay.Fanout
	idem  idempotency
	hist  budget
	stats Stats

	mu      sync.Mutex
	streams map[string]*stream
	lru     list.List // of *stream, least recently published first
	fresh   fresh

	sweepBuf []*stream // owned by Run
}

// New returns a broker delivering to local (nil: the node given to Bind).
// It starts nothing; Run sweeps.
func New(cfg Config, local relay.Fanout) *Broker {
	cfg = cfg.withDefaults()
	b := &Broker{
		cfg:     cfg,
		local:   local,
		streams: make(map[string]*stream),
		idem:    idempotency{window: cfg.IdempotencyWindow, max: cfg.MaxIdempotencyKeys, keys: make(map[string]*idemEntry)},
	}
	b.hist.limit = cfg.HistoryBudget
	b.fresh.init(cfg.FreshTTL, cfg.MaxFresh)
	return b
}

// Stats returns the broker's live counters.
func (b *Broker) Stats() *Stats { return &b.stats }

// HistoryBytes returns what the history of every topic counts against the
// budget, and how many messages were dropped to stay within it.
func (b *Broker) HistoryBytes() (held int64, evicted uint64) {
	return b.hist.bytes.Load(), b.hist.evicted.Load()
}

// rule returns the history rule for topic.
func (b *Broker) rule(topic string) HistoryRule {
	best := HistoryRule{Prefix: "\x00"} // never matches; replaced by the default
	for _, r := range b.cfg.History {
		if strings.HasPrefix(topic, r.Prefix) && (best.Prefix == "\x00" || len(r.Prefix) > len(best.Prefix)) {
			best = r
		}
	}
	return best
}

// publishing returns topic's stream for a publish, creating it (with the
// epoch readers were told, if any) and marking it the most recently
// published.
func (b *Broker) publishing(topic string, now time.Time) *stream {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.streams[topic]
	if s != nil {
		s.touched = now
		b.lru.MoveToBack(s.lruElem)
		return s
	}
	if len(b.streams) >= b.cfg.MaxStreams {
		b.evictLocked()
	}
	epoch := b.fresh.take(topic)
	if epoch == "" {
		epoch = relay.NewEpoch()
	}
	s = &stream{topic: topic, epoch: epoch, rule: b.rule(topic), acct: &b.hist, touched: now}
	s.lruElem = b.lru.PushBack(s)
	b.streams[topic] = s
	return s
}

// evictLocked drops the least recently published stream to make room,
// preferring one without local subscribers among the oldest few. The
// caller holds b.mu.
func (b *Broker) evictLocked() {
	victim := oldestUnwatched(&b.lru, b.cfg.Watched)
	if victim == nil {
		return
	}
	b.dropLocked(victim.Value.(*stream))
	b.stats.StreamsEvicted.Add(1)
}

// evictScan is how many of the oldest entries of a full table are looked
// at for one whose topic no local subscriber is using.
const evictScan = 8

// oldestUnwatched returns the entry to evict from l, whose elements (a
// *stream or a *freshEntry) are oldest first: the first of the evictScan
// oldest whose topic has no local subscriber, else the oldest. It is the
// one eviction policy of the stream and fresh tables.
func oldestUnwatched(l *list.List, watched func(string) bool) *list.Element {
	oldest := l.Front()
	for e, i := oldest, 0; e != nil && i < evictScan; e, i = e.Next(), i+1 {
		var topic string
		switch v := e.Value.(type) {
		case *stream:
			topic = v.topic
		case *freshEntry:
			topic = v.topic
		}
		if !watched(topic) {
			return e
		}
	}
	return oldest
}

// dropLocked removes s from the table and lets its history go. The caller
// holds b.mu.
func (b *Broker) dropLocked(s *stream) {
	s.mu.Lock()
	s.dropped = true
	s.clear()
	unpublished := s.offset == 0 // its publish has yet to lock it, and will retry
	s.mu.Unlock()
	if unpublished {
		// The retry creates the stream again: it must carry the epoch
		// readers were told, not a new one.
		b.fresh.put(s.topic, s.epoch, time.Now())
	}
	delete(b.streams, s.topic)
	b.lru.Remove(s.lruElem)
}

// lookup returns topic's stream, or nil and the epoch its first message
// will carry when it has none. It stores no stream.
func (b *Broker) lookup(topic string) (*stream, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.streams[topic]; s != nil {
		return s, ""
	}
	epoch, evicted := b.fresh.epoch(topic, time.Now(), b.cfg.Watched)
	if evicted {
		b.stats.FreshEvicted.Add(1)
	}
	return nil, epoch
}

// Publish implements relay.Broker. An idempotency key is scoped to the
// message's topic and audience (all subscribers, or one user): the same
// key on another topic or for another user is another publish.
func (b *Broker) Publish(ctx context.Context, m *relay.Message, opts relay.PublishOptions) (relay.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return relay.Receipt{}, err
	}
	if opts.Transient {
		m.Offset, m.Epoch = 0, ""
		return relay.Receipt{Delivered: b.local.Fanout(m)}, nil
	}
	if opts.IdempotencyKey == "" {
		return b.publish(m), nil
	}
	return b.idem.do(idemKey(m, opts.IdempotencyKey), func() relay.Receipt { return b.publish(m) })
}

// idemKey scopes key to m's topic and audience. Topic names cannot hold
// control characters, so the separators cannot be forged. The table keeps
// the SHA-256 of it, 32 bytes whatever the topic and key lengths (up to
// 256 bytes each), so its 100,000 entries stay within a few MiB.
func idemKey(m *relay.Message, key string) string {
	audience := "*"
	if m.HasUser {
		audience = m.User.String()
	}
	sum := sha256.Sum256([]byte(m.Topic + "\x00" + audience + "\x00" + key))
	return string(sum[:])
}

func (b *Broker) publish(m *relay.Message) relay.Receipt {
	if m.HasUser { // outside the topic's stream: no offset, no history
		return relay.Receipt{Delivered: b.local.Fanout(m)}
	}
	for {
		now := time.Now()
		s := b.publishing(m.Topic, now)
		s.mu.Lock()
		if s.dropped { // dropped between the lookup and the lock
			s.mu.Unlock()
			continue
		}
		s.offset++
		m.Offset, m.Epoch = s.offset, s.epoch
		s.append(m, now)
		n := b.local.Fanout(m)
		s.mu.Unlock()
		b.hist.enforce()
		return relay.Receipt{Position: relay.Position{Offset: m.Offset, Epoch: m.Epoch}, Delivered: n}
	}
}

// History implements relay.HistoryReader. A topic without a stream
// answers offset 0 and the epoch its first message will carry; reading it
// creates no stream.
func (b *Broker) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	if err := ctx.Err(); err != nil {
		return relay.HistoryPage{}, err
	}
	for {
		s, epoch := b.lookup(topic)
		if s == nil {
			return relay.HistoryPage{Latest: relay.Position{Epoch: epoch}, Complete: since == 0}, nil
		}
		s.mu.Lock()
		if s.dropped {
			s.mu.Unlock()
			continue
		}
		s.trim(time.Now())
		p := s.page(since, limit)
		s.mu.Unlock()
		return p, nil
	}
}

// Run drops expired history, idempotency keys, fresh epochs and idle
// streams until ctx is done.
func (b *Broker) Run(ctx context.Context) error {
	return relay.Every(ctx, b.cfg.SweepInterval, b.sweep)
}

// sweepBatch bounds the work done under Broker.mu at a time, so that a
// sweep of a large table never holds up publishes for long.
const sweepBatch = 1024

func (b *Broker) sweep(now time.Time) {
	b.sweepBuf = b.hist.each(b.sweepBuf, func(s *stream) {
		s.mu.Lock()
		s.trim(now)
		s.mu.Unlock()
	})
	b.idem.sweep(now)
	for more := true; more; {
		b.mu.Lock()
		more = b.fresh.expire(now, sweepBatch, b.cfg.Watched) == sweepBatch
		b.mu.Unlock()
		runtime.Gosched() // let waiting publishes and subscribes in between batches
	}
	b.dropIdle(now)
}

// dropIdle drops the streams that have had no publish for StreamIdle, hold
// no history and have no local subscriber. They are at the front of the
// LRU list, walked in batches; a watched one is moved to the back, so it
// is looked at again only after another StreamIdle.
func (b *Broker) dropIdle(now time.Time) {
	var resume *stream // where the previous batch stopped
	for {
		b.mu.Lock()
		e := b.lru.Front()
		if resume != nil {
			if b.streams[resume.topic] != resume {
				b.mu.Unlock()
				return // dropped meanwhile; the next sweep starts over
			}
			e = resume.lruElem
		}
		for i := 0; e != nil && i < sweepBatch; i++ {
			s := e.Value.(*stream)
			if now.Sub(s.touched) <= b.cfg.StreamIdle {
				e = nil
				break
			}
			next := e.Next()
			s.mu.Lock()
			empty := s.n == 0
			s.mu.Unlock()
			switch {
			case !empty: // its rule keeps history longer than StreamIdle
			case b.cfg.Watched(s.topic):
				s.touched = now
				b.lru.MoveToBack(e)
			default:
				b.dropLocked(s)
			}
			e = next
		}
		if e == nil {
			b.mu.Unlock()
			return
		}
		resume = e.Value.(*stream)
		b.mu.Unlock()
		runtime.Gosched()
	}
}

// Streams returns how many topic streams are held.
func (b *Broker) Streams() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.streams)
}

// FreshEpochs returns how many epochs are remembered for topics read but
// not yet published to.
func (b *Broker) FreshEpochs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.fresh.entries)
}
