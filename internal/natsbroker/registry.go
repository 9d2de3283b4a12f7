package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/relay"
)

// registry is the relay.Registry on the registrations bucket: one entry
// per registration id, changed by compare-and-set on its revision. NATS
// 2.9 has no per-key TTL, so the deadline is in the value and an expired
// entry reads as absent; the bucket's MaxAge removes it later, and this
// node rewrites the entries it holds before that.
type registry struct {
	b    *Broker
	wake chan struct{} // cap 1: claim the registrations held here again

	mu   sync.Mutex
	held map[relay.ClientID]string // ids attached on this node, to their socket
}

// regValue is a registration as stored.
type regValue struct {
	User    relay.UserID `json:"u"`
	Topics  []string     `json:"t"`
	Node    string       `json:"n,omitempty"` // the member name (node#incarnation) holding its socket
	Socket  string       `json:"s,omitempty"`
	Expires int64        `json:"x,omitempty"` // unix milliseconds; 0 while attached
}

func (v regValue) expired(now time.Time) bool {
	return v.Expires != 0 && now.UnixMilli() >= v.Expires
}

// kick asks a node to close a socket.
type kick struct {
	ID     relay.ClientID    `json:"id"`
	Socket string            `json:"s"`
	Reason relay.CloseReason `json:"r"`
}

// casAttempts bounds the compare-and-set retries of one registry or
// roster change.
const casAttempts = 16

func (r *registry) init(b *Broker) {
	r.b = b
	r.wake = make(chan struct{}, 1)
	r.held = make(map[relay.ClientID]string)
}

func (r *registry) kv() (jetstream.KeyValue, error) {
	_, inf, err := r.b.use()
	if err != nil {
		return nil, err
	}
	return inf.reg, nil
}

// read returns id's entry; ok is false when there is none or it expired.
func (r *registry) read(ctx context.Context, kv jetstream.KeyValue, id relay.ClientID) (v regValue, rev uint64, ok bool, err error) {
	if id == "" {
		return v, 0, false, nil
	}
	e, err := kv.Get(ctx, token(string(id)))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, false, nil
	}
	if err != nil {
		return v, 0, false, unavailable("reading a registration", err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, false, fmt.Errorf("natsbroker: registration %q is corrupt: %w", id, err)
	}
	if v.expired(time.Now()) {
		r.b.remove(ctx, r.b.n.registry, token(string(id)), e.Revision()) // best effort; MaxAge removes it anyway
		return v, e.Revision(), false, nil
	}
	return v, e.Revision(), true, nil
}

func notFound(id relay.ClientID) error {
	return fmt.Errorf("no registration with id %q: %w", id, relay.ErrNotFound)
}

// Register implements relay.Registry.
func (r *registry) Register(ctx context.Context, id relay.ClientID, reg relay.Registration, ttl time.Duration) error {
	kv, err := r.kv()
	if err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("natsbroker: empty registration id: %w", relay.ErrInvalid)
	}
	val, _ := json.Marshal(regValue{User: reg.User, Topics: reg.Topics, Expires: time.Now().Add(ttl).UnixMilli()})
	if _, err := kv.Put(ctx, token(string(id)), val); err != nil {
		return unavailable("storing a registration", err)
	}
	return nil
}

// Lookup implements relay.Registry.
func (r *registry) Lookup(ctx context.Context, id relay.ClientID) (relay.Registration, error) {
	kv, err := r.kv()
	if err != nil {
		return relay.Registration{}, err
	}
	v, _, ok, err := r.read(ctx, kv, id)
	if err != nil {
		return relay.Registration{}, err
	}
	if !ok {
		return relay.Registration{}, notFound(id)
	}
	return relay.Registration{User: v.User, Topics: v.Topics}, nil
}

// Attach implements relay.Registry. The node that held id before, if
// another, is sent a kick; one socket replacing another on this node is
// the hub's to close.
func (r *registry) Attach(ctx context.Context, id relay.ClientID, socket string) (relay.Registration, error) {
	kv, err := r.kv()
	if err != nil {
		return relay.Registration{}, err
	}
	me := r.b.roster.member()
	if me == "" {
		return relay.Registration{}, fmt.Errorf("natsbroker: this node has no heartbeat yet: %w", relay.ErrUnavailable)
	}
	for range casAttempts {
		v, rev, ok, err := r.read(ctx, kv, id)
		if err != nil {
			return relay.Registration{}, err
		}
		if !ok {
			return relay.Registration{}, notFound(id)
		}
		prev := v
		v.Node, v.Socket, v.Expires = me, socket, 0
		val, _ := json.Marshal(v)
		claim, err := kv.Update(ctx, token(string(id)), val, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return relay.Registration{}, unavailable("attaching a registration", err)
		}
		r.mu.Lock()
		r.held[id] = socket
		r.mu.Unlock()
		if node := memberNode(prev.Node); prev.Node != "" && node != r.b.cfg.NodeID {
			r.send(node, kick{ID: id, Socket: prev.Socket, Reason: relay.CloseReplaced})
		}
		// The entry's revision grows with every write: it numbers claims.
		return relay.Registration{User: v.User, Topics: v.Topics, Claim: claim}, nil
	}
	return relay.Registration{}, fmt.Errorf("natsbroker: registration %q keeps changing: %w", id, relay.ErrUnavailable)
}

