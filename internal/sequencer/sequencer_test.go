package sequencer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/sequencer"
)

// fanout is a relay.Fanout that records what it is given, one line per
// message ("e:3", "reset e:2", "join 7", "user 7"), and counts calls
// that overlap.
type fanout struct {
	mu       sync.Mutex
	got      []string
	msgs     []*relay.Message
	inFlight atomic.Int32
	overlaps atomic.Int32
}

func (f *fanout) Fanout(m *relay.Message) int {
	if f.inFlight.Add(1) != 1 {
		f.overlaps.Add(1)
	}
	defer f.inFlight.Add(-1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, describe(m))
	f.msgs = append(f.msgs, m)
	return 1
}

func describe(m *relay.Message) string {
	switch m.Kind {
	case relay.KindJoin:
		return fmt.Sprintf("join %d", m.User)
	case relay.KindLeave:
		return fmt.Sprintf("leave %d", m.User)
	case relay.KindReset:
		return fmt.Sprintf("reset %s:%d", m.Epoch, m.Offset)
	}
	if m.Offset == 0 {
		return fmt.Sprintf("user %d", m.User)
	}
	return fmt.Sprintf("%s:%d", m.Epoch, m.Offset)
}

// String returns what was fanned out, space separated.
func (f *fanout) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.got, " ")
}

func (f *fanout) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

// message returns the i-th message fanned out.
func (f *fanout) message(i int) *relay.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msgs[i]
}

// history is a relay.HistoryReader over a stream the test controls: the
// messages still kept (oldest first) and the latest position.
type history struct {
	mu     sync.Mutex
	epoch  string
	latest uint64
	kept   []*relay.Message
	// complete, when set, replaces the page's computed Complete.
	complete *bool
	fails    int // reads left to fail
	calls    []uint64
	// served is sent to after every read that returned a page.
	served chan struct{}
}

// stream returns a history of epoch holding offsets from..to.
func stream(epoch string, from, to uint64) *history {
	h := &history{epoch: epoch, latest: to, served: make(chan struct{}, 100)}
	for o := from; o <= to; o++ {
		h.kept = append(h.kept, msg(epoch, o))
	}
	return h
}

func (h *history) History(_ context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, since)
	if h.fails > 0 {
		h.fails--
		return relay.HistoryPage{}, fmt.Errorf("history of %q: connection refused: %w", topic, relay.ErrUnavailable)
	}
	page := relay.HistoryPage{Latest: relay.Position{Offset: h.latest, Epoch: h.epoch}}
	for _, m := range h.kept {
		if m.Offset > since && (limit <= 0 || len(page.Messages) < limit) {
			page.Messages = append(page.Messages, m)
		}
	}
	if len(page.Messages) > 0 {
		page.Complete = page.Messages[0].Offset == since+1
	} else {
		page.Complete = h.latest <= since
	}
	if h.complete != nil {
		page.Complete = *h.complete
	}
	select {
	case h.served <- struct{}{}:
	default:
	}
	return page, nil
}

// reads returns the since of every read so far.
func (h *history) reads() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

func msg(epoch string, offset uint64) *relay.Message {
	return &relay.Message{Topic: "t", Offset: offset, Epoch: epoch, Data: fmt.Appendf(nil, "m%d", offset)}
}

// started returns a sequencer tracking topic "t" from pos.
func started(cfg sequencer.Config, f *fanout, h *history, pos relay.Position) *sequencer.Sequencer {
	s := sequencer.New(cfg, f, h, nil)
	s.Track("t")
	s.Start("t", pos)
	return s
}

