package relaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/server"
)

// SharedRedis and SharedNATS are the services every machine runs (.ci/run
// starts them when they are down). Tests that stop, restart or pause them
// start their own (StartRedis, StartNATS).
const (
	SharedRedis = "redis://127.0.0.1:6379/0"
	SharedNATS  = "nats://127.0.0.1:4222"
)

// Engines are the networked engines, by the URL of their shared service:
// cluster tests run once on each.
var Engines = map[string]string{"redis": SharedRedis, "nats": SharedNATS}

// Prefix returns a key prefix unique to one test, so clusters of
// different tests sharing a Redis never see each other.
func Prefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "relaytest-" + hex.EncodeToString(b[:])
}

// Node starts a node of the cluster on the engine at url (redis:// or
// nats://) under prefix, with cfg's other settings (cfg.Memory.History as
// the engine's history rules), and waits until it is ready. Heartbeats are
// fast so that faults show in tests within a second or two.
func Node(t testing.TB, url, prefix string, cfg server.Config) *Instance {
	t.Helper()
	id := redisbroker.NewNodeID()
	var err error
	if strings.HasPrefix(url, "nats://") {
		cfg.Engine, err = natsbroker.New(natsbroker.Config{
			URL: url, Prefix: strings.ReplaceAll(prefix, "-", "_"), NodeID: id,
			Heartbeat: 250 * time.Millisecond, NodeTTL: 2 * time.Second, CheckInterval: 250 * time.Millisecond,
			ReconnectGrace: cfg.Hub.ReconnectGrace, History: cfg.Memory.History,
		}, nil)
	} else {
		cfg.Engine, err = redisbroker.New(redisbroker.Config{
			URL: url, Prefix: prefix, NodeID: id,
			Heartbeat: 250 * time.Millisecond, NodeTTL: 2 * time.Second,
			ReconnectGrace: cfg.Hub.ReconnectGrace, History: cfg.Memory.History,
		}, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.NodeID = id
	in := Start(t, cfg)
	Eventually(t, "node "+id+" ready", func() bool { return cfg.Engine.Ready() == nil })
	return in
}

// Cluster starts n nodes sharing the engine at url under a fresh prefix.
func Cluster(t testing.TB, n int, url string, cfg server.Config) []*Instance {
	t.Helper()
	prefix := Prefix()
	if strings.HasPrefix(url, "nats://") {
		t.Cleanup(func() { dropNATS(t, url, strings.ReplaceAll(prefix, "-", "_")) })
	}
	nodes := make([]*Instance, n)
	for i := range nodes {
		nodes[i] = Node(t, url, prefix, cfg)
	}
	return nodes
}

// dropNATS deletes the streams and key-value buckets a cluster made under
// prefix, so tests leave the shared NATS as they found it.
func dropNATS(t testing.TB, url, prefix string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Logf("cleaning up %s: %v", prefix, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	var drop []string
	for name := range names.Name() {
		if strings.HasPrefix(name, prefix) || strings.HasPrefix(name, "KV_"+prefix) {
			drop = append(drop, name)
		}
	}
	for _, name := range drop {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Logf("deleting stream %s: %v", name, err)
		}
	}
}
