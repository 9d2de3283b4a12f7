package connlimit

import (
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/logthrottle"
)

// fakeConn is a net.Conn from a given address that records its closes.
type fakeConn struct {
	net.Conn // nil: only the methods below are called
	addr     net.Addr
	closes   atomic.Int32
}

func (f *fakeConn) RemoteAddr() net.Addr { return f.addr }
func (f *fakeConn) Close() error         { f.closes.Add(1); return nil }

// clock is a fake time source.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newTestLimiter(t *testing.T, cfg Config) (*Limiter, *clock) {
	t.Helper()
	clk := &clock{}
	clk.t.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	if cfg.Logs == nil {
		cfg.Logs = logthrottle.New(nil, logthrottle.Config{Now: clk.now})
	}
	l := New(cfg, nil, nil)
	return l, clk
}

func tcpAddr(s string) net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(s), 40000))
}

// accept admits a fake connection from addr and reports whether it was
// let in; the fake is returned either way.
func accept(l *Limiter, addr string) (*conn, *fakeConn, bool) {
	f := &fakeConn{addr: tcpAddr(addr)}
	c := &conn{Conn: f, owner: l}
	return c, f, l.admit(c)
}

func mustAccept(t *testing.T, l *Limiter, addr string) (*conn, *fakeConn) {
	t.Helper()
	c, f, ok := accept(l, addr)
	if !ok {
		t.Fatalf("connection from %s refused", addr)
	}
	return c, f
}

func checkCounts(t *testing.T, l *Limiter, open, pending int64) {
	t.Helper()
	if o, p := l.Stats().Open.Load(), l.Stats().Pending.Load(); o != open || p != pending {
		t.Fatalf("open %d pending %d, want %d %d", o, p, open, pending)
	}
}

// TestShedOrder: at a cap the connection idle the longest goes first,
// even when an older one is still reading its request; then the oldest
// reader; a connection being served is kept, and when nothing else is
// left the newcomer is refused instead.
func TestShedOrder(t *testing.T) {
	l, _ := newTestLimiter(t, Config{MaxPending: 4, MaxPerAddress: -1})
	_, readerF := mustAccept(t, l, "10.0.0.1")
	busy, busyF := mustAccept(t, l, "10.0.0.2")
	l.connState(busy, http.StateActive)
	idle1, idle1F := mustAccept(t, l, "10.0.0.3")
	idle2, idle2F := mustAccept(t, l, "10.0.0.4")
	// idle2 goes idle first, so it has been idle longest, though idle1 is
	// older.
	l.connState(idle2, http.StateActive)
	l.connState(idle2, http.StateIdle)
	l.connState(idle1, http.StateActive)
	l.connState(idle1, http.StateIdle)

	mustAccept(t, l, "10.0.0.5")
	if idle2F.closes.Load() != 1 || idle1F.closes.Load()+readerF.closes.Load() != 0 {
		t.Fatal("first shed: not the connection idle longest")
	}
	mustAccept(t, l, "10.0.0.6")
	if idle1F.closes.Load() != 1 || readerF.closes.Load() != 0 {
		t.Fatal("second shed: not the other idle connection")
	}
	youngest, youngestF := mustAccept(t, l, "10.0.0.7")
	if readerF.closes.Load() != 1 {
		t.Fatal("third shed: the oldest reader was not closed")
	}
	// Left: busy, 10.0.0.5, 10.0.0.6 and 10.0.0.7, all reading; serve
	// all but the youngest: it is the only victim left.
	l.mu.Lock()
	var served []*conn
	for c := l.head; c != nil; c = c.next {
		if c != busy && c != youngest {
			served = append(served, c)
		}
	}
	l.mu.Unlock()
	for _, c := range served {
		l.connState(c, http.StateActive)
	}
	mustAccept(t, l, "10.0.0.8")
	if youngestF.closes.Load() != 1 {
		t.Fatal("fourth shed: the only reader was not closed")
	}
	l.connState(l.tail, http.StateActive) // 10.0.0.8: now every slot is busy
	if _, f, ok := accept(l, "10.0.0.9"); ok || f.closes.Load() != 0 {
		// admit leaves closing a refused connection to Accept.
		t.Fatalf("newcomer admitted (%v) with every slot busy", ok)
	}
	if busyF.closes.Load() != 0 {
		t.Fatal("a busy connection was closed")
	}
	s := l.Stats()
	if s.ShedIdle.Load() != 2 || s.ShedReading.Load() != 2 || s.Refused.Load() != 1 || s.AtMaxPending.Load() != 5 {
		t.Fatalf("shed idle %d reading %d refused %d at-max %d, want 2 2 1 5", s.ShedIdle.Load(), s.ShedReading.Load(), s.Refused.Load(), s.AtMaxPending.Load())
	}
	checkCounts(t, l, 4, 4)
	if s.PeakPending.Load() != 4 || s.PeakOpen.Load() != 4 {
		t.Fatalf("peaks %d %d, want 4 4", s.PeakOpen.Load(), s.PeakPending.Load())
	}
}

