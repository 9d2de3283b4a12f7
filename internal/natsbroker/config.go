package natsbroker

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// Config tunes the engine. The zero value works against a NATS server on
// the default URL.
type Config struct {
	// URL is the NATS server, nats://host:port (a comma-separated list
	// for a cluster).
	URL string // default nats://127.0.0.1:4222
	// NodeID names this node to the others: kicks are addressed to it and
	// presence counts are kept per node. It must be unique among the
	// nodes sharing the server. Default: random.
	NodeID string
	// Prefix starts the names of every stream, bucket and subject the
	// engine uses, so several Relay clusters can share one NATS server.
	// Letters, digits, '-' and '_'.
	Prefix string // default "relay"
	// History is the history kept per topic, as in memorybroker: the
	// longest matching prefix wins, relay.DefaultHistory without a rule
	// for "". Each rule is one JetStream stream (MaxMsgsPerSubject = Size,
	// MaxAge = the longer of TTL and StreamIdle); Bytes is not enforced
	// (HistoryBytes bounds each stream). A topic's offset counter and
	// epoch live in its messages: History returns only those younger
	// than TTL, but the newest is kept for StreamIdle, so the topic keeps
	// its epoch until it had no publish for that long. Size 0 keeps only
	// the newest message, for its offset, and History returns none.
	History []relay.HistoryRule
	// StreamIdle is how long a topic's newest message (its offset and
	// epoch) outlives its last publish when its rule's TTL is shorter.
	StreamIdle time.Duration // default 1h
	// HistoryBytes bounds each history stream; past it the oldest
	// messages of any topic are dropped.
	HistoryBytes int64 // default 64 MiB
	// Replicas is the replication of every stream and bucket in a
	// clustered JetStream.
	Replicas int // default 1
	// IdempotencyWindow is how long a publish's idempotency key is
	// remembered (capped at the rule's TTL for stored messages:
	// JetStream's duplicate window cannot outlast the stream's MaxAge).
	IdempotencyWindow time.Duration // default 2m
	// FreshTTL is how long the epoch handed out for a topic nobody
	// published to is remembered (refreshed while this node watches it).
	FreshTTL time.Duration // default 5m
	// FreshBytes bounds the bucket of fresh epochs; past it readers get
	// epochs that are not remembered (a subscriber then sees a new epoch
	// with the first message, which relay.v1 reports as a gap).
	FreshBytes int64 // default 16 MiB
	// ReconnectGrace is how long a registration held by a node that died
	// outlives it.
	ReconnectGrace time.Duration // default 30s
	// RegistryMaxAge removes registrations not written for this long:
	// the backstop for expired registrations, whose deadline lives in the
	// value (NATS 2.9 has no per-key TTL). Attached registrations are
	// rewritten by the node holding them every RegistryMaxAge/4. It must
	// exceed the registration TTL and the reconnect grace.
	RegistryMaxAge time.Duration // default 2h
	// Heartbeat is how often this node tells the others it is alive, and
	// looks for nodes that stopped.
	Heartbeat time.Duration // default 2s
	// NodeTTL is how long a node's heartbeat may stand still before the
	// others remove its presence and release its registrations. An
	// observer sees a beat up to one Heartbeat late and checks once per
	// Heartbeat, so a dead node is removed NodeTTL to NodeTTL+2×Heartbeat
	// after its last beat: 8 s keeps that within 12 s, as with Redis.
	NodeTTL time.Duration // default 8s
	// CheckInterval is how often the latest position of every watched
	// topic is read, so that a lost last message is repaired.
	CheckInterval time.Duration // default 2s
	// Timeout bounds one Publish (retries included) and each request of
	// the other operations, so that they fail within it while NATS hangs;
	// while the connection is known to be down they fail at once.
	Timeout time.Duration // default 1.5s
	// ReconnectWait is the pause between attempts to reach NATS again.
	ReconnectWait time.Duration // default 500ms
	// InboxSize is the buffer between the NATS connection and the
	// goroutine fanning messages out; past it messages are dropped and
	// later repaired from history.
	InboxSize int // default 65,536
}

