package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	l := New(2, 3, nil, 100)
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !l.Allow(a, now) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.Allow(a, now) {
		t.Fatal("a fourth request within the same instant passed a burst of 3")
	}
	if !l.Allow(netip.MustParseAddr("192.0.2.2"), now) {
		t.Fatal("another address was limited")
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if !l.Allow(a, now) || l.Allow(a, now) {
		t.Fatal("after 0.5s at 2/s exactly one more request should pass")
	}
	now = now.Add(10 * time.Second)
	l.Sweep(now)
	if n := l.Len(); n != 0 {
		t.Fatalf("%d buckets after they all refilled", n)
	}
}

func TestIPv6GroupsBy64AndExemptions(t *testing.T) {
	l := New(1, 1, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, 100)
	now := time.Unix(1000, 0)
	if !l.Allow(netip.MustParseAddr("2001:db8::1"), now) || l.Allow(netip.MustParseAddr("2001:db8::2"), now) {
		t.Fatal("two addresses of one /64 should share a bucket")
	}
	if !l.Allow(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Fatal("another /64 was limited")
	}
	for range 10 {
		if !l.Allow(netip.MustParseAddr("127.0.0.5"), now) {
			t.Fatal("an exempt address was limited")
		}
	}
	if !l.Allow(netip.MustParseAddr("::ffff:127.0.0.5"), now) {
		t.Fatal("an IPv4-mapped exempt address was limited")
	}
}

func TestBoundedMemory(t *testing.T) {
	l := New(1, 1, nil, 10)
	now := time.Unix(1000, 0)
	for i := range 100 {
		l.Allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), now)
	}
	if n := l.Len(); n > 10 {
		t.Fatalf("%d buckets held, the bound is 10", n)
	}
}

func TestZeroRateAllowsAll(t *testing.T) {
	var l *Limiter
	if !l.Allow(netip.MustParseAddr("192.0.2.1"), time.Now()) || !New(0, 1, nil, 1).Allow(netip.MustParseAddr("192.0.2.1"), time.Now()) {
		t.Fatal("a disabled limiter refused")
	}
}
