package natsbroker_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/relay"
)

// BenchmarkPublish publishes to one topic from one goroutine: one
// compare-and-set round trip per message.
func BenchmarkPublish(b *testing.B) {
	prefix := newPrefixB(b)
	rec := brokertest.NewRecorder()
	n := newNodeB(b, prefix, rec)
	topic := newTopic("bench")
	data := make([]byte, 100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.Publish(b.Context(), &relay.Message{Topic: topic, Data: data}, relay.PublishOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishTopics publishes from many goroutines to 64 topics.
func BenchmarkPublishTopics(b *testing.B) {
	prefix := newPrefixB(b)
	rec := brokertest.NewRecorder()
	n := newNodeB(b, prefix, rec)
	base := newTopic("bench")
	data := make([]byte, 100)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		topic := fmt.Sprintf("%s-%d", base, next.Add(1)%64)
		for pb.Next() {
			if _, err := n.Publish(b.Context(), &relay.Message{Topic: topic, Data: data}, relay.PublishOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
