// Package redisbroker is the Redis engine: several Relay nodes share one
// Redis (7.0 or later) for topic streams, fan-out, registrations and
// presence. Each node holds its own sockets; Redis holds everything that
// must be the same on every node.
//
// Keys and channels, under Config.Prefix (default "relay"):
//
//	P:s:{topic}   hash  e (epoch), o (newest offset): the topic's stream head
//	P:h:{topic}   stream of the topic's history, entry id "<offset>-0", fields d (payload), t (ms)
//	P:i:{sha256}  string "<offset> <epoch>": an idempotency key's first receipt
//	P:c:{topic}   pub/sub channel of the topic's messages and presence events
//	P:n:{node}    pub/sub channel of one node: kicks and its own heartbeat
//
// (channels are named P.<db>:c:… on a database other than 0, since pub/sub
// ignores databases)
//
//	P:r:{id}      hash  u (user), t (seed topics), n (holding node), k (socket)
//	P:rn:{node}   set of the registrations a node holds
//	P:p:{topic}   hash  user → connections on every node
//	P:pn:{node}   hash  "topic\nuser" → that node's share of P:p
//	P:pi:{topic}  hash  user → the info the user joined with (relay.InfoRoster), from
//	              its join to its leave; only users that joined with one
//	P:pt          sorted set, all scores 0: the topics whose P:p:{topic} exists, the
//	              occupied topics (relay.TopicLister), kept by the presence scripts
//	P:nodes       sorted set node → last heartbeat (ms)
//	P:d:{node}    string: the node's dashboard summary (JSON), expiring (peers.go)
//
// A pub/sub message is "kind\noffset\nepoch\nuser\npayload" (pubsub.go); a
// join's or leave's payload is the info the user joined with
// (relay.InfoRoster; empty for none), which the presence script keeps in
// P:pi from the join to the leave. An info over MaxInfoBytes (64 KiB) is
// dropped with a warning, never truncated. The script that announces a
// join or leave returns it to the node that ran it, which reports it
// (relay.TransitionReporter; the dead-node clean-up returns its leaves).
//
// One publish is one round trip: a Lua script assigns the offset, appends
// to the history, publishes and stores the idempotency key atomically.
// Pub/sub is at most once, so every node passes what it receives through
// a sequencer that drops repeats, waits for missing offsets and reads
// them from history, and checks every watched topic's head every few
// seconds so a lost last message is repaired too.
//
// Goroutines and locks: Run owns the pub/sub connection (subscriber), the
// presence writer (roster) and the heartbeat; Broker.mu guards the table of
// watched topics and their waiters and is never held with another lock.
package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"golang.org/x/sync/errgroup"

	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/sequencer"
)

// DefaultFreshMax is Config.FreshMax's default: for the whole cluster
// (the memory engine keeps 100,000 per node), about 80 MB of Redis when
// full.
const DefaultFreshMax = 300_000

// Config tunes the engine. URL is required; the rest has defaults.
type Config struct {
	// URL is redis://[user:pass@]host:port/db or rediss://.
	URL string
	// NodeID names this node; it must be unique among the nodes.
	NodeID string
	// Prefix starts every key and channel, so several clusters (or
	// tests) can share one Redis.
	Prefix string // default "relay"
	// History is the history kept per topic (prefix rules as in
	// memorybroker; Bytes is not enforced: Redis's maxmemory bounds the
	// total).
	History []relay.HistoryRule
	// IdempotencyWindow is how long a publish's idempotency key is kept.
	IdempotencyWindow time.Duration // default 2m
	// StreamIdle is how long a topic's stream head outlives its last
	// publish (and its history); its next publish then starts a new epoch.
	StreamIdle time.Duration // default 1h
	// FreshTTL is how long the epoch handed out for a topic nobody
	// published to is kept (longer while a node watches the topic).
	FreshTTL time.Duration // default 5m
	// FreshMax bounds how many such epochs are kept: reads must not
	// grow Redis without bound. Past it the least recently read is
	// forgotten (its readers see a new epoch with its first message),
	// unless nodes watch it: then the new one is not kept.
	FreshMax int // default 300,000
	// ReconnectGrace is how long a registration held by a node that died
	// outlives it.
	ReconnectGrace time.Duration // default 30s
	// Timeout bounds each command, so that a publish fails within it while
	// Redis is unreachable.
	Timeout time.Duration // default 2s
	// NodeTTL is how long a node that stopped sending heartbeats counts as
	// alive; then another node removes its presence and releases its
	// registrations.
	NodeTTL time.Duration // default 10s
	// Heartbeat is how often a node says it is alive, checks its pub/sub
	// connection and the heads of the topics it watches.
	Heartbeat time.Duration // default 2s
}

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Prefix == "" {
		c.Prefix = "relay"
	}
	if c.NodeID == "" {
		c.NodeID = NewNodeID()
	}
	def(&c.IdempotencyWindow, 2*time.Minute)
	def(&c.StreamIdle, time.Hour)
	def(&c.FreshTTL, 5*time.Minute)
	if c.FreshMax <= 0 {
		c.FreshMax = DefaultFreshMax
	}
	def(&c.Timeout, 2*time.Second)
	def(&c.NodeTTL, 10*time.Second)
	def(&c.Heartbeat, 2*time.Second)
	if c.ReconnectGrace == 0 {
		c.ReconnectGrace = 30 * time.Second
	}
	return c
}

