package redisbroker

import (
	"context"
	"errors"

	"github.com/relayhq/relay/internal/relay"
)

// Crash closes b's connections to Redis as a dying process would: no
// goodbye, no more heartbeats, nothing more delivered; the other nodes
// remove its presence once its heartbeat is older than the node TTL. Run
// still has to be cancelled (its goodbye then fails).
func Crash(b *Broker) { b.client.Close() }

// TopicsLimit is Topics with another bound than MaxTopics.
func TopicsLimit(b *Broker, ctx context.Context, prefix string, limit int) ([]string, error) {
	return b.roster.topics(ctx, prefix, limit)
}

// Reassert has b write its whole share of presence again, as it does when
// it finds itself removed from the nodes.
func Reassert(b *Broker) { b.roster.reassert() }

// Write writes b's count of user's connections on topic (with info) as
// its presence writer does, outside its bookkeeping: writing the same
// count twice is a retry whose first attempt landed.
func Write(b *Broker, ctx context.Context, topic string, user relay.UserID, count int, info string) error {
	if failed := b.roster.apply(ctx, map[presenceKey]write{{topic, user}: {count: count, info: info}}); len(failed) > 0 {
		return errors.New("the presence write failed")
	}
	return nil
}

// RemoveNode removes node's share of presence from b, as b does for a node
// that stopped sending heartbeats.
func RemoveNode(b *Broker, ctx context.Context, node string) error {
	return b.cleanup(ctx, node, true)
}
