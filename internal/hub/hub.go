// Package hub keeps this node's registrations and its topic and user
// indexes, and fans published messages out to the live connections. It
// knows no transport (connections are relay.Subscribers) and no broker.
//
// Ownership and locks. Each lock is an unexported mu above what it guards:
//
//   - Hub.regMu guards the registration table (clients, users, kicked),
//     the expiry heap and every Client.deadline;
//   - Client.mu guards that client's socket and desired topics;
//   - shard.mu guards one shard of the topic → subscribers index.
//
// Lock order: Hub.regMu → Client.mu → shard.mu → whatever a Subscriber
// takes inside Deliver. Nothing takes them the other way round. A publish
// takes read locks only (plus Client.mu for user-targeted messages) and
// only enqueues: no I/O, logging or waiting happens under any of them.
package hub

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// Config tunes a Hub. The zero value works: every zero field takes the
// default named beside it.
type Config struct {
	// RegistrationTTL is how long a registration that never connects lives.
	RegistrationTTL time.Duration // default 10m
	// ReconnectGrace is how long a registration outlives its socket, so a
	// client can reconnect with the same URL and keep its topics. Negative
	// forgets the registration as soon as its socket closes (the tutorial's
	// behaviour).
	ReconnectGrace time.Duration // default 30s
	// MaxRegistrations bounds the registration table.
	MaxRegistrations int // default 1,000,000
	// MaxTopics bounds the topics of one client.
	MaxTopics int // default 128
	// MaxTopicLength bounds a topic name, in bytes.
	MaxTopicLength int // default 256
	// SweepInterval is how often expired registrations are removed.
	SweepInterval time.Duration // default 1s

	// Interest is told which topics have local subscribers (a networked
	// engine subscribes to exactly those); nil: nobody needs to know.
	Interest relay.Interest
	// Registry, when set, keeps the registrations of every node (a
	// networked engine's): the hub then holds only the clients attached
	// here. Nil: the hub's own table is the registry.
	Registry relay.Registry
	// Roster, when set, keeps presence for every node and announces joins
	// and leaves through Fanout; the hub then reports its changes to it
	// instead of announcing them itself. Nil: the hub's own index is the
	// roster.
	Roster relay.Roster
	// Transitions, when set and there is no Roster, is told of each user
	// joining or leaving a topic (the hub is the roster then); it is
	// called under a shard lock and must not block. With a Roster, ask
	// it (relay.TransitionReporter).
	Transitions func(relay.Transition)
}

// Defaults for the zero Config.
const (
	DefaultRegistrationTTL  = 10 * time.Minute
	DefaultReconnectGrace   = 30 * time.Second
	DefaultMaxRegistrations = 1_000_000
	DefaultMaxTopics        = 128
	DefaultMaxTopicLength   = 256
)

