package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/server"
)

// engine builds the engine -broker names; nil is the embedded memory
// engine, which the server builds from sc.Memory itself.
func (c *serveConfig) engine(sc server.Config, log *slog.Logger) (relay.Engine, error) {
	switch {
	case c.Broker == "memory":
		return nil, nil
	case strings.HasPrefix(c.Broker, "redis://"), strings.HasPrefix(c.Broker, "rediss://"):
		b, err := redisbroker.New(redisbroker.Config{
			URL:               c.Broker,
			NodeID:            sc.NodeID,
			History:           c.History,
			IdempotencyWindow: c.IdempotencyTTL,
			ReconnectGrace:    sc.Hub.ReconnectGrace,
		}, log)
		if err != nil {
			return nil, fmt.Errorf("-broker / RELAY_BROKER: %v", err)
		}
		return b, nil
	case strings.HasPrefix(c.Broker, "nats://"):
		b, err := natsbroker.New(natsbroker.Config{
			URL:               c.Broker,
			NodeID:            sc.NodeID,
			History:           c.History,
			HistoryBytes:      int64(c.HistoryBudget), // per history stream: one per -history rule
			IdempotencyWindow: c.IdempotencyTTL,
			ReconnectGrace:    sc.Hub.ReconnectGrace,
		}, log)
		if err != nil {
			return nil, fmt.Errorf("-broker / RELAY_BROKER: %v", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("-broker / RELAY_BROKER %q: want memory, redis://, rediss:// or nats://", redisbroker.Redact(c.Broker))
}
