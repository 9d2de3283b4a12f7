package natsbroker_test

import (
	"testing"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

func TestConformance(t *testing.T) {
	prefix := newPrefix(t, sharedNATS)
	brokertest.Run(t, brokertest.Factory{
		Node: func(t *testing.T, n relay.Node) relay.Engine {
			return newNode(t, sharedNATS, prefix, n)
		},
		Crash: func(t *testing.T, e relay.Engine) { natsbroker.Crash(e.(*natsbroker.Broker)) },
	})
}
