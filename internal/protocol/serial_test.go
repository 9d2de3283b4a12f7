package protocol

import (
	"sync"
	"testing"
)

// TestSerial: commands run in the order they came; an inline command runs
// on the caller only when nothing is queued; past max, Do refuses.
func TestSerial(t *testing.T) {
	var q Serial[int]
	var mu sync.Mutex
	var order []int
	release, started := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	run := func(n int) {
		if n == 1 {
			close(started)
			<-release // the first command waits, as a subscribe waits for the engine
		}
		mu.Lock()
		order = append(order, n)
		mu.Unlock()
		if n == 4 {
			close(done)
		}
	}
	q.Do(1, false, 2, run)
	<-started
	q.Do(2, true, 2, run) // inline, but queued behind 1
	q.Do(3, false, 2, run)
	if q.Do(99, false, 2, run) {
		t.Fatal("a third queued command was accepted with max 2")
	}
	close(release)
	for ran := 0; ran < 3; {
		mu.Lock()
		ran = len(order)
		mu.Unlock()
	}
	q.Do(4, false, 2, run)
	<-done
	mu.Lock()
	got := append([]int(nil), order...)
	mu.Unlock()
	if len(got) != 4 || got[0] != 1 || got[1] != 2 || got[2] != 3 || got[3] != 4 {
		t.Fatalf("ran %v, want [1 2 3 4]", got)
	}
	// Idle again: an inline command runs on the caller.
	for {
		q.mu.Lock()
		idle := !q.working
		q.mu.Unlock()
		if idle {
			break
		}
	}
	ran := false
	q.Do(5, true, 2, func(int) { ran = true })
	if !ran {
		t.Fatal("an inline command on an idle queue did not run at once")
	}
}
