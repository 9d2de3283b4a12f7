package natsbroker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// TestPresentRacesLeaves: Present on one node while many users leave the
// topic on another returns promptly every time: entries purged while it
// reads them must not leave it waiting for ones that will never come.
func TestPresentRacesLeaves(t *testing.T) {
	const users, rounds, bound = 200, 8, 2 * time.Second
	ctx, prefix := testCtx(t), newPrefix(t, sharedNATS)
	nodes := cluster(t, sharedNATS, prefix, 2)
	a, b := nodes[0], nodes[1]
	var slow, calls int
	var worst time.Duration
	for round := range rounds {
		topic := newTopic("race")
		watch(t, ctx, a, a.rec, topic)
		for u := 1; u <= users; u++ {
			a.Roster().Change(topic, relay.UserID(u), +1)
		}
		if got, err := a.Roster().Present(ctx, topic); err != nil || len(got) != users {
			t.Fatalf("round %d: Present = %d users, %v; want %d", round, len(got), err, users)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				pctx, cancel := context.WithTimeout(ctx, 3*bound)
				start := time.Now()
				_, err := b.Roster().Present(pctx, topic)
				took := time.Since(start)
				cancel()
				calls++
				worst = max(worst, took)
				if err != nil || took > bound {
					slow++
					t.Errorf("round %d: Present during leaves took %v, err %v; want nil within %v", round, took.Round(time.Millisecond), err, bound)
				}
			}
		})
		time.Sleep(20 * time.Millisecond)
		for u := 1; u <= users; u++ {
			a.Roster().Change(topic, relay.UserID(u), -1)
		}
		if got, err := a.Roster().Present(ctx, topic); err != nil || len(got) != 0 {
			t.Errorf("round %d: Present after the leaves = %d users, %v; want none", round, len(got), err)
		}
		time.Sleep(100 * time.Millisecond)
		close(stop)
		wg.Wait()
	}
	t.Logf("%d Present calls racing leaves, %d slow; the slowest took %v", calls, slow, worst.Round(time.Millisecond))
}
