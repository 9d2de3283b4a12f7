// Package memorybroker is the embedded engine: a single node, no network,
// nothing to run beside Relay. It keeps each topic's stream (offset
// counter, epoch, bounded history) in memory and hands publishes straight
// to the local fan-out.
//
// Ownership and locks: Broker.mu guards the stream table; each stream's mu
// orders its topic's publishes (offset assignment, history append and
// fan-out happen under it, so every subscriber sees offsets in order);
// idempotency.mu guards the idempotency table. Lock order: Broker.mu →
// stream.mu → the hub's locks (inside Fanout); idempotency.mu is never
// held with another.
package memorybroker

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"strings"
	"sync"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// HistoryRule bounds the history of the topics starting with Prefix. The
// longest matching prefix wins; the rule with the empty prefix is the
// default.
type HistoryRule struct {
	Prefix string
	Size   int           // messages kept; 0 keeps none
	TTL    time.Duration // how long a message is kept
	Bytes  int           // payload bytes kept
}

// Config tunes the broker. The zero value works.
type Config struct {
	// History rules; without a rule for the empty prefix the default is
	// DefaultHistory.
	History []HistoryRule
	// IdempotencyWindow is how long a publish's idempotency key is
	// remembered.
	IdempotencyWindow time.Duration // default 2m
	// MaxIdempotencyKeys bounds the keys remembered; past it the oldest
	// are forgotten early.
	MaxIdempotencyKeys int // default 100,000
	// StreamIdle is how long a stream with no history left and no publish
	// is kept before it is dropped; its next publish starts a new epoch.
	StreamIdle time.Duration // default 1h
	// SweepInterval is how often expired history, keys and idle streams
	// are dropped.
	SweepInterval time.Duration // default 1s
}

// DefaultHistory is the history kept when no rule says otherwise: the last
// 100 messages of a topic, for 5 minutes, up to 1 MiB.
var DefaultHistory = HistoryRule{Size: 100, TTL: 5 * time.Minute, Bytes: 1 << 20}

func (c Config) withDefaults() Config {
	hasDefault := false
	for _, r := range c.History {
		hasDefault = hasDefault || r.Prefix == ""
	}
	if !hasDefault {
		c.History = append([]HistoryRule{DefaultHistory}, c.History...)
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

// Broker is the in-memory relay.Broker. Create it with New.
type Broker struct {
	cfg   Config
	local relay.Fanout
	idem  idempotency

	mu      sync.Mutex
	streams map[string]*stream
}

// New returns a broker delivering to local. It starts nothing; Run sweeps.
func New(cfg Config, local relay.Fanout) *Broker {
	cfg = cfg.withDefaults()
	return &Broker{
		cfg:     cfg,
		local:   local,
		streams: make(map[string]*stream),
		idem:    idempotency{window: cfg.IdempotencyWindow, max: cfg.MaxIdempotencyKeys, keys: make(map[string]*idemEntry)},
	}
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

// stream returns topic's stream, creating it with a fresh epoch.
func (b *Broker) stream(topic string) *stream {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.streams[topic]
	if s == nil {
		s = &stream{topic: topic, epoch: newEpoch(), rule: b.rule(topic), touched: time.Now()}
		b.streams[topic] = s
	}
	return s
}

// newEpoch returns 64 random bits in base32: a new epoch for every stream
// this process creates, so offsets from a previous run never match.
func newEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Publish implements relay.Broker.
func (b *Broker) Publish(ctx context.Context, m *relay.Message, opts relay.PublishOptions) (relay.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return relay.Receipt{}, err
	}
	if opts.IdempotencyKey == "" {
		return b.publish(m), nil
	}
	return b.idem.do(opts.IdempotencyKey, func() relay.Receipt { return b.publish(m) })
}

func (b *Broker) publish(m *relay.Message) relay.Receipt {
	if m.HasUser { // outside the topic's stream: no offset, no history
		return relay.Receipt{Delivered: b.local.Fanout(m)}
	}
	for {
		s := b.stream(m.Topic)
		s.mu.Lock()
		if s.dropped { // the sweeper dropped it between the lookup and the lock
			s.mu.Unlock()
			continue
		}
		now := time.Now()
		s.offset++
		m.Offset, m.Epoch = s.offset, s.epoch
		s.append(m, now)
		n := b.local.Fanout(m)
		s.mu.Unlock()
		return relay.Receipt{Position: relay.Position{Offset: m.Offset, Epoch: m.Epoch}, Delivered: n}
	}
}

// History implements relay.HistoryReader.
func (b *Broker) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	if err := ctx.Err(); err != nil {
		return relay.HistoryPage{}, err
	}
	for {
		s := b.stream(topic)
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

// Run drops expired history, idempotency keys and idle streams until ctx
// is done.
func (b *Broker) Run(ctx context.Context) error {
	return relay.Every(ctx, b.cfg.SweepInterval, func(now time.Time) {
		b.sweep(now)
		b.idem.sweep(now)
	})
}

func (b *Broker) sweep(now time.Time) {
	b.mu.Lock()
	list := make([]*stream, 0, len(b.streams))
	for _, s := range b.streams {
		list = append(list, s)
	}
	b.mu.Unlock()
	for _, s := range list {
		s.mu.Lock()
		s.trim(now)
		idle := s.n == 0 && now.Sub(s.touched) > b.cfg.StreamIdle
		s.mu.Unlock()
		if !idle {
			continue
		}
		b.mu.Lock()
		s.mu.Lock()
		if s.n == 0 && now.Sub(s.touched) > b.cfg.StreamIdle && b.streams[s.topic] == s {
			s.dropped = true
			delete(b.streams, s.topic)
		}
		s.mu.Unlock()
		b.mu.Unlock()
	}
}

// Streams returns how many topic streams are held.
func (b *Broker) Streams() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.streams)
}