func (c Config) withDefaults() Config {
	if c.RegistrationTTL <= 0 {
		c.RegistrationTTL = DefaultRegistrationTTL
	}
	if c.ReconnectGrace == 0 {
		c.ReconnectGrace = DefaultReconnectGrace
	}
	if c.MaxRegistrations <= 0 {
		c.MaxRegistrations = DefaultMaxRegistrations
	}
	if c.MaxTopics <= 0 {
		c.MaxTopics = DefaultMaxTopics
	}
	if c.MaxTopicLength <= 0 {
		c.MaxTopicLength = DefaultMaxTopicLength
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	return c
}

// DefaultTopics are the topics a new client starts with, as in the tutorial.
var DefaultTopics = []string{"cats"}

// Hub is the index of one node. Create it with New.
type Hub struct {
	cfg Config
	log *slog.Logger

	regMu   sync.RWMutex
	clients map[relay.ClientID]*Client
	users   map[relay.UserID]*clientSet
	expiry  expiryHeap
	kicked  map[string]relay.CloseReason // Registry sockets kicked before they attached

	releases sync.WaitGroup // registrations being handed back to the Registry

	// claims numbers the claims made without a Registry, in the order
	// they were made, as the Registry numbers its own.
	claims atomic.Uint64

	topics [shardCount]shard

	stats Stats
}

// Stats are the hub's counters, read by the metrics exporter.
type Stats struct {
	Registrations atomic.Int64  // registrations currently held
	Connections   atomic.Int64  // registrations with a live socket
	Expired       atomic.Uint64 // registrations removed by expiry
	Publishes     atomic.Uint64 // messages fanned out
	Deliveries    atomic.Uint64 // messages queued for a connection
}

// New returns an empty hub. It starts nothing; Run removes expired
// registrations.
func New(cfg Config, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Hub{
		cfg:     cfg.withDefaults(),
		log:     log,
		clients: make(map[relay.ClientID]*Client),
		users:   make(map[relay.UserID]*clientSet),
		kicked:  make(map[string]relay.CloseReason),
	}
	for i := range h.topics {
		h.topics[i].topics = make(map[string]*topic)
	}
	return h
}

// Stats returns the hub's live counters.
func (h *Hub) Stats() *Stats { return &h.stats }

// MaxTopics returns the most topics one connection may have, so that
// callers can refuse a larger command before doing any work for it.
func (h *Hub) MaxTopics() int { return h.cfg.MaxTopics }

// Client is one registration: an id bound to a user, the topics it wants
// and, while connected, its socket.
type Client struct {
	ID   relay.ClientID
	User relay.UserID

	// allowed limits the topics the client may subscribe to (a connect
	// token's "topics" claim); nil allows any.
	allowed TopicFilter
	// ephemeral clients come from connect tokens: they have no id to
	// reconnect with and are forgotten when their socket closes.
	ephemeral bool
	// foreign clients speak another protocol (Pusher): they have no Relay
	// user, so they are not in the user index either.
	foreign bool
	// internal lists the topics subscribed with SubscribeOptions.Internal,
	// which the topic limit leaves out (a few per client, when any).
	internal []string

	mu     sync.Mutex
	sub    relay.Subscriber // the live socket, nil while disconnected
	topics []string         // the desired topics, kept across reconnects
	gone   bool             // unregistered or expired: no further attach

	deadline time.Time // guarded by Hub.regMu; zero while attached

	// socket names the socket holding the registration in the Registry,
	// so a late Detach or Kick for an older socket changes nothing; claim
	// is the Registry's number for it (see relay.Registration.Claim), or,
	// without a Registry, the hub's number of the claim attached last
	// (guarded by mu).
	socket string
	claim  uint64
}

// TopicFilter says whether a topic may be subscribed to.
type TopicFilter interface {
	Allow(topic string) bool
}

// Topics returns a copy of the client's topics.
func (c *Client) Topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.topics)
}

// newID returns 128 random bits as 32 lowercase hex digits.
func newID() relay.ClientID {
	var b [16]byte
	rand.Read(b[:]) // never fails on supported platforms (crypto/rand docs)
	return relay.ClientID(hex.EncodeToString(b[:]))
}

// Register creates a registration for user with the default topics. It
// expires unless a socket attaches within the registration TTL.
func (h *Hub) Register(ctx context.Context, user relay.UserID) (relay.ClientID, error) {
	if r := h.cfg.Registry; r != nil {
		id := newID()
		reg := relay.Registration{User: user, Topics: DefaultTopics}
		if err := r.Register(ctx, id, reg, h.cfg.RegistrationTTL); err != nil {
			return "", err
		}
		return id, nil
	}
	c := &Client{ID: newID(), User: user, topics: slices.Clone(DefaultTopics)}
	h.regMu.Lock()
	defer h.regMu.Unlock()
	if len(h.clients) >= h.cfg.MaxRegistrations {
		return "", fmt.Errorf("registration limit of %d reached; unused registrations expire after %s: %w",
			h.cfg.MaxRegistrations, h.cfg.RegistrationTTL, relay.ErrLimit)
	}
	h.clients[c.ID] = c
	h.addUserLocked(c)
	h.setDeadlineLocked(c, time.Now().Add(h.cfg.RegistrationTTL))
	h.stats.Registrations.Add(1)
	return c.ID, nil
}

// Registered reports whether id is a live registration held by this hub.
func (h *Hub) Registered(id relay.ClientID) bool {
	h.regMu.RLock()
	defer h.regMu.RUnlock()
	_, ok := h.clients[id]
	return ok
}

// Unregister forgets id and closes its socket, if any, wherever it is.
func (h *Hub) Unregister(ctx context.Context, id relay.ClientID) error {
	if r := h.cfg.Registry; r != nil {
		return r.Unregister(ctx, id) // the holding node is kicked
	}
	h.regMu.Lock()
	c, ok := h.clients[id]
	if ok {
		h.removeLocked(c)
	}
	h.regMu.Unlock()
	if !ok {
		return fmt.Errorf("no registration with id %q: %w", id, relay.ErrNotFound)
	}
	if sub := h.retire(c); sub != nil {
		sub.Close(relay.CloseUnregistered)
	}
	return nil
}

