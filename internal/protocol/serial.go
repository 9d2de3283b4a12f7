package protocol

import "sync"

// Serial runs one socket's commands in the order they came. Commands that
// wait for the engine (subscribes, publishes) run on a goroutine of the
// socket's own that exists only while some are queued, so they never hold
// the read loop other sockets share; a command that never waits runs at
// once when nothing is queued before it. The zero value is ready.
type Serial[T any] struct {
	mu      sync.Mutex
	queue   []T
	working bool
}

// Do runs cmd with run: at once when inline is set and nothing is queued,
// else behind the queued ones. It reports false, running nothing, when max
// commands are queued already.
func (q *Serial[T]) Do(cmd T, inline bool, max int, run func(T)) bool {
	q.mu.Lock()
	if inline && !q.working {
		q.mu.Unlock()
		run(cmd)
		return true
	}
	if len(q.queue) >= max {
		q.mu.Unlock()
		return false
	}
	q.queue = append(q.queue, cmd)
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
		cmd := q.queue[0]
		var zero T
		q.queue[0] = zero
		q.queue = q.queue[1:]
		q.mu.Unlock()
		run(cmd)
	}
}
