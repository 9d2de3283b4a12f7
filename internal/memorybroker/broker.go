// Package memorybroker is the embedded engine: a single node, no network,
// nothing to run beside Relay. Publishes go straight to the local fan-out.
package memorybroker

import (
	"context"

	"github.com/relayhq/relay/internal/relay"
)

// Broker is the in-memory relay.Broker.
type Broker struct {
	local relay.Fanout
}

// New returns a broker delivering to local.
func New(local relay.Fanout) *Broker { return &Broker{local: local} }

// Publish delivers m to this node's subscribers.
func (b *Broker) Publish(ctx context.Context, m *relay.Message) (relay.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return relay.Receipt{}, err
	}
	return relay.Receipt{Delivered: b.local.Fanout(m)}, nil
}
