// Package api serves Relay's own HTTP routes: the seed API (health,
// register, publish), history, presence, the OpenAPI description and the
// WebSocket upgrades (/ws/{id} and /ws?token=), which authenticate a socket
// and hand it, bound to its hub client, to the session of the protocol it
// negotiated (packages seed and relayv1 under internal/protocol). It
// decodes and validates every request, maps errors to statuses in one
// table (errors.go) and answers every failure with {"error": "..."}.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayhq/relay/docs"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/logthrottle"
	"github.com/relayhq/relay/internal/protocol/relayv1"
	"github.com/relayhq/relay/internal/protocol/seed"
	"github.com/relayhq/relay/internal/ratelimit"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// Config tunes the API. The zero value works.
type Config struct {
	// PublicURL is the base of the socket URLs /register hands out
	// (ws://, wss://, http:// or https://, with an optional path prefix).
	// Nil builds them from each request's Host.
	PublicURL *url.URL
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64 // default 1 MiB
	// MaxMessageBytes bounds a published message.
	MaxMessageBytes int // default 64 KiB
	// AllowedOrigins lists the browser origins allowed by CORS and on
	// WebSocket upgrades; empty or "*" allows any.
	AllowedOrigins []string
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler
	// MetricsNeedKey makes /metrics take the API key like server-side
	// calls do.
	MetricsNeedKey bool
	// Auth checks API keys and connect tokens; nil is the open mode, with
	// neither.
	Auth *auth.Auth
	// RegisterLimit and ConnectLimit rate-limit POST /register and
	// WebSocket upgrades per client address; nil: no limit.
	RegisterLimit, ConnectLimit *ratelimit.Limiter
	// NodeID names this node in /readyz answers.
	NodeID string
	// Logs budgets the lines logged for refused requests and closed
	// sockets; nil: a Throttle of its own over New's logger.
	Logs *logthrottle.Throttle
}

// Defaults for the zero Config.
const (
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxMessageBytes = 64 << 10
)

// API is the HTTP handler. Create it with New.
type API struct {
	cfg     Config
	hub     *hub.Hub
	broker  relay.Broker
	ws      *ws.Server
	log     *slog.Logger
	logs    *logthrottle.Throttle
	handler http.Handler
	routes  []Route
	seed    *seed.Protocol
	relayv1 *relayv1.Protocol
	stats   Stats
	anyOrig bool
	closing atomic.Bool
}

