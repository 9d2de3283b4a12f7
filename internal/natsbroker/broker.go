package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/sequencer"
)

// Broker is the NATS JetStream relay.Engine. Create it with New, Bind it
// to the node and Run it.
type Broker struct {
	cfg   Config
	n     names
	hists []history // the history streams, one per rule
	log   *slog.Logger
	node  relay.Node           // set by Bind, before Run
	seq   *sequencer.Sequencer // set by Bind

	conn  atomic.Pointer[conn]       // set while Run runs
	infra atomic.Pointer[infra]      // set once the streams and buckets are known
	dash  atomic.Pointer[dashBucket] // the dashboard's bucket, once used on the current infra

	inbox        chan *nats.Msg // the subscriptions deliver here; dispatch reads
	lastAsyncErr atomic.Int64   // unix nanoseconds of the last async error logged
	connected    chan struct{}  // cap 1: a (re)connect to handle
	reconnects   atomic.Uint64  // connections to NATS replaced, for EngineStats
	// answered is when NATS last took this node's heartbeat (unix
	// nanoseconds; 0: never): a server that stopped
	// answering without closing the connection (frozen, or cut off by a
	// firewall) looks connected to the client until two pings went
	// unanswered, 10 to 15 s.
	answered atomic.Int64
	// beatFailed says the last heartbeat write failed: silence counts only
	// then, so that a node whose own heartbeat goroutine was merely slow
	// to run (a starved CPU) does not turn away clients.
	beatFailed atomic.Bool

	mu      sync.Mutex
	running bool
	synced  bool  // streams, buckets, subscriptions and heartbeat in place since the last connect
	cause   error // why the connection is down, for Ready

	interest interest
	pubs     pubCache
	registry registry
	roster   roster
}

// conn is one connection to NATS, for the length of a Run.
type conn struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// infra are the stream and buckets, as last created or updated.
type infra struct {
	hist                                []jetstream.Stream // by rule, as Broker.hists
	fresh, idem, reg, presence, nodesKV jetstream.KeyValue
	kickSub                             *nats.Subscription
}

// New returns an engine for cfg. It starts nothing: Run connects.
func New(cfg Config, log *slog.Logger) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Broker{
		cfg:       cfg,
		n:         newNames(cfg.Prefix),
		hists:     histories(cfg.Prefix, cfg.History),
		log:       log.With("engine", "nats", "node_id", cfg.NodeID),
		inbox:     make(chan *nats.Msg, cfg.InboxSize),
		connected: make(chan struct{}, 1),
	}
	b.interest.init()
	b.pubs.init()
	b.registry.init(b)
	b.roster.init(b)
	return b, nil
}

// NodeID returns the name this node goes by among the others.
func (b *Broker) NodeID() string { return b.cfg.NodeID }

// Bind implements relay.Engine: n receives the messages, in order per
// topic, and the kicks.
func (b *Broker) Bind(n relay.Node) {
	b.node = n
	b.seq = sequencer.New(sequencer.Config{}, n, b, b.log)
}

// Registry implements relay.Engine.
func (b *Broker) Registry() relay.Registry { return &b.registry }

// Roster implements relay.Engine.
func (b *Broker) Roster() relay.Roster { return &b.roster }

// EngineStats implements relay.StatsReporter: the reconnects to NATS and
// what the sequencer corrected.
func (b *Broker) EngineStats() relay.EngineStats {
	st := b.SequencerStats()
	return relay.EngineStats{Reconnects: b.reconnects.Load(), Repeats: st.Repeats, Repaired: st.Repaired, Resets: st.Resets}
}

// SequencerStats returns what the sequencer corrected: repeats dropped,
// gaps repaired from history, and gaps history could not fill.
func (b *Broker) SequencerStats() sequencer.Stats {
	if b.seq == nil {
		return sequencer.Stats{}
	}
	return b.seq.Stats()
}

// Run implements relay.Engine: it connects to NATS (retrying until it
// can), keeps the subscriptions, presence and heartbeat, and returns after
// its goroutines exited and the connection closed.
func (b *Broker) Run(ctx context.Context) error {
	if b.node == nil {
		return errors.New("natsbroker: Run before Bind")
	}
	defer b.seq.Close() // no repair outlives the engine
	b.mu.Lock()
	if b.running {
		b.mu.Unlock()
		return errors.New("natsbroker: Run called twice")
	}
	b.running, b.synced, b.cause = true, false, errors.New("connecting")
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.running = false
		b.mu.Unlock()
	}()

	closed := make(chan struct{})
	nc, err := nats.Connect(b.cfg.URL,
		nats.Name("relay "+b.cfg.NodeID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(b.cfg.ReconnectWait),
		nats.ReconnectBufSize(-1), // fail rather than buffer: a publish is stored or it errors
		nats.RetryOnFailedConnect(true),
		nats.Timeout(2*time.Second),
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(*nats.Conn) { b.signalConnected() }),
		nats.ReconnectHandler(func(*nats.Conn) { b.reconnects.Add(1); b.signalConnected() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { b.disconnected(err) }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(b.asyncError),
	)
	if err != nil {
		return fmt.Errorf("natsbroker: connecting to %s: %w", b.cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("natsbroker: %w", err)
	}
	b.conn.Store(&conn{nc: nc, js: js})
	if nc.IsConnected() {
		b.signalConnected()
	}

	inner, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { b.dispatch(inner) })
	wg.Go(func() { b.interestLoop(inner) })
	wg.Go(func() { b.maintain(inner) })
	wg.Go(func() { b.roster.apply(inner) })
	wg.Go(func() { b.heartbeat(inner) })
	wg.Go(func() { b.watchNodes(inner) })
	wg.Go(func() { b.registry.keep(inner) })
	<-ctx.Done()
	cancel()
	wg.Wait()

	b.goodbye()
	for _, topic := range b.seq.Tracked() {
		b.seq.Forget(topic) // stops pending repairs
	}
	b.mu.Lock()
	b.running = false // the disconnect that closing reports is no news
	b.mu.Unlock()
	b.conn.Store(nil)
	b.infra.Store(nil)
	b.interest.reset()
	nc.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		b.log.Warn("the NATS connection did not report closing in time")
	}
	return nil
}

