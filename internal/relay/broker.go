package relay

import (
	"context"
	"sync/atomic"
	"time"
)

// Broker carries publishes to the local fan-out of every node that runs
// Relay and keeps each topic's stream: offsets, epoch and bounded history.
// The embedded engine (memorybroker) is a single node; networked brokers
// (redisbroker) implement the same contract, including its bounds: only a
// publish creates a stream, the streams held are capped, and history is
// bounded per topic and in total (docs/security.md lists the bounds).
type Broker interface {
	// Publish assigns m its offset and epoch (unless it is for one user),
	// stores it in its topic's history and hands it to every node's
	// fan-out. It returns once the engine accepted the message; Delivered
	// counts only this node's connections the message was queued for by
	// then (other nodes deliver it on their own). m must not be modified
	// afterwards.
	Publish(ctx context.Context, m *Message, opts PublishOptions) (Receipt, error)
	HistoryReader
	Interest
	// Ready returns nil while the engine can serve, else an error naming
	// the cause (wrapping ErrUnavailable): /readyz reports it.
	Ready() error
}

// Interest tells a broker which topics this node has subscribers on, so
// that a networked engine receives those topics' messages and no others.
type Interest interface {
	// Watch and Unwatch count this node's interest in topic: the hub
	// calls Watch when a topic gains its first local subscriber and
	// Unwatch when it loses its last, with its shard lock held, so they
	// must not block. Calls for one topic come in order.
	Watch(topic string)
	Unwatch(topic string)
	// Sync returns once every message published to topic after it
	// returns will reach this node's fan-out (the engine subscription is
	// in place), or with an error wrapping ErrUnavailable. The topic must
	// be watched.
	Sync(ctx context.Context, topic string) error
}

// HistoryReader reads topic streams.
type HistoryReader interface {
	// History returns up to limit messages of topic with offsets above
	// since, oldest first (limit <= 0: all that are kept), and the
	// stream's latest position. Reading must not create lasting state:
	// a topic without a stream answers offset 0 and the epoch its first
	// message will carry, remembered (if at all) in a small, short-lived
	// entry bounded in count, since anyone who can subscribe can read
	// any number of topics.
	History(ctx context.Context, topic string, since uint64, limit int) (HistoryPage, error)
}

// HistoryPage is a slice of a topic's stream.
type HistoryPage struct {
	Messages []*Message
	// Latest is the stream's newest offset (0 before the first publish)
	// and its epoch.
	Latest Position
	// Complete reports that Messages start right after since: nothing
	// between since and the first message returned was trimmed away.
	Complete bool
}

// PublishOptions tune one publish.
type PublishOptions struct {
	// IdempotencyKey, when set, makes a repeat of the same key within the
	// broker's window return the first publish's receipt without
	// publishing again.
	IdempotencyKey string
	// Transient publishes outside the topic's stream, as a message to one
	// user is: no offset, no history, no stream created, at most once to
	// every subscriber on every node. It is for notices that only the
	// moment's subscribers want (Pusher's subscription_count), which must
	// not make a topic's stream exist: clients could otherwise create
	// streams by subscribing. IdempotencyKey is ignored with it.
	Transient bool
}

// Receipt is what a publish achieved.
type Receipt struct {
	Position       // zero for a message to one user
	Delivered int  // this node's connections the message was queued for
	Duplicate bool // an earlier publish with the same idempotency key answered
}

// Fanout delivers a message to the subscribers connected to this node; the
// hub implements it and brokers call it. Calls for one topic must not
// overlap and must come in offset order.
type Fanout interface {
	Fanout(m *Message) int
}

// Node is the local side of an engine: the hub, which the server binds to
// the engine before running it.
type Node interface {
	Fanout
	// Watched reports whether topic has subscribers on this node, without
	// ever waiting.
	Watched(topic string) bool
	// Kick closes the socket registration id has on this node, if any and
	// if it is socket (any socket when socket is ""), for reason
	// (CloseUnregistered or CloseReplaced), and forgets the registration
	// here.
	Kick(id ClientID, socket string, reason CloseReason)
}

// Engine is what the server runs a node on: a Broker plus, for engines
// shared by several nodes, the registrations and presence they share.
type Engine interface {
	Broker
	// Registry returns the cluster-wide registrations, or nil when the
	// hub's own table is the registry (a single node).
	Registry() Registry
	// Roster returns the cluster-wide presence, or nil when the hub's own
	// index is the roster (a single node).
	Roster() Roster
	// Bind gives the engine its node; it is called once, before Run.
	Bind(n Node)
	// Run serves until ctx ends and returns after the engine's goroutines
	// and connections are gone.
	Run(ctx context.Context) error
}

