package brokertest

import (
	"bytes"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// Timeout bounds every wait of the suite and of the Recorder's Wait
// helpers: a message, a kick or a presence change that has not arrived by
// then never will.
const Timeout = 5 * time.Second

// KickTimeout bounds how long a Kick may take to reach the node holding a
// registration.
const KickTimeout = 2 * time.Second

// pollInterval is how often a wait looks again.
const pollInterval = 5 * time.Millisecond

// Eventually calls cond every few milliseconds until it returns true or
// timeout has passed, and reports whether it returned true. It never waits
// longer than timeout plus one poll.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}

// Kicked is one call of Recorder.Kick.
type Kicked struct {
	ID     relay.ClientID
	Socket string // "": any socket id has here
	Reason relay.CloseReason
}

// Recorder is a fake relay.Node: it records a copy of every message an
// engine fans out to it, per topic and in call order, answers Watched from
// a set the test controls, and records every Kick. It also counts Fanout
// calls for one topic that overlapped, which the contract forbids, and
// records the presence transitions its node's roster reports (Transition,
// which Start hands to a relay.TransitionReporter). It is safe for
// concurrent use; create it with NewRecorder.
type Recorder struct {
	// Reach is what Fanout returns: the connections a message reached on
	// this node. Set it before the engine is bound.
	Reach int

	mu       sync.Mutex
	watched  map[string]bool
	msgs     map[string][]relay.Message
	busy     map[string]int // Fanout calls in flight per topic
	overlaps int
	kicks    []Kicked
	trans    []relay.Transition
}

// NewRecorder returns a Recorder that watches nothing and reports each
// message as reaching one connection.
func NewRecorder() *Recorder {
	return &Recorder{
		Reach:   1,
		watched: make(map[string]bool),
		msgs:    make(map[string][]relay.Message),
		busy:    make(map[string]int),
	}
}

var _ relay.Node = (*Recorder)(nil)

// Fanout implements relay.Fanout: it records a copy of m and returns
// Reach.
func (r *Recorder) Fanout(m *relay.Message) int {
	c := *m
	c.Data = bytes.Clone(m.Data)
	r.mu.Lock()
	r.busy[m.Topic]++
	if r.busy[m.Topic] > 1 {
		r.overlaps++
	}
	r.msgs[m.Topic] = append(r.msgs[m.Topic], c)
	r.mu.Unlock()
	runtime.Gosched() // widen the window in which an overlapping call shows
	r.mu.Lock()
	r.busy[m.Topic]--
	if r.busy[m.Topic] == 0 {
		delete(r.busy, m.Topic)
	}
	r.mu.Unlock()
	return r.Reach
}

// Watched implements relay.Node: it reports whether SetWatched marked
// topic.
func (r *Recorder) Watched(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watched[topic]
}

// Kick implements relay.Node: it records the call.
func (r *Recorder) Kick(id relay.ClientID, socket string, reason relay.CloseReason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kicks = append(r.kicks, Kicked{ID: id, Socket: socket, Reason: reason})
}

// Transition records t, a transition the node's roster reported
// (relay.TransitionReporter). It never blocks.
func (r *Recorder) Transition(t relay.Transition) {
	t.Info = bytes.Clone(t.Info)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trans = append(r.trans, t)
}

// Transitions returns copies of the transitions reported on topic so far,
// in order.
func (r *Recorder) Transitions(topic string) []relay.Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []relay.Transition
	for _, t := range r.trans {
		if t.Topic == topic {
			t.Info = bytes.Clone(t.Info)
			out = append(out, t)
		}
	}
	return out
}

// SetWatched sets what Watched answers for topic.
func (r *Recorder) SetWatched(topic string, watched bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if watched {
		r.watched[topic] = true
	} else {
		delete(r.watched, topic)
	}
}

// Messages returns copies of the messages fanned out on topic so far, in
// call order.
func (r *Recorder) Messages(topic string) []relay.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs[topic])
}

// Count returns how many messages of kind were fanned out on topic so far;
// for KindJoin and KindLeave only those about user count.
func (r *Recorder) Count(topic string, kind relay.Kind, user relay.UserID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs[topic] {
		if m.Kind == kind && (kind == relay.KindPublish || kind == relay.KindReset || m.User == user) {
			n++
		}
	}
	return n
}

// Overlaps returns how many Fanout calls started while another for the
// same topic was still running.
func (r *Recorder) Overlaps() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.overlaps
}

// Kicks returns the Kick calls so far, in order.
func (r *Recorder) Kicks() []Kicked {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.kicks)
}

// kicksOf returns how many Kick calls named id.
func (r *Recorder) kicksOf(id relay.ClientID) int {
	n := 0
	for _, k := range r.Kicks() {
		if k.ID == id {
			n++
		}
	}
	return n
}

// WaitMessages waits up to Timeout until at least n messages were fanned
// out on topic and returns them all (possibly more than n). It fails the
// test when they do not arrive, so call it from the test's goroutine.
func (r *Recorder) WaitMessages(t testing.TB, topic string, n int) []relay.Message {
	t.Helper()
	var got []relay.Message
	if !Eventually(Timeout, func() bool { got = r.Messages(topic); return len(got) >= n }) {
		t.Fatalf("Recorder.WaitMessages(%q, %d) = %d messages after %v, want %d", topic, n, len(got), Timeout, n)
	}
	return got
}

// WaitCount waits up to Timeout until at least n messages of kind (about
// user, for presence kinds) were fanned out on topic. It fails the test
// when they do not arrive, so call it from the test's goroutine.
func (r *Recorder) WaitCount(t testing.TB, topic string, kind relay.Kind, user relay.UserID, n int) {
	t.Helper()
	got := 0
	if !Eventually(Timeout, func() bool { got = r.Count(topic, kind, user); return got >= n }) {
		t.Fatalf("Recorder.WaitCount(%q, kind %d, user %d, %d) = %d after %v, want %d", topic, kind, user, n, got, Timeout, n)
	}
}

// WaitKick waits up to KickTimeout until Kick was called for id with
// reason and one of sockets ("" standing for a Kick of any socket). It
// fails the test when it was not, so call it from the test's goroutine.
func (r *Recorder) WaitKick(t testing.TB, id relay.ClientID, reason relay.CloseReason, sockets ...string) {
	t.Helper()
	found := func() bool {
		return slices.ContainsFunc(r.Kicks(), func(k Kicked) bool {
			return k.ID == id && k.Reason == reason && slices.Contains(sockets, k.Socket)
		})
	}
	if !Eventually(KickTimeout, found) {
		t.Fatalf("Recorder.WaitKick(%s, reason %d, sockets %q): kicks after %v = %+v, want one", id, reason, sockets, KickTimeout, r.Kicks())
	}
}
