package brokertest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// CrashTimeout bounds how long the surviving nodes may take to remove the
// presence of a node that crashed (Factory.Crash) and announce its
// leaves: the engine's node TTL as the Factory configures it, plus its
// heartbeat and sweep, with room for a loaded machine.
const CrashTimeout = 20 * time.Second

// infoRosters returns the InfoRoster of each of c's nodes, skipping the
// test unless the engine's Roster is one.
func infoRosters(t *testing.T, c *cluster) []relay.InfoRoster {
	t.Helper()
	out := make([]relay.InfoRoster, 0, len(c.nodes))
	for _, n := range c.nodes {
		r, ok := n.Roster().(relay.InfoRoster)
		if !ok {
			t.Skipf("%s.Roster() = %T, not a relay.InfoRoster: the engine keeps no member info", n.name, n.Roster())
		}
		out = append(out, r)
	}
	return out
}

// event is a join or leave as a node was told of it.
type event struct {
	kind relay.Kind
	data string
}

func join(info []byte) event  { return event{relay.KindJoin, string(info)} }
func leave(info []byte) event { return event{relay.KindLeave, string(info)} }

func (e event) String() string {
	name := "join"
	if e.kind == relay.KindLeave {
		name = "leave"
	} else if e.kind != relay.KindJoin {
		name = fmt.Sprintf("kind %d", e.kind)
	}
	return fmt.Sprintf("%s %q", name, e.data)
}

// events returns the joins and leaves of user on topic that r was told
// of, in order.
func events(r *Recorder, topic string, user relay.UserID) []event {
	var out []event
	for _, m := range r.Messages(topic) {
		if (m.Kind == relay.KindJoin || m.Kind == relay.KindLeave) && m.User == user {
			out = append(out, event{m.Kind, string(m.Data)})
		}
	}
	return out
}