// removeLocked drops c from the registration table. The caller holds
// regMu and must then retire c.
func (h *Hub) removeLocked(c *Client) {
	delete(h.clients, c.ID)
	h.dropUserLocked(c)
	h.stats.Registrations.Add(-1)
}

// addUserLocked adds c to the user index. The caller holds regMu.
func (h *Hub) addUserLocked(c *Client) {
	set := h.users[c.User]
	if set == nil {
		set = &clientSet{}
		h.users[c.User] = set
	}
	set.add(c)
}

// dropUserLocked removes c from the user index. The caller holds regMu.
func (h *Hub) dropUserLocked(c *Client) {
	set := h.users[c.User]
	if set == nil {
		return
	}
	set.remove(c)
	if set.len() == 0 {
		delete(h.users, c.User)
	}
}

// retire marks a removed client gone and unsubscribes its socket, which it
// returns so the caller can close it outside the locks.
func (h *Hub) retire(c *Client) relay.Subscriber {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gone = true
	sub := c.sub
	if sub != nil {
		h.leaveAll(c.topics, sub)
		c.sub = nil
		h.stats.Connections.Add(-1)
	}
	return sub
}

// Ticket is a registration claimed for a socket that is about to be
// upgraded. Claiming before the upgrade orders connects: a socket that
// completed its handshake later always wins over one that completed it
// earlier, on any node.
type Ticket struct {
	id     relay.ClientID
	socket string // the socket's name in the Registry; "" without one
	reg    relay.Registration
}

// Claim checks that id is a live registration and, with a Registry, takes
// it for a socket of this node (the node holding it before is told to
// close its socket as replaced). Errors wrap relay.ErrNotFound for unknown
// ids, relay.ErrUnavailable when the Registry cannot be reached.
func (h *Hub) Claim(ctx context.Context, id relay.ClientID) (*Ticket, error) {
	if r := h.cfg.Registry; r != nil {
		socket := string(newID())
		reg, err := r.Attach(ctx, id, socket)
		if err != nil {
			return nil, err
		}
		return &Ticket{id: id, socket: socket, reg: reg}, nil
	}
	if !h.Registered(id) {
		return nil, fmt.Errorf("no registration with id %q: %w", id, relay.ErrNotFound)
	}
	return &Ticket{id: id, reg: relay.Registration{Claim: h.claims.Add(1)}}, nil
}

// Abandon gives back a ticket whose socket never came: the registration
// lives for the reconnect grace.
func (h *Hub) Abandon(t *Ticket) {
	if h.cfg.Registry != nil {
		h.releases.Go(func() { h.release(&Client{ID: t.id, socket: t.socket}, t.reg.Topics) })
	}
}

// Attach claims registration id and binds a new socket to it; see Claim
// and AttachTicket.
func (h *Hub) Attach(ctx context.Context, id relay.ClientID, sub relay.Subscriber, keepTopics bool) (*Client, error) {
	t, err := h.Claim(ctx, id)
	if err != nil {
		return nil, err
	}
	return h.AttachTicket(t, sub, keepTopics)
}

// AttachTicket binds a new socket to a claimed registration. With
// keepTopics (the seed protocol) the socket is subscribed to the client's
// topics, kept from earlier sockets; without (relay.v1, whose clients
// resubscribe with positions) it starts with none. A socket already
// attached is replaced and closed with relay.CloseReplaced: the newest
// connection wins, so a client whose old TCP connection is half-dead can
// reconnect at once.
func (h *Hub) AttachTicket(t *Ticket, sub relay.Subscriber, keepTopics bool) (*Client, error) {
	id := t.id
	if h.cfg.Registry != nil {
		if !h.install(t) {
			return nil, ErrSuperseded
		}
		defer h.kickIfTaken(t)
	}
	h.regMu.Lock()
	c, ok := h.clients[id]
	if ok {
		c.deadline = time.Time{} // any heap entry for c is now stale
	}
	h.regMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no registration with id %q: %w", id, relay.ErrNotFound)
	}
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return nil, fmt.Errorf("registration %q was removed: %w", id, relay.ErrNotFound)
	}
	if h.cfg.Registry == nil {
		// The handler of the earlier handshake may reach this after the
		// later one's: the later claim wins whichever attaches last.
		if c.claim > t.reg.Claim {
			c.mu.Unlock()
			return nil, ErrSuperseded
		}
		c.claim = t.reg.Claim
	}
	old := c.sub
	if old != nil {
		h.leaveAll(c.topics, old)
	} else {
		h.stats.Connections.Add(1)
	}
	c.sub = sub
	if !keepTopics {
		c.topics = nil
	}
	for _, t := range c.topics {
		h.join(t, member{sub: sub, user: c.User}, nil)
	}
	c.mu.Unlock()
	if old != nil {
		old.Close(relay.CloseReplaced)
	}
	return c, nil
}

