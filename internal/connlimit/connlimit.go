// Package connlimit caps the connections one HTTP listener holds, so that
// clients holding many slow connections (slowloris) can use up neither the
// process's file descriptors nor the server's goroutines, and a health
// check or a publish that sends its request promptly is still served.
//
// A Limiter wraps the listener (Listener) and watches the http.Server
// (Install). It counts every connection from accept to close, WebSockets
// included, and the pending ones (not handed over to a WebSocket) in total
// and per client address. When a new connection would go past a cap, the
// Limiter makes room by closing the connection that is cheapest to lose:
// the one idle the longest between keep-alive requests, else the oldest
// one still reading its first request. It never closes a connection whose
// handler is running or that became a WebSocket; when there is nothing it
// may close, it closes the new connection instead. The per-address cap
// only ever closes connections of the address that reached it, so one
// address cannot push others out. An attacker and a health checker may
// share an address: the health check still gets in, as the newest
// connection, and is served before the attacker's newer connections push
// it out, because it sends its request at once.
//
// Ownership: the Limiter owns its counts and its list of pending
// connections, both under Limiter.mu, which is taken on accept, on the
// http.Server's connection state changes and when a connection closes;
// nothing on a WebSocket's read or write path takes it. A conn owns its
// socket; closing it gives its slot back exactly once. Lines are logged
// outside mu, within the budgets of a logthrottle.Throttle.
package connlimit

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayhq/relay/internal/logthrottle"
)

// Config sets the caps. The zero value works: every zero field takes the
// default named beside it.
type Config struct {
	// MaxOpen caps the connections accepted on the listener and not yet
	// closed, WebSockets included (one that became a WebSocket counts until
	// its socket is closed). Past it the process would run out of file
	// descriptors, and then nobody, health checks and the engine's own
	// connections included, gets one. Negative: no cap.
	MaxOpen int // default: the open-file limit (RLIMIT_NOFILE) minus 64 for the engine, the admin listener and files
	// MaxPending caps the connections not handed over to a WebSocket: those
	// reading a request, running a handler or idle between keep-alive
	// requests. Each costs a goroutine and buffers, and these are what a
	// slowloris attack holds. Negative: no cap.
	MaxPending int // default 1024
	// MaxPerAddress caps the pending connections from one client address
	// (an IPv4 address, or an IPv6 /64, which is what one host usually
	// gets). Negative: no cap.
	MaxPerAddress int // default 256
	// Exempt lists the client addresses the per-address cap does not apply
	// to, such as a load balancer or a proxy that many clients share. Their
	// connections still count towards MaxOpen and MaxPending.
	Exempt []netip.Prefix
	// Logs budgets the lines logged for shed and refused connections and
	// failed accepts; nil: a Throttle of its own over New's logger.
	Logs *logthrottle.Throttle
}

// Defaults.
const (
	// Headroom is what the default MaxOpen leaves of the open-file limit
	// for descriptors that are not client connections: the engine's
	// connections, the admin listener, files.
	Headroom = 64
	// DefaultMaxPending is MaxPending's default.
	DefaultMaxPending = 1024
	// DefaultMaxPerAddress is MaxPerAddress's default.
	DefaultMaxPerAddress = 256
)

// Stats are the Limiter's live counters, read by the metrics exporter.
// Gauges (Open, Pending, Peak*) change only under the Limiter's lock, so
// they never exceed their caps; counters only grow.
type Stats struct {
	// Open is the connections accepted and not yet closed, WebSockets
	// included: compare with MaxOpen.
	Open atomic.Int64
	// Pending is the open connections that are not WebSockets: compare
	// with MaxPending.
	Pending atomic.Int64
	// PeakOpen and PeakPending are the highest Open and Pending seen.
	PeakOpen, PeakPending atomic.Int64
	// AtMaxOpen, AtMaxPending and AtMaxPerAddress count new connections
	// that found that cap reached (one connection can count in several);
	// they say which cap to raise, or that an attack is under way.
	AtMaxOpen, AtMaxPending, AtMaxPerAddress atomic.Uint64
	// ShedIdle counts idle keep-alive connections closed to make room.
	// Their clients just reconnect.
	ShedIdle atomic.Uint64
	// ShedReading counts connections closed to make room while they were
	// still reading their first request: slowloris, or clients slower
	// than the rate at which new connections arrive.
	ShedReading atomic.Uint64
	// Refused counts new connections closed at once because a cap was
	// reached and no connection could be closed instead: every one that
	// counts against that cap was running a handler or was a WebSocket.
	Refused atomic.Uint64
	// Aborted counts requests not run because their connection had just
	// been shed (see Install).
	Aborted atomic.Uint64
	// AcceptErrors counts failed accepts that were retried (such as EMFILE,
	// too many open files); they are logged at most once per 10s.
	AcceptErrors atomic.Uint64
}

