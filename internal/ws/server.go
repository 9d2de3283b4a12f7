// Package ws runs the server side of WebSocket connections: the upgrade,
// one shallow reader per connection, a byte-bounded send queue per
// connection, shared writers that coalesce everything queued into one
// write, and one shared ticker for keepalive, idle and message timeouts
// and close handshakes. It knows nothing of topics or protocols above RFC
// 6455.
//
// Ownership: a Server owns its set of connections, its writers and its
// ticker; each Conn owns its socket (see Conn). Server.mu guards the
// connection set; Conn.mu guards one connection's queue and state. Lock
// order: Server.mu → Conn.mu → writer.mu.
package ws

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/internal/logthrottle"
	"github.com/relayhq/relay/internal/relay"
)

// Config tunes a Server. The zero value works: every zero field takes the
// default named beside it.
type Config struct {
	// SendQueueBytes bounds what may wait to be sent to one connection;
	// past it the connection is closed as a slow consumer (code 4002).
	SendQueueBytes int // default 1 MiB
	// SocketSendBuffer, when positive, sets SO_SNDBUF on every connection:
	// the kernel's share of what a slow client can have waiting, which
	// otherwise autotunes up to several MiB per socket.
	SocketSendBuffer int // default: the kernel's
	// MaxMessageBytes bounds a message from a client (code 1009 past it),
	// across its fragments. A frame whose header declares more than the
	// message has room for is refused before its payload is read.
	MaxMessageBytes int // default 64 KiB
	// MessageTimeout bounds how long a client may take to send one
	// message, from its first frame header to its last byte, across
	// fragments; past it the connection is closed with 1008 ("message not
	// completed within 10s"). A client trickling a message in resets the
	// idle timeout with every byte, while the server holds what it sent:
	// this bounds how long it may hold it. Checked on the keepalive
	// ticker, so the close can come up to one tick (PingInterval/10, at
	// most 1s) late.
	MessageTimeout time.Duration // default 10s
	// PingInterval is how often each connection is pinged.
	PingInterval time.Duration // default 25s
	// IdleTimeout closes a connection nothing was read from for this long
	// (code 4003). Pongs count, so it must exceed PingInterval.
	IdleTimeout time.Duration // default 60s
	// WriteTimeout bounds a write to a socket that pushes back.
	WriteTimeout time.Duration // default 10s
	// CloseTimeout bounds a closing handshake.
	CloseTimeout time.Duration // default 5s
	// HandshakeTimeout bounds the upgrade response.
	HandshakeTimeout time.Duration // default 10s
	// MaxConnections refuses upgrades (503) past this many open
	// connections; 0 means no limit.
	MaxConnections int
	// MessageRate and MessageBurst bound the frames one client may send,
	// per second and in a burst: past them the connection is closed with
	// 4004. Every frame costs one token, text, each fragment of a message,
	// ping, pong and close alike, because the reader shares its poller
	// with other connections and an empty frame costs it about as much as
	// a message: floods of control frames or empty fragments are limited
	// too. A single-frame message costs one token, one sent in k fragments
	// k. Zero rate: no limit.
	MessageRate  float64
	MessageBurst int // default 2 × MessageRate, at least 10
	// Writers is the number of shared writer goroutines.
	Writers int // default GOMAXPROCS
	// CheckOrigin decides whether to accept an upgrade from r's Origin;
	// nil accepts any origin.
	CheckOrigin func(r *http.Request) bool
	// Subprotocols maps the Sec-WebSocket-Protocol values the server
	// speaks to the wire format of their connections; a client that asks
	// for none gets relay.FormatSeed.
	Subprotocols map[string]relay.Format
	// Encoders build a message's whole frame in each format; nil entries
	// fall back to EncodeSeed. An encoder may return nil: no frame.
	Encoders [relay.NumFormats]func(*relay.Message) []byte
	// Error answers a failed handshake; nil writes {"error": "..."}. The
	// Server has already set Sec-WebSocket-Version: 13 when the request
	// asked for no version or another one (RFC 6455 §4.2.2), and logged
	// the refusal.
	Error func(w http.ResponseWriter, r *http.Request, status int, reason error)
	// Log receives a line for every connection that ends (its close code,
	// reason and client address; see closeCodes for the levels) and every
	// refused upgrade, each kind within its budget; nil logs nothing.
	Log *logthrottle.Throttle
}

