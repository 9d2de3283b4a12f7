package brokertest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// topicListers returns the TopicLister of each of c's nodes, skipping the
// test unless the engine's Roster is one.
func topicListers(t *testing.T, c *cluster) []relay.TopicLister {
	t.Helper()
	out := make([]relay.TopicLister, 0, len(c.nodes))
	for _, n := range c.nodes {
		if n.Roster() == nil {
			t.Skip("Roster() = nil: the hub's own index lists the topics (a single node)")
		}
		l, ok := n.Roster().(relay.TopicLister)
		if !ok {
			t.Skipf("%s.Roster() = %T, not a relay.TopicLister: the hub lists only its own node's topics", n.name, n.Roster())
		}
		out = append(out, l)
	}
	return out
}

// expectTopics waits up to within until Topics(prefix) on every one of
// nodes returns want, in order.
func expectTopics(t *testing.T, ctx context.Context, nodes []node, prefix string, within time.Duration, want ...string) {
	t.Helper()
	for _, n := range nodes {
		l := n.Roster().(relay.TopicLister)
		var got []string
		var err error
		if !Eventually(within, func() bool {
			got, err = l.Topics(ctx, prefix)
			return err == nil && slices.Equal(got, want)
		}) {
			t.Fatalf("%s.Topics(%q) = %q, %v after %v; want %q, nil", n.name, prefix, got, err, within, want)
		}
	}
}

// sorted returns a sorted copy of topics.
func sorted(topics ...string) []string {
	out := slices.Clone(topics)
	slices.Sort(out)
	return out
}

// testRosterTopics: a topic with a connection on any node is listed by
// every node, in byte order, whatever user (0 included) holds it and
// until the last connection anywhere leaves; topics without the prefix
// are not, and the prefix is matched byte for byte: '*', '[', '?' and
// '\' are no patterns.
func testRosterTopics(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	topicListers(t, c)
	a, b := c.a(), c.b()
	base := newTopic(t) + "/"
	t1, t2 := base+"room-1", base+"room-2"
	other := newTopic(t) + "/room-1"
	watch(t, ctx, a, t1)
	watch(t, ctx, a, other)
	watch(t, ctx, b, t1)
	watch(t, ctx, b, t2)

	a.Roster().Change(t1, 0, +1)
	b.Roster().Change(t2, 5, +1)
	a.Roster().Change(other, 0, +1)
	expectTopics(t, ctx, c.nodes, base, Timeout, t1, t2)
	expectTopics(t, ctx, c.nodes, t1, Timeout, t1) // a whole name is a prefix too
	expectTopics(t, ctx, c.nodes, base+"room-3", Timeout)

	// A second user on t1, on both nodes, comes and goes: t1 stays. The
	// last connection on t2 goes: t2 is not listed. Once Present shows
	// it all, Topics must too, at once.
	b.Roster().Change(t1, 7, +1)
	a.Roster().Change(t1, 7, +1)
	expectPresent(t, ctx, c.nodes, t1, Timeout, relay.Present{User: 0, Connections: 1}, relay.Present{User: 7, Connections: 2})
	b.Roster().Change(t1, 7, -1)
	a.Roster().Change(t1, 7, -1)
	b.Roster().Change(t2, 5, -1)
	expectPresent(t, ctx, c.nodes, t1, Timeout, relay.Present{User: 0, Connections: 1})
	expectPresent(t, ctx, c.nodes, t2, Timeout)
	expectTopics(t, ctx, c.nodes, base, 0, t1)
	time.Sleep(settle)
	expectTopics(t, ctx, c.nodes, base, 0, t1)

	// Pattern characters are matched literally. As a glob, the prefix
	// base*[?x]\/ ('*' any run, '[?x]' one of '?' and 'x', '\/' a '/')
	// would match the first two decoys; the third lacks the '\'.
	glob := base + `*[?x]\/`
	tg := glob + "g"
	decoys := []string{base + "ab?/g", base + "x/g", base + "*[?x]/g"}
	watch(t, ctx, b, tg)
	b.Roster().Change(tg, 3, +1)
	for _, d := range decoys {
		watch(t, ctx, a, d)
		a.Roster().Change(d, 3, +1)
	}
	expectTopics(t, ctx, c.nodes, base, Timeout, sorted(append([]string{t1, tg}, decoys...)...)...)
	expectTopics(t, ctx, c.nodes, glob, Timeout, tg)
	expectTopics(t, ctx, c.nodes, base+"*[", Timeout, sorted(tg, decoys[2])...) // an unclosed '['
	expectTopics(t, ctx, c.nodes, base+"x", Timeout, decoys[1])
	expectTopics(t, ctx, c.nodes, base+"?", Timeout)
	expectTopics(t, ctx, c.nodes, base+"[", Timeout)
	expectTopics(t, ctx, c.nodes, base+"\\", Timeout)

	// Everyone leaves: nothing is listed.
	a.Roster().Change(t1, 0, -1)
	b.Roster().Change(tg, 3, -1)
	for _, d := range decoys {
		a.Roster().Change(d, 3, -1)
	}
	expectTopics(t, ctx, c.nodes, base, Timeout)
	expectTopics(t, ctx, c.nodes, other, Timeout, other)
	a.Roster().Change(other, 0, -1)
	expectTopics(t, ctx, c.nodes, other, Timeout)
}

// testRosterTopicsCrash: the topics whose only connections were on a node
// that died without a goodbye leave the list once the survivors removed
// its presence; those with connections on a survivor stay.
func testRosterTopicsCrash(t *testing.T, f Factory) {
	if f.Crash == nil {
		t.Skip("Factory.Crash = nil: the engine's nodes cannot be crashed here")
	}
	c, ctx := start(t, f, 2), testCtx(t)
	if len(c.nodes) < 2 {
		t.Skip("one node: nobody survives a crash")
	}
	topicListers(t, c)
	a, b := c.a(), c.b()
	base := newTopic(t) + "/"
	onA, onB, onBoth := base+"a", base+"b", base+"both"
	watch(t, ctx, a, onA)
	watch(t, ctx, a, onBoth)
	watch(t, ctx, b, onB)
	watch(t, ctx, b, onBoth)

	a.Roster().Change(onA, 1, +1)
	b.Roster().Change(onB, 2, +1)
	b.Roster().Change(onBoth, 3, +1)
	a.Roster().Change(onBoth, 4, +1)
	expectTopics(t, ctx, c.nodes, base, Timeout, onA, onB, onBoth)

	start := time.Now()
	f.Crash(t, b.Engine)
	survivors := c.nodes[:1]
	expectTopics(t, ctx, survivors, base, CrashTimeout, onA, onBoth)
	t.Logf("the dead node's topics went after %v", time.Since(start).Round(10*time.Millisecond))

	a.Roster().Change(onBoth, 4, -1)
	expectTopics(t, ctx, survivors, base, Timeout, onA)
	a.Roster().Change(onA, 1, -1)
	expectTopics(t, ctx, survivors, base, Timeout)
}