// NewNodeID returns a random node name.
func NewNodeID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Broker is the Redis engine. Create it with New.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	client rueidis.Client
	keys   keys
	node   relay.Node
	seq    *sequencer.Sequencer

	reg    registry
	roster roster
	sub    subscriber

	// refreshed is when each watched fresh topic's head was last
	// refreshed; owned by the heartbeat goroutine (checkHeads).
	refreshed map[string]time.Time

	// down names why Redis cannot be used now (nil while it can).
	down  atomic.Pointer[string]
	beats atomic.Int64   // heartbeats sent
	bg    sync.WaitGroup // one-off background work, waited for by Run
}

// New connects lazily to the Redis at cfg.URL; it starts nothing (Run
// does). The URL is checked here.
func New(cfg Config, log *slog.Logger) (*Broker, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opt, err := rueidis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("broker URL %s: %v", Redact(cfg.URL), err)
	}
	opt.DisableCache = true // no client-side caching: every read goes to Redis
	// One command connection, auto-pipelined: Redis runs one command at a
	// time anyway, and after an outage the readiness PING proves the
	// connection every later command uses.
	opt.PipelineMultiplex = -1
	opt.ConnWriteTimeout = cfg.Timeout
	opt.Dialer.Timeout = cfg.Timeout
	opt.ClientName = "relay-" + cfg.NodeID
	// One Redis, not a cluster; a client even when the first dial fails,
	// so that a node starts while Redis is down and is ready once it is
	// back.
	opt.ForceSingleClient = true
	client, err := rueidis.NewClient(opt)
	if client == nil {
		return nil, fmt.Errorf("broker URL %s: %v", Redact(cfg.URL), err)
	}
	// Pub/sub channels are shared by all databases of a Redis: name the
	// database in them, so clusters on different databases never meet.
	chans := cfg.Prefix
	if opt.SelectDB != 0 {
		chans += "." + strconv.Itoa(opt.SelectDB)
	}
	b := &Broker{cfg: cfg, log: log.With("engine", "redis"), client: client, keys: keys{prefix: cfg.Prefix, chans: chans}}
	b.seq = sequencer.New(sequencer.Config{}, fanoutFunc(b.fanout), b, b.log)
	b.reg.init(b)
	b.roster.init(b)
	b.sub.init(b)
	starting := "connecting to Redis"
	b.down.Store(&starting)
	return b, nil
}

type fanoutFunc func(*relay.Message) int

func (f fanoutFunc) Fanout(m *relay.Message) int { return f(m) }

func (b *Broker) fanout(m *relay.Message) int {
	if b.node == nil {
		return 0
	}
	return b.node.Fanout(m)
}

// NodeID returns the node's name.
func (b *Broker) NodeID() string { return b.cfg.NodeID }

// Bind implements relay.Engine.
func (b *Broker) Bind(n relay.Node) { b.node = n }

// Registry implements relay.Engine.
func (b *Broker) Registry() relay.Registry { return &b.reg }

// Roster implements relay.Engine.
func (b *Broker) Roster() relay.Roster { return &b.roster }

