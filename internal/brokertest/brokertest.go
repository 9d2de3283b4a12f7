// Package brokertest is the conformance suite every Relay engine must pass:
// the embedded memory engine, and the networked engines (Redis, NATS) run
// against their real servers. Each engine's tests call Run with a Factory
// that starts nodes sharing one backend; the suite drives them through the
// relay.Engine contract and records what reaches each node with a
// Recorder, a fake relay.Node.
//
// Every case uses topics and registration ids unique to the run, so engines
// that share a real server across runs do not see each other's data, and
// every wait is bounded (Timeout, KickTimeout). The cases run one after
// another; each starts its own nodes and stops them when it ends.
package brokertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// Factory starts engines that share one backend (one cluster).
type Factory struct {
	// Nodes is how many nodes can share the backend: 1 for a single-node
	// engine such as memory, 0 for no limit. With one node the suite
	// plays every node's part on that one and skips the cases that need
	// two.
	Nodes int
	// Node returns a new node's engine, already bound to n and running
	// (Run in a goroutine that a t.Cleanup stops and waits for), its
	// roster reporting transitions to n if it is a
	// relay.TransitionReporter and n has a Transition method (a
	// Recorder); Start does that for an engine.
	Node func(t *testing.T, n relay.Node) relay.Engine
	// Crash, when set, makes e (a node Node returned) die as a killed
	// process would: no goodbye, no more heartbeats, nothing more
	// delivered to its node. The other nodes must then remove its
	// presence within CrashTimeout. Its Run is still stopped when the
	// test ends. Without it the cases that crash a node are skipped.
	Crash func(t *testing.T, e relay.Engine)
}

// Run runs the conformance suite against the engines f starts, one
// subtest per part of the contract.
func Run(t *testing.T, f Factory) {
	if f.Node == nil || f.Nodes < 0 {
		t.Fatalf("brokertest.Run(Factory{Nodes: %d, Node: %p}): want Nodes >= 0 and a Node func", f.Nodes, f.Node)
	}
	cases := []struct {
		name string
		run  func(*testing.T, Factory)
	}{
		{"Offsets", testOffsets},
		{"FreshTopic", testFreshTopic},
		{"HistoryPaging", testHistoryPaging},
		{"Idempotency", testIdempotency},
		{"UserMessage", testUserMessage},
		{"Transient", testTransient},
		{"Fanout", testFanout},
		{"ConcurrentFanout", testConcurrentFanout},
		{"Unwatch", testUnwatch},
		{"Ready", testReady},
		{"Registry", testRegistry},
		{"RegistryExpiry", testRegistryExpiry},
		{"Roster", testRoster},
		{"RosterInfo", testRosterInfo},
		{"RosterInfoCrash", testRosterInfoCrash},
		{"RosterTopics", testRosterTopics},
		{"RosterTopicsCrash", testRosterTopicsCrash},
		{"RosterTransitions", testRosterTransitions},
		{"RosterTransitionsRace", testRosterTransitionsRace},
		{"RosterTransitionsUnwatched", testRosterTransitionsUnwatched},
		{"RosterTransitionsCrash", testRosterTransitionsCrash},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, f) })
	}
}

// Start binds e to n, has its roster report transitions to n when it
// is a relay.TransitionReporter and n takes them (a Recorder does), runs
// it until the test ends and returns it: the usual body of a Factory's
// Node. Run must return nil once its context is cancelled.
func Start(t *testing.T, e relay.Engine, n relay.Node) relay.Engine {
	t.Helper()
	e.Bind(n)
	if r, ok := e.Roster().(relay.TransitionReporter); ok {
		if s, ok := n.(interface{ Transition(relay.Transition) }); ok {
			r.ReportTransitions(s.Transition)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Engine.Run() = %v, want nil after cancel", err)
			}
		case <-time.After(Timeout):
			t.Errorf("Engine.Run() still running %v after cancel, want it to return", Timeout)
		}
	})
	return e
}

// settle is how long the suite waits after the last expected delivery
// before counting, so that a duplicate or a stray delivery has time to
// show.
const settle = 300 * time.Millisecond

// node is one engine of the cluster and what reached it.
type node struct {
	name string
	relay.Engine
	rec *Recorder
}

// cluster is the nodes one case runs on.
type cluster struct {
	single bool // the engine is one node: it delivers every publish to it, at once
	nodes  []node
}

// start starts want nodes, or as many as f allows.
func start(t *testing.T, f Factory, want int) *cluster {
	t.Helper()
	n := want
	if f.Nodes > 0 && n > f.Nodes {
		n = f.Nodes
	}
	c := &cluster{single: f.Nodes == 1}
	for i := range n {
		rec := NewRecorder()
		rec.Reach = 3 + i // distinct per node, so a Receipt shows whose Fanout it counted
		e := f.Node(t, rec)
		if e == nil {
			t.Fatalf("Factory.Node(%d) = nil, want an engine", i)
		}
		c.nodes = append(c.nodes, node{name: string(rune('A' + i)), Engine: e, rec: rec})
	}
	return c
}

