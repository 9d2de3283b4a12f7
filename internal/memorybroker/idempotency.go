package memorybroker

import (
	"sync"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// idempotency remembers recent publishes by key, so a client that retries
// (after a timeout, say) does not publish twice.
type idempotency struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	keys  map[string]*idemEntry
	order []*idemEntry // by creation, for expiry; the head is oldest
}

type idemEntry struct {
	key     string
	expires time.Time
	done    chan struct{} // closed once receipt is set
	receipt relay.Receipt
}

// do runs publish once per key within the window; repeats wait for the
// first and get its receipt, marked Duplicate.
func (d *idempotency) do(key string, publish func() relay.Receipt) (relay.Receipt, error) {
	now := time.Now()
	d.mu.Lock()
	if e, ok := d.keys[key]; ok && now.Before(e.expires) {
		d.mu.Unlock()
		<-e.done
		r := e.receipt
		r.Duplicate = true
		return r, nil
	}
	e := &idemEntry{key: key, expires: now.Add(d.window), done: make(chan struct{})}
	d.keys[key] = e
	d.order = append(d.order, e)
	for len(d.keys) > d.max { // bounded: forget the oldest early
		d.forgetOldest()
	}
	d.mu.Unlock()
	e.receipt = publish()
	close(e.done)
	return e.receipt, nil
}

func (d *idempotency) forgetOldest() {
	e := d.order[0]
	d.order[0] = nil
	d.order = d.order[1:]
	if d.keys[e.key] == e {
		delete(d.keys, e.key)
	}
}

func (d *idempotency) sweep(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.order) > 0 && !now.Before(d.order[0].expires) {
		d.forgetOldest()
	}
	if len(d.order) == 0 {
		d.order = nil // let a large backing array go
	}
}