// waitFor polls until f has fanned out want, failing after a few seconds.
func waitFor(t *testing.T, f *fanout, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("fanned out %q, want %q", f.String(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settle waits long enough for a repair scheduled after d to have run.
func settle(d time.Duration) { time.Sleep(5*d + 20*time.Millisecond) }

func TestOfferInOrderDropsRepeats(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 3)
	s := started(sequencer.Config{RepairAfter: 10 * time.Millisecond}, f, h, relay.Position{Epoch: "e"})
	var returned []int
	for _, o := range []uint64{1, 2, 3, 2, 3, 1} {
		returned = append(returned, s.Offer(msg("e", o)))
	}
	if got, want := fmt.Sprint(returned), "[1 1 1 0 0 0]"; got != want {
		t.Errorf("Offer returned %s, want %s", got, want)
	}
	if got, want := f.String(), "e:1 e:2 e:3"; got != want {
		t.Errorf("fanned out %q, want %q", got, want)
	}
	if got := s.Stats(); got != (sequencer.Stats{Repeats: 3}) {
		t.Errorf("Stats() = %+v, want 3 repeats only", got)
	}
	settle(10 * time.Millisecond)
	if r := h.reads(); len(r) != 0 || f.String() != "e:1 e:2 e:3" {
		t.Errorf("history reads %v and fan-out %q after the offers, want none and no more", r, f.String())
	}
	// A topic that is not tracked is not fanned out.
	if n := s.Offer(&relay.Message{Topic: "other", Offset: 1, Epoch: "e"}); n != 0 || f.len() != 3 {
		t.Errorf("Offer(untracked topic) = %d and fanned out %q, want 0 and nothing", n, f.String())
	}
}

func TestStartDropsEarlyMessagesAtOrBelowPosition(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 6)
	s := sequencer.New(sequencer.Config{RepairAfter: 10 * time.Millisecond}, f, h, nil)
	s.Start("t", relay.Position{Epoch: "e"}) // not tracked: ignored
	s.Track("t")
	for _, o := range []uint64{2, 3, 4, 5} {
		if n := s.Offer(msg("e", o)); n != 0 {
			t.Errorf("Offer(e:%d) before Start = %d, want 0", o, n)
		}
	}
	if f.len() != 0 || s.Started("t") {
		t.Fatalf("before Start: fanned out %q, Started %v; want nothing held back yet", f.String(), s.Started("t"))
	}
	s.Start("t", relay.Position{Offset: 3, Epoch: "e"})
	if got, want := f.String(), "e:4 e:5"; got != want {
		t.Fatalf("after Start(3): fanned out %q, want %q", got, want)
	}
	if !s.Started("t") || s.Stats().Repeats != 2 {
		t.Errorf("Started %v, Stats %+v; want started and 2 repeats (e:2, e:3)", s.Started("t"), s.Stats())
	}
	// A second Start keeps the position.
	s.Start("t", relay.Position{Offset: 0, Epoch: "e"})
	s.Offer(msg("e", 6))
	settle(10 * time.Millisecond)
	if got, want := f.String(), "e:4 e:5 e:6"; got != want {
		t.Errorf("after a second Start: fanned out %q, want %q", got, want)
	}
	if r := h.reads(); len(r) != 0 {
		t.Errorf("history read from %v, want no reads", r)
	}
}

func TestStartOrdersEarlyMessages(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 5)
	s := sequencer.New(sequencer.Config{RepairAfter: time.Hour}, f, h, nil)
	s.Track("t")
	for _, o := range []uint64{5, 1, 4, 2, 3} {
		s.Offer(msg("e", o))
	}
	s.Start("t", relay.Position{Offset: 1, Epoch: "e"})
	if got, want := f.String(), "e:2 e:3 e:4 e:5"; got != want {
		t.Fatalf("after Start(1): fanned out %q, want %q", got, want)
	}
}

func TestOutOfOrderWaitsForMissingOffset(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 3)
	s := started(sequencer.Config{RepairAfter: time.Hour}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	if n := s.Offer(msg("e", 3)); n != 0 {
		t.Errorf("Offer(e:3) before e:2 = %d, want 0", n)
	}
	if got, want := f.String(), "e:1"; got != want {
		t.Fatalf("e:3 did not wait: fanned out %q, want %q", got, want)
	}
	if n := s.Offer(msg("e", 2)); n != 1 {
		t.Errorf("Offer(e:2) = %d, want 1 (the fan-out of e:2 itself)", n)
	}
	if got, want := f.String(), "e:1 e:2 e:3"; got != want {
		t.Fatalf("fanned out %q, want %q", got, want)
	}
	if r := h.reads(); len(r) != 0 {
		t.Errorf("history read from %v, want no reads", r)
	}
	if st := s.Stats(); st != (sequencer.Stats{}) {
		t.Errorf("Stats() = %+v, want nothing corrected", st)
	}
}