// Limiter enforces a Config on the connections of one listener served by
// one http.Server. Create it with New, wrap the listener with Listener and
// hook the server with Install before serving.
type Limiter struct {
	maxOpen, maxPending, maxPerAddr int // <= 0: no cap
	exempt                          []netip.Prefix
	stats                           *Stats
	logs                            *logthrottle.Throttle

	// Tests replace these.
	backoffMin time.Duration // first wait after a failed accept
	backoffMax time.Duration

	mu         sync.Mutex
	open       int
	pending    int
	perAddr    map[netip.Addr]int // pending connections by address key, exempt ones left out
	head, tail *conn              // pending connections; see victimLocked for the order

	unreported atomic.Uint64 // accept errors since the last accept-error line
}

// New returns a Limiter for cfg. Its counters go to stats, or to a Stats of
// its own when stats is nil; passing one lets a caller hand the pointer to
// a metrics exporter before the Limiter exists. log receives the lines
// for shed and refused connections and failed accepts, within cfg.Logs'
// budgets (or those of a Throttle of its own); nil discards them. New
// starts nothing.
func New(cfg Config, stats *Stats, log *slog.Logger) *Limiter {
	if stats == nil {
		stats = new(Stats)
	}
	logs := cfg.Logs
	if logs == nil {
		logs = logthrottle.New(log, logthrottle.Config{})
	}
	logs.Limit(kindAcceptError, 1, logEvery)
	def := func(v, d int) int {
		if v == 0 {
			return d
		}
		return v
	}
	return &Limiter{
		maxOpen:    def(cfg.MaxOpen, defaultMaxOpen()),
		maxPending: def(cfg.MaxPending, DefaultMaxPending),
		maxPerAddr: def(cfg.MaxPerAddress, DefaultMaxPerAddress),
		exempt:     cfg.Exempt,
		stats:      stats,
		logs:       logs,
		backoffMin: 5 * time.Millisecond,
		backoffMax: time.Second,
		perAddr:    make(map[netip.Addr]int),
	}
}

// defaultMaxOpen is the open-file limit less Headroom (or half the limit
// when that is small), or no cap when the limit is unknown. Go raises the
// soft limit to the hard one at startup, so this is the hard limit.
func defaultMaxOpen() int {
	n := openFileLimit()
	switch {
	case n <= 0:
		return -1
	case n > 1<<24: // effectively unlimited
		n = 1 << 24
	}
	return max(n-Headroom, n/2)
}

// Stats returns the live counters.
func (l *Limiter) Stats() *Stats { return l.stats }

// Install sets srv.ConnState (calling any hook already set) so the
// Limiter learns what each connection is doing, and wraps srv.Handler
// (and srv.ConnContext) so that no request runs on a connection it has
// shed. Call it before serving.
//
// net/http reports StateActive only once a request's headers have been
// read, so a connection reading its first request is still StateNew, and
// one reading a later request is still StateIdle; StateActive lasts until
// the response is written. HTTP/2 reports StateActive while any stream is
// open and StateIdle when none is.
//
// Between the end of a request's headers and the StateActive hook, the
// connection still looks like one reading, and may be shed; its request
// would then run anyway, and a publish could be applied while its client
// only sees the connection close. The StateActive hook runs before the
// handler and takes the same lock as shedding, so a handler that finds
// its connection shed knows it was shed first: it is aborted
// (http.ErrAbortHandler) before doing anything, and the client can retry
// safely.
func (l *Limiter) Install(srv *http.Server) {
	hook := srv.ConnState
	srv.ConnState = func(nc net.Conn, st http.ConnState) {
		l.connState(nc, st)
		if hook != nil {
			hook(nc, st)
		}
	}
	connCtx := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, nc net.Conn) context.Context {
		if connCtx != nil {
			ctx = connCtx(ctx, nc)
		}
		if c := unwrap(nc); c != nil {
			ctx = context.WithValue(ctx, connKey{}, c)
		}
		return ctx
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, _ := r.Context().Value(connKey{}).(*conn); c != nil && c.shed.Load() {
			l.stats.Aborted.Add(1)
			panic(http.ErrAbortHandler)
		}
		h.ServeHTTP(w, r)
	})
}