// expectEvents waits up to within until every one of nodes was told of as
// many joins and leaves of user on topic as want holds, lets a stray one
// show (settle), and checks that they are want, in order, data included.
func expectEvents(t *testing.T, nodes []node, topic string, user relay.UserID, within time.Duration, want ...event) {
	t.Helper()
	for _, n := range nodes {
		var got []event
		if !Eventually(within, func() bool { got = events(n.rec, topic, user); return len(got) >= len(want) }) {
			t.Fatalf("%s was told of %v about user %d within %v, want %v", n.name, got, user, within, want)
		}
	}
	time.Sleep(settle)
	for _, n := range nodes {
		if got := events(n.rec, topic, user); !slices.Equal(got, want) {
			t.Errorf("%s was told of %v about user %d, want %v", n.name, got, user, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// expectPresent waits up to within until Present on every one of nodes
// lists want, infos included.
func expectPresent(t *testing.T, ctx context.Context, nodes []node, topic string, within time.Duration, want ...relay.Present) {
	t.Helper()
	same := func(x, y relay.Present) bool {
		return x.User == y.User && x.Connections == y.Connections && string(x.Info) == string(y.Info)
	}
	for _, n := range nodes {
		var got []relay.Present
		var err error
		if !Eventually(within, func() bool {
			got, err = n.Roster().Present(ctx, topic)
			return err == nil && slices.EqualFunc(got, want, same)
		}) {
			t.Fatalf("%s.Present(%q) = %s, %v after %v; want %s, nil", n.name, topic, presentString(got), err, within, presentString(want))
		}
	}
}

// presentString shows a member list with its infos.
func presentString(ps []relay.Present) string {
	out := "["
	for i, p := range ps {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("{%d %d %q}", p.User, p.Connections, p.Info)
	}
	return out + "]"
}

// testRosterInfo: the info given with the change that made a user present
// anywhere rides on its join and its leave, on every node, and is what
// Present returns until the user's last connection leaves, whatever info
// later connections (on any node) come with; the next join brings its
// own. Any bytes round-trip, newlines and quotes included.
func testRosterInfo(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	if a.Roster() == nil || b.Roster() == nil {
		t.Skip("Roster() = nil: the hub's own index is the roster (a single node)")
	}
	rs := infoRosters(t, c)
	ia, ib := rs[0], rs[len(rs)-1]
	topic := newTopic(t)
	for _, n := range c.nodes {
		watch(t, ctx, n, topic)
	}
	const user = relay.UserID(7)
	first := []byte(`{"user_id":"7","user_info":{"name":"a"}}`)
	second := []byte(`{"user_id":"7","user_info":{"name":"b"}}`)

	ia.ChangeInfo(topic, user, +1, first)
	expectEvents(t, c.nodes, topic, user, Timeout, join(first))
	expectPresent(t, ctx, c.nodes, topic, Timeout, relay.Present{User: user, Connections: 1, Info: first})

	// A second connection, on the other node, with another info: no
	// second join, and the first info stays.
	ib.ChangeInfo(topic, user, +1, second)
	expectPresent(t, ctx, c.nodes, topic, Timeout, relay.Present{User: user, Connections: 2, Info: first})
	expectEvents(t, c.nodes, topic, user, Timeout, join(first))

	// The first connection goes: the info is still the first one's.
	a.Roster().Change(topic, user, -1)
	expectPresent(t, ctx, c.nodes, topic, Timeout, relay.Present{User: user, Connections: 1, Info: first})
	expectEvents(t, c.nodes, topic, user, Timeout, join(first))

	// The last one goes: one leave, with the first info.
	b.Roster().Change(topic, user, -1)
	expectEvents(t, c.nodes, topic, user, Timeout, join(first), leave(first))
	expectPresent(t, ctx, c.nodes, topic, Timeout)

	// Present again, with the second info: the first was forgotten.
	ib.ChangeInfo(topic, user, +1, second)
	expectEvents(t, c.nodes, topic, user, Timeout, join(first), leave(first), join(second))
	expectPresent(t, ctx, c.nodes, topic, Timeout, relay.Present{User: user, Connections: 1, Info: second})
	b.Roster().Change(topic, user, -1)
	expectEvents(t, c.nodes, topic, user, Timeout, join(first), leave(first), join(second), leave(second))

	// Any bytes: newlines (the separator of some wire formats), quotes,
	// what looks like another message, a NUL and bytes that are not
	// UTF-8.
	const odd = relay.UserID(8)
	oddInfo := []byte("{\"user_id\":\"8\",\"user_info\":{\"name\":\"line one\nline \\\"two\\\"\"}}\n\"\r\nl\n0\n\n9\n\x00\xff\xfe")
	ia.ChangeInfo(topic, odd, +1, oddInfo)
	expectEvents(t, c.nodes, topic, odd, Timeout, join(oddInfo))
	expectPresent(t, ctx, c.nodes, topic, Timeout, relay.Present{User: odd, Connections: 1, Info: oddInfo})
	a.Roster().Change(topic, odd, -1)
	expectEvents(t, c.nodes, topic, odd, Timeout, join(oddInfo), leave(oddInfo))
	expectPresent(t, ctx, c.nodes, topic, Timeout)
	if got := events(a.rec, topic, 9); len(got) != 0 {
		t.Errorf("%s was told of %v about user 9, whom nobody changed; want nothing", a.name, got)
	}
}

// testRosterInfoCrash: when a node dies without a goodbye, the leaves the
// survivors announce for the users whose last connections were there
// carry the info those users joined with; a user still present elsewhere
// keeps the info it joined with, even when that came from the dead node.
func testRosterInfoCrash(t *testing.T, f Factory) {
	if f.Crash == nil {
		t.Skip("Factory.Crash = nil: the engine's nodes cannot be crashed here")
	}
	c, ctx := start(t, f, 2), testCtx(t)
	if len(c.nodes) < 2 {
		t.Skip("one node: nobody survives a crash")
	}
	if c.a().Roster() == nil {
		t.Skip("Roster() = nil: the hub's own index is the roster (a single node)")
	}
	rs := infoRosters(t, c)
	a, b := c.a(), c.b()
	ia, ib := rs[0], rs[1]
	topic := newTopic(t)
	for _, n := range c.nodes {
		watch(t, ctx, n, topic)
	}
	const gone, stays = relay.UserID(9), relay.UserID(10)
	goneInfo := []byte("{\"user_id\":\"9\",\"user_info\":{\"name\":\"on b\nonly\"}}")
	staysB := []byte(`{"user_id":"10","user_info":{"name":"first on b"}}`)
	staysA := []byte(`{"user_id":"10","user_info":{"name":"then on a"}}`)

	ib.ChangeInfo(topic, gone, +1, goneInfo)
	ib.ChangeInfo(topic, stays, +1, staysB)
	expectEvents(t, c.nodes, topic, stays, Timeout, join(staysB))
	ia.ChangeInfo(topic, stays, +1, staysA)
	expectPresent(t, ctx, c.nodes, topic, Timeout,
		relay.Present{User: gone, Connections: 1, Info: goneInfo},
		relay.Present{User: stays, Connections: 2, Info: staysB})
	expectEvents(t, c.nodes, topic, gone, Timeout, join(goneInfo))

	start := time.Now()
	f.Crash(t, b.Engine)
	survivors := c.nodes[:1]
	expectEvents(t, survivors, topic, gone, CrashTimeout, join(goneInfo), leave(goneInfo))
	t.Logf("the dead node's member left after %v", time.Since(start).Round(10*time.Millisecond))
	expectPresent(t, ctx, survivors, topic, Timeout, relay.Present{User: stays, Connections: 1, Info: staysB})
	expectEvents(t, survivors, topic, stays, Timeout, join(staysB))

	a.Roster().Change(topic, stays, -1)
	expectEvents(t, survivors, topic, stays, Timeout, join(staysB), leave(staysB))
	expectPresent(t, ctx, survivors, topic, Timeout)
}