// a and b are the first and the last node: two nodes when the engine
// allows, else the same one.
func (c *cluster) a() node { return c.nodes[0] }
func (c *cluster) b() node { return c.nodes[len(c.nodes)-1] }

// testCtx returns a context for the engine calls of a test, bounded so that a
// call that hangs fails the test rather than the whole run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newTopic returns a topic name no other test or run uses: the test's
// name, made safe for any engine's channel names, and random letters.
func newTopic(t *testing.T) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, t.Name())
	return "brokertest_" + name + "_" + strings.ToLower(rand.Text()[:12])
}

// newID returns a fresh registration id.
func newID() relay.ClientID { return relay.ClientID(rand.Text()) }

// watch marks topic as having subscribers on n, the way the hub does when
// a topic gains its first local subscriber, and waits for the engine's
// subscription.
func watch(t *testing.T, ctx context.Context, n node, topic string) {
	t.Helper()
	n.rec.SetWatched(topic, true)
	n.Watch(topic)
	if err := n.Sync(ctx, topic); err != nil {
		t.Fatalf("%s.Sync(%q) = %v, want nil", n.name, topic, err)
	}
}

// publish publishes m on n and checks what every receipt must show.
func (c *cluster) publish(t *testing.T, ctx context.Context, n node, m *relay.Message, key string) relay.Receipt {
	t.Helper()
	r, err := n.Publish(ctx, m, relay.PublishOptions{IdempotencyKey: key})
	if err != nil {
		t.Fatalf("%s.Publish(%q, %q) = %v, want nil", n.name, m.Topic, m.Data, err)
	}
	if err := c.checkReceipt(n, m, r); err != nil {
		t.Error(err)
	}
	return r
}

// checkReceipt checks what every receipt of a publish on n must show. A
// single-node engine delivers to its node before Publish returns, so
// Delivered is what the node's Fanout returned; a networked engine may
// deliver to its own node later, so Delivered is that or 0.
func (c *cluster) checkReceipt(n node, m *relay.Message, r relay.Receipt) error {
	// A duplicate answers the first publish's receipt, which another
	// node may have made.
	anyNode := r.Duplicate && !c.single
	switch {
	case c.single && r.Delivered != n.rec.Reach:
		return fmt.Errorf("%s.Publish(%q, %q).Delivered = %d, want %d (what Fanout returned)", n.name, m.Topic, m.Data, r.Delivered, n.rec.Reach)
	case !c.single && !anyNode && r.Delivered != 0 && r.Delivered != n.rec.Reach:
		return fmt.Errorf("%s.Publish(%q, %q).Delivered = %d, want 0 or %d (what this node's Fanout returned)", n.name, m.Topic, m.Data, r.Delivered, n.rec.Reach)
	case m.HasUser && r.Position != (relay.Position{}):
		return fmt.Errorf("%s.Publish(%q for user %d).Position = %+v, want zero", n.name, m.Topic, m.User, r.Position)
	case !m.HasUser && (r.Offset == 0 || r.Epoch == ""):
		return fmt.Errorf("%s.Publish(%q, %q).Position = %+v, want an offset and an epoch", n.name, m.Topic, m.Data, r.Position)
	case !r.Duplicate && (m.Offset != r.Offset || m.Epoch != r.Epoch):
		return fmt.Errorf("%s.Publish(%q, %q) set the message's position to {%d %s}, want the receipt's %+v", n.name, m.Topic, m.Data, m.Offset, m.Epoch, r.Position)
	}
	return nil
}

// history reads topic on n, failing the test on an error.
func history(t *testing.T, ctx context.Context, n node, topic string, since uint64, limit int) relay.HistoryPage {
	t.Helper()
	p, err := n.History(ctx, topic, since, limit)
	if err != nil {
		t.Fatalf("%s.History(%q, %d, %d) = %v, want nil", n.name, topic, since, limit, err)
	}
	return p
}

// offsets returns the offsets of msgs, in order.
func offsets(msgs []relay.Message) runs {
	o := make(runs, 0, len(msgs))
	for _, m := range msgs {
		o = append(o, m.Offset)
	}
	return o
}

// pageOffsets returns the offsets of p's messages, in order.
func pageOffsets(p relay.HistoryPage) runs {
	o := make(runs, 0, len(p.Messages))
	for _, m := range p.Messages {
		o = append(o, m.Offset)
	}
	return o
}

// runs formats offsets compactly, each contiguous run as first..last:
// "[21..120]", "[1 1..2 2]".
type runs []uint64

func (o runs) String() string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < len(o); {
		j := i
		for j+1 < len(o) && o[j+1] == o[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		if j-i >= 2 {
			fmt.Fprintf(&b, "%d..%d", o[i], o[j])
		} else {
			for k := i; k <= j; k++ {
				if k > i {
					b.WriteByte(' ')
				}
				fmt.Fprint(&b, o[k])
			}
		}
		i = j + 1
	}
	b.WriteByte(']')
	return b.String()
}

// span returns the offsets from first to last.
func span(first, last uint64) runs {
	o := make(runs, 0, max(int(last)-int(first)+1, 0))
	for i := first; i <= last; i++ {
		o = append(o, i)
	}
	return o
}
