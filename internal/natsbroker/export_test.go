package natsbroker

import "context"

// Crash closes b's connection to NATS as a dying process would: no
// goodbye, no more heartbeats. Run still has to be cancelled.
func Crash(b *Broker) {
	if c := b.conn.Load(); c != nil {
		c.nc.Close()
	}
}

// b64 is token, for tests that look at the buckets.
var B64 = token

// Reconnect drops b's connection to NATS; the client reconnects at once.
func Reconnect(b *Broker) error {
	return b.conn.Load().nc.ForceReconnect()
}

// TopicsLimit is Topics with another bound than MaxTopics.
func TopicsLimit(b *Broker, ctx context.Context, prefix string, limit int) ([]string, error) {
	return b.roster.topics(ctx, prefix, limit)
}
