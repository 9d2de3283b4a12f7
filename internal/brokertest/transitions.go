package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// transitionRosters returns the InfoRoster of each of c's nodes, skipping
// the test unless there are two nodes whose Roster is a
// relay.TransitionReporter and a relay.InfoRoster. The nodes' recorders
// get the transitions (Start wires them).
func transitionRosters(t *testing.T, c *cluster) []relay.InfoRoster {
	t.Helper()
	if len(c.nodes) < 2 {
		t.Skip("one node: which node reports a transition is the point")
	}
	for _, n := range c.nodes {
		if n.Roster() == nil {
			t.Skip("Roster() = nil: the hub reports the transitions (a single node)")
		}
		if _, ok := n.Roster().(relay.TransitionReporter); !ok {
			t.Skipf("%s.Roster() = %T, not a relay.TransitionReporter", n.name, n.Roster())
		}
	}
	return infoRosters(t, c)
}

// tr is a transition as a test expects it: joined or left, with info.
type tr struct {
	joined bool
	info   string
}

func joined(info []byte) tr { return tr{true, string(info)} }
func left(info []byte) tr   { return tr{false, string(info)} }

func (x tr) String() string {
	if x.joined {
		return fmt.Sprintf("joined %q", x.info)
	}
	return fmt.Sprintf("left %q", x.info)
}

// reported returns the transitions of user on topic that n's roster
// reported, in order.
func reported(n node, topic string, user relay.UserID) []tr {
	var out []tr
	for _, t := range n.rec.Transitions(topic) {
		if t.User == user {
			out = append(out, tr{t.Joined, string(t.Info)})
		}
	}
	return out
}