// Defaults for the zero Config.
const (
	DefaultSendQueueBytes  = 1 << 20
	DefaultMaxMessageBytes = 64 << 10
	DefaultPingInterval    = 25 * time.Second
	DefaultIdleTimeout     = 60 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultCloseTimeout    = 5 * time.Second
	DefaultMessageTimeout  = 10 * time.Second
)

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = DefaultSendQueueBytes
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	def(&c.PingInterval, DefaultPingInterval)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.CloseTimeout, DefaultCloseTimeout)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.MessageTimeout, DefaultMessageTimeout)
	if c.MessageBurst <= 0 {
		c.MessageBurst = max(10, int(2*c.MessageRate))
	}
	if c.Writers <= 0 {
		c.Writers = runtime.GOMAXPROCS(0)
	}
	if c.CheckOrigin == nil {
		c.CheckOrigin = func(*http.Request) bool { return true }
	}
	if c.Error == nil {
		c.Error = upgradeError
	}
	for f := range c.Encoders {
		if c.Encoders[f] == nil {
			c.Encoders[f] = EncodeSeed
		}
	}
	return c
}

// Stats are the server's counters, read by the metrics exporter.
type Stats struct {
	Connections   atomic.Int64  // open connections
	Accepted      atomic.Uint64 // upgrades completed
	SlowConsumers atomic.Uint64 // connections closed because their queue overflowed
	IdleCloses    atomic.Uint64 // connections closed by the idle timeout
	WriteTimeouts atomic.Uint64 // connections dropped because a write timed out
	Violations    atomic.Uint64 // connections closed for breaking the protocol
	Backpressured atomic.Uint64 // times a socket pushed back and got its own writer
	MessagesIn    atomic.Uint64 // text messages read from clients
	RateLimited   atomic.Uint64 // connections closed for sending too fast
	SlowMessages  atomic.Uint64 // connections closed because a message took longer than MessageTimeout
	Refused       atomic.Uint64 // upgrades refused at the connection limit
}

// Server accepts and runs WebSocket connections. Create it with New, run
// its background work with Run, and upgrade requests with Upgrade.
type Server struct {
	cfg      Config
	upgrader websocket.Upgrader
	writers  []*writer
	pollers  []*poller     // empty where epoll is unavailable
	next     atomic.Uint32 // round-robin writer and keepalive bucket
	ids      atomic.Uint64 // the last connection's ID
	buckets  uint32        // ticks per ping cycle
	tick     time.Duration
	stats    Stats
	slots    atomic.Int64 // connections open or being upgraded
	noPoller bool         // tests: read with a goroutine per connection
	slowText string       // the close reason past MessageTimeout

	mu       sync.Mutex
	conns    map[*Conn]struct{}
	closing  bool          // shutting down: no new connections
	drained  chan struct{} // closed when closing and no connection is left
	snapshot []*Conn       // reused by the ticker
}

// New returns a Server; it starts nothing.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:     cfg,
		conns:   make(map[*Conn]struct{}),
		drained: make(chan struct{}),
		// Short: a close reason may be at most 123 bytes.
		slowText: "message not completed within " + cfg.MessageTimeout.String(),
	}
	// The ticker visits every connection each tick and pings one bucket of
	// them, so pings are spread over the interval rather than bunched.
	s.tick = min(time.Second, max(cfg.PingInterval/10, time.Millisecond))
	s.buckets = uint32(max(1, cfg.PingInterval/s.tick))
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// ReadBufferSize 0 and a WriteBufferPool make gorilla reuse the
		// buffers net/http already has: the handshake allocates nothing
		// that outlives it. Only the handshake is gorilla's; framing is ours.
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    slices.Sorted(maps.Keys(cfg.Subprotocols)),
		CheckOrigin:     cfg.CheckOrigin,
	}
	s.upgrader.Error = s.refuse
	for range cfg.Writers {
		s.writers = append(s.writers, newWriter())
		if p, err := newPoller(); err == nil {
			s.pollers = append(s.pollers, p)
		}
	}
	return s
}

