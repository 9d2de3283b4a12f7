package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// testFanout: once a node watches a topic and Sync returned, every
// publish on it reaches the node once, in offset order.
func testFanout(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	topic := newTopic(t)
	watch(t, ctx, b, topic)
	var epoch string
	for i := 1; i <= 3; i++ {
		r := c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: fmt.Appendf(nil, "m%d", i)}, "")
		epoch = r.Epoch
	}
	b.rec.WaitMessages(t, topic, 3)
	wait(c)
	got := b.rec.Messages(topic)
	if !slices.Equal(offsets(got), []uint64{1, 2, 3}) {
		t.Fatalf("%s received offsets %v, want [1 2 3]", b.name, offsets(got))
	}
	for _, m := range got {
		if m.Topic != topic || m.Epoch != epoch || m.Kind != relay.KindPublish || m.HasUser || string(m.Data) != fmt.Sprintf("m%d", m.Offset) {
			t.Errorf("%s received %+v, want topic %q, epoch %s, data m%d", b.name, m, topic, epoch, m.Offset)
		}
	}
	if n := b.rec.Overlaps(); n != 0 {
		t.Errorf("%s.Overlaps() = %d, want 0 (Fanout calls for one topic must not overlap)", b.name, n)
	}
}

// testConcurrentFanout: 200 publishes from 4 goroutines on every node get
// the offsets 1..200 and reach every watching node once each, in order.
func testConcurrentFanout(t *testing.T, f Factory) {
	const writers, each = 4, 50
	const total = writers * each
	c, ctx := start(t, f, 2), testCtx(t)
	topic := newTopic(t)
	for _, n := range c.nodes {
		watch(t, ctx, n, topic)
	}
	receipts := make([]relay.Receipt, total)
	sent := make([]string, total)
	var wg sync.WaitGroup
	for w := range writers {
		n := c.nodes[w%len(c.nodes)]
		wg.Go(func() {
			for i := range each {
				k := w*each + i
				sent[k] = fmt.Sprintf("w%d-%d", w, i)
				m := &relay.Message{Topic: topic, Data: []byte(sent[k])}
				r, err := n.Publish(ctx, m, relay.PublishOptions{})
				if err != nil {
					t.Errorf("%s.Publish(%q, %q) = %v, want nil", n.name, topic, sent[k], err)
					return
				}
				if err := c.checkReceipt(n, m, r); err != nil {
					t.Error(err)
				}
				receipts[k] = r
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// The receipts hold each offset of 1..total once, in one epoch.
	byOffset := make(map[uint64]string, total)
	epoch := receipts[0].Epoch
	for k, r := range receipts {
		if prev, dup := byOffset[r.Offset]; dup {
			t.Fatalf("Publish(%q) gave offset %d to both %q and %q, want each offset once", topic, r.Offset, prev, sent[k])
		}
		byOffset[r.Offset] = sent[k]
		if r.Epoch != epoch {
			t.Fatalf("Publish(%q, %q).Epoch = %s, want %s like the others", topic, sent[k], r.Epoch, epoch)
		}
	}
	for o := uint64(1); o <= total; o++ {
		if _, ok := byOffset[o]; !ok {
			t.Fatalf("Publish(%q) ×%d gave no message offset %d, want offsets 1..%d", topic, total, o, total)
		}
	}
	for _, n := range c.nodes {
		n.rec.WaitMessages(t, topic, total)
	}
	wait(c)
	for _, n := range c.nodes {
		got := n.rec.Messages(topic)
		if !slices.Equal(offsets(got), span(1, total)) {
			t.Errorf("%s received %d messages at offsets %v, want 1..%d once each, in order", n.name, len(got), offsets(got), total)
			continue
		}
		for _, m := range got {
			if string(m.Data) != byOffset[m.Offset] || m.Epoch != epoch {
				t.Errorf("%s received offset %d as %q in epoch %s, want %q in %s", n.name, m.Offset, m.Data, m.Epoch, byOffset[m.Offset], epoch)
				break
			}
		}
		if o := n.rec.Overlaps(); o != 0 {
			t.Errorf("%s.Overlaps() = %d, want 0 (Fanout calls for one topic must not overlap)", n.name, o)
		}
	}
}

// testUnwatch: a node that unwatched a topic receives none of its
// publishes, and receives them again once it watches it again.
func testUnwatch(t *testing.T, f Factory) {
	if f.Nodes == 1 {
		t.Skip("a single-node engine hands every publish to its node whatever it watches; the hub filters")
	}
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	topic := newTopic(t)
	watch(t, ctx, b, topic)
	c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("watched")}, "")
	b.rec.WaitMessages(t, topic, 1)

	b.rec.SetWatched(topic, false)
	b.Unwatch(topic)
	c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("unwatched")}, "")
	time.Sleep(settle)
	if got := b.rec.Messages(topic); len(got) != 1 {
		t.Fatalf("%s received offsets %v after Unwatch(%q) and a publish, want only [1]", b.name, offsets(got), topic)
	}

	watch(t, ctx, b, topic)
	c.publish(t, ctx, a, &relay.Message{Topic: topic, Data: []byte("watched again")}, "")
	b.rec.WaitMessages(t, topic, 2)
	time.Sleep(settle)
	if got := b.rec.Messages(topic); !slices.Equal(offsets(got), []uint64{1, 3}) {
		t.Errorf("%s received offsets %v after watching %q again, want [1 3]", b.name, offsets(got), topic)
	}
}

// testReady: a healthy engine is ready.
func testReady(t *testing.T, f Factory) {
	c := start(t, f, 2)
	for _, n := range c.nodes {
		if err := n.Ready(); err != nil {
			t.Errorf("%s.Ready() = %v, want nil", n.name, err)
		}
	}
}