// Detach implements relay.Registry.
func (r *registry) Detach(ctx context.Context, id relay.ClientID, socket string, topics []string, grace time.Duration) error {
	kv, err := r.kv()
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.held[id] == socket {
		delete(r.held, id)
	}
	r.mu.Unlock()
	for range casAttempts {
		v, rev, ok, err := r.read(ctx, kv, id)
		if err != nil {
			return err
		}
		if !ok || memberNode(v.Node) != r.b.cfg.NodeID || v.Socket != socket {
			return nil // gone, or another socket holds it
		}
		if grace < 0 {
			removed, err := r.b.remove(ctx, r.b.n.registry, token(string(id)), rev)
			if err != nil {
				return unavailable("removing a registration", err)
			}
			if removed {
				return nil
			}
			continue
		}
		v.Node, v.Socket, v.Topics = "", "", topics
		v.Expires = time.Now().Add(grace).UnixMilli()
		val, _ := json.Marshal(v)
		_, err = kv.Update(ctx, token(string(id)), val, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return unavailable("detaching a registration", err)
		}
		return nil
	}
	return fmt.Errorf("natsbroker: registration %q keeps changing: %w", id, relay.ErrUnavailable)
}

// Unregister implements relay.Registry.
func (r *registry) Unregister(ctx context.Context, id relay.ClientID) error {
	kv, err := r.kv()
	if err != nil {
		return err
	}
	for range casAttempts {
		v, rev, ok, err := r.read(ctx, kv, id)
		if err != nil {
			return err
		}
		if !ok {
			return notFound(id)
		}
		removed, err := r.b.remove(ctx, r.b.n.registry, token(string(id)), rev)
		if err != nil {
			return unavailable("removing a registration", err)
		}
		if !removed {
			continue
		}
		switch node := memberNode(v.Node); node {
		case "":
		case r.b.cfg.NodeID:
			r.mu.Lock()
			delete(r.held, id)
			r.mu.Unlock()
			r.b.node.Kick(id, v.Socket, relay.CloseUnregistered)
		default:
			r.send(node, kick{ID: id, Socket: v.Socket, Reason: relay.CloseUnregistered})
		}
		return nil
	}
	return fmt.Errorf("natsbroker: registration %q keeps changing: %w", id, relay.ErrUnavailable)
}

// send publishes a kick to node's subject. A node that is down misses it:
// its sockets are gone anyway.
func (r *registry) send(node string, k kick) {
	c := r.b.conn.Load()
	if c == nil {
		return
	}
	data, _ := json.Marshal(k)
	if err := c.nc.Publish(r.b.n.node+"."+token(node), data); err != nil {
		r.b.log.Warn("asking another node to close a socket failed", "to_node", node, "err", err)
	}
}

// kicked handles a kick from another node.
func (r *registry) kicked(data []byte) {
	var k kick
	if err := json.Unmarshal(data, &k); err != nil {
		r.b.log.Warn("ignoring a malformed kick", "err", err)
		return
	}
	r.mu.Lock()
	if s, ok := r.held[k.ID]; ok && (k.Socket == "" || s == k.Socket) {
		delete(r.held, k.ID)
	}
	r.mu.Unlock()
	r.b.node.Kick(k.ID, k.Socket, k.Reason)
}

// reclaimSoon has keep claim the registrations held here again: this node
// starts a new incarnation, and the others may have released its
// registrations as those of a dead node.
func (r *registry) reclaimSoon() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// keep looks after the registrations held here until ctx is done: when
// this node starts a new incarnation it claims them again at once, and
// every RegistryMaxAge/4 it rewrites those not written for half that
// long, so that the bucket's MaxAge never removes a registration with a
// live socket. A pass that fails is tried again after a second.
func (r *registry) keep(ctx context.Context) {
	every := r.b.cfg.RegistryMaxAge / 4
	tick := time.NewTicker(every)
	defer tick.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		case <-retry:
			retry = nil
		}
		if r.pass(ctx, every/2) != nil && ctx.Err() == nil {
			retry = time.After(time.Second)
		}
	}
}