// TestFilledGapReadsNoHistory: a gap that fills before RepairAfter needs
// no history read, but the repair scheduled when e:3 arrived early still
// runs and reads history from 3 for nothing.
func TestFilledGapReadsNoHistory(t *testing.T) {
	const after = 10 * time.Millisecond
	f, h := &fanout{}, stream("e", 1, 3)
	s := started(sequencer.Config{RepairAfter: after}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	s.Offer(msg("e", 3))
	s.Offer(msg("e", 2))
	settle(after)
	if r := h.reads(); len(r) != 0 {
		t.Errorf("history read from %v after the gap filled, want no reads", r)
	}
}

func TestGapRepairedFromHistory(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 5)
	const after = 10 * time.Millisecond
	s := started(sequencer.Config{RepairAfter: after}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	start := time.Now()
	s.Offer(msg("e", 5))
	if got := f.String(); got != "e:1" {
		t.Fatalf("fanned out %q at once, want e:5 to wait", got)
	}
	waitFor(t, f, "e:1 e:2 e:3 e:4 e:5")
	if waited := time.Since(start); waited < after {
		t.Errorf("repaired after %v, want at least RepairAfter (%v)", waited, after)
	}
	for i := 1; i <= 3; i++ {
		if m := f.message(i); m != h.kept[i] {
			t.Errorf("e:%d was not the message history returned", m.Offset)
		}
	}
	if r := h.reads(); fmt.Sprint(r) != "[1]" {
		t.Errorf("history read from %v, want one read from 1", r)
	}
	if st := s.Stats(); st.Repaired < 3 || st.Resets != 0 || st.Repeats != 0 {
		t.Errorf("Stats() = %+v, want (at least) 3 repaired, no reset, no repeat", st)
	}
	// e:5, now delivered, is a repeat when it arrives again.
	s.Offer(msg("e", 5))
	if st := s.Stats(); st.Repeats != 1 || f.len() != 5 {
		t.Errorf("Stats() = %+v, fanned out %q after e:5 again, want 1 repeat and nothing more", st, f.String())
	}
}

// TestGapRepairCountsOnlyMissingMessages: Stats().Repaired counts "messages
// fanned out from history to fill a gap"; e:5 had arrived and was waiting,
// it filled no gap.
func TestGapRepairCountsOnlyMissingMessages(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 5)
	s := started(sequencer.Config{RepairAfter: 10 * time.Millisecond}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	s.Offer(msg("e", 5))
	waitFor(t, f, "e:1 e:2 e:3 e:4 e:5")
	if st := s.Stats(); st.Repaired != 3 {
		t.Errorf("Stats().Repaired = %d, want 3 (e:2, e:3, e:4)", st.Repaired)
	}
}

func TestResetWhenHistoryCannotFillGap(t *testing.T) {
	yes, no := true, false
	for _, tt := range []struct {
		name    string
		history func() *history
		want    string
		resets  uint64
	}{
		{
			name:    "first kept message past the gap",
			history: func() *history { return stream("e", 3, 5) },
			want:    "e:1 reset e:2 e:3 e:4 e:5",
			resets:  1,
		},
		{
			name: "page claims complete but starts past the gap",
			history: func() *history {
				h := stream("e", 4, 5)
				h.complete = &yes
				return h
			},
			want:   "e:1 reset e:3 e:4 e:5",
			resets: 1,
		},
		{
			name: "page incomplete but starting right after",
			history: func() *history {
				h := stream("e", 2, 5)
				h.complete = &no
				return h
			},
			want: "e:1 e:2 e:3 e:4 e:5",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, h := &fanout{}, tt.history()
			s := started(sequencer.Config{RepairAfter: 10 * time.Millisecond}, f, h, relay.Position{Epoch: "e"})
			s.Offer(msg("e", 1))
			s.Offer(msg("e", 5))
			waitFor(t, f, tt.want)
			if st := s.Stats(); st.Resets != tt.resets {
				t.Errorf("Stats().Resets = %d, want %d", st.Resets, tt.resets)
			}
			settle(10 * time.Millisecond)
			if got := f.String(); got != tt.want {
				t.Errorf("then fanned out %q, want nothing more than %q", got, tt.want)
			}
			// After the reset the stream goes on from where it stands.
			s.Offer(msg("e", 6))
			if got := f.String(); got != tt.want+" e:6" {
				t.Errorf("after e:6: fanned out %q, want %q", got, tt.want+" e:6")
			}
		})
	}
}