// Stats returns the server's live counters.
func (s *Server) Stats() *Stats { return &s.stats }

// upgradeError answers a failed handshake with Relay's JSON error shape.
func upgradeError(w http.ResponseWriter, r *http.Request, status int, reason error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": "websocket upgrade failed: " + reason.Error()})
	w.Write(b)
}

// refuse answers a failed handshake with the installed Error handler, after
// naming the version the server speaks if the client asked for no version
// or another one (RFC 6455 §4.2.2: whichever handler is installed), and
// logging the refusal.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, reason error) {
	if !speaksVersion13(r.Header) {
		w.Header().Set("Sec-WebSocket-Version", "13")
	}
	s.logRefused(r, status, reason)
	s.cfg.Error(w, r, status, reason)
}

// speaksVersion13 reports whether h's Sec-WebSocket-Version lists 13.
func speaksVersion13(h http.Header) bool {
	for _, v := range h.Values("Sec-Websocket-Version") {
		for t := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(t) == "13" {
				return true
			}
		}
	}
	return false
}

// logRefused logs a refused upgrade: at Debug during shutdown, at Warn at
// the connection limit (the operator may raise it), else at Info (the
// client's handshake was at fault).
func (s *Server) logRefused(r *http.Request, status int, reason error) {
	lt, ctx := s.cfg.Log, r.Context()
	level := slog.LevelInfo
	switch reason {
	case ErrShuttingDown:
		level = slog.LevelDebug
	case ErrFull:
		level = slog.LevelWarn
	}
	if !lt.Enabled(ctx, level) || !lt.Allow(ctx, level, "ws_upgrade_"+strconv.Itoa(status)) {
		return
	}
	lt.Logger().LogAttrs(ctx, level, "websocket upgrade refused", slog.Int("status", status), slog.String("reason", reason.Error()),
		slog.String("remote", r.RemoteAddr), slog.String("route", r.Pattern)) // the pattern: a path may hold a registration id, a credential
}

// ErrFull refuses upgrades at the connection limit.
var ErrFull = fmt.Errorf("connection limit reached; retry later: %w", relay.ErrUnavailable)

// ErrShuttingDown refuses upgrades once shutdown has begun.
var ErrShuttingDown = fmt.Errorf("server is shutting down: %w", relay.ErrUnavailable)

// Upgrade completes the WebSocket handshake on r and returns the
// connection, which is not yet reading: call Start. On failure the client
// has already been answered.
func (s *Server) Upgrade(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	return s.UpgradeAs(w, r, nil)
}

// Profile is how the connections of a protocol that is not Relay's own
// differ from Relay's: their wire format, close codes and keepalive ping.
// One Profile serves every connection of its protocol; it must not change.
type Profile struct {
	// Format is the format Deliver encodes messages in.
	Format relay.Format
	// CloseCodes replace the codes and texts of closeCodes for the reasons
	// they list (the level the close is logged at stays).
	CloseCodes map[relay.CloseReason]CloseCode
	// Ping is a whole frame sent on every keepalive ping instead of a
	// WebSocket ping, for protocols whose clients expect their own.
	Ping []byte
}

// CloseCode is a close frame's code and reason text.
type CloseCode struct {
	Code uint16
	Text string
}

// UpgradeAs is Upgrade for a connection of the protocol p describes;
// nil p is Upgrade.
func (s *Server) UpgradeAs(w http.ResponseWriter, r *http.Request, p *Profile) (*Conn, error) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		s.refuse(w, r, http.StatusServiceUnavailable, ErrShuttingDown)
		return nil, ErrShuttingDown
	}
	// A slot is taken before the handshake, so concurrent upgrades cannot
	// overshoot the limit; remove gives it back.
	if n := s.slots.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.slots.Add(-1)
		s.stats.Refused.Add(1)
		w.Header().Set("Retry-After", "1")
		s.refuse(w, r, http.StatusServiceUnavailable, ErrFull)
		return nil, ErrFull
	}
	wc, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.slots.Add(-1)
		return nil, err
	}
	nc := wc.NetConn()
	nc.SetDeadline(time.Time{}) // net/http's request deadlines must not outlive the upgrade
	proto := wc.Subprotocol()
	format := s.cfg.Subprotocols[proto]
	if p != nil {
		format = p.Format
	}
	c := s.adopt(nc, format, proto, p)
	if c == nil {
		s.slots.Add(-1)
		return nil, ErrShuttingDown
	}
	return c, nil
}