// pass checks every registration held here, parallelism at a time.
func (r *registry) pass(ctx context.Context, fresh time.Duration) error {
	kv, err := r.kv()
	if err != nil {
		return err
	}
	me := r.b.roster.member()
	if me == "" {
		return errors.New("no heartbeat yet")
	}
	type hold struct {
		id     relay.ClientID
		socket string
	}
	r.mu.Lock()
	held := make([]hold, 0, len(r.held))
	for id, s := range r.held {
		held = append(held, hold{id, s})
	}
	r.mu.Unlock()
	var mu sync.Mutex
	var firstErr error
	parallel(ctx, held, r.b.cfg.Timeout, func(ctx context.Context, h hold) {
		if err := r.check(ctx, kv, me, h.id, h.socket, fresh); err != nil {
			mu.Lock()
			firstErr = cmpOr(firstErr, err)
			mu.Unlock()
		}
	})
	return cmpOr(firstErr, ctx.Err())
}

// check makes sure registration id, held here by socket, says so: it is
// claimed again when the others released it (they took this node for
// dead) or an earlier incarnation of this node holds it, and rewritten
// when it was not written for fresh. When another node holds it now, or
// it is gone, the socket here is closed (replaced or unregistered): the
// kick that should have said so was lost, or never sent, since the
// registration had no holder when it changed.
func (r *registry) check(ctx context.Context, kv jetstream.KeyValue, me string, id relay.ClientID, socket string, fresh time.Duration) error {
	key := token(string(id))
	for range casAttempts {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			r.lost(id, socket, relay.CloseUnregistered)
			return nil
		}
		if err != nil {
			return err
		}
		var v regValue
		if json.Unmarshal(e.Value(), &v) != nil {
			return nil // corrupt: leave it to MaxAge
		}
		switch {
		case v.Node == me && v.Socket == socket:
			if time.Since(e.Created()) < fresh {
				return nil
			}
			_, err := kv.Update(ctx, key, e.Value(), e.Revision())
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // it changed: look again
			}
			return err
		case v.Node == me || v.Node != "" && memberNode(v.Node) == r.b.cfg.NodeID && v.Socket != socket:
			return nil // another socket here attached meanwhile
		case v.Node != "" && memberNode(v.Node) != r.b.cfg.NodeID:
			r.lost(id, socket, relay.CloseReplaced) // attached on another node while released
			return nil
		case v.expired(time.Now()):
			r.lost(id, socket, relay.CloseUnregistered)
			return nil
		}
		// Released (Node ""), or held by an earlier incarnation of this
		// node: claim it again.
		v.Node, v.Socket, v.Expires = me, socket, 0
		val, _ := json.Marshal(v)
		_, err = kv.Update(ctx, key, val, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return err
		}
		r.mu.Lock()
		still := r.held[id] == socket
		r.mu.Unlock()
		if !still {
			// The socket detached meanwhile (its Detach found the
			// registration released, or did not find it claimed yet):
			// release it again.
			return r.Detach(ctx, id, socket, v.Topics, r.b.cfg.ReconnectGrace)
		}
		r.b.log.Debug("claimed a registration again after this node was taken for dead", "id", id)
		return nil
	}
	return fmt.Errorf("natsbroker: registration %q keeps changing", id)
}

// lost forgets id's socket here, if still held by it, and closes it.
func (r *registry) lost(id relay.ClientID, socket string, reason relay.CloseReason) {
	r.mu.Lock()
	own := r.held[id] == socket
	if own {
		delete(r.held, id)
	}
	r.mu.Unlock()
	if own {
		r.b.node.Kick(id, socket, reason)
	}
}

// heldEntry is a registration a socket holds, as listed by heldEntries.
type heldEntry struct {
	key    string
	holder string // member name
	rev    uint64
}

// heldEntries lists the registrations attached to a socket on any node.
func (r *registry) heldEntries(ctx context.Context, kv jetstream.KeyValue) ([]heldEntry, error) {
	var out []heldEntry
	err := r.b.scan(ctx, kv, ">", "registry", func(e kvEntry) {
		var v regValue
		if json.Unmarshal(e.value, &v) == nil && v.Node != "" {
			out = append(out, heldEntry{key: e.key, holder: v.Node, rev: e.rev})
		}
	})
	return out, err
}

// release detaches a registration held by a node that is gone: it expires
// after ReconnectGrace unless a socket attaches again. A conflict means
// it changed meanwhile (attached elsewhere): nothing to release.
func (r *registry) release(ctx context.Context, kv jetstream.KeyValue, h heldEntry) error {
	e, err := kv.Get(ctx, h.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var v regValue
	if json.Unmarshal(e.Value(), &v) != nil || v.Node != h.holder {
		return nil
	}
	if r.b.cfg.ReconnectGrace < 0 {
		_, err := r.b.remove(ctx, r.b.n.registry, h.key, e.Revision())
		return err
	}
	v.Node, v.Socket = "", ""
	v.Expires = time.Now().Add(r.b.cfg.ReconnectGrace).UnixMilli()
	val, _ := json.Marshal(v)
	_, err = kv.Update(ctx, h.key, val, e.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil
	}
	return err
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
