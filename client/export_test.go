package client

import (
	"slices"
	"sync"
	"time"
)

// RecordWaits makes every Stream wait 0 before a reconnect and records
// the bound each wait would have been drawn under, so that a test can
// check how the backoff grows without waiting for it. Call restore once
// the streams are closed.
func RecordWaits() (bounds func() []time.Duration, restore func()) {
	var mu sync.Mutex
	var got []time.Duration
	old := drawWait
	drawWait = func(bound time.Duration) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, bound)
		return 0
	}
	bounds = func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	return bounds, func() { drawWait = old }
}
