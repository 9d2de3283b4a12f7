package relay

import "context"

// Broker carries publishes to the local fan-out of every node that runs
// Relay. The embedded engine (memorybroker) is a single node; networked
// brokers implement the same contract and pass the same conformance suite.
type Broker interface {
	// Publish hands m to every node's fan-out and reports what this node
	// delivered. m must not be modified afterwards.
	Publish(ctx context.Context, m *Message) (Receipt, error)
}

// Receipt is what a publish achieved.
type Receipt struct {
	// Delivered counts the local connections the message was queued for.
	Delivered int
}

// Fanout delivers a message to the subscribers connected to this node; the
// hub implements it and brokers call it.
type Fanout interface {
	Fanout(m *Message) int
}
