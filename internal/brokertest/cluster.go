package brokertest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// registry returns the cluster's nodes' registries, skipping the test when
// the engine has none.
func registry(t *testing.T, c *cluster) (a, b relay.Registry) {
	t.Helper()
	a, b = c.a().Registry(), c.b().Registry()
	if a == nil || b == nil {
		t.Skip("Registry() = nil: the hub's own table is the registry (a single node)")
	}
	return a, b
}

// sameReg reports whether two registrations are equal (nil and empty
// topics alike).
func sameReg(x, y relay.Registration) bool {
	return x.User == y.User && slices.Equal(x.Topics, y.Topics)
}

// testRegistry: a registration made on one node is seen, attached,
// replaced, detached and forgotten on any.
func testRegistry(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	ra, rb := registry(t, c)
	a, b := c.a(), c.b()
	id := newID()
	reg := relay.Registration{User: 7, Topics: []string{newTopic(t), newTopic(t)}}
	if err := ra.Register(ctx, id, reg, time.Minute); err != nil {
		t.Fatalf("%s.Register(%s) = %v, want nil", a.name, id, err)
	}
	if got, err := rb.Lookup(ctx, id); err != nil || !sameReg(got, reg) {
		t.Fatalf("%s.Lookup(%s) = %+v, %v; want %+v, nil", b.name, id, got, err, reg)
	}
	if got, err := rb.Attach(ctx, id, "s1"); err != nil || !sameReg(got, reg) {
		t.Fatalf("%s.Attach(%s, s1) = %+v, %v; want %+v, nil", b.name, id, got, err, reg)
	}

	// A newer socket on a takes the id over: b, the holder, kicks s1 (by
	// name, so that on one node the new socket stays).
	if got, err := ra.Attach(ctx, id, "s2"); err != nil || !sameReg(got, reg) {
		t.Fatalf("%s.Attach(%s, s2) = %+v, %v; want %+v, nil", a.name, id, got, err, reg)
	}
	b.rec.WaitKick(t, id, relay.CloseReplaced, "s1")
	time.Sleep(settle)
	if len(c.nodes) > 1 {
		if n := a.rec.kicksOf(id); n != 0 {
			t.Errorf("%s was kicked %d times for %s, the socket it just attached; want 0", a.name, n, id)
		}
	}
	if n := b.rec.kicksOf(id); n != 1 {
		t.Errorf("%s was kicked %d times for %s, want 1: %v", b.name, n, id, b.rec.Kicks())
	}

	// The replaced socket's Detach changes nothing; the holder's forgets.
	if err := rb.Detach(ctx, id, "s1", nil, -1); err != nil {
		t.Fatalf("%s.Detach(%s, stale s1) = %v, want nil", b.name, id, err)
	}
	if got, err := ra.Lookup(ctx, id); err != nil || !sameReg(got, reg) {
		t.Fatalf("%s.Lookup(%s) after a stale Detach = %+v, %v; want %+v, nil", a.name, id, got, err, reg)
	}
	if err := ra.Detach(ctx, id, "s2", nil, -1); err != nil {
		t.Fatalf("%s.Detach(%s, s2, grace -1) = %v, want nil", a.name, id, err)
	}
	if got, err := rb.Lookup(ctx, id); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("%s.Lookup(%s) after Detach with grace -1 = %+v, %v; want ErrNotFound", b.name, id, got, err)
	}

	// Detach with a grace keeps the new topics for the next Attach.
	id2 := newID()
	if err := ra.Register(ctx, id2, reg, time.Minute); err != nil {
		t.Fatalf("%s.Register(%s) = %v, want nil", a.name, id2, err)
	}
	if _, err := ra.Attach(ctx, id2, "s1"); err != nil {
		t.Fatalf("%s.Attach(%s, s1) = %v, want nil", a.name, id2, err)
	}
	kept := relay.Registration{User: 7, Topics: []string{newTopic(t)}}
	if err := ra.Detach(ctx, id2, "s1", kept.Topics, time.Minute); err != nil {
		t.Fatalf("%s.Detach(%s, s1, grace 1m) = %v, want nil", a.name, id2, err)
	}
	if got, err := rb.Attach(ctx, id2, "s3"); err != nil || !sameReg(got, kept) {
		t.Fatalf("%s.Attach(%s, s3) after a Detach with grace = %+v, %v; want %+v, nil", b.name, id2, got, err, kept)
	}

	// Unregister forgets id2 and has its holder kick it.
	if err := ra.Unregister(ctx, id2); err != nil {
		t.Fatalf("%s.Unregister(%s) = %v, want nil", a.name, id2, err)
	}
	b.rec.WaitKick(t, id2, relay.CloseUnregistered, "s3", "")
	if got, err := ra.Lookup(ctx, id2); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("%s.Lookup(%s) after Unregister = %+v, %v; want ErrNotFound", a.name, id2, got, err)
	}

	// Unknown ids are not found.
	unknown := newID()
	if _, err := rb.Lookup(ctx, unknown); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("%s.Lookup(unknown) = %v, want ErrNotFound", b.name, err)
	}
	if _, err := rb.Attach(ctx, unknown, "s1"); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("%s.Attach(unknown, s1) = %v, want ErrNotFound", b.name, err)
	}
	if err := rb.Unregister(ctx, unknown); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("%s.Unregister(unknown) = %v, want ErrNotFound", b.name, err)
	}
	if _, err := rb.Lookup(ctx, unknown); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("%s.Lookup(unknown) after Attach and Unregister = %v, want ErrNotFound (nothing created)", b.name, err)
	}
}

