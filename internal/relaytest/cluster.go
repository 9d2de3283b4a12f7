package relaytest

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/server"
)

// SharedRedis is the Redis every machine runs (.ci/run starts it when it
// is down). Tests that stop or pause Redis start their own (see Redis).
const SharedRedis = "redis://127.0.0.1:6379/0"

// Prefix returns a key prefix unique to one test, so clusters of
// different tests sharing a Redis never see each other.
func Prefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "relaytest-" + hex.EncodeToString(b[:])
}

// RedisNode starts a node of the cluster on url under prefix, with cfg's
// other settings (cfg.Memory.History as the engine's history rules), and
// waits until it is ready. Heartbeats are fast so
// that faults show in tests within a second or two.
func RedisNode(t testing.TB, url, prefix string, cfg server.Config) *Instance {
	t.Helper()
	b, err := redisbroker.New(redisbroker.Config{
		URL: url, Prefix: prefix, NodeID: redisbroker.NewNodeID(),
		Heartbeat: 250 * time.Millisecond, NodeTTL: 2 * time.Second,
		ReconnectGrace: cfg.Hub.ReconnectGrace, History: cfg.Memory.History,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Engine = b
	cfg.NodeID = b.NodeID()
	in := Start(t, cfg)
	Eventually(t, "node "+b.NodeID()+" ready", func() bool { return b.Ready() == nil })
	return in
}

// RedisCluster starts n nodes sharing url under a fresh prefix.
func RedisCluster(t testing.TB, n int, url string, cfg server.Config) []*Instance {
	t.Helper()
	prefix := Prefix()
	nodes := make([]*Instance, n)
	for i := range nodes {
		nodes[i] = RedisNode(t, url, prefix, cfg)
	}
	return nodes
}
