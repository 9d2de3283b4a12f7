package natsbroker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/relayhq/relay/internal/relay"
)

// interest is the table of watched topics. Watch and Unwatch only count
// and queue; interestLoop, one goroutine, subscribes and unsubscribes, so
// the hub's locks are never held across I/O.
type interest struct {
	mu      sync.Mutex
	watches map[string]*watch
	queue   []string        // topics to reconcile, in order
	queued  map[string]bool // the topics in queue
	failed  map[string]bool // topics whose reconcile failed, retried every second
	wake    chan struct{}   // cap 1
}

// watch is one topic this node has subscribers on.
type watch struct {
	count int
	sub   *nats.Subscription // owned by interestLoop; nil while unsubscribed
	ready chan struct{}      // closed once subscribed and started; replaced when watched again
}

func (in *interest) init() {
	in.watches = make(map[string]*watch)
	in.queued = make(map[string]bool)
	in.failed = make(map[string]bool)
	in.wake = make(chan struct{}, 1)
}

// reset forgets every subscription after the connection closed; the
// counts stay, so a later Run subscribes again.
func (in *interest) reset() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for topic, w := range in.watches {
		w.sub = nil
		if w.count == 0 {
			delete(in.watches, topic)
			continue
		}
		if isClosed(w.ready) {
			w.ready = make(chan struct{})
		}
		in.enqueueLocked(topic)
	}
}

func (in *interest) enqueueLocked(topic string) {
	if !in.queued[topic] {
		in.queued[topic] = true
		in.queue = append(in.queue, topic)
	}
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// requeueAll queues every watched topic that is not subscribed or whose
// position is unknown, after a (re)connect. The sequencer is asked with
// in.mu released: it holds its locks through Fanout, and the hub calls
// Watch with its own held.
func (in *interest) requeueAll(b *Broker) {
	in.mu.Lock()
	var settled []string
	for topic, w := range in.watches {
		if w.count == 0 || w.sub == nil || !isClosed(w.ready) {
			in.enqueueLocked(topic)
		} else {
			settled = append(settled, topic)
		}
	}
	in.mu.Unlock()
	for _, topic := range settled {
		if !b.seq.Started(topic) {
			in.mu.Lock()
			in.enqueueLocked(topic)
			in.mu.Unlock()
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Watch implements relay.Interest. It never blocks: it counts and queues.
func (b *Broker) Watch(topic string) {
	in := &b.interest
	in.mu.Lock()
	defer in.mu.Unlock()
	w := in.watches[topic]
	if w == nil {
		w = &watch{ready: make(chan struct{})}
		in.watches[topic] = w
	}
	w.count++
	if w.count == 1 {
		if isClosed(w.ready) {
			w.ready = make(chan struct{})
		}
		in.enqueueLocked(topic)
	}
}

// Unwatch implements relay.Interest.
func (b *Broker) Unwatch(topic string) {
	in := &b.interest
	in.mu.Lock()
	defer in.mu.Unlock()
	w := in.watches[topic]
	if w == nil || w.count == 0 {
		return
	}
	w.count--
	if w.count == 0 {
		in.enqueueLocked(topic)
	}
}

// Sync implements relay.Interest: it waits until the topic's core
// subscription is in place (the connection was flushed after subscribing)
// and the topic's starting position is known.
func (b *Broker) Sync(ctx context.Context, topic string) error {
	in := &b.interest
	in.mu.Lock()
	var ready chan struct{}
	if w := in.watches[topic]; w != nil && w.count > 0 {
		ready = w.ready
	}
	in.mu.Unlock()
	if ready == nil {
		return fmt.Errorf("natsbroker: sync %q: the topic is not watched: %w", topic, relay.ErrInvalid)
	}
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		if err := b.connErr(); err != nil {
			return fmt.Errorf("natsbroker: sync %q: %w", topic, err)
		}
		select {
		case <-ready:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("natsbroker: sync %q: %w: %w", topic, ctx.Err(), relay.ErrUnavailable)
		case <-poll.C:
		}
	}
}

// interestLoop reconciles the queued topics' subscriptions with their
// counts, in batches: subscribe or unsubscribe each, flush once, then read
// the starting positions in parallel.
func (b *Broker) interestLoop(ctx context.Context) {
	in := &b.interest
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.wake:
		case <-retry.C:
			in.mu.Lock()
			for topic := range in.failed {
				in.enqueueLocked(topic)
			}
			clear(in.failed)
			in.mu.Unlock()
		}
		for {
			in.mu.Lock()
			batch := in.queue
			in.queue = nil
			clear(in.queued)
			in.mu.Unlock()
			if len(batch) == 0 || ctx.Err() != nil {
				break
			}
			b.reconcile(ctx, batch)
		}
	}
}

// starting is a topic whose subscription is being made ready.
type starting struct {
	topic string
	w     *watch
	ready chan struct{}
}

func (b *Broker) reconcile(ctx context.Context, batch []string) {
	in := &b.interest
	fail := func(topic string) {
		in.mu.Lock()
		in.failed[topic] = true
		in.mu.Unlock()
	}
	c, inf, err := b.use()
	if err != nil {
		for _, topic := range batch {
			fail(topic)
		}
		return
	}
	var start []starting
	for _, topic := range batch {
		in.mu.Lock()
		w := in.watches[topic]
		if w == nil {
			in.mu.Unlock()
			continue
		}
		want, sub, ready := w.count > 0, w.sub, w.ready
		in.mu.Unlock()
		if want {
			if sub == nil {
				b.seq.Track(topic)
				s, err := c.nc.ChanSubscribe(b.n.topic+"."+token(topic), b.inbox)
				if err != nil {
					fail(topic)
					continue
				}
				in.mu.Lock()
				w.sub = s
				in.mu.Unlock()
			}
			start = append(start, starting{topic, w, ready})
			continue
		}
		if sub != nil {
			sub.Unsubscribe() // an error means the connection is gone, and the subscription with it
			b.seq.Forget(topic)
		}
		in.mu.Lock()
		w.sub = nil
		if w.count == 0 {
			delete(in.watches, topic)
		} else { // watched again meanwhile
			in.enqueueLocked(topic)
		}
		in.mu.Unlock()
	}
	if len(start) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = c.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		for _, s := range start {
			fail(s.topic)
		}
		return
	}
	parallel(ctx, start, 5*time.Second, func(ctx context.Context, s starting) {
		if !b.seq.Started(s.topic) {
			pos, err := b.latest(ctx, inf, s.topic, true)
			if err != nil {
				fail(s.topic)
				return
			}
			b.seq.Start(s.topic, pos)
		}
		in.mu.Lock()
		if in.watches[s.topic] == s.w && s.w.ready == s.ready && s.w.count > 0 && s.w.sub != nil && !isClosed(s.ready) {
			close(s.ready)
		}
		in.mu.Unlock()
	})
	b.roster.signal() // joins held until their topic was ready may go
}