// TestNeverShedBusyOrHijacked: WebSockets and connections running a
// handler (HTTP/1 active, or an HTTP/2 connection with a handler running)
// are never closed to make room.
func TestNeverShedBusyOrHijacked(t *testing.T) {
	l, _ := newTestLimiter(t, Config{MaxOpen: 3, MaxPerAddress: -1})
	ws, wsF := mustAccept(t, l, "10.0.0.1")
	l.connState(ws, http.StateActive)
	l.connState(ws, http.StateHijacked)
	checkCounts(t, l, 1, 0)
	busy, busyF := mustAccept(t, l, "10.0.0.2")
	l.connState(busy, http.StateActive)
	h2, h2F := mustAccept(t, l, "10.0.0.3") // HTTP/2 with a stream open
	l.connState(h2, http.StateActive)
	l.connState(h2, http.StateIdle)
	l.connState(h2, http.StateActive)

	if _, _, ok := accept(l, "10.0.0.4"); ok {
		t.Fatal("admitted past MaxOpen with nothing to shed")
	}
	if wsF.closes.Load()+busyF.closes.Load()+h2F.closes.Load() != 0 {
		t.Fatal("closed a WebSocket or a busy connection")
	}
	if l.Stats().AtMaxOpen.Load() != 1 || l.Stats().Refused.Load() != 1 {
		t.Fatal("refusal not counted")
	}
	// Once its last stream ends, the HTTP/2 connection is idle: shed first.
	l.connState(h2, http.StateIdle)
	mustAccept(t, l, "10.0.0.4")
	if h2F.closes.Load() != 1 || l.Stats().ShedIdle.Load() != 1 {
		t.Fatal("idle HTTP/2 connection not shed")
	}
	checkCounts(t, l, 3, 2)
	// Closing the WebSocket frees an open slot without any shedding.
	ws.Close()
	mustAccept(t, l, "10.0.0.5")
	checkCounts(t, l, 3, 3)
}

// TestPerAddress: the per-address cap sheds only connections of the
// address that reached it, and exempt addresses are not capped.
func TestPerAddress(t *testing.T) {
	l, _ := newTestLimiter(t, Config{
		MaxPerAddress: 2,
		Exempt:        []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::7/128")},
	})
	other, otherF := mustAccept(t, l, "10.0.0.9") // oldest, idle: but another address
	l.connState(other, http.StateIdle)
	a1, a1F := mustAccept(t, l, "10.0.0.1")
	l.connState(a1, http.StateIdle)
	_, a2F := mustAccept(t, l, "10.0.0.1")

	mustAccept(t, l, "10.0.0.1")
	if a1F.closes.Load() != 1 || otherF.closes.Load() != 0 {
		t.Fatal("per-address cap did not shed the same address's idle connection")
	}
	mustAccept(t, l, "10.0.0.1")
	if a2F.closes.Load() != 1 || otherF.closes.Load() != 0 {
		t.Fatal("per-address cap did not shed the same address's reader")
	}
	// Both of 10.0.0.1's connections are now being served: refused, even
	// though another address has an idle connection.
	l.mu.Lock()
	for c := l.head; c != nil; c = c.next {
		if c.key == netip.MustParseAddr("10.0.0.1") {
			c.state = active
		}
	}
	l.mu.Unlock()
	if _, _, ok := accept(l, "10.0.0.1"); ok {
		t.Fatal("admitted past the per-address cap")
	}
	if otherF.closes.Load() != 0 {
		t.Fatal("per-address cap shed another address's connection")
	}
	if s := l.Stats(); s.AtMaxPerAddress.Load() != 3 || s.Refused.Load() != 1 {
		t.Fatalf("at-max-per-address %d refused %d, want 3 1", s.AtMaxPerAddress.Load(), s.Refused.Load())
	}
	// Exempt addresses are not capped, and not counted against the /64
	// they are in; nor are they shed for it.
	var exempt []*fakeConn
	for range 10 {
		_, f1 := mustAccept(t, l, "192.0.2.1")
		_, f2 := mustAccept(t, l, "2001:db8::7")
		exempt = append(exempt, f1, f2)
	}
	_, n1 := mustAccept(t, l, "2001:db8::8")
	_, n2 := mustAccept(t, l, "2001:db8::9")
	mustAccept(t, l, "2001:db8::a")
	if n1.closes.Load() != 1 || n2.closes.Load() != 0 {
		t.Fatal("third connection from the /64 did not shed the first")
	}
	for _, f := range exempt {
		if f.closes.Load() != 0 {
			t.Fatal("exempt connection shed")
		}
	}
	if s := l.Stats(); s.ShedIdle.Load()+s.ShedReading.Load() != 3 {
		t.Fatalf("%d shed, want 3", s.ShedIdle.Load()+s.ShedReading.Load())
	}
	checkCounts(t, l, 25, 25)
}