// install gives a ticket of the Registry a new Client, replacing any this
// node held for its id (whose socket is closed as replaced), so that a
// late Detach of the old socket can never release the new one. It refuses
// (false) a ticket older than the client held.
func (h *Hub) install(t *Ticket) bool {
	c := &Client{ID: t.id, User: t.reg.User, topics: slices.Clone(t.reg.Topics), socket: t.socket, claim: t.reg.Claim}
	h.regMu.Lock()
	old := h.clients[t.id]
	if old != nil && t.reg.Claim != 0 && old.claim > t.reg.Claim {
		// A later claim of this node finished first: it wins.
		h.regMu.Unlock()
		return false
	}
	if old != nil {
		if topics := old.Topics(); topics != nil {
			c.topics = topics // this node saw the latest seed topics
		}
		h.removeLocked(old)
	}
	h.clients[t.id] = c
	h.addUserLocked(c)
	h.stats.Registrations.Add(1)
	h.regMu.Unlock()
	if old != nil {
		if sub := h.retire(old); sub != nil {
			sub.Close(relay.CloseReplaced)
		}
	}
	return true
}

// ErrSuperseded refuses a socket whose claim lost to a later claim of the
// same registration on this node: it is closed as replaced.
var ErrSuperseded = fmt.Errorf("a newer connection took this registration: %w", relay.ErrNotFound)

// maxKicked bounds the kicks remembered for sockets not attached yet.
const maxKicked = 10_000

// kickIfTaken closes t's socket at once if a kick for it arrived while it
// was being upgraded: another node took the registration meanwhile.
func (h *Hub) kickIfTaken(t *Ticket) {
	h.regMu.Lock()
	reason, kicked := h.kicked[t.socket]
	delete(h.kicked, t.socket)
	h.regMu.Unlock()
	if kicked {
		h.Kick(t.id, t.socket, reason)
	}
}

// Kick implements relay.Node: the Registry asks the node holding id's
// socket to close it, because it was unregistered or another node took
// it.
func (h *Hub) Kick(id relay.ClientID, socket string, reason relay.CloseReason) {
	h.regMu.Lock()
	c := h.clients[id]
	if c == nil || (socket != "" && c.socket != socket) {
		if socket != "" { // perhaps still upgrading: see kickIfTaken
			if len(h.kicked) >= maxKicked {
				clear(h.kicked)
			}
			h.kicked[socket] = reason
		}
		h.regMu.Unlock()
		return
	}
	h.removeLocked(c)
	h.regMu.Unlock()
	if sub := h.retire(c); sub != nil {
		sub.Close(reason)
	}
}

// release hands id back to the Registry after its socket closed here: it
// lives for the reconnect grace, keeping its seed topics, wherever the
// client reconnects.
func (h *Hub) release(c *Client, topics []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.cfg.Registry.Detach(ctx, c.ID, c.socket, topics, h.cfg.ReconnectGrace); err != nil {
		h.log.Warn("releasing a registration failed; it expires on its own", "err", err)
	}
}

// Connect binds a socket that authenticated with a connect token: an
// ephemeral client of user, limited to the topics allowed lets through
// (nil: any), forgotten when the socket closes. With keepTopics (the seed
// protocol) it starts on the default topics it is allowed.
func (h *Hub) Connect(user relay.UserID, sub relay.Subscriber, allowed TopicFilter, keepTopics bool) (*Client, error) {
	c := &Client{ID: "token:" + newID(), User: user, allowed: allowed, ephemeral: true, sub: sub}
	if keepTopics {
		for _, t := range DefaultTopics {
			if allowed == nil || allowed.Allow(t) {
				c.topics = append(c.topics, t)
			}
		}
	}
	h.regMu.Lock()
	h.addUserLocked(c)
	h.regMu.Unlock()
	h.stats.Connections.Add(1)
	c.mu.Lock()
	for _, t := range c.topics {
		h.join(t, member{sub: sub, user: user}, nil)
	}
	c.mu.Unlock()
	return c, nil
}

// ConnectForeign binds sub, a socket of another protocol (Pusher), to a
// new client without a Relay user: it is in no user's index, so Relay's
// messages to one user never look at it, and it subscribes only through
// Subscribe.
func (h *Hub) ConnectForeign(sub relay.Subscriber) *Client {
	h.stats.Connections.Add(1)
	return &Client{ID: "foreign", ephemeral: true, foreign: true, sub: sub}
}