// Ready implements relay.Broker.
func (b *Broker) Ready() error {
	if why := b.down.Load(); why != nil {
		return fmt.Errorf("the Redis engine is not ready: %s: %w", *why, relay.ErrUnavailable)
	}
	return nil
}

func (b *Broker) setDown(why string) {
	if prev := b.down.Swap(&why); prev == nil {
		b.log.Error("Redis unreachable; this node refuses publishes and new connections until it is back", "cause", why)
	}
}

func (b *Broker) setUp() {
	if prev := b.down.Swap(nil); prev != nil {
		b.log.Info("Redis reachable; node ready")
	}
}

// Run serves until ctx ends: the pub/sub subscriber, the presence writer
// and the heartbeat. It returns after they stopped and the client closed.
func (b *Broker) Run(ctx context.Context) error {
	defer b.client.Close()
	defer b.seq.Close() // no repair outlives the engine
	// A process that died under this node id (restarted by systemd within
	// the node TTL, or the only node) left its presence and its hold on
	// registrations: remove them before serving, as the others would.
	for ctx.Err() == nil {
		err := b.cleanup(ctx, b.cfg.NodeID, true)
		if err == nil {
			break
		}
		b.setDown("removing what an earlier process of this node left: " + err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.sub.run(ctx) })
	g.Go(func() error { return b.roster.run(ctx) })
	g.Go(func() error { return b.heartbeat(ctx) })
	err := g.Wait()
	b.bg.Wait()
	b.leave()
	return err
}

// leave removes this node's presence and releases its registrations when
// it stops cleanly, instead of letting the others notice it died.
func (b *Broker) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	if err := b.cleanup(ctx, b.cfg.NodeID, true); err != nil {
		b.log.Warn("removing this node's presence at shutdown failed; other nodes remove it within the node TTL", "err", err)
	}
}

// call runs one command with the engine's timeout, mapping connection
// failures to relay.ErrUnavailable.
func (b *Broker) call(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	return b.client.Do(ctx, cmd)
}

// exec runs a script with the engine's timeout.
func (b *Broker) exec(ctx context.Context, s *rueidis.Lua, keys, args []string) rueidis.RedisResult {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	return s.Exec(ctx, b.client, keys, args)
}

// unavailable wraps a Redis failure for callers.
func unavailable(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, relay.ErrUnavailable) || errors.Is(err, relay.ErrNotFound) {
		return err
	}
	return fmt.Errorf("%s: Redis: %v: %w", what, err, relay.ErrUnavailable)
}

// Redact hides the password of a broker URL, for logs and -print-config.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// keys builds the key and channel names.
type keys struct{ prefix, chans string }

func (k keys) head(topic string) string     { return k.prefix + ":s:" + topic }
func (k keys) history(topic string) string  { return k.prefix + ":h:" + topic }
func (k keys) fresh() string                { return k.prefix + ":f" }
func (k keys) channel(topic string) string  { return k.chans + ":c:" + topic }
func (k keys) idem(sum string) string       { return k.prefix + ":i:" + sum }
func (k keys) nodeChannel(n string) string  { return k.chans + ":n:" + n }
func (k keys) reg(id relay.ClientID) string { return k.prefix + ":r:" + string(id) }
func (k keys) nodeRegs(n string) string     { return k.prefix + ":rn:" + n }
func (k keys) presence(topic string) string { return k.prefix + ":p:" + topic }
func (k keys) nodePresence(n string) string { return k.prefix + ":pn:" + n }
func (k keys) topics() string               { return k.prefix + ":pt" }
func (k keys) info(topic string) string     { return k.prefix + ":pi:" + topic }
func (k keys) nodes() string                { return k.prefix + ":nodes" }
func (k keys) summary(n string) string      { return k.prefix + ":d:" + n }

var (
	_ relay.Engine      = (*Broker)(nil)
	_ relay.InfoRoster  = (*roster)(nil)
	_ relay.TopicLister = (*roster)(nil)

	_ relay.TransitionReporter = (*roster)(nil)
)

// EngineStats implements relay.StatsReporter.
func (b *Broker) EngineStats() relay.EngineStats {
	st := b.seq.Stats()
	return relay.EngineStats{Reconnects: b.sub.reconnects.Load(), Repeats: st.Repeats, Repaired: st.Repaired, Resets: st.Resets}
}