// TestIPv6Grouping: IPv6 clients are counted by /64, IPv4-mapped ones as
// IPv4.
func TestIPv6Grouping(t *testing.T) {
	key := func(s string) netip.Addr { return addrKey(remoteIP(tcpAddr(s))) }
	if key("2001:db8:1:2::1") != key("2001:db8:1:2:ffff::9") {
		t.Error("same /64 counted apart")
	}
	if key("2001:db8:1:2::1") == key("2001:db8:1:3::1") {
		t.Error("different /64s counted together")
	}
	if key("::ffff:10.1.2.3") != netip.MustParseAddr("10.1.2.3") {
		t.Error("IPv4-mapped address not counted as IPv4")
	}
	if key("10.1.2.3") == key("10.1.2.4") {
		t.Error("IPv4 addresses grouped")
	}
	zoned := &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}
	if addrKey(remoteIP(zoned)) != key("fe80::2") {
		t.Error("zoned link-local address not grouped with its /64")
	}

	l, _ := newTestLimiter(t, Config{MaxPerAddress: 2})
	_, f1 := mustAccept(t, l, "2001:db8:1:2::1")
	mustAccept(t, l, "2001:db8:1:2::2")
	mustAccept(t, l, "2001:db8:1:3::1")
	if l.Stats().AtMaxPerAddress.Load() != 0 {
		t.Fatal("another /64 counted with the first")
	}
	mustAccept(t, l, "2001:db8:1:2::3")
	if f1.closes.Load() != 1 || l.Stats().AtMaxPerAddress.Load() != 1 {
		t.Fatal("third connection from one /64 did not shed the first")
	}
	checkCounts(t, l, 3, 3)
}

// TestCloseReleasesOnce: closing twice, or closing a shed connection
// again, gives the slot back once and closes the socket once.
func TestCloseReleasesOnce(t *testing.T) {
	l, _ := newTestLimiter(t, Config{MaxPending: 2, MaxPerAddress: -1})
	a, aF := mustAccept(t, l, "10.0.0.1")
	mustAccept(t, l, "10.0.0.2")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err == nil {
		t.Fatal("second Close returned no error")
	}
	l.connState(a, http.StateClosed) // net/http's report after its own Close
	if aF.closes.Load() != 1 {
		t.Fatalf("socket closed %d times", aF.closes.Load())
	}
	checkCounts(t, l, 1, 1)

	idle, idleF := mustAccept(t, l, "10.0.0.3")
	l.connState(idle, http.StateIdle)
	mustAccept(t, l, "10.0.0.4") // sheds idle
	checkCounts(t, l, 2, 2)
	idle.Close() // net/http notices and closes it again
	l.connState(idle, http.StateClosed)
	if idleF.closes.Load() != 1 {
		t.Fatalf("shed socket closed %d times", idleF.closes.Load())
	}
	checkCounts(t, l, 2, 2)

	// A WebSocket leaves pending when hijacked and open when closed, once.
	ws, wsF := mustAccept(t, l, "10.0.0.5") // sheds the oldest reader, 10.0.0.2
	l.connState(ws, http.StateHijacked)
	checkCounts(t, l, 2, 1)
	ws.Close()
	ws.Close()
	if wsF.closes.Load() != 1 {
		t.Fatalf("WebSocket closed %d times", wsF.closes.Load())
	}
	checkCounts(t, l, 1, 1)
}
