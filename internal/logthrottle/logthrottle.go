// Package logthrottle rate-limits log lines that clients can cause, so
// that a misbehaving client (or a flood of them) cannot fill the log and
// the disk: every refused request and every closed socket may log a line,
// but only so many of each kind pass per second.
//
// A Throttle gives every kind of line (a short constant name such as
// "http_429" or "ws_close_1008") a token bucket of its own, and all kinds
// together a global one. A line passes when both have a token; otherwise
// it is counted as suppressed, and the counts are reported as one
// "log lines suppressed" line per kind at most once per summary period
// (by Run, or by the next line that arrives after the period).
//
// The check costs nothing when the level is disabled: callers ask Allow
// first and only then build the line's attributes.
//
//	if lt.Allow(ctx, slog.LevelInfo, "http_429") {
//		lt.Logger().LogAttrs(ctx, slog.LevelInfo, "request refused", attrs...)
//	}
//
// A nil *Throttle allows nothing and logs nothing.
package logthrottle

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Config sets a Throttle's budgets. The zero value works: every zero field
// takes the default named beside it.
type Config struct {
	// Rate and Burst are each kind's budget: Burst lines at once, refilled
	// at Rate lines per second.
	Rate  float64 // default 1
	Burst int     // default 10
	// GlobalRate and GlobalBurst bound all kinds together.
	GlobalRate  float64 // default 20
	GlobalBurst int     // default 100
	// Summary is how often, at most, suppressed lines are reported.
	Summary time.Duration // default 10s
	// Now is the clock; nil is time.Now. Tests replace it.
	Now func() time.Time
}

// Defaults for the zero Config.
const (
	DefaultRate        = 1
	DefaultBurst       = 10
	DefaultGlobalRate  = 20
	DefaultGlobalBurst = 100
	DefaultSummary     = 10 * time.Second
)

// maxKinds bounds the kinds a Throttle tracks; lines of further kinds share
// the budget of the kind "other".
const maxKinds = 256

// Throttle is a set of log budgets over one logger. Its methods are safe
// for concurrent use.
type Throttle struct {
	log *slog.Logger
	cfg Config
	now func() time.Time // tests replace it

	mu      sync.Mutex
	kinds   map[string]*kind
	global  bucket
	flushed time.Time // when suppressed lines were last reported
	pending bool      // some kind has suppressed lines not yet reported
}

// kind is one kind's bucket and what it has suppressed since the last
// summary.
type kind struct {
	bucket
	suppressed uint64
	level      slog.Level // the highest level suppressed
	since      time.Time  // the first line suppressed
}

// bucket is a token bucket.
type bucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	at     time.Time // last refill
}

func (b *bucket) take(now time.Time) bool {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// put gives back a token taken by mistake (the other bucket was empty).
func (b *bucket) put() { b.tokens = min(b.burst, b.tokens+1) }

// New returns a Throttle that logs to log (nil: discard) within cfg.
func New(log *slog.Logger, cfg Config) *Throttle {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.GlobalRate <= 0 {
		cfg.GlobalRate = DefaultGlobalRate
	}
	if cfg.GlobalBurst <= 0 {
		cfg.GlobalBurst = DefaultGlobalBurst
	}
	if cfg.Summary <= 0 {
		cfg.Summary = DefaultSummary
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Throttle{log: log, cfg: cfg, now: cfg.Now, kinds: make(map[string]*kind), flushed: cfg.Now()}
	t.global = bucket{rate: cfg.GlobalRate, burst: float64(cfg.GlobalBurst), tokens: float64(cfg.GlobalBurst)}
	return t
}

// Logger returns the logger lines go to.
func (t *Throttle) Logger() *slog.Logger {
	if t == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.log
}

// Limit gives name a budget of its own: burst lines at once, then one
// line per every. Call it before the kind's first line.
func (t *Throttle) Limit(name string, burst int, every time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := bucket{rate: float64(time.Second) / float64(every), burst: float64(burst), tokens: float64(burst)}
	if k := t.kinds[name]; k != nil {
		k.bucket = b
		return
	}
	t.kinds[name] = &kind{bucket: b}
}

// Enabled reports whether lines at level reach the log at all.
func (t *Throttle) Enabled(ctx context.Context, level slog.Level) bool {
	return t != nil && t.log.Enabled(ctx, level)
}

// Allow reports whether a line of kind name at level should be logged now:
// the level is enabled and both the kind's and the global budget have a
// token, which it spends. A line refused for want of a token is counted as
// suppressed; one at a disabled level is not counted.
func (t *Throttle) Allow(ctx context.Context, level slog.Level, name string) bool {
	if !t.Enabled(ctx, level) {
		return false
	}
	now := t.now()
	t.mu.Lock()
	k := t.kinds[name]
	if k == nil {
		k = t.addLocked(name, now)
	}
	ok := k.take(now)
	if ok && !t.global.take(now) {
		k.put()
		ok = false
	}
	if !ok {
		if k.suppressed == 0 || level > k.level {
			k.level = level
		}
		if k.suppressed == 0 {
			k.since = now
		}
		k.suppressed++
		t.pending = true
	}
	flush := t.pending && now.Sub(t.flushed) >= t.cfg.Summary
	t.mu.Unlock()
	if flush {
		t.Flush()
	}
	return ok
}

// addLocked adds a kind with the default budget, full.
func (t *Throttle) addLocked(name string, now time.Time) *kind {
	if len(t.kinds) >= maxKinds {
		if k := t.kinds["other"]; k != nil {
			return k
		}
		name = "other"
	}
	k := &kind{bucket: bucket{rate: t.cfg.Rate, burst: float64(t.cfg.Burst), tokens: float64(t.cfg.Burst), at: now}}
	t.kinds[name] = k
	return k
}

// Flush logs one line per kind that suppressed lines since the last
// summary, saying how many, at the highest level among them.
func (t *Throttle) Flush() {
	if t == nil {
		return
	}
	type report struct {
		name  string
		n     uint64
		level slog.Level
		since time.Duration
	}
	now := t.now()
	t.mu.Lock()
	var out []report
	if t.pending {
		for name, k := range t.kinds {
			if k.suppressed > 0 {
				out = append(out, report{name, k.suppressed, k.level, now.Sub(k.since)})
				k.suppressed = 0
			}
		}
	}
	t.pending = false
	t.flushed = now
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b report) int { return cmp.Compare(a.name, b.name) })
	ctx := context.Background()
	for _, r := range out {
		t.log.LogAttrs(ctx, r.level, "log lines suppressed", slog.String("kind", r.name), slog.Uint64("lines", r.n), slog.Duration("period", r.since.Round(time.Millisecond)))
	}
}

// Run reports suppressed lines every summary period until ctx is done,
// then once more.
func (t *Throttle) Run(ctx context.Context) error {
	if t == nil {
		return nil
	}
	tk := time.NewTicker(t.cfg.Summary)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			t.Flush()
			return nil
		case <-tk.C:
			t.Flush()
		}
	}
}