// testRegistryExpiry: a registration that no socket attaches expires
// after its ttl; an attached one does not.
func testRegistryExpiry(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	ra, rb := registry(t, c)
	a, b := c.a(), c.b()
	held, id := newID(), newID()
	reg := relay.Registration{User: 9}
	for _, id := range []relay.ClientID{held, id} { // held first: it would expire first
		if err := ra.Register(ctx, id, reg, time.Second); err != nil {
			t.Fatalf("%s.Register(%s, ttl 1s) = %v, want nil", a.name, id, err)
		}
	}
	if _, err := rb.Attach(ctx, held, "s1"); err != nil {
		t.Fatalf("%s.Attach(%s, s1) = %v, want nil", b.name, held, err)
	}
	if got, err := rb.Lookup(ctx, id); err != nil || !sameReg(got, reg) {
		t.Fatalf("%s.Lookup(%s) = %+v, %v; want %+v, nil", b.name, id, got, err, reg)
	}
	var err error
	if !Eventually(3*time.Second, func() bool { _, err = rb.Lookup(ctx, id); return errors.Is(err, relay.ErrNotFound) }) {
		t.Fatalf("%s.Lookup(%s) 3s after Register with ttl 1s = %v, want ErrNotFound", b.name, id, err)
	}
	if _, err := ra.Attach(ctx, id, "s2"); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("%s.Attach(%s, s2) after it expired = %v, want ErrNotFound", a.name, id, err)
	}
	if got, err := ra.Lookup(ctx, held); err != nil || !sameReg(got, reg) {
		t.Errorf("%s.Lookup(%s) past its ttl while attached = %+v, %v; want %+v, nil", a.name, held, got, err, reg)
	}
}

// testRoster: a user present on a topic through connections on several
// nodes joins once and leaves once, announced on every node.
func testRoster(t *testing.T, f Factory) {
	c, ctx := start(t, f, 2), testCtx(t)
	a, b := c.a(), c.b()
	if a.Roster() == nil || b.Roster() == nil {
		t.Skip("Roster() = nil: the hub's own index is the roster (a single node)")
	}
	topic := newTopic(t)
	for _, n := range c.nodes {
		watch(t, ctx, n, topic)
	}
	const user = relay.UserID(7)
	present := func(want []relay.Present) {
		t.Helper()
		for _, n := range c.nodes {
			var got []relay.Present
			var err error
			if !Eventually(Timeout, func() bool {
				got, err = n.Roster().Present(ctx, topic)
				return err == nil && (slices.EqualFunc(got, want, func(a, b relay.Present) bool {
					return a.User == b.User && a.Connections == b.Connections && string(a.Info) == string(b.Info)
				}) || len(got) == 0 && len(want) == 0)
			}) {
				t.Fatalf("%s.Present(%q) = %v, %v; want %v, nil", n.name, topic, got, err, want)
			}
		}
	}
	// count checks that every node was told of n events of kind.
	count := func(kind relay.Kind, n int) {
		t.Helper()
		for _, nd := range c.nodes {
			nd.rec.WaitCount(t, topic, kind, user, n)
		}
		time.Sleep(settle)
		for _, nd := range c.nodes {
			if got := nd.rec.Count(topic, kind, user); got != n {
				t.Errorf("%s was told of %d events of kind %d for user %d, want %d", nd.name, got, kind, user, n)
			}
		}
	}

	a.Roster().Change(topic, user, +1)
	b.Roster().Change(topic, user, +1)
	present([]relay.Present{{User: user, Connections: 2}})
	count(relay.KindJoin, 1)
	for _, m := range a.rec.Messages(topic) {
		if m.Kind == relay.KindJoin && (m.Topic != topic || m.User != user) {
			t.Errorf("%s was told %+v, want a join of user %d on %q", a.name, m, user, topic)
		}
	}

	a.Roster().Change(topic, user, -1)
	present([]relay.Present{{User: user, Connections: 1}})
	count(relay.KindLeave, 0) // the user still has a connection on b

	b.Roster().Change(topic, user, -1)
	count(relay.KindLeave, 1)
	present(nil)
	if got := a.rec.Count(topic, relay.KindJoin, user); got != 1 {
		t.Errorf("%s was told of %d joins of user %d after the leave, want still 1", a.name, got, user)
	}
}
