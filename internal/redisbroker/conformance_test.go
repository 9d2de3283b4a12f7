package redisbroker_test

import (
	"testing"
	"time"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relay"
)

// sharedRedis is the Redis every machine runs (.ci/run starts it when it
// is down); destructive tests start their own.
const sharedRedis = "redis://127.0.0.1:6379/0"

// newNode starts a node of the cluster under prefix and waits until it is
// ready.
func newNode(t *testing.T, url, prefix string, n relay.Node, tune func(*redisbroker.Config)) *redisbroker.Broker {
	t.Helper()
	cfg := redisbroker.Config{URL: url, Prefix: prefix, Heartbeat: 200 * time.Millisecond, NodeTTL: 2 * time.Second}
	if tune != nil {
		tune(&cfg)
	}
	b, err := redisbroker.New(cfg, nil)
	if err != nil {
		t.Fatalf("redisbroker.New(%s) = %v", url, err)
	}
	brokertest.Start(t, b, n)
	waitReady(t, b, 5*time.Second)
	return b
}

func waitReady(t *testing.T, b *redisbroker.Broker, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for b.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready within %s: %v", b.NodeID(), within, b.Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConformance(t *testing.T) {
	prefix := "relaytest-" + redisbroker.NewNodeID()
	t.Cleanup(func() { flushPrefix(t, sharedRedis, prefix) })
	brokertest.Run(t, brokertest.Factory{
		Node: func(t *testing.T, n relay.Node) relay.Engine {
			return newNode(t, sharedRedis, prefix, n, nil)
		},
		Crash: func(t *testing.T, e relay.Engine) { redisbroker.Crash(e.(*redisbroker.Broker)) },
	})
}
