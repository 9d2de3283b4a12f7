package natsbroker

import (
	"context"

	"github.com/relayhq/relay/internal/relay"
)

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

// Write writes b's count of user's connections on topic (with info) as
// its presence writer does, outside its bookkeeping: writing the same
// count twice is a retry whose first attempt landed.
func Write(b *Broker, ctx context.Context, topic string, user relay.UserID, count int, info []byte) error {
	r := &b.roster
	r.mu.Lock()
	inc := r.inc
	r.mu.Unlock()
	return r.write(ctx, pkey{topic, user}, count, info, inc)
}

// GoneForSure is what a sweep decides of a member missing from its
// listing of heartbeats, by reading the member's node's heartbeat.
func GoneForSure(b *Broker, ctx context.Context, member string) bool {
	_, inf, err := b.use()
	if err != nil {
		return false
	}
	return b.roster.goneForSure(ctx, inf, member)
}

// MemberName is how b's connections are named in presence entries.
func MemberName(b *Broker) string {
	r := &b.roster
	r.mu.Lock()
	defer r.mu.Unlock()
	return memberName(b.cfg.NodeID, r.inc)
}
