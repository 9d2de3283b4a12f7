package hub

import (
	"testing"
	"time"
)

// BenchmarkExpireOneUser expires 100,000 registrations of one user: with
// the user's clients in a set this is linear in the count (it was
// quadratic with a list).
func BenchmarkExpireOneUser(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		h := New(Config{RegistrationTTL: time.Nanosecond}, nil)
		for range 100_000 {
			h.Register(ctx, 1)
		}
		b.StartTimer()
		if n := h.expire(time.Now().Add(time.Second)); n != 100_000 {
			b.Fatalf("expired %d", n)
		}
	}
}
