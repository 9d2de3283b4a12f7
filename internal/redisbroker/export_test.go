package redisbroker

import "context"

// Crash closes b's connections to Redis as a dying process would: no
// goodbye, no more heartbeats, nothing more delivered; the other nodes
// remove its presence once its heartbeat is older than the node TTL. Run
// still has to be cancelled (its goodbye then fails).
func Crash(b *Broker) { b.client.Close() }

// TopicsLimit is Topics with another bound than MaxTopics.
func TopicsLimit(b *Broker, ctx context.Context, prefix string, limit int) ([]string, error) {
	return b.roster.topics(ctx, prefix, limit)
}