// adopt wraps an upgraded connection and adds it to the set, or closes it
// and returns nil when the server is shutting down.
func (s *Server) adopt(nc net.Conn, format relay.Format, proto string, p *Profile) *Conn {
	n := s.next.Add(1)
	c := &Conn{
		srv:    s,
		nc:     nc,
		w:      s.writers[n%uint32(len(s.writers))],
		bucket: n % s.buckets,
		format: format,
		encode: s.cfg.Encoders[format],
		prof:   p,
		proto:  proto,
		id:     s.ids.Add(1),
	}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			if n := s.cfg.SocketSendBuffer; n > 0 {
				raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n) })
			}
			if len(s.pollers) > 0 && !s.noPoller {
				raw.Control(func(fd uintptr) { c.fd = int32(fd) })
				c.p = s.pollers[n%uint32(len(s.pollers))]
			}
		}
	}
	now := time.Now().UnixNano()
	c.lastHeard.Store(now)
	c.rd.tokens = float64(s.cfg.MessageBurst)
	c.rd.refilled = now
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return nil
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.stats.Connections.Add(1)
	s.stats.Accepted.Add(1)
	return c
}

func (s *Server) remove(c *Conn) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.slots.Add(-1)
		s.stats.Connections.Add(-1)
		if s.closing && len(s.conns) == 0 {
			close(s.drained)
		}
	}
	s.mu.Unlock()
}

// Run runs the writers and the keepalive ticker until ctx is done, then
// shuts down: every connection is sent what is queued and a 1001 close,
// and whatever is still open after shutdownTimeout is dropped. Run returns
// once every connection is closed and the writers have stopped.
func (s *Server) Run(ctx context.Context, shutdownTimeout time.Duration) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range s.writers {
		wg.Go(func() { w.run(stop) })
	}
	loops := make([]chan struct{}, len(s.pollers))
	for i, p := range s.pollers {
		loops[i] = make(chan struct{})
		go func() {
			defer close(loops[i])
			p.run()
		}()
	}
	t := time.NewTicker(s.tick)
	var k uint32
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case now := <-t.C:
			k++
			s.keepalive(now.UnixNano(), k%s.buckets)
		}
	}
	t.Stop()
	s.shutdown(shutdownTimeout)
	close(stop)
	wg.Wait()
	for i, p := range s.pollers {
		p.close(loops[i])
	}
	return nil
}

func (s *Server) keepalive(now int64, bucket uint32) {
	s.mu.Lock()
	list := s.snapshot[:0]
	for c := range s.conns {
		list = append(list, c)
	}
	s.mu.Unlock()
	for _, c := range list {
		c.keepalive(now, bucket)
	}
	clear(list)
	s.snapshot = list
}

// shutdown closes every connection with 1001 and waits for them, up to
// timeout, before dropping the rest.
func (s *Server) shutdown(timeout time.Duration) {
	s.mu.Lock()
	s.closing = true
	list := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	if len(s.conns) == 0 {
		close(s.drained)
	}
	s.mu.Unlock()
	for _, c := range list {
		c.Close(relay.CloseShutdown)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	// Close handshakes that stall are ended by the close timeout, checked
	// here since the ticker has stopped.
	poll := time.NewTicker(s.tick)
	defer poll.Stop()
	for {
		select {
		case <-s.drained:
			return
		case now := <-poll.C:
			for _, c := range list {
				c.keepalive(now.UnixNano(), s.buckets) // bucket out of range: no pings
			}
		case <-t.C:
			for _, c := range list {
				c.finish(causeShutdown)
			}
			return
		}
	}
}

// Len returns the number of open connections.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