// expectTransitions waits up to within until nodes reported, all told, as
// many transitions of user on topic as want holds (want[i] for nodes[i]),
// lets a stray one show (settle), and checks that each node reported its
// want, in order, infos included.
func expectTransitions(t *testing.T, nodes []node, topic string, user relay.UserID, within time.Duration, want ...[]tr) {
	t.Helper()
	if len(want) != len(nodes) {
		t.Fatalf("expectTransitions: %d wants for %d nodes", len(want), len(nodes))
	}
	all := 0
	for _, w := range want {
		all += len(w)
	}
	got := func() (n int, per [][]tr) {
		for _, nd := range nodes {
			r := reported(nd, topic, user)
			per = append(per, r)
			n += len(r)
		}
		return n, per
	}
	var per [][]tr
	if !Eventually(within, func() bool { n, p := got(); per = p; return n >= all }) {
		t.Fatalf("user %d on %q: the nodes reported %v within %v, want %v", user, topic, per, within, want)
	}
	time.Sleep(settle)
	_, per = got()
	for i, nd := range nodes {
		if !slices.Equal(per[i], want[i]) {
			t.Errorf("%s reported %v for user %d on %q, want %v (all nodes: %v)", nd.name, per[i], user, topic, want[i], per)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// none is a node's want of no transition.
var none = []tr(nil)

// testRosterTransitions: the transitions of a user's presence across the
// cluster are reported once, by the node whose change made them, with
// the info the user joined with; changes that leave the user present
// somewhere report nothing.
func testRosterTransitions(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	rs := transitionRosters(t, c)
	a, b := c.a(), c.b()
	ia, ib := rs[0], rs[len(rs)-1]
	topic := newTopic(t)
	for _, n := range c.nodes {
		watch(t, ctx, n, topic)
	}
	nodes := []node{a, b}
	const user = relay.UserID(7)
	first := []byte(`{"user_id":"7","user_info":{"name":"on a"}}`)
	other := []byte(`{"user_id":"7","user_info":{"name":"on b"}}`)

	ia.ChangeInfo(topic, user, +1, first)
	expectTransitions(t, nodes, topic, user, Timeout, []tr{joined(first)}, none)

	// Present elsewhere too, gone from the first node: nothing to report.
	ib.ChangeInfo(topic, user, +1, other)
	expectPresent(t, ctx, nodes, topic, Timeout, relay.Present{User: user, Connections: 2, Info: first})
	expectTransitions(t, nodes, topic, user, 0, []tr{joined(first)}, none)
	a.Roster().Change(topic, user, -1)
	expectPresent(t, ctx, nodes, topic, Timeout, relay.Present{User: user, Connections: 1, Info: first})
	expectTransitions(t, nodes, topic, user, 0, []tr{joined(first)}, none)

	// The last connection anywhere goes: b reports the leave, with the
	// info the user joined with on a.
	b.Roster().Change(topic, user, -1)
	expectTransitions(t, nodes, topic, user, Timeout, []tr{joined(first)}, []tr{left(first)})
	expectPresent(t, ctx, nodes, topic, Timeout)

	// Back, on b, without info: b reports the join, then a's connection
	// adds nothing, and a reports the leave when the last goes there.
	b.Roster().Change(topic, user, +1)
	expectTransitions(t, nodes, topic, user, Timeout, []tr{joined(first)}, []tr{left(first), joined(nil)})
	ia.ChangeInfo(topic, user, +1, first)
	expectPresent(t, ctx, nodes, topic, Timeout, relay.Present{User: user, Connections: 2})
	b.Roster().Change(topic, user, -1)
	expectPresent(t, ctx, nodes, topic, Timeout, relay.Present{User: user, Connections: 1})
	a.Roster().Change(topic, user, -1)
	expectTransitions(t, nodes, topic, user, Timeout, []tr{joined(first), left(nil)}, []tr{left(first), joined(nil)})
	expectPresent(t, ctx, nodes, topic, Timeout)
}

// testRosterTransitionsRace: two nodes whose changes for a user race
// report one join in all, carrying the info of the node that reported
// it, and one leave when both connections go at once; twenty times, with
// a fresh user each time.
func testRosterTransitionsRace(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	rs := transitionRosters(t, c)
	a, b := c.a(), c.b()
	ia, ib := rs[0], rs[len(rs)-1]
	topic := newTopic(t)
	for _, n := range c.nodes {
		watch(t, ctx, n, topic)
	}
	nodes := []node{a, b}
	const rounds, first = 20, relay.UserID(100)
	infoOf := func(n node, u relay.UserID) []byte {
		return fmt.Appendf(nil, `{"user_id":"%d","user_info":{"node":"%s"}}`, u, n.name)
	}
	race := func(fa, fb func()) {
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for _, f := range []func(){fa, fb} {
			wg.Go(func() { <-gate; f() })
		}
		close(gate)
		wg.Wait()
	}
	connections := func(n node, u relay.UserID) int {
		ps, err := n.Roster().Present(ctx, topic)
		if err != nil {
			return -1
		}
		for _, p := range ps {
			if p.User == u {
				return p.Connections
			}
		}
		return 0
	}
	for i := range relay.UserID(rounds) {
		u := first + i
		race(func() { ia.ChangeInfo(topic, u, +1, infoOf(a, u)) }, func() { ib.ChangeInfo(topic, u, +1, infoOf(b, u)) })
		if !Eventually(Timeout, func() bool { return connections(a, u) == 2 && connections(b, u) == 2 }) {
			t.Fatalf("user %d: Present = %d connections on %s, %d on %s after %v; want 2", u, connections(a, u), a.name, connections(b, u), b.name, Timeout)
		}
	}
	time.Sleep(settle)
	winner := make(map[relay.UserID]node)
	wins := map[string]int{}
	for i := range relay.UserID(rounds) {
		u := first + i
		var all []string
		for _, n := range nodes {
			for _, x := range reported(n, topic, u) {
				all = append(all, n.name+" "+x.String())
				if x.joined && x.info == string(infoOf(n, u)) {
					winner[u] = n
				}
			}
		}
		if len(all) != 1 || winner[u].rec == nil {
			t.Errorf("user %d, changed on both nodes at once: reported %v; want one join, with the info of the node reporting it", u, all)
			continue
		}
		wins[winner[u].name]++
	}
	t.Logf("joins reported per node: %v", wins)
	if t.Failed() {
		t.FailNow()
	}

	// Both connections of each user go at once: one leave, with the info
	// of the join.
	for i := range relay.UserID(rounds) {
		u := first + i
		race(func() { a.Roster().Change(topic, u, -1) }, func() { b.Roster().Change(topic, u, -1) })
	}
	expectPresent(t, ctx, nodes, topic, Timeout)
	time.Sleep(settle)
	for i := range relay.UserID(rounds) {
		u := first + i
		var leaves []string
		for _, n := range nodes {
			for _, x := range reported(n, topic, u) {
				if !x.joined {
					leaves = append(leaves, n.name+" "+x.String())
					if x.info != string(infoOf(winner[u], u)) {
						t.Errorf("user %d: %s reported %v, want the info of the join (%q)", u, n.name, x, infoOf(winner[u], u))
					}
				}
			}
		}
		if len(leaves) != 1 {
			t.Errorf("user %d, gone from both nodes at once: reported leaves %v; want one", u, leaves)
		}
	}
}

// testRosterTransitionsUnwatched: a topic no node watches (the Pusher
// layer counts a channel's occupancy on one, user 0) reports its
// transitions just the same: its counts are written without waiting for
// a subscription.
func testRosterTransitionsUnwatched(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	transitionRosters(t, c)
	a, b := c.a(), c.b()
	nodes := []node{a, b}
	topic := newTopic(t)
	const user = relay.UserID(0)

	a.Roster().Change(topic, user, +1)
	expectTransitions(t, nodes, topic, user, Timeout, []tr{joined(nil)}, none)
	b.Roster().Change(topic, user, +1)
	a.Roster().Change(topic, user, +1)
	expectPresent(t, ctx, nodes, topic, Timeout, relay.Present{User: user, Connections: 3})
	a.Roster().Change(topic, user, -2)
	expectPresent(t, ctx, nodes, topic, Timeout, relay.Present{User: user, Connections: 1})
	expectTransitions(t, nodes, topic, user, 0, []tr{joined(nil)}, none)
	b.Roster().Change(topic, user, -1)
	expectTransitions(t, nodes, topic, user, Timeout, []tr{joined(nil)}, []tr{left(nil)})
	expectPresent(t, ctx, nodes, topic, Timeout)
}

// testRosterTransitionsCrash: when a node dies without a goodbye, the
// survivor that removes its presence reports the leave of each user whose
// last connection was there, with the info it joined with, once; users
// present elsewhere too report nothing.
func testRosterTransitionsCrash(t *testing.T, f Factory) {
	if f.Crash == nil {
		t.Skip("Factory.Crash = nil: the engine's nodes cannot be crashed here")
	}
	c, ctx := start(t, f, 2), testCtx(t)
	rs := transitionRosters(t, c)
	a, b := c.a(), c.b()
	ia, ib := rs[0], rs[1]
	nodes := []node{a, b}
	topic := newTopic(t)
	for _, n := range c.nodes {
		watch(t, ctx, n, topic)
	}
	const gone, stays = relay.UserID(9), relay.UserID(10)
	goneInfo := []byte(`{"user_id":"9","user_info":{"name":"on b only"}}`)
	staysInfo := []byte(`{"user_id":"10","user_info":{"name":"on b, then a"}}`)

	ib.ChangeInfo(topic, gone, +1, goneInfo)
	ib.ChangeInfo(topic, stays, +1, staysInfo)
	expectTransitions(t, nodes, topic, stays, Timeout, none, []tr{joined(staysInfo)})
	ia.ChangeInfo(topic, stays, +1, []byte(`{"user_id":"10"}`))
	expectPresent(t, ctx, nodes, topic, Timeout,
		relay.Present{User: gone, Connections: 1, Info: goneInfo},
		relay.Present{User: stays, Connections: 2, Info: staysInfo})
	expectTransitions(t, nodes, topic, gone, 0, none, []tr{joined(goneInfo)})
	expectTransitions(t, nodes, topic, stays, 0, none, []tr{joined(staysInfo)})

	start := time.Now()
	f.Crash(t, b.Engine)
	expectTransitions(t, nodes, topic, gone, CrashTimeout, []tr{left(goneInfo)}, []tr{joined(goneInfo)})
	t.Logf("the survivor reported the dead node's member gone after %v", time.Since(start).Round(10*time.Millisecond))
	survivors := nodes[:1]
	expectPresent(t, ctx, survivors, topic, Timeout, relay.Present{User: stays, Connections: 1, Info: staysInfo})
	expectTransitions(t, nodes, topic, stays, 0, none, []tr{joined(staysInfo)})

	a.Roster().Change(topic, stays, -1)
	expectTransitions(t, nodes, topic, stays, Timeout, []tr{left(staysInfo)}, []tr{joined(staysInfo)})
	expectPresent(t, ctx, survivors, topic, Timeout)
}