// goodbye tells the others this node leaves: its presence is removed (with
// the leaves it causes) and its heartbeat deleted, so they need not wait
// for the node timeout.
func (b *Broker) goodbye() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if b.connErr() != nil {
		return
	}
	if err := b.roster.leaveAll(ctx); err != nil {
		b.log.Warn("removing this node's presence on shutdown failed; the other nodes remove it after the node timeout", "err", err)
	}
}

// asyncError logs what the client reports outside any call: mostly a
// subscription that dropped messages because dispatch fell behind (the
// sequencer repairs them from history), logged at most once a second.
func (b *Broker) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	now := time.Now().UnixNano()
	last := b.lastAsyncErr.Load()
	if now-last < int64(time.Second) || !b.lastAsyncErr.CompareAndSwap(last, now) {
		return
	}
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	b.log.Warn("NATS client error; missed messages are read from history", "subject", subject, "err", err)
}

func (b *Broker) signalConnected() {
	select {
	case b.connected <- struct{}{}:
	default:
	}
}

func (b *Broker) disconnected(err error) {
	if err == nil {
		err = errors.New("connection closed")
	}
	b.mu.Lock()
	b.synced, b.cause = false, err
	running := b.running
	b.mu.Unlock()
	if running {
		b.log.Warn("disconnected from NATS; reconnecting", "url", b.cfg.URL, "err", err)
	}
}

// Ready implements relay.Broker: nil while NATS is connected and, since
// the last (re)connect, the streams and buckets are in place, the
// subscriptions were resent and this node's heartbeat written. Watched
// topics are checked afterwards; one that cannot be read is the
// sequencer's to repair, not a reason to stop serving.
func (b *Broker) Ready() error {
	if err := b.connErr(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.synced {
		return fmt.Errorf("natsbroker: setting up and resubscribing after connecting to NATS: %w", relay.ErrUnavailable)
	}
	if at := b.answered.Load(); at != 0 && b.beatFailed.Load() {
		if silent := time.Since(time.Unix(0, at)); silent > b.silentLimit() {
			return fmt.Errorf("natsbroker: NATS at %s has not taken a heartbeat for %s: %w", b.cfg.URL, silent.Round(time.Second), relay.ErrUnavailable)
		}
	}
	return nil
}

// silentLimit is how long NATS may go without taking a heartbeat before
// the node stops calling itself ready: two beats and a command timeout, so
// that one slow write does not make it flap.
func (b *Broker) silentLimit() time.Duration { return 2*b.cfg.Heartbeat + b.cfg.Timeout }

// connErr returns nil while the connection to NATS is up, else why not.
func (b *Broker) connErr() error {
	c := b.conn.Load()
	if c == nil {
		return fmt.Errorf("natsbroker: not running: %w", relay.ErrUnavailable)
	}
	if !c.nc.IsConnected() {
		b.mu.Lock()
		cause := b.cause
		b.mu.Unlock()
		return fmt.Errorf("natsbroker: not connected to NATS at %s (%v): %w", b.cfg.URL, cause, relay.ErrUnavailable)
	}
	return nil
}

// use returns the connection and infrastructure when both are usable.
func (b *Broker) use() (*conn, *infra, error) {
	if err := b.connErr(); err != nil {
		return nil, nil, err
	}
	inf := b.infra.Load()
	if inf == nil {
		return nil, nil, fmt.Errorf("natsbroker: creating streams and buckets on NATS: %w", relay.ErrUnavailable)
	}
	return b.conn.Load(), inf, nil
}

// unavailable wraps an error from NATS as relay.ErrUnavailable, or as
// relay.ErrTooLarge when the message exceeds the server's max payload.
func unavailable(op string, err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("natsbroker: %s: %w: %w", op, err, relay.ErrTooLarge)
	}
	return fmt.Errorf("natsbroker: %s: %w: %w", op, err, relay.ErrUnavailable)
}

