package protocol

import "sync"

// Serial runs one socket's commands in the order they came. Commands that
// wait for the engine (subscribes, publishes) run on a goroutine of the
// socket's own that exists only while some are queued, so they never hold
// the read loop other sockets share; a command that never waits runs at
// once when nothing is queued before it. The zero value is ready.
type Serial[T any] struct {
	mu      sync.Mutex
	queue   []queued[T]
	bytes   int // the queued commands' sizes
	working bool
}

type queued[T any] struct {
	cmd  T
	size int
}

// Limit bounds what one socket's Serial holds while the engine is slow:
// commands are decoded client frames, held outside the send queue's bound,
// so their bytes are bounded as well as their number.
type Limit struct{ Commands, Bytes int }

// MaxQueuedBytes is the bytes of commands one socket may have waiting.
const MaxQueuedBytes = 256 << 10

// Do runs cmd, a command of size bytes, with run: at once when inline is
// set and nothing is queued, else behind the queued ones. It reports
// false, running nothing, when lim would be exceeded (a command larger
// than lim.Bytes may wait when nothing else is held).
func (q *Serial[T]) Do(cmd T, size int, inline bool, lim Limit, run func(T)) bool {
	q.mu.Lock()
	if inline && !q.working {
		q.mu.Unlock()
		run(cmd)
		return true
	}
	if len(q.queue) >= lim.Commands || q.bytes > 0 && q.bytes+size > lim.Bytes {
		q.mu.Unlock()
		return false
	}
	q.queue = append(q.queue, queued[T]{cmd, size})
	q.bytes += size
	start := !q.working
	q.working = true
	q.mu.Unlock()
	if start {
		go q.work(run)
	}
	return true
}

// work runs the queued commands until none is left.
func (q *Serial[T]) work(run func(T)) {
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.working = false
			q.queue = nil // a burst's backing array is not kept
			q.mu.Unlock()
			return
		}
		next := q.queue[0]
		q.queue[0] = queued[T]{}
		q.queue = q.queue[1:]
		q.mu.Unlock()
		run(next.cmd)
		q.mu.Lock()
		q.bytes -= next.size // held until it ran: what it refers to stays alive
		q.mu.Unlock()
	}
}
