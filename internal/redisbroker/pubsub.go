package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/relayhq/relay/internal/relay"
)

// subscriber owns the node's pub/sub connection: one channel per watched
// topic plus the node's own channel. After any reconnect it subscribes to
// everything again and checks every topic's head (repairing what was
// missed from history) before the node is ready: a node never stays
// isolated after Redis comes back (centrifugo #163). Its own heartbeat
// travels through the same connection, so a connection that silently
// stopped delivering (centrifugo #1189) is noticed and replaced.
type subscriber struct {
	b *Broker

	mu     sync.Mutex
	topics map[string]*watch

	dirty    chan struct{} // something to subscribe or unsubscribe
	healthy  atomic.Bool   // subscribed to everything on a live connection
	lastBeat atomic.Int64  // unix ns of the last own heartbeat received

	reconnects atomic.Uint64
}

// watch is one topic the node has subscribers on.
type watch struct {
	count   int
	synced  bool            // subscribed on the current connection and started
	waiters []chan struct{} // Sync calls waiting for synced
}

func (s *subscriber) init(b *Broker) {
	s.b = b
	s.topics = make(map[string]*watch)
	s.dirty = make(chan struct{}, 1)
}

// syncing reports whether this node watches topic but does not receive
// its messages yet.
func (s *subscriber) syncing(topic string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.topics[topic]
	return w != nil && !w.synced
}

func (s *subscriber) kick() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Watch implements relay.Interest.
func (b *Broker) Watch(topic string) {
	s := &b.sub
	s.mu.Lock()
	w := s.topics[topic]
	if w == nil {
		w = &watch{}
		s.topics[topic] = w
		b.seq.Track(topic)
	}
	w.count++
	s.mu.Unlock()
	s.kick()
}

// Unwatch implements relay.Interest.
func (b *Broker) Unwatch(topic string) {
	s := &b.sub
	s.mu.Lock()
	w := s.topics[topic]
	if w != nil {
		if w.count--; w.count <= 0 {
			delete(s.topics, topic)
			b.seq.Forget(topic)
			for _, ch := range w.waiters {
				close(ch)
			}
		}
	}
	s.mu.Unlock()
	s.kick()
}

// Sync implements relay.Interest.
func (b *Broker) Sync(ctx context.Context, topic string) error {
	if err := b.Ready(); err != nil {
		return err
	}
	s := &b.sub
	s.mu.Lock()
	w := s.topics[topic]
	if w == nil || w.synced {
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	w.waiters = append(w.waiters, ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("subscribing to topic %q in Redis: %v: %w", topic, ctx.Err(), relay.ErrUnavailable)
	}
}

// run keeps a pub/sub connection until ctx ends, replacing it when it
// fails.
func (s *subscriber) run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := s.session(ctx)
		s.healthy.Store(false)
		s.mu.Lock()
		for _, w := range s.topics {
			w.synced = false
		}
		s.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		s.b.setDown("pub/sub connection: " + err.Error())
		s.reconnects.Add(1)
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	return nil
}

// subscribeBatch bounds the channels named in one SUBSCRIBE.
const subscribeBatch = 512

// session runs one pub/sub connection: it subscribes to everything, then
// follows Watch and Unwatch until the connection fails or goes silent.
func (s *subscriber) session(ctx context.Context) error {
	b := s.b
	dc, release := b.client.Dedicate()
	defer release()
	defer dc.Close()
	broken := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: s.onMessage})
	if err := s.do(ctx, dc, dc.B().Subscribe().Channel(b.keys.nodeChannel(b.cfg.NodeID)).Build()); err != nil {
		return err
	}
	subscribed := make(map[string]struct{})
	s.lastBeat.Store(time.Now().UnixNano())
	connected := time.Now()
	tick := time.NewTicker(b.cfg.Heartbeat)
	defer tick.Stop()
	for {
		if err := s.reconcile(ctx, dc, subscribed); err != nil {
			return err
		}
		if !s.healthy.Load() {
			s.healthy.Store(true)
			// Ready once the command connection works too: after an outage
			// its first command finds the old connection dead.
			if b.call(ctx, b.client.B().Ping().Build()).Error() == nil {
				b.setUp()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-broken:
			if err == nil {
				err = errors.New("closed")
			}
			return err
		case <-s.dirty:
		case now := <-tick.C:
			silent := now.Sub(time.Unix(0, s.lastBeat.Load()))
			if now.Sub(connected) > 3*b.cfg.Heartbeat && silent > 3*b.cfg.Heartbeat {
				return fmt.Errorf("no heartbeat came back through pub/sub for %s", silent.Round(time.Millisecond))
			}
		}
	}
}