// maintain sets up the stream and buckets after each (re)connect, then
// checks every watched topic at once and each CheckInterval.
func (b *Broker) maintain(ctx context.Context) {
	tick := time.NewTicker(b.cfg.CheckInterval)
	defer tick.Stop()
	need := false
	var retry <-chan time.Time
	var chk checker
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.connected:
			b.mu.Lock()
			b.synced = false
			b.mu.Unlock()
			need = true
		case <-retry:
			retry = nil
		case <-tick.C:
		}
		if need {
			if err := b.resync(ctx); err != nil {
				if ctx.Err() == nil && b.connErr() == nil {
					b.log.Error("setting up after connecting to NATS failed; retrying", "err", err)
				}
				retry = time.After(b.cfg.ReconnectWait)
				continue
			}
			need = false
			b.mu.Lock()
			b.synced, b.cause = true, nil
			b.mu.Unlock()
			b.log.Info("connected to NATS", "url", b.cfg.URL, "topics", len(b.seq.Tracked()))
		}
		if b.connErr() == nil {
			chk.checkAll(ctx, b)
		}
	}
}

// resync runs after every (re)connect: it creates or updates the stream
// and buckets (NATS may have lost them), makes sure the resent
// subscriptions are in place and writes the heartbeat. The topics are
// checked afterwards (maintain), each on its own.
func (b *Broker) resync(ctx context.Context) error {
	c := b.conn.Load()
	if err := b.connErr(); err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	inf, err := b.setup(setupCtx, c)
	if err != nil {
		return err
	}
	b.infra.Store(inf)
	if err := c.nc.FlushWithContext(setupCtx); err != nil {
		return fmt.Errorf("flushing subscriptions: %w", err)
	}
	if err := b.roster.beat(setupCtx); err != nil {
		return fmt.Errorf("writing this node's heartbeat: %w", err)
	}
	b.roster.reconnected()
	b.pubs.forget()
	b.interest.requeueAll(b)
	return nil
}

// keepFor is how long a stream keeps messages: the rule's TTL, or
// StreamIdle when longer, so that a topic's newest message (its offset and
// epoch) outlives its history.
func (b *Broker) keepFor(r relay.HistoryRule) time.Duration {
	return max(r.TTL, b.cfg.StreamIdle)
}

// setup creates or updates the stream and buckets.
func (b *Broker) setup(ctx context.Context, c *conn) (*infra, error) {
	inf := &infra{}
	for _, h := range b.hists {
		s, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:              h.name,
			Description:       fmt.Sprintf("Relay history of the topics starting with %q: one subject per topic", h.rule.Prefix),
			Subjects:          []string{h.subj + ".*"},
			MaxMsgsPerSubject: int64(max(h.rule.Size, 1)), // the newest message holds the offset
			MaxAge:            b.keepFor(h.rule),          // History filters by the rule's TTL
			MaxBytes:          b.cfg.HistoryBytes,
			Discard:           jetstream.DiscardOld,
			Duplicates:        min(b.cfg.IdempotencyWindow, b.keepFor(h.rule)),
			AllowDirect:       true,
			Replicas:          b.cfg.Replicas,
			RePublish: &jetstream.RePublish{
				Source:      h.subj + ".*",
				Destination: b.n.topic + ".{{wildcard(1)}}", // the source's one wildcard: the topic's token
			},
		})
		if err != nil {
			return nil, fmt.Errorf("creating stream %s: %w", h.name, err)
		}
		inf.hist = append(inf.hist, s)
	}
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&inf.fresh, jetstream.KeyValueConfig{Bucket: b.n.fresh, Description: "Relay epochs of topics without history", TTL: b.cfg.FreshTTL, MaxBytes: b.cfg.FreshBytes}},
		{&inf.idem, jetstream.KeyValueConfig{Bucket: b.n.idem, Description: "Relay idempotency keys of messages to one user", TTL: b.cfg.IdempotencyWindow}},
		{&inf.reg, jetstream.KeyValueConfig{Bucket: b.n.registry, Description: "Relay registrations", TTL: b.cfg.RegistryMaxAge}},
		{&inf.presence, jetstream.KeyValueConfig{Bucket: b.n.presence, Description: "Relay presence: connections per topic, user and node"}},
		{&inf.nodesKV, jetstream.KeyValueConfig{Bucket: b.n.nodes, Description: "Relay node heartbeats", TTL: 10 * time.Minute}},
	}
	for _, bk := range buckets {
		bk.cfg.Replicas = b.cfg.Replicas
		kv, err := c.js.CreateOrUpdateKeyValue(ctx, bk.cfg)
		if err != nil {
			return nil, fmt.Errorf("creating bucket %s: %w", bk.cfg.Bucket, err)
		}
		*bk.kv = kv
	}
	if old := b.infra.Load(); old != nil && old.kickSub != nil {
		inf.kickSub = old.kickSub // resent by the client on every reconnect
	} else {
		sub, err := c.nc.ChanSubscribe(b.n.node+"."+token(b.cfg.NodeID), b.inbox)
		if err != nil {
			return nil, fmt.Errorf("subscribing to kicks: %w", err)
		}
		inf.kickSub = sub
	}
	return inf, nil
}