// New builds the API over a hub, the broker that carries publishes, and the
// WebSocket server.
func New(cfg Config, h *hub.Hub, b relay.Broker, wss *ws.Server, log *slog.Logger) *API {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{cfg: cfg, hub: h, broker: b, ws: wss, log: log, logs: cfg.Logs}
	if a.logs == nil {
		a.logs = logthrottle.New(log, logthrottle.Config{})
	}
	a.seed = seed.New(h, a.logs)
	a.relayv1 = relayv1.New(h, b, log)
	a.stats.seed = a.seed
	a.anyOrig = len(cfg.AllowedOrigins) == 0 || slices.Contains(cfg.AllowedOrigins, "*")
	if a.cfg.Auth == nil {
		a.cfg.Auth, _ = auth.New(auth.Config{}) // the open mode cannot fail
	}
	mux := http.NewServeMux()
	for _, rt := range a.table() {
		mux.Handle(rt.Pattern, a.methods(rt.Method, rt.handler))
		a.routes = append(a.routes, rt.Route)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.failStatus(w, r, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	a.handler = a.cors(mux)
	return a
}

// Route is one route the API mounts. A GET route answers HEAD too, and
// every path answers OPTIONS (CORS) before routing; other methods get 405.
type Route struct {
	Method  string
	Pattern string // a ServeMux path pattern, such as /register/{id}
}

// route is a Route with its handler, wrapped in the API key check and
// rate limit it takes.
type route struct {
	Route
	handler http.HandlerFunc
}

// table lists the API's routes, /metrics only when it is configured.
func (a *API) table() []route {
	rs := []route{
		{Route{http.MethodGet, "/health"}, a.health},
		{Route{http.MethodGet, "/readyz"}, a.readyz},
		{Route{http.MethodPost, "/register"}, a.keyed(a.limited(a.cfg.RegisterLimit, "register", a.register))},
		{Route{http.MethodDelete, "/register/{id}"}, a.keyed(a.unregister)},
		{Route{http.MethodPost, "/publish"}, a.keyed(a.publish)},
		{Route{http.MethodPost, "/publish/batch"}, a.keyed(a.publishBatch)},
		{Route{http.MethodGet, "/history/{topic}"}, a.keyed(a.history)},
		{Route{http.MethodGet, "/presence/{topic}"}, a.keyed(a.presence)},
		{Route{http.MethodGet, "/ws/{id}"}, a.limited(a.cfg.ConnectLimit, "connect", a.socket)},
		{Route{http.MethodGet, "/ws"}, a.limited(a.cfg.ConnectLimit, "connect", a.tokenSocket)},
		{Route{http.MethodGet, "/openapi.yaml"}, a.openAPI},
	}
	if a.cfg.Metrics != nil {
		h := a.cfg.Metrics.ServeHTTP
		if a.cfg.MetricsNeedKey {
			h = a.keyed(h)
		}
		rs = append(rs, route{Route{http.MethodGet, "/metrics"}, h})
	}
	return rs
}

// Routes lists the routes this API mounts, in order (docs/openapi.yaml
// describes them; its test checks both ways).
func (a *API) Routes() []Route { return slices.Clone(a.routes) }

// openAPI serves docs/openapi.yaml, the description of this API.
func (a *API) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(docs.OpenAPI)
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.handler.ServeHTTP(w, r) }

// Stats returns the API's counters.
func (a *API) Stats() *Stats { return &a.stats }

// keyed makes h take the API key, when keys are configured.
func (a *API) keyed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := a.cfg.Auth.CheckKey(r.Header.Get("Authorization")); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="relay"`)
			a.fail(w, r, err)
			return
		}
		h(w, r)
	}
}

// limited rate-limits h per client address with l (nil: no limit).
func (a *API) limited(l *ratelimit.Limiter, what string, h http.HandlerFunc) http.HandlerFunc {
	if l == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && !l.Allow(ap.Addr(), time.Now()) {
			a.stats.limited(what)
			w.Header().Set("Retry-After", "1")
			a.failStatus(w, r, http.StatusTooManyRequests, "too many "+what+" requests from your address; slow down and retry")
			return
		}
		h(w, r)
	}
}

// ConnectLimited wraps h, another protocol's socket endpoint, in the
// per-address connect rate (-connect-rate) Relay's own sockets have.
func (a *API) ConnectLimited(h http.HandlerFunc) http.HandlerFunc {
	return a.limited(a.cfg.ConnectLimit, "connect", h)
}

// Run sweeps the rate limiters until ctx is done.
func (a *API) Run(ctx context.Context) error {
	return relay.Every(ctx, 10*time.Second, func(now time.Time) {
		a.cfg.RegisterLimit.Sweep(now)
		a.cfg.ConnectLimit.Sweep(now)
	})
}

// Drain makes /health answer 503 so load balancers stop sending traffic
// while the server shuts down.
func (a *API) Drain() { a.closing.Store(true) }

// methods serves h for one method (GET also answers HEAD) and refuses the
// others with 405 and an Allow header.
func (a *API) methods(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
			h(w, r)
			return
		}
		w.Header().Set("Allow", method+", OPTIONS")
		a.failStatus(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, method))
	})
}

// allowedOrigin reports whether a browser at origin may use the API.
func (a *API) allowedOrigin(origin string) bool {
	return a.anyOrig || slices.Contains(a.cfg.AllowedOrigins, origin)
}

// UpgradeError answers a failed WebSocket handshake like any other refusal
// (the WebSocket server has logged it).
func (a *API) UpgradeError(w http.ResponseWriter, r *http.Request, status int, reason error) {
	a.answer(w, status, "websocket upgrade failed: "+reason.Error())
}

// CheckOrigin is the WebSocket upgrade's origin check: requests without an
// Origin (non-browser clients) pass; browsers must be allowed.
func (a *API) CheckOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o == "" || a.allowedOrigin(o)
}

// cors answers preflights and marks responses readable by allowed origins.
func (a *API) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && a.allowedOrigin(origin) {
			h := w.Header()
			if a.anyOrig {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
				h.Add("Vary", "Origin")
			}
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
				if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
					h.Set("Access-Control-Allow-Headers", req)
				} else {
					h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
				}
				h.Set("Access-Control-Max-Age", "86400")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if r.Method == http.MethodOptions {
			if origin != "" && !a.allowedOrigin(origin) {
				a.failStatus(w, r, http.StatusForbidden, fmt.Sprintf("origin %q is not allowed", origin))
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// readyz answers whether this node can serve: 200 while its engine is
// reachable, 503 naming the cause otherwise. /health stays a liveness
// check: a node whose engine is down keeps its sockets open.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.closing.Load() {
		a.failStatus(w, r, http.StatusServiceUnavailable, "shutting down")
		return
	}
	if err := a.broker.Ready(); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
		Node   string `json:"node,omitempty"`
	}{"ready", a.cfg.NodeID})
}

func (a *API) health(w http.ResponseWriter, r *http.Request) {
	if a.closing.Load() {
		a.failStatus(w, r, http.StatusServiceUnavailable, "shutting down")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// bodyBufs recycles request body buffers; the decoders copy out what they
// keep.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBody is the largest body buffer returned to the pool.
const maxPooledBody = 64 << 10

// body reads a request body of at most MaxBodyBytes into a pooled buffer,
// which the caller hands back with putBody.
func (a *API) body(w http.ResponseWriter, r *http.Request) (*[]byte, error) {
	bp := bodyBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	src := http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = buf
			putBody(bp)
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, fmt.Errorf("request body exceeds %d bytes: %w", tooBig.Limit, relay.ErrTooLarge)
			}
			return nil, fmt.Errorf("reading request body: %v: %w", err, relay.ErrInvalid)
		}
	}
	*bp = buf
	return bp, nil
}

func putBody(bp *[]byte) {
	if cap(*bp) <= maxPooledBody {
		bodyBufs.Put(bp)
	}
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	b, err := a.body(w, r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	req, err := decodeRegister(*b)
	putBody(b)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	base, err := a.socketBase(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id, err := a.hub.Register(r.Context(), req.User)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		URL string `json:"url"`
	}{base + string(id)})
}

// socketBase returns the URL that register's ids are appended to: the
// configured public URL, else ws://<Host>/ws/ (wss:// over TLS).
func (a *API) socketBase(r *http.Request) (string, error) {
	if u := a.cfg.PublicURL; u != nil {
		scheme := u.Scheme
		switch scheme {
		case "http":
			scheme = "ws"
		case "https":
			scheme = "wss"
		}
		return scheme + "://" + u.Host + strings.TrimSuffix(u.Path, "/") + "/ws/", nil
	}
	host := r.Host
	if host == "" {
		if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			host = addr.String()
		}
	}
	if !validHost(host) {
		return "", fmt.Errorf("the Host header %s is not a host name; configure the server's public URL: %w", strconv.Quote(host), relay.ErrInvalid)
	}
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	return scheme + "://" + host + "/ws/", nil
}

// validHost accepts host[:port] made of the characters DNS names, IPv4 and
// bracketed IPv6 literals use, so a Host header cannot inject a path or
// query into the URLs handed out.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

func (a *API) unregister(w http.ResponseWriter, r *http.Request) {
	if err := a.hub.Unregister(r.Context(), relay.ClientID(r.PathValue("id"))); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
