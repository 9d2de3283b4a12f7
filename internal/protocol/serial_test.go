package protocol

import (
	"sync"
	"testing"
	"time"
)

// TestSerial: commands run in the order they came; an inline command runs
// on the caller only when nothing is queued; past max, Do refuses.
func TestSerial(t *testing.T) {
	var q Serial[int]
	two := Limit{Commands: 2, Bytes: 100}
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
	q.Do(1, 1, false, two, run)
	<-started
	q.Do(2, 1, true, two, run) // inline, but queued behind 1
	q.Do(3, 1, false, two, run)
	if q.Do(99, 1, false, two, run) {
		t.Fatal("a third queued command was accepted with max 2")
	}
	close(release)
	for ran := 0; ran < 3; {
		mu.Lock()
		ran = len(order)
		mu.Unlock()
	}
	q.Do(4, 1, false, two, run)
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
	q.Do(5, 1, true, two, func(int) { ran = true })
	if !ran {
		t.Fatal("an inline command on an idle queue did not run at once")
	}
}

// TestSerialBytes: past Limit.Bytes of queued commands, Do refuses; a
// command larger than the limit may wait alone; bytes come back once a
// command ran.
func TestSerialBytes(t *testing.T) {
	var q Serial[int]
	lim := Limit{Commands: 10, Bytes: 100}
	release, started := make(chan struct{}), make(chan struct{})
	ran := make(chan int, 10)
	run := func(n int) {
		if n == 1 {
			close(started)
			<-release
		}
		ran <- n
	}
	if !q.Do(1, 500, false, lim, run) {
		t.Fatal("a command larger than the limit was refused with nothing queued")
	}
	<-started // 1 runs; its 500 bytes count until it returns
	if q.Do(2, 10, false, lim, run) {
		t.Fatal("a command was queued behind 500 bytes with a limit of 100")
	}
	close(release)
	if n := <-ran; n != 1 {
		t.Fatalf("ran %d first, want 1", n)
	}
	for i := range 1000 {
		q.mu.Lock()
		idle := !q.working
		q.mu.Unlock()
		if idle {
			break
		}
		if i == 999 {
			t.Fatal("the queue did not go idle")
		}
		time.Sleep(time.Millisecond)
	}
	release2, started2 := make(chan struct{}), make(chan struct{})
	block := func(n int) {
		if n == 3 {
			close(started2)
			<-release2
		}
		ran <- n
	}
	q.Do(3, 60, false, lim, block)
	<-started2
	if !q.Do(4, 40, false, lim, block) || q.Do(5, 1, false, lim, block) {
		t.Fatal("want 40 more bytes queued behind 60 and not one more")
	}
	close(release2)
	for _, want := range []int{3, 4} {
		if n := <-ran; n != want {
			t.Fatalf("ran %d, want %d", n, want)
		}
	}
}