// connKey keys a request context's *conn.
type connKey struct{}

// unwrap returns the Limiter's conn under nc, looking through TLS.
func unwrap(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

// state is what a pending connection is doing, as far as shedding cares.
type state uint8

const (
	reading  state = iota // accepted, in its TLS handshake or reading its first request (StateNew)
	active                // serving a request (StateActive): never shed
	idle                  // between requests (StateIdle), perhaps reading the next one
	hijacked              // handed over, to a WebSocket: no longer pending
)

func (l *Limiter) connState(nc net.Conn, st http.ConnState) {
	c := unwrap(nc)
	if c == nil {
		return
	}
	switch st {
	case http.StateActive:
		l.setState(c, active)
	case http.StateIdle:
		l.setState(c, idle)
	case http.StateHijacked:
		l.mu.Lock()
		if !c.released && c.state != hijacked {
			l.unlinkLocked(c)
			c.state = hijacked
			l.stats.Pending.Store(int64(l.pending))
		}
		l.mu.Unlock()
	case http.StateClosed:
		c.Close() // net/http has closed it already; this only makes sure the slot is back
	}
}

func (l *Limiter) setState(c *conn, s state) {
	l.mu.Lock()
	if c.state != hijacked && !c.released {
		c.state = s
		if s == idle {
			l.toTailLocked(c)
		}
	}
	l.mu.Unlock()
}

// admit counts c in, closing a victim to make room if a cap is reached. It
// reports false when there was no victim: the caller closes c.
func (l *Limiter) admit(c *conn) bool {
	ip := remoteIP(c.RemoteAddr())
	c.key = addrKey(ip)
	for _, p := range l.exempt {
		if p.Contains(ip) {
			c.exempt = true
			break
		}
	}
	l.mu.Lock()
	var victim *conn
	var victimIdle bool
	perAddr := !c.exempt && l.maxPerAddr > 0 && l.perAddr[c.key] >= l.maxPerAddr
	openFull := l.maxOpen > 0 && l.open >= l.maxOpen
	pendingFull := l.maxPending > 0 && l.pending >= l.maxPending
	if perAddr {
		l.stats.AtMaxPerAddress.Add(1)
	}
	if openFull {
		l.stats.AtMaxOpen.Add(1)
	}
	if pendingFull {
		l.stats.AtMaxPending.Add(1)
	}
	if perAddr || openFull || pendingFull {
		// One victim is enough: the counts are at most their caps, and a
		// victim of the same address lowers all three.
		victim = l.victimLocked(c.key, perAddr)
		if victim == nil {
			l.mu.Unlock()
			l.stats.Refused.Add(1)
			l.logCap(slog.LevelWarn, kindRefused, "connection refused: a cap is reached and every connection under it is busy", c, nil, perAddr, openFull)
			return false
		}
		victim.shed.Store(true) // before any StateActive hook of its can run: see Install
		if victimIdle = victim.state == idle; victimIdle {
			l.stats.ShedIdle.Add(1)
		} else {
			l.stats.ShedReading.Add(1)
		}
		l.releaseLocked(victim)
	}
	l.open++
	l.pending++
	if !c.exempt {
		l.perAddr[c.key]++
	}
	c.prev = l.tail
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
	l.publishLocked()
	l.mu.Unlock()
	if victim != nil {
		// Outside the lock; the victim's slot is already free, and its
		// own later Close does nothing more.
		victim.Close()
		if victimIdle {
			l.logCap(slog.LevelDebug, kindShedIdle, "idle connection closed to make room", c, victim, perAddr, openFull)
		} else {
			l.logCap(slog.LevelInfo, kindShedReading, "connection still sending its first request closed to make room", c, victim, perAddr, openFull)
		}
	}
	return true
}

// Log kinds (package logthrottle).
const (
	kindAcceptError = "accept_error"
	kindRefused     = "conn_refused"
	kindShedIdle    = "conn_shed_idle"
	kindShedReading = "conn_shed_reading"
)

// logCap logs a connection closed at a cap: the newcomer c, refused, or
// the victim closed to make room for it, with the cap that was reached and
// both addresses. Shedding an idle keep-alive connection is routine
// (Debug); shedding one still sending its first request (slowloris, Info)
// and refusing a newcomer (Warn) say a cap is too low or an attack is under
// way.
func (l *Limiter) logCap(level slog.Level, kind, msg string, c, victim *conn, perAddr, openFull bool) {
	ctx := context.Background()
	if !l.logs.Allow(ctx, level, kind) {
		return
	}
	limit := "http"
	switch {
	case perAddr:
		limit = "per_address"
	case openFull:
		limit = "open"
	}
	attrs := []slog.Attr{slog.String("cap", limit), slog.String("remote", c.RemoteAddr().String())}
	if victim != nil {
		attrs = append(attrs, slog.String("closed", victim.RemoteAddr().String()))
	}
	l.logs.Logger().LogAttrs(ctx, level, msg, attrs...)
}

// victimLocked returns the pending connection to close for a newcomer:
// the one idle the longest, else the oldest one still reading its first
// request; of the address key only when sameAddr. Connections serving a
// request (from the end of its headers to the end of its response) are
// never chosen.
//
// The list keeps readers in accept order and moves a connection to the
// back whenever it turns idle, so the first idle and the first reader
// found from the front are the ones wanted. Cost: one walk of the list,
// stopping at the first idle connection: O(MaxPending) at worst, a few
// microseconds at the default 1024, and paid only when a cap is reached.
//
// There is deliberately no minimum age for a reader to be closed: with
// one, an attacker that reconnects as fast as it is shed keeps every slot
// younger than the minimum, and then every newcomer, health checks
// included, is refused. Without one, every newcomer gets in and keeps its
// slot until MaxPending (or, from a busy address, MaxPerAddress) newer
// connections have arrived; a client that sends its request promptly is
// served long before that.
func (l *Limiter) victimLocked(key netip.Addr, sameAddr bool) *conn {
	var reader *conn
	for c := l.head; c != nil; c = c.next {
		if sameAddr && (c.key != key || c.exempt) {
			continue
		}
		switch c.state {
		case idle:
			return c
		case reading:
			if reader == nil {
				reader = c
			}
		}
	}
	return reader
}

// release gives c's slot back, once.
func (l *Limiter) release(c *conn) {
	l.mu.Lock()
	l.releaseLocked(c)
	l.mu.Unlock()
}

func (l *Limiter) releaseLocked(c *conn) {
	if c.released {
		return
	}
	c.released = true
	l.open--
	if c.state != hijacked {
		l.unlinkLocked(c)
	}
	l.publishLocked()
}

// unlinkLocked takes c off the pending list and counts.
func (l *Limiter) unlinkLocked(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
	l.pending--
	if c.exempt {
		return
	}
	if n := l.perAddr[c.key] - 1; n > 0 {
		l.perAddr[c.key] = n
	} else {
		delete(l.perAddr, c.key)
	}
}

// toTailLocked moves pending c to the back of the list.
func (l *Limiter) toTailLocked(c *conn) {
	if l.tail == c || c.state == hijacked {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	c.next.prev = c.prev // c is not the tail, so c.next != nil
	c.prev, c.next = l.tail, nil
	l.tail.next = c
	l.tail = c
}

func (l *Limiter) publishLocked() {
	s := l.stats
	s.Open.Store(int64(l.open))
	s.Pending.Store(int64(l.pending))
	if int64(l.open) > s.PeakOpen.Load() {
		s.PeakOpen.Store(int64(l.open))
	}
	if int64(l.pending) > s.PeakPending.Load() {
		s.PeakPending.Store(int64(l.pending))
	}
}

// remoteIP is a's IP address, IPv4 in IPv6 unmapped, without a zone; the
// zero Addr when a is not IP.
func remoteIP(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	case nil:
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	return ip.Unmap().WithZone("")
}

// addrKey is the key a connection from ip is counted under: the IPv4
// address, or the IPv6 /64 (a host usually gets a whole /64, so counting
// single IPv6 addresses would cap nothing). Addresses that are not IP
// share the zero key.
func addrKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}
