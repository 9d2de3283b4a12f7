package natsbroker

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// smallest keeps the n smallest distinct strings, whatever the order
// they come in and however often each comes.
func TestSmallest(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 100} {
		for _, count := range []int{0, 1, 5, 50, 1000} {
			s := newSmallest(n)
			seen := map[string]bool{}
			for range count {
				v := strconv.Itoa(rand.IntN(count))
				seen[v] = true
				s.add(v)
				if len(s.set) > 2*max(n, 1) {
					t.Fatalf("smallest(%d) holds %d strings, want at most %d", n, len(s.set), 2*n)
				}
			}
			var want []string
			for v := range seen {
				want = append(want, v)
			}
			slices.Sort(want)
			want = want[:min(n, len(want))]
			if got := s.sorted(); !slices.Equal(got, want) {
				t.Errorf("smallest(%d) after %d strings = %q, want %q", n, count, got, want)
			}
		}
	}
}
