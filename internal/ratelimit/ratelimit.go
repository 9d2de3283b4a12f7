// Package ratelimit keeps one token bucket per client address, in bounded
// memory. IPv6 addresses are grouped by /64, the block one subscriber
// usually gets, so rotating addresses within it does not escape the limit.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Limiter allows rate events per second per address, in bursts of up to
// burst. The zero rate allows everything. Safe for concurrent use.
type Limiter struct {
	rate   float64
	burst  float64
	max    int
	exempt []netip.Prefix

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter; addresses within exempt are never limited, and at
// most max addresses are tracked at once (past that, new addresses pass
// untracked until the sweep frees room: memory stays bounded, at the cost
// of limiting less under a very wide flood).
func New(rate float64, burst int, exempt []netip.Prefix, max int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	return &Limiter{rate: rate, burst: float64(burst), max: max, exempt: exempt, buckets: make(map[netip.Addr]*bucket)}
}

// Allow takes a token for addr and reports whether one was there.
func (l *Limiter) Allow(addr netip.Addr, now time.Time) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range l.exempt {
		if p.Contains(addr) {
			return true
		}
	}
	if addr.Is6() {
		addr = netip.PrefixFrom(addr, 64).Masked().Addr()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.sweepLocked(now)
			if len(l.buckets) >= l.max {
				return true
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[addr] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Sweep forgets addresses whose bucket has refilled: they are
// indistinguishable from new ones.
func (l *Limiter) Sweep(now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
}

func (l *Limiter) sweepLocked(now time.Time) {
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
}

// Len returns how many addresses are tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
