package memorybroker

import (
	"context"

	"github.com/relayhq/relay/internal/relay"
)

// The embedded engine is one node: every topic's messages are already
// here, and the hub's own tables are the registry and the roster.

// Watch implements relay.Interest; one node needs no subscription.
func (b *Broker) Watch(string) {}

// Unwatch implements relay.Interest.
func (b *Broker) Unwatch(string) {}

// Sync implements relay.Interest: publishes reach the local fan-out from
// the moment a topic has a subscriber.
func (b *Broker) Sync(context.Context, string) error { return nil }

// Ready implements relay.Broker: memory is always reachable.
func (b *Broker) Ready() error { return nil }

// Registry implements relay.Engine: the hub keeps registrations itself.
func (b *Broker) Registry() relay.Registry { return nil }

// Roster implements relay.Engine: the hub keeps presence itself.
func (b *Broker) Roster() relay.Roster { return nil }

// Bind implements relay.Engine: n receives the publishes and, unless the
// Config named another, says which topics have subscribers.
func (b *Broker) Bind(n relay.Node) {
	b.local = n
	if b.cfg.watchedUnset {
		b.cfg.Watched = n.Watched
	}
}

var _ relay.Engine = (*Broker)(nil)