func TestCheckRepairsLostTail(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 4)
	const after = 10 * time.Millisecond
	s := started(sequencer.Config{RepairAfter: after}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	s.Offer(msg("e", 2))
	s.Check("t", relay.Position{Offset: 2, Epoch: "e"}) // up to date
	s.Check("t", relay.Position{})                      // no stream: ignored
	s.Check("other", relay.Position{Offset: 9, Epoch: "e"})
	settle(after)
	if r := h.reads(); len(r) != 0 {
		t.Fatalf("history read from %v while nothing was missing", r)
	}
	s.Check("t", relay.Position{Offset: 4, Epoch: "e"})
	waitFor(t, f, "e:1 e:2 e:3 e:4")
	if r := h.reads(); fmt.Sprint(r) != "[2]" {
		t.Errorf("history read from %v, want one read from 2", r)
	}
	if st := s.Stats(); st.Repaired != 2 || st.Resets != 0 {
		t.Errorf("Stats() = %+v, want 2 repaired, no reset", st)
	}
}

func TestNewEpoch(t *testing.T) {
	const after = 10 * time.Millisecond
	cfg := sequencer.Config{RepairAfter: after}
	t.Run("restarts at offset 1", func(t *testing.T) {
		f, h := &fanout{}, stream("f", 1, 2)
		s := started(cfg, f, h, relay.Position{Epoch: "e"})
		for _, m := range []*relay.Message{msg("e", 1), msg("e", 2), msg("f", 1), msg("f", 2)} {
			s.Offer(m)
		}
		settle(after)
		if got, want := f.String(), "e:1 e:2 f:1 f:2"; got != want {
			t.Errorf("fanned out %q, want %q", got, want)
		}
		if r := h.reads(); len(r) != 0 {
			t.Errorf("history read from %v, want no reads", r)
		}
	})
	t.Run("past offset 1 is repaired from offset 0", func(t *testing.T) {
		f, h := &fanout{}, stream("f", 1, 3)
		s := started(cfg, f, h, relay.Position{Epoch: "e"})
		s.Offer(msg("e", 1))
		s.Offer(msg("f", 3))
		waitFor(t, f, "e:1 f:1 f:2 f:3")
		if r := h.reads(); len(r) == 0 || r[0] != 0 {
			t.Errorf("history read from %v, want a read from 0", r)
		}
		if st := s.Stats(); st.Resets != 0 {
			t.Errorf("Stats() = %+v, want no reset", st)
		}
	})
	t.Run("Check with a new epoch", func(t *testing.T) {
		f, h := &fanout{}, stream("f", 1, 2)
		s := started(cfg, f, h, relay.Position{Epoch: "e"})
		s.Offer(msg("e", 1))
		s.Offer(msg("e", 2))
		s.Check("t", relay.Position{Offset: 2, Epoch: "f"})
		waitFor(t, f, "e:1 e:2 f:1 f:2")
		if r := h.reads(); fmt.Sprint(r) != "[2 0]" {
			t.Errorf("history read from %v, want from 2, then (another epoch) from 0", r)
		}
	})
}

// TestStaleEpochAfterNewEpoch: a node offers its own publish after the
// engine answered it, so a message of the old epoch can arrive after the
// first of a new epoch (the stream was lost in between). It must not take
// the topic back to the old epoch: f:1 was fanned out already.
func TestStaleEpochAfterNewEpoch(t *testing.T) {
	f, h := &fanout{}, stream("f", 1, 1)
	s := started(sequencer.Config{RepairAfter: 10 * time.Millisecond}, f, h, relay.Position{Epoch: "e"})
	for _, m := range []*relay.Message{msg("e", 1), msg("e", 2), msg("e", 3), msg("f", 1), msg("e", 3)} {
		s.Offer(m)
	}
	settle(10 * time.Millisecond)
	if got, want := f.String(), "e:1 e:2 e:3 f:1"; got != want {
		t.Errorf("fanned out %q, want %q", got, want)
	}
}

func TestPresenceAndUserMessagesPassThrough(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 3)
	s := started(sequencer.Config{RepairAfter: time.Hour}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	s.Offer(msg("e", 3)) // waits for e:2
	for _, m := range []*relay.Message{
		{Kind: relay.KindJoin, Topic: "t", User: 7, HasUser: true},
		{Kind: relay.KindLeave, Topic: "t", User: 7, HasUser: true},
		{Topic: "t", User: 8, HasUser: true, Data: []byte("psst")},
	} {
		if n := s.Offer(m); n != 1 {
			t.Errorf("Offer(%s) = %d, want 1", describe(m), n)
		}
	}
	if got, want := f.String(), "e:1 join 7 leave 7 user 8"; got != want {
		t.Fatalf("fanned out %q, want %q: presence and user messages must not wait", got, want)
	}
	s.Offer(msg("e", 2))
	if got, want := f.String(), "e:1 join 7 leave 7 user 8 e:2 e:3"; got != want {
		t.Errorf("fanned out %q, want %q: they must not move the position", got, want)
	}
	if st := s.Stats(); st != (sequencer.Stats{}) {
		t.Errorf("Stats() = %+v, want nothing corrected", st)
	}
}

