package memorybroker_test

import (
	"testing"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relay"
)

// TestConformance runs the engine conformance suite against the embedded
// engine: one node, so the cases that need two are skipped.
func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Factory{
		Nodes: 1,
		Node: func(t *testing.T, n relay.Node) relay.Engine {
			return brokertest.Start(t, memorybroker.New(memorybroker.Config{}, nil), n)
		},
	})
}