// reconcile subscribes to the watched topics not yet synced, drops the
// topics no longer watched, and starts (or, after a reconnect, checks)
// every topic it synced.
func (s *subscriber) reconcile(ctx context.Context, dc rueidis.DedicatedClient, subscribed map[string]struct{}) error {
	b := s.b
	var add, drop []string
	s.mu.Lock()
	for t, w := range s.topics {
		if !w.synced {
			add = append(add, t)
		}
	}
	for t := range subscribed {
		if s.topics[t] == nil {
			drop = append(drop, t)
		}
	}
	s.mu.Unlock()
	for len(drop) > 0 {
		n := min(len(drop), subscribeBatch)
		chans := make([]string, n)
		for i, t := range drop[:n] {
			chans[i] = b.keys.channel(t)
			delete(subscribed, t)
		}
		if err := s.do(ctx, dc, dc.B().Unsubscribe().Channel(chans...).Build()); err != nil {
			return err
		}
		drop = drop[n:]
	}
	for len(add) > 0 {
		n := min(len(add), subscribeBatch)
		batch := add[:n]
		var chans []string
		for _, t := range batch {
			if _, ok := subscribed[t]; !ok { // else watched again before it was dropped
				chans = append(chans, b.keys.channel(t))
			}
		}
		if len(chans) > 0 {
			if err := s.do(ctx, dc, dc.B().Subscribe().Channel(chans...).Build()); err != nil {
				return err
			}
		}
		for _, t := range batch {
			subscribed[t] = struct{}{}
		}
		// Subscribed: whatever is published from now on arrives. Where the
		// topic stands now tells the sequencer what to expect next, or,
		// after a reconnect, what it missed.
		heads, err := b.heads(ctx, batch)
		if err != nil {
			return err
		}
		for i, t := range batch {
			if b.seq.Started(t) {
				b.seq.Check(t, heads[i])
			} else {
				b.seq.Start(t, heads[i])
			}
		}
		s.mu.Lock()
		for _, t := range batch {
			if w := s.topics[t]; w != nil {
				w.synced = true
				for _, ch := range w.waiters {
					close(ch)
				}
				w.waiters = nil
			}
		}
		s.mu.Unlock()
		b.roster.wakeUp() // joins waiting for these subscriptions
		add = add[n:]
	}
	return nil
}

func (s *subscriber) do(ctx context.Context, dc rueidis.DedicatedClient, cmd rueidis.Completed) error {
	ctx, cancel := context.WithTimeout(ctx, s.b.cfg.Timeout)
	defer cancel()
	return dc.Do(ctx, cmd).Error()
}

// heads reads the head position of each topic in one round trip; a topic
// without a head stands at offset 0 of no epoch yet.
func (b *Broker) heads(ctx context.Context, topics []string) ([]relay.Position, error) {
	cmds := make(rueidis.Commands, len(topics))
	for i, t := range topics {
		cmds[i] = b.client.B().Hmget().Key(b.keys.head(t)).Field("e", "o").Build()
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	out := make([]relay.Position, len(topics))
	for i, r := range b.client.DoMulti(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil {
			return nil, unavailable("reading topic heads", err)
		}
		if len(vals) == 2 {
			out[i].Epoch, _ = vals[0].ToString()
			if o, err := vals[1].ToString(); err == nil {
				out[i].Offset, _ = strconv.ParseUint(o, 10, 64)
			}
		}
	}
	return out, nil
}

// onMessage handles one pub/sub message. rueidis calls it on the
// connection's reader, one at a time; it only hands messages on.
func (s *subscriber) onMessage(pm rueidis.PubSubMessage) {
	b := s.b
	if pm.Channel == b.keys.nodeChannel(b.cfg.NodeID) {
		s.onNodeMessage(pm.Message)
		return
	}
	topic, ok := strings.CutPrefix(pm.Channel, b.keys.channel(""))
	if !ok {
		return
	}
	m, ok := decodeMessage(topic, pm.Message)
	if !ok {
		b.log.Warn("dropping a malformed pub/sub message", "channel", pm.Channel)
		return
	}
	b.seq.Offer(m)
}

// decodeMessage reads "kind\noffset\nepoch\nuser\npayload": kind p
// (publish), j (join) or l (leave); user empty for everyone. The payload
// is the rest of the message, whatever bytes it holds (newlines too); a
// join's or leave's is the info the user joined with (relay.InfoRoster),
// empty for none (nodes before InfoRoster sent it empty: the format did
// not change).
func decodeMessage(topic, s string) (*relay.Message, bool) {
	var f [4]string
	for i := range f {
		nl := strings.IndexByte(s, '\n')
		if nl < 0 {
			return nil, false
		}
		f[i], s = s[:nl], s[nl+1:]
	}
	m := &relay.Message{Topic: topic, Epoch: f[2], Data: []byte(s)}
	switch f[0] {
	case "p":
		m.Kind = relay.KindPublish
	case "j":
		m.Kind = relay.KindJoin
	case "l":
		m.Kind = relay.KindLeave
	default:
		return nil, false
	}
	if m.Kind != relay.KindPublish && len(m.Data) == 0 {
		m.Data = nil // no info
	}
	var err error
	if m.Offset, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return nil, false
	}
	if f[3] != "" {
		u, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			return nil, false
		}
		m.User, m.HasUser = relay.UserID(u), true
	}
	return m, true
}

// onNodeMessage handles this node's channel: "h" (its own heartbeat) and
// "k\nid\nsocket\nreason" (close a socket).
func (s *subscriber) onNodeMessage(msg string) {
	if msg == "h" {
		s.lastBeat.Store(time.Now().UnixNano())
		return
	}
	f := strings.Split(msg, "\n")
	if len(f) != 4 || f[0] != "k" || s.b.node == nil {
		return
	}
	reason := relay.CloseUnregistered
	if f[3] == "replaced" {
		reason = relay.CloseReplaced
	}
	s.b.reg.forget(relay.ClientID(f[1]), f[2])
	s.b.node.Kick(relay.ClientID(f[1]), f[2], reason)
}