// Defaults for the zero Config.
const (
	DefaultURL               = "nats://127.0.0.1:4222"
	DefaultPrefix            = "relay"
	DefaultHistoryBytes      = 64 << 20
	DefaultIdempotencyWindow = 2 * time.Minute
	DefaultFreshTTL          = 5 * time.Minute
	DefaultFreshBytes        = 16 << 20
	DefaultRegistryMaxAge    = 2 * time.Hour
	DefaultStreamIdle        = time.Hour
)

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.NodeID == "" {
		c.NodeID = strings.ToLower(rand.Text()[:16])
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	for _, r := range c.Prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return c, fmt.Errorf("natsbroker: prefix %q: only letters, digits, '-' and '_' are allowed", c.Prefix)
		}
	}
	hasDefault := false
	for _, r := range c.History {
		hasDefault = hasDefault || r.Prefix == ""
		if r.TTL <= 0 || r.Size < 0 {
			return c, fmt.Errorf("natsbroker: history rule %q: want a positive TTL and a size >= 0", r.Prefix)
		}
	}
	if !hasDefault {
		c.History = append([]relay.HistoryRule{relay.DefaultHistory}, c.History...)
	}
	defaults := []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&c.IdempotencyWindow, DefaultIdempotencyWindow},
		{&c.FreshTTL, DefaultFreshTTL},
		{&c.RegistryMaxAge, DefaultRegistryMaxAge},
		{&c.StreamIdle, DefaultStreamIdle},
		{&c.Heartbeat, 2 * time.Second},
		{&c.NodeTTL, 8 * time.Second},
		{&c.CheckInterval, 2 * time.Second},
		{&c.Timeout, 1500 * time.Millisecond},
		{&c.ReconnectWait, 500 * time.Millisecond},
	}
	for _, d := range defaults {
		if *d.d <= 0 {
			*d.d = d.def
		}
	}
	if c.ReconnectGrace == 0 {
		c.ReconnectGrace = 30 * time.Second
	}
	if c.NodeTTL < 2*c.Heartbeat {
		return c, fmt.Errorf("natsbroker: node TTL %v must be at least twice the heartbeat %v", c.NodeTTL, c.Heartbeat)
	}
	if c.HistoryBytes <= 0 {
		c.HistoryBytes = DefaultHistoryBytes
	}
	if c.FreshBytes <= 0 {
		c.FreshBytes = DefaultFreshBytes
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.InboxSize <= 0 {
		c.InboxSize = 1 << 16
	}
	return c, nil
}

// names are the streams, buckets and subjects of one prefix.
type names struct {
	topic     string // core subjects carrying messages: topic + "." + token(topic)
	node      string // core subjects carrying kicks: node + "." + token(node id)
	fresh     string // bucket of epochs handed out for topics without a stream
	idem      string // bucket of idempotency keys of messages to one user
	registry  string // bucket of registrations
	presence  string // bucket of per-topic per-user connection counts
	nodes     string // bucket of node heartbeats
	dashboard string // bucket of the dashboard's node summaries (peers.go)
}

func newNames(prefix string) names {
	return names{
		topic:     prefix + ".t",
		node:      prefix + ".node",
		fresh:     prefix + "_fresh",
		idem:      prefix + "_idem",
		registry:  prefix + "_registry",
		presence:  prefix + "_presence",
		nodes:     prefix + "_nodes",
		dashboard: prefix + "_dashboard",
	}
}

// history is the stream of the topics one rule governs.
type history struct {
	rule relay.HistoryRule
	name string // the stream: P_history for the default rule, else P_history_<id>
	subj string // its subjects are subj + "." + token(topic): P.h or P.h.<id>
}

// histories returns the streams of the rules. A rule's id is a hash of
// its prefix, so changing a rule's size or TTL updates its stream, and
// adding a rule leaves the others' streams alone.
func histories(prefix string, rules []relay.HistoryRule) []history {
	out := make([]history, 0, len(rules))
	for _, r := range rules {
		h := history{rule: r, name: prefix + "_history", subj: prefix + ".h"}
		if r.Prefix != "" {
			sum := sha256.Sum256([]byte(r.Prefix))
			id := hex.EncodeToString(sum[:4])
			h.name += "_" + id
			h.subj += "." + id
		}
		out = append(out, h)
	}
	return out
}

// historyOf returns the index of the rule (and stream) for topic: the
// longest matching prefix.
func (b *Broker) historyOf(topic string) int {
	best := -1
	for i, h := range b.hists {
		if strings.HasPrefix(topic, h.rule.Prefix) && (best < 0 || len(h.rule.Prefix) > len(b.hists[best].rule.Prefix)) {
			best = i
		}
	}
	return best
}