// Registration is what a registration id stands for on every node.
type Registration struct {
	User UserID
	// Topics are the seed protocol's desired topics, kept across
	// reconnects.
	Topics []string
	// Claim numbers the Registry's Attach calls for this id, in the order
	// the Registry took them (0: not numbered): of two sockets claimed on
	// one node, the higher claim wins, whatever order they finish in.
	Claim uint64
}

// Registry keeps registrations for every node: an id registered on one
// node connects on any, and is forgotten everywhere at once.
type Registry interface {
	// Register stores a new registration that expires after ttl unless a
	// socket attaches.
	Register(ctx context.Context, id ClientID, reg Registration, ttl time.Duration) error
	// Lookup returns id's registration, or an error wrapping ErrNotFound.
	Lookup(ctx context.Context, id ClientID) (Registration, error)
	// Attach claims id for socket (a token unique to one socket on this
	// node): the registration stops expiring, and the node that held it
	// before, if any, is asked to Kick it with CloseReplaced. Unknown or
	// expired ids wrap ErrNotFound.
	Attach(ctx context.Context, id ClientID, socket string) (Registration, error)
	// Detach releases id from socket, keeping topics: it expires after
	// grace (negative: at once) unless attached again. It does nothing
	// when another socket holds id.
	Detach(ctx context.Context, id ClientID, socket string, topics []string, grace time.Duration) error
	// Unregister forgets id and asks the node holding its socket to Kick
	// it with CloseUnregistered; unknown ids wrap ErrNotFound.
	Unregister(ctx context.Context, id ClientID) error
}

// Present is one user present on a topic.
type Present struct {
	User        UserID `json:"user_id"`
	Connections int    `json:"connections"`
	// Info is what the user joined with, for protocols whose members carry
	// it (Pusher's user_info); nil for Relay's own users.
	Info []byte `json:"-"`
}

// Roster keeps presence for every node: which users have connections on
// a topic anywhere, announcing one join when a user's first connection
// anywhere subscribes and one leave after its last is gone.
type Roster interface {
	// Change records that user's connections on topic on this node
	// changed by delta. The hub calls it under its shard lock, so it must
	// not block; the engine announces joins and leaves through every
	// node's Fanout, as messages of KindJoin and KindLeave.
	Change(topic string, user UserID, delta int)
	// Present returns the users present on topic, by user id, counting
	// every Change this node made before the call.
	Present(ctx context.Context, topic string) ([]Present, error)
}

// InfoRoster is a Roster that keeps what each present user joined with:
// the info given with the change that made the user present anywhere
// stays until the user's last connection leaves; the join and leave
// messages carry it in Data, and Present returns it. Pusher's presence
// channels need it (their members carry user_info).
type InfoRoster interface {
	Roster
	// ChangeInfo is Change with the info of a joining user (ignored when
	// the user is present already, and when delta is negative).
	ChangeInfo(topic string, user UserID, delta int, info []byte)
}

// TopicLister is a Roster that can list the topics with someone present
// on any node (the Pusher API's list of occupied channels).
type TopicLister interface {
	// Topics returns the topics starting with prefix that have at least
	// one connection on any node.
	Topics(ctx context.Context, prefix string) ([]string, error)
}

// Transition is a change of a topic's presence as the whole cluster sees
// it: a user's first connection anywhere joined (Joined), or its last left.
// Info is what the user joined with (InfoRoster).
type Transition struct {
	Topic  string
	User   UserID
	Info   []byte
	Joined bool // false: left
}

// TransitionReporter is a Roster that reports each Transition once across
// the cluster: on the node whose change made it, or whose clean-up of a
// dead node did. Webhooks are sent from there, so each is sent once.
type TransitionReporter interface {
	// ReportTransitions sets the function called with each transition
	// this node makes; it must not block (the roster may call it while
	// holding its locks). Call it before the engine runs.
	ReportTransitions(f func(Transition))
}

// Transitions keeps the function a TransitionReporter reports to; an
// engine's roster embeds it. The zero value reports to nobody.
type Transitions struct {
	f atomic.Pointer[func(Transition)]
}

// ReportTransitions implements TransitionReporter.
func (t *Transitions) ReportTransitions(f func(Transition)) {
	if f == nil {
		t.f.Store(nil)
		return
	}
	t.f.Store(&f)
}

// Report hands tr to the function ReportTransitions set, if any.
func (t *Transitions) Report(tr Transition) {
	if f := t.f.Load(); f != nil {
		(*f)(tr)
	}
}

// EngineStats are a networked engine's counters, for metrics.
type EngineStats struct {
	Reconnects uint64 // pub/sub connections replaced (failed or silent)
	Repeats    uint64 // messages dropped because the node had them already
	Repaired   uint64 // messages read from history to fill a gap
	Resets     uint64 // gaps history could not fill (subscribers told recovered:false)
}

// StatsReporter is implemented by engines with EngineStats.
type StatsReporter interface {
	EngineStats() EngineStats
}