// Detach unbinds sub from c after its socket closed. The registration then
// lives for the reconnect grace (or is forgotten at once when the grace is
// negative). Detaching a socket that was already replaced does nothing.
func (h *Hub) Detach(c *Client, sub relay.Subscriber) {
	c.mu.Lock()
	if c.sub != sub || sub == nil {
		c.mu.Unlock()
		return
	}
	h.leaveAll(c.topics, sub)
	c.sub = nil
	gone := c.gone
	c.mu.Unlock()
	h.stats.Connections.Add(-1)
	if c.ephemeral {
		if !c.foreign {
			h.regMu.Lock()
			h.dropUserLocked(c)
			h.regMu.Unlock()
		}
		return
	}
	if gone {
		return
	}
	if h.cfg.Registry != nil {
		h.regMu.Lock()
		own := h.clients[c.ID] == c
		var topics []string
		if own {
			c.mu.Lock()
			if own = c.sub == nil; own { // nobody re-attached in between
				c.gone = true
				topics = slices.Clone(c.topics)
				h.removeLocked(c)
			}
			c.mu.Unlock()
		}
		h.regMu.Unlock()
		if own {
			h.releases.Go(func() { h.release(c, topics) })
		}
		return
	}
	h.regMu.Lock()
	defer h.regMu.Unlock()
	if h.clients[c.ID] != c {
		return
	}
	if h.cfg.ReconnectGrace < 0 {
		c.mu.Lock()
		if c.sub == nil { // nobody re-attached in between
			c.gone = true
			h.removeLocked(c)
		}
		c.mu.Unlock()
		return
	}
	h.setDeadlineLocked(c, time.Now().Add(h.cfg.ReconnectGrace))
}