func TestForgetStopsFanout(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 5)
	const after = 10 * time.Millisecond
	s := started(sequencer.Config{RepairAfter: after}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	s.Offer(msg("e", 5)) // schedules a repair
	s.Forget("t")
	if tr := s.Tracked(); len(tr) != 0 || s.Started("t") {
		t.Errorf("after Forget: Tracked() = %v, Started %v; want none", tr, s.Started("t"))
	}
	if n := s.Offer(msg("e", 2)); n != 0 {
		t.Errorf("Offer after Forget = %d, want 0", n)
	}
	s.Check("t", relay.Position{Offset: 5, Epoch: "e"})
	s.Start("t", relay.Position{Epoch: "e"})
	select {
	case <-h.served: // the scheduled repair read history...
	case <-time.After(time.Second): // (or did not even read it)
	}
	settle(after) // ...and fanned out nothing
	if got := f.String(); got != "e:1" {
		t.Errorf("fanned out %q after Forget, want only e:1 from before", got)
	}
	// Tracked again, the topic starts over from a new position.
	s.Track("t")
	s.Offer(msg("e", 6))
	s.Start("t", relay.Position{Offset: 5, Epoch: "e"})
	if got := f.String(); got != "e:1 e:6" {
		t.Errorf("tracked again: fanned out %q, want e:1 e:6", got)
	}
}

func TestFailedHistoryReadIsRetried(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 3)
	h.fails = 1
	s := started(sequencer.Config{RepairAfter: 10 * time.Millisecond}, f, h, relay.Position{Epoch: "e"})
	s.Offer(msg("e", 1))
	s.Offer(msg("e", 3))
	waitFor(t, f, "e:1 e:2 e:3")
	if r := h.reads(); fmt.Sprint(r) != "[1 1]" {
		t.Errorf("history read from %v, want a failed read from 1 and its retry", r)
	}
	if st := s.Stats(); st.Resets != 0 || st.Repaired < 1 {
		t.Errorf("Stats() = %+v, want e:2 repaired and no reset", st)
	}
}

// TestMaxWaitingReadsHistoryAtOnce: "MaxWaiting bounds the early messages
// held per topic; past it history is read at once".
func TestMaxWaitingReadsHistoryAtOnce(t *testing.T) {
	f, h := &fanout{}, stream("e", 1, 5)
	s := started(sequencer.Config{RepairAfter: time.Hour, MaxWaiting: 2}, f, h, relay.Position{Epoch: "e"})
	for _, o := range []uint64{1, 3, 4, 5} {
		s.Offer(msg("e", o))
	}
	waitFor(t, f, "e:1 e:2 e:3 e:4 e:5")
}

func TestConcurrentOffersFanOutInOrder(t *testing.T) {
	const n, goroutines = 1000, 4
	for _, tt := range []struct {
		name  string
		split bool // each offset offered once, else by every goroutine
	}{
		{"each offset once", true},
		{"each offset by every goroutine", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, h := &fanout{}, stream("e", 1, n)
			s := started(sequencer.Config{RepairAfter: 2 * time.Millisecond}, f, h, relay.Position{Epoch: "e"})
			offsets := make([]uint64, n)
			for i := range offsets {
				offsets[i] = uint64(i + 1)
			}
			var wg sync.WaitGroup
			for g := range goroutines {
				mine := slices.Clone(offsets)
				if tt.split {
					mine = mine[g*n/goroutines : (g+1)*n/goroutines]
				}
				rand.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
				wg.Go(func() {
					for _, o := range mine {
						s.Offer(msg("e", o))
					}
				})
			}
			wg.Wait()
			want := make([]string, n)
			for i := range want {
				want[i] = fmt.Sprintf("e:%d", i+1)
			}
			waitFor(t, f, strings.Join(want, " "))
			settle(2 * time.Millisecond)
			if got := f.len(); got != n {
				t.Errorf("fanned out %d messages, want %d", got, n)
			}
			if o := f.overlaps.Load(); o != 0 {
				t.Errorf("%d Fanout calls overlapped another on the same topic", o)
			}
			if st := s.Stats(); st.Resets != 0 {
				t.Errorf("Stats() = %+v, want no reset", st)
			}
		})
	}
}
