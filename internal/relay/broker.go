package relay

import "context"

// Broker carries publishes to the local fan-out of every node that runs
// Relay and keeps each topic's stream: offsets, epoch and bounded history.
// The embedded engine (memorybroker) is a single node; networked brokers
// implement the same contract, including its bounds: only a publish
// creates a stream, the streams held are capped, and history is bounded
// per topic and in total (docs/security.md lists the bounds).
type Broker interface {
	// Publish assigns m its offset and epoch (unless it is for one user),
	// stores it in its topic's history and hands it to every node's
	// fan-out. It reports what this node delivered. m must not be
	// modified afterwards.
	Publish(ctx context.Context, m *Message, opts PublishOptions) (Receipt, error)
	HistoryReader
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
}

// Receipt is what a publish achieved.
type Receipt struct {
	Position       // zero for a message to one user
	Delivered int  // local connections the message was queued for
	Duplicate bool // an earlier publish with the same idempotency key answered
}

// Fanout delivers a message to the subscribers connected to this node; the
// hub implements it and brokers call it. Calls for one topic must not
// overlap and must come in offset order.
type Fanout interface {
	Fanout(m *Message) int
}