// syncing reports whether topic is watched here but its subscription is
// not ready yet: a join written now might not reach this node's fan-out.
func (in *interest) syncing(topic string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	w := in.watches[topic]
	return w != nil && w.count > 0 && !isClosed(w.ready)
}

// checker runs the periodic checks of the watched topics; maintain owns
// it.
type checker struct {
	fresh time.Time // when the fresh epochs of watched topics without messages were last read
}

// checkPass bounds one pass over the watched topics; what it did not reach
// is checked by the next.
const checkPass = 30 * time.Second

// checkAll reads the newest message of every watched topic (one round trip
// each, parallelism at a time) and lets the sequencer repair what this
// node missed: the last messages of a burst, or what was published while
// the connection was down. A topic whose read fails is left to the next
// pass. Topics without messages have nothing to repair: their fresh
// epochs are read (and so kept alive while watched) every FreshTTL/4.
func (c *checker) checkAll(ctx context.Context, b *Broker) {
	_, inf, err := b.use()
	if err != nil {
		return
	}
	fresh := time.Since(c.fresh) > b.cfg.FreshTTL/4
	if fresh {
		c.fresh = time.Now()
	}
	ctx, cancel := context.WithTimeout(ctx, checkPass)
	defer cancel()
	parallel(ctx, b.seq.Tracked(), b.cfg.Timeout, func(ctx context.Context, topic string) {
		if !b.seq.Started(topic) || b.connErr() != nil {
			return // the interest loop starts it; the next pass checks it
		}
		h, ok, err := b.head(ctx, inf, topic)
		switch {
		case err != nil:
			return
		case ok:
			b.seq.Check(topic, h.pos)
		case fresh:
			if pos, err := b.latest(ctx, inf, topic, true); err == nil {
				b.seq.Check(topic, pos)
			}
		}
	})
}

// parallelism bounds the requests parallel keeps in flight.
const parallelism = 16

// parallel calls f for every item, parallelism at a time, each with a
// context bounded by timeout, and returns when all returned.
func parallel[T any](ctx context.Context, items []T, timeout time.Duration, f func(context.Context, T)) {
	sem := make(chan struct{}, parallelism)
	var wg sync.WaitGroup
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ictx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			f(ictx, it)
		})
	}
	wg.Wait()
}

// dispatch hands what the subscriptions bring to the sequencer (messages)
// or the node (kicks), in arrival order.
func (b *Broker) dispatch(ctx context.Context) {
	topicPrefix, nodePrefix := b.n.topic+".", b.n.node+"."
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-b.inbox:
			if tok, ok := strings.CutPrefix(msg.Subject, topicPrefix); ok {
				topic, ok := untoken(tok)
				if !ok {
					continue
				}
				m, seq, mine := decodeLive(topic, msg, b.cfg.NodeID)
				if mine {
					continue // this node fanned it out when it sent it
				}
				if seq > 0 {
					b.pubs.observe(topic, head{seq: seq, pos: relay.Position{Offset: m.Offset, Epoch: m.Epoch}})
				}
				b.seq.Offer(m)
			} else if strings.HasPrefix(msg.Subject, nodePrefix) {
				b.registry.kicked(msg.Data)
			}
		}
	}
}