// SetTopics replaces the topics of c, whose socket is sub (the seed
// protocol's command). Topics are de-duplicated; an invalid topic or too
// many of them change nothing.
func (h *Hub) SetTopics(c *Client, sub relay.Subscriber, topics []string) error {
	topics, err := h.normalize(topics, false)
	if err == nil {
		err = c.check(topics)
	}
	if err != nil {
		return err
	}
	if len(topics) > h.cfg.MaxTopics {
		return h.tooMany()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sub != sub {
		return errReplaced
	}
	old := newSet(c.topics)
	now := newSet(topics)
	for _, t := range c.topics {
		if !now.has(t) {
			h.leave(t, sub)
		}
	}
	for _, t := range topics {
		if !old.has(t) {
			h.join(t, member{sub: sub, user: c.User}, nil)
		}
	}
	c.topics = topics
	return nil
}

// check refuses topics the client's token does not allow.
func (c *Client) check(topics []string) error {
	if c.allowed == nil {
		return nil
	}
	for _, t := range topics {
		if !c.allowed.Allow(t) {
			return fmt.Errorf("topic %q is not allowed by this connection's token: %w", t, relay.ErrForbidden)
		}
	}
	return nil
}

var errReplaced = fmt.Errorf("connection was replaced or closed: %w", relay.ErrNotFound)

func (h *Hub) tooMany() error {
	return fmt.Errorf("too many topics: at most %d per connection: %w", h.cfg.MaxTopics, relay.ErrLimit)
}

// SubscribeOptions tune Subscribe.
type SubscribeOptions struct {
	// Presence asks for join and leave events on the topics.
	Presence bool
	// Since asks to recover these topics from these positions.
	Since map[string]relay.Position
	// History is read for positions and recovery.
	History relay.HistoryReader
	// Ready is called once per topic, after it is subscribed and before
	// anything on it reaches the socket: the caller sends its
	// acknowledgement here, and the replay follows it.
	Ready func(topic string, r Subscribed)
	// Checked says the caller checked the topic names by its own
	// protocol's rules (Pusher channels, whose topics Relay's rules
	// refuse on purpose): Relay's topic rules and MaxTopicLength do not
	// apply.
	Checked bool
	// Hold keeps what arrives for the socket on the topics (presence
	// events included) until Ready has run, as recovery does, without
	// reading history: a protocol whose acknowledgement carries the member
	// list (Pusher's subscription_succeeded) must send it before any
	// member event, or the client's list ends up wrong.
	Hold bool
	// Internal marks topics a protocol subscribes to for its own ends (a
	// Pusher user's control and watchlist topics): -max-topics, which is
	// about what clients ask for, does not count them.
	Internal bool
	// Member, when set, is who the socket counts as in the topics'
	// presence instead of its client's user: a Pusher presence member,
	// whose id is a string the caller hashes to a UserID, and whose Info
	// the join and leave events carry in Data.
	Member *Member
}

// Member is a presence member of a protocol whose users are not Relay's.
type Member struct {
	User relay.UserID
	// Info is carried verbatim by the member's join and leave events; the
	// Info of a user's first connection on a topic stays until its last
	// leaves.
	Info []byte
}

// Subscribed is what Subscribe found for one topic.
type Subscribed struct {
	// Position is where the socket now stands: it receives (by replay,
	// then live) exactly the messages after it.
	Position relay.Position
	// Recovered reports that a position was asked for (Since), it is in
	// the same epoch, and every message after it was still in history (or
	// the socket was subscribed already, so nothing was missed).
	Recovered bool
	// Replay holds those messages; the hub delivers them after Ready.
	Replay []*relay.Message
	// Existing reports that the socket was already subscribed: only its
	// presence flag changed, and nothing is replayed.
	Existing bool
	// Members are the users present before this socket, when presence was
	// asked for, with their connections and, for members that joined with
	// SubscribeOptions.Member, their Info.
	Members []relay.Present
}

// Subscribe adds topics to c's socket sub (relay.v1). For each new topic
// the socket joins in a recovering state in which live messages wait; the
// topic's history is then read, Ready is called, the replay (when
// recovery succeeds) is delivered, and the waiting messages after the
// replay follow: no gap and no duplicate between history and live.
func (h *Hub) Subscribe(ctx context.Context, c *Client, sub relay.Subscriber, topics []string, opts SubscribeOptions) error {
	topics, err := h.normalize(topics, opts.Checked)
	if err == nil {
		err = c.check(topics)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.sub != sub {
		c.mu.Unlock()
		return errReplaced
	}
	have := newSet(c.topics)
	fresh := 0
	for _, t := range topics {
		if !have.has(t) {
			fresh++
		}
	}
	if !opts.Internal && len(c.topics)-len(c.internal)+fresh > h.cfg.MaxTopics {
		c.mu.Unlock()
		return h.tooMany()
	}
	list := make([]joined, 0, len(topics))
	user, info := c.User, []byte(nil)
	if opts.Member != nil {
		user, info = opts.Member.User, opts.Member.Info
	}
	for _, t := range topics {
		m := member{sub: sub, user: user, presence: opts.Presence}
		if opts.History != nil || opts.Hold {
			m.pending = new([]*relay.Message)
		}
		present, added := h.join(t, m, info)
		if added {
			c.topics = append(c.topics, t)
			if opts.Internal {
				c.internal = append(c.internal, t)
			}
		}
		list = append(list, joined{t, present, added})
	}
	c.mu.Unlock()
	if err := h.sync(ctx, c, sub, list); err != nil {
		return err
	}

	for _, j := range list {
		r := Subscribed{Members: j.present, Existing: !j.added}
		if opts.Presence && h.cfg.Roster != nil {
			r.Members = h.present(ctx, j.name, user, j.added)
		}
		if opts.History != nil {
			since, want := opts.Since[j.name]
			from := ^uint64(0) // only the latest position
			if want && j.added {
				from = since.Offset
			}
			page, err := opts.History.History(ctx, j.name, from, 0)
			if err != nil {
				h.log.Warn("reading history failed; subscribing without recovery", "topic", j.name, "err", err)
			}
			r.Position = page.Latest
			// Already subscribed: delivery never stopped, nothing is missing.
			r.Recovered = want && !j.added
			if want && j.added && err == nil && page.Complete && page.Latest.Epoch == since.Epoch {
				r.Recovered = true
				r.Replay = page.Messages
			}
		}
		if opts.Ready != nil {
			opts.Ready(j.name, r)
		}
		for _, m := range r.Replay {
			sub.Deliver(&relay.Delivery{Msg: m})
		}
		if j.added && (opts.History != nil || opts.Hold) {
			h.goLive(j.name, sub, r.Position)
		}
	}
	return nil
}

// joined is one topic of a Subscribe.
type joined struct {
	name    string
	present []relay.Present
	added   bool
}

// sync waits until the engine delivers the newly added topics here (a
// networked engine subscribes to them), so that a subscribed reply means
// that any publish made after it arrives. When it cannot, the topics are
// dropped again and the subscribe fails.
func (h *Hub) sync(ctx context.Context, c *Client, sub relay.Subscriber, list []joined) error {
	if h.cfg.Interest == nil {
		return nil
	}
	var added []string
	for _, j := range list {
		if j.added {
			added = append(added, j.name)
		}
	}
	for _, name := range added {
		if err := h.cfg.Interest.Sync(ctx, name); err != nil {
			h.Unsubscribe(c, sub, added)
			return err
		}
	}
	return nil
}

// present returns the users the Roster lists on topic before a socket of
// user joined (added), as the hub's own index would: the Roster counts the
// socket already, so one of user's connections is taken off. When it
// cannot be read, the subscribe goes on with none listed.
func (h *Hub) present(ctx context.Context, topic string, user relay.UserID, added bool) []relay.Present {
	list, err := h.cfg.Roster.Present(ctx, topic)
	if err != nil {
		h.log.Warn("reading presence failed; subscribing without the list of users", "topic", topic, "err", err)
	}
	users := make([]relay.Present, 0, len(list))
	for _, p := range list {
		if added && p.User == user {
			if p.Connections <= 1 {
				continue
			}
			p.Connections--
		}
		users = append(users, p)
	}
	return users
}

// Unsubscribe removes topics from c's socket sub; topics it is not on are
// ignored.
func (h *Hub) Unsubscribe(c *Client, sub relay.Subscriber, topics []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sub != sub {
		return errReplaced
	}
	drop := newSet(topics)
	kept := c.topics[:0]
	for _, t := range c.topics {
		if drop.has(t) {
			h.leave(t, sub)
		} else {
			kept = append(kept, t)
		}
	}
	clear(c.topics[len(kept):])
	c.topics = kept
	if len(c.internal) > 0 {
		c.internal = slices.DeleteFunc(c.internal, drop.has)
	}
	return nil
}

// normalize validates topics and removes duplicates, keeping the order.
func (h *Hub) normalize(topics []string, checked bool) ([]string, error) {
	out := make([]string, 0, len(topics))
	seen := newSet(nil)
	for _, t := range topics {
		if checked {
			if t == "" {
				return nil, fmt.Errorf("topic must not be empty: %w", relay.ErrInvalid)
			}
		} else if err := h.CheckTopic(t); err != nil {
			return nil, err
		}
		if seen.has(t) {
			continue
		}
		seen.add(t)
		out = append(out, t)
		if !checked && len(out) > h.cfg.MaxTopics {
			return nil, h.tooMany() // a checked list is the caller's to bound
		}
	}
	return out, nil
}

// CheckTopic validates a topic name: 1 to MaxTopicLength bytes of UTF-8
// without control characters, invisible characters (Unicode category Cf,
// variation selectors and the other default-ignorable code points), white
// space or '*' (which token topic patterns use as a wildcard).
func (h *Hub) CheckTopic(t string) error {
	if t == "" {
		return fmt.Errorf("topic must not be empty: %w", relay.ErrInvalid)
	}
	if len(t) > h.cfg.MaxTopicLength {
		return fmt.Errorf("topic is %d bytes long, the limit is %d: %w", len(t), h.cfg.MaxTopicLength, relay.ErrInvalid)
	}
	if !utf8.ValidString(t) {
		return fmt.Errorf("topic must be valid UTF-8: %w", relay.ErrInvalid)
	}
	for _, r := range t {
		switch {
		case r < 0x20 || r == 0x7f || unicode.IsControl(r):
			return fmt.Errorf("topic %q contains a control character: %w", t, relay.ErrInvalid)
		case unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point):
			// Invisible characters (zero-width spaces, bidi overrides,
			// variation selectors, Hangul fillers) make two topics look
			// alike, or one look like another.
			return fmt.Errorf("topic %q contains the invisible character %U: %w", t, r, relay.ErrInvalid)
		case unicode.IsSpace(r):
			return fmt.Errorf("topic %q contains white space: %w", t, relay.ErrInvalid)
		case r == '*':
			return fmt.Errorf("topic %q contains '*', which is reserved for token topic patterns: %w", t, relay.ErrInvalid)
		}
	}
	return nil
}

// Fanout delivers m to every local connection subscribed to its topic (and
// registered with its user, when it has one) and returns how many accepted
// it. It implements relay.Fanout.
func (h *Hub) Fanout(m *relay.Message) int {
	d := &relay.Delivery{Msg: m}
	n := 0
	if m.Kind == relay.KindJoin || m.Kind == relay.KindLeave {
		// From the Roster: a presence event of the whole cluster.
		sh := h.shard(m.Topic)
		sh.mu.RLock()
		if t := sh.topics[m.Topic]; t != nil {
			n = t.tell(d)
		}
		sh.mu.RUnlock()
		return n
	}
	if m.HasUser {
		// Through the topic's member, so a socket that is recovering the
		// topic gets the message after its acknowledgement and replay, like
		// any other. The shard's write lock orders this with the topic's
		// own fan-out, which may append to the same pending buffer.
		sh := h.shard(m.Topic)
		h.regMu.RLock()
		if set := h.users[m.User]; set != nil {
			set.each(func(c *Client) {
				c.mu.Lock()
				if c.sub != nil && slices.Contains(c.topics, m.Topic) {
					sh.mu.Lock()
					if t := sh.topics[m.Topic]; t != nil {
						if i := t.index(c.sub); i >= 0 && t.list[i].deliver(d) {
							n++
						}
					}
					sh.mu.Unlock()
				}
				c.mu.Unlock()
			})
		}
		h.regMu.RUnlock()
	} else {
		// A message of the stream comes from the engine one at a time per
		// topic, so the read lock is enough; a transient one (offset 0)
		// may come beside them, and the write lock orders it with them, as
		// for a message to one user (members may append to one pending
		// buffer).
		sh := h.shard(m.Topic)
		lock, unlock := sh.mu.RLock, sh.mu.RUnlock
		if m.Offset == 0 {
			lock, unlock = sh.mu.Lock, sh.mu.Unlock
		}
		lock()
		if t := sh.topics[m.Topic]; t != nil {
			for i := range t.list {
				if t.list[i].deliver(d) {
					n++
				}
			}
		}
		unlock()
	}
	h.stats.Publishes.Add(1)
	h.stats.Deliveries.Add(uint64(n))
	return n
}

// Settle waits until the registrations of closed sockets have been handed
// back to the Registry (each within 5 s): the server calls it after the
// sockets closed at shutdown, before it stops the engine.
func (h *Hub) Settle() { h.releases.Wait() }

// Run removes expired registrations until ctx is done.
func (h *Hub) Run(ctx context.Context) error {
	return relay.Every(ctx, h.cfg.SweepInterval, func(now time.Time) {
		if n := h.expire(now); n > 0 {
			h.log.Debug("registrations expired", "count", n)
		}
	})
}

// expireBatch bounds the registrations removed per hold of regMu, so that
// many expiring together never hold up registers and connects for long.
const expireBatch = 256

// expire removes every registration whose deadline is not after now and
// returns how many it removed.
func (h *Hub) expire(now time.Time) int {
	n := 0
	for {
		removed, more := h.expireSome(now)
		n += removed
		if !more {
			return n
		}
		// Let the registers and connects that waited for regMu run before
		// the next batch: with one P, releasing the lock alone would not.
		runtime.Gosched()
	}
}

// expireSome pops up to expireBatch due deadlines and reports whether more
// are due.
func (h *Hub) expireSome(now time.Time) (n int, more bool) {
	h.regMu.Lock()
	defer h.regMu.Unlock()
	for range expireBatch {
		if len(h.expiry) == 0 || h.expiry[0].at.After(now) {
			return n, false
		}
		e := heap.Pop(&h.expiry).(expiryEntry)
		c := e.c
		if !c.deadline.Equal(e.at) || h.clients[c.ID] != c {
			continue // stale: attached, re-scheduled or removed since
		}
		c.mu.Lock()
		attached := c.sub != nil
		if !attached {
			c.gone = true
		}
		c.mu.Unlock()
		if attached { // attached between Detach and now
			c.deadline = time.Time{}
			continue
		}
		h.removeLocked(c)
		h.stats.Expired.Add(1)
		n++
	}
	return n, true
}

func (h *Hub) setDeadlineLocked(c *Client, at time.Time) {
	c.deadline = at
	heap.Push(&h.expiry, expiryEntry{at: at, c: c})
}

// expiryHeap orders pending deadlines, earliest first. Entries whose client
// has since attached or been re-scheduled are skipped when popped.
type expiryHeap []expiryEntry

type expiryEntry struct {
	at time.Time
	c  *Client
}

func (e expiryHeap) Len() int           { return len(e) }
func (e expiryHeap) Less(i, j int) bool { return e[i].at.Before(e[j].at) }
func (e expiryHeap) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *expiryHeap) Push(x any)        { *e = append(*e, x.(expiryEntry)) }
func (e *expiryHeap) Pop() any {
	old := *e
	x := old[len(old)-1]
	old[len(old)-1] = expiryEntry{}
	*e = old[:len(old)-1]
	return x
}
