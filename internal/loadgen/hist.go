package loadgen

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Hist is a log-linear histogram of durations in microseconds that many
// goroutines record into at once without a lock: one atomic add per value
// (two when the value is a new maximum). Buckets are 1/128 of their power
// of two wide, so a percentile is within 0.8% of the true value; the
// maximum is exact.
type Hist struct {
	buckets [histBuckets]atomic.Uint64
	max     atomic.Int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // buckets per power of two
	histBuckets = 64 * histSub
)

func histIndex(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return histSub*(shift+1) + int(v>>shift) - histSub
}

// histValue is the middle of bucket i.
func histValue(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	m := int64(i%histSub + histSub)
	lo := m << shift
	return lo + (int64(1)<<shift)/2
}

// Record adds one value, in microseconds; negative values count as 0.
func (h *Hist) Record(us int64) {
	if us < 0 {
		us = 0
	}
	h.buckets[histIndex(uint64(us))].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// Latency is a histogram's summary, in milliseconds.
type Latency struct {
	Count  int64   `json:"count"`
	P50ms  float64 `json:"p50_ms"`
	P90ms  float64 `json:"p90_ms"`
	P99ms  float64 `json:"p99_ms"`
	P999ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// Summary reads the histogram; it may run while values are recorded.
func (h *Hist) Summary() Latency {
	var counts [histBuckets]uint64
	var total uint64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	l := Latency{Count: int64(total)}
	if total == 0 {
		return l
	}
	maxUs := h.max.Load()
	q := func(p float64) float64 {
		want := uint64(p*float64(total) + 0.999999)
		if want < 1 {
			want = 1
		}
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= want {
				return ms(min(histValue(i), maxUs))
			}
		}
		return ms(maxUs)
	}
	l.P50ms, l.P90ms, l.P99ms, l.P999ms = q(0.50), q(0.90), q(0.99), q(0.999)
	l.MaxMs = ms(maxUs)
	return l
}

func ms(us int64) float64 {
	return float64(us) / float64(time.Millisecond/time.Microsecond)
}
