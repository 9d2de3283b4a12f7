// Package dashboard serves Relay's web dashboard at /dashboard/: live
// figures of the node (pushed by server-sent events every second, with the
// last five minutes of rates kept server-side), the topics with the most
// subscribers, and a console to publish, watch a topic over relay.v1, and
// read a topic's history and presence. Its pages, style and script are
// embedded in the binary (no CDN, no build step) and run under a strict
// Content-Security-Policy.
//
// The dashboard is mounted twice: on the admin listener without a login
// (Admin), and on the main listener (Public) only when API keys are
// configured, behind a login that takes a key and keeps a server-side
// session. The console goes through the API's own handlers (api.Console),
// so it publishes and reads exactly as the public API does.
package dashboard

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/connlimit"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

//go:embed static
var staticFS embed.FS

var (
	static    fs.FS
	templates *template.Template
)

func init() {
	static, _ = fs.Sub(staticFS, "static")
	templates = template.Must(template.ParseFS(staticFS, "static/*.html"))
}

// Config is what the dashboard shows and acts on.
type Config struct {
	Hub    *hub.Hub
	WS     *ws.Server
	API    *api.API
	Conns  *connlimit.Stats // the main listener's connections; nil: not shown
	Engine relay.Engine
	NodeID string
	// Auth checks the API key at the main listener's login; nil or without
	// keys, the main listener serves no dashboard.
	Auth *auth.Auth
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration // default 12h
	// MaxSessions bounds the logins held; past it the oldest is dropped.
	MaxSessions int // default 1000
	Log         *slog.Logger
}

// Dashboard is one node's dashboard. Create it with New and run its
// sampler with Run.
type Dashboard struct {
	cfg      Config
	console  api.Console
	sessions *sessions
	now      func() time.Time
	started  time.Time

	mu     sync.Mutex // guards the sampler's state below
	last   sample
	series ring

	cur      atomic.Pointer[frame]
	peers    atomic.Pointer[[]NodeSummary] // every node's summary, when the engine is Peers
	streams  atomic.Int32                  // event streams open
	stopping chan struct{}
	stopOnce sync.Once

	admin, public http.Handler
}

// maxStreams bounds the event streams open at once on one node.
const maxStreams = 64

// CSRFHeader must be sent, with any value, on every request that changes
// something (publish, watch, logout): a page on another origin cannot set
// it without a CORS preflight, which the dashboard never grants.
const CSRFHeader = "X-Relay-Dashboard"

// New builds a dashboard; Run samples the node's figures.
func New(cfg Config) *Dashboard {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1000
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	d := &Dashboard{
		cfg:      cfg,
		console:  cfg.API.Console(),
		sessions: newSessions(cfg.MaxSessions),
		now:      time.Now,
		stopping: make(chan struct{}),
	}
	d.started = d.now()
	d.sample()
	d.admin = d.routes(false)
	d.public = d.routes(true)
	return d
}

// Run samples the figures every second until ctx ends, then ends the
// event streams so that the HTTP servers can shut down.
func (d *Dashboard) Run(ctx context.Context) error {
	defer d.stopOnce.Do(func() { close(d.stopping) })
	if p, ok := d.cfg.Engine.(Peers); ok {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() { defer close(done); d.sharePeers(ctx, p) }()
	}
	err := relay.Every(ctx, time.Second, func(time.Time) { d.sample() })
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Admin serves the dashboard without a login, for the private admin
// listener.
func (d *Dashboard) Admin() http.Handler { return d.admin }

// Public serves the dashboard on the main listener: behind a login when
// API keys are configured, else a page saying where to find it.
func (d *Dashboard) Public() http.Handler { return d.public }

// Route is one route the dashboard serves.
type Route struct{ Method, Pattern string }

// Routes lists the dashboard's routes (and the landing page at /), for
// documentation and the API description's coverage check.
func Routes() []Route {
	return []Route{
		{"GET", "/"},
		{"GET", "/dashboard/"},
		{"GET", "/dashboard/app.js"},
		{"GET", "/dashboard/app.css"},
		{"GET", "/dashboard/icon.svg"},
		{"POST", "/dashboard/login"},
		{"POST", "/dashboard/logout"},
		{"GET", "/dashboard/events"},
		{"GET", "/dashboard/api/snapshot"},
		{"POST", "/dashboard/api/publish"},
		{"GET", "/dashboard/api/history/{topic}"},
		{"GET", "/dashboard/api/presence/{topic}"},
		{"POST", "/dashboard/api/watch"},
		{"GET", "/dashboard/api/ws/{id}"},
	}
}

// csp allows the page's own files only. 'self' covers same-origin ws:
// and wss: for the console's watch socket.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// secure sets the headers every dashboard answer carries.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin") // not no-referrer: that makes form posts send Origin: null
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

// routes builds the handler of one listener; public requires a login.
func (d *Dashboard) routes(public bool) http.Handler {
	mux := http.NewServeMux()
	assets := http.StripPrefix("/dashboard/", http.FileServerFS(static))
	for _, f := range []string{"app.js", "app.css", "icon.svg"} {
		mux.Handle("GET /dashboard/"+f, cacheShort(assets))
	}
	if public && (d.cfg.Auth == nil || !d.cfg.Auth.KeysRequired()) {
		// No keys: no console on a public listener.
		mux.HandleFunc("/dashboard/", func(w http.ResponseWriter, r *http.Request) {
			d.page(w, http.StatusNotFound, "disabled.html", nil)
		})
		return secure(mux)
	}
	guard := func(h http.HandlerFunc) http.HandlerFunc { return h }
	if public {
		guard = d.loggedIn
		mux.HandleFunc("POST /dashboard/login", d.login)
		mux.HandleFunc("POST /dashboard/logout", csrf(d.logout))
	}
	mux.HandleFunc("GET /dashboard/{$}", func(w http.ResponseWriter, r *http.Request) {
		if public && !d.session(r) {
			d.page(w, http.StatusOK, "login.html", loginData{Error: loginError(r.URL.Query().Get("login"))})
			return
		}
		d.page(w, http.StatusOK, "index.html", indexData{Node: d.cfg.NodeID, Login: public, CSRFHeader: CSRFHeader})
	})
	mux.HandleFunc("GET /dashboard/events", guard(d.events))
	mux.HandleFunc("GET /dashboard/api/snapshot", guard(d.snapshot))
	mux.HandleFunc("POST /dashboard/api/publish", guard(csrf(d.console.Publish)))
	mux.HandleFunc("GET /dashboard/api/history/{topic}", guard(noStore(d.console.History)))
	mux.HandleFunc("GET /dashboard/api/presence/{topic}", guard(noStore(d.console.Presence)))
	mux.HandleFunc("POST /dashboard/api/watch", guard(csrf(d.watch)))
	mux.HandleFunc("GET /dashboard/api/ws/{id}", guard(d.socket))
	mux.HandleFunc("/dashboard/", func(w http.ResponseWriter, r *http.Request) {
		jsonError(w, http.StatusNotFound, "no dashboard route for "+r.Method+" "+r.URL.Path)
	})
	return secure(mux)
}

func cacheShort(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

func noStore(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		h(w, r)
	}
}

// csrf refuses a state-changing request without the CSRF header.
func csrf(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(CSRFHeader) == "" {
			jsonError(w, http.StatusForbidden, "this request needs the "+CSRFHeader+" header; use the dashboard page")
			return
		}
		h(w, r)
	}
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	var b bytes.Buffer
	b.WriteString(`{"error":`)
	b.Write(quoteJSON(msg))
	b.WriteString("}")
	w.Write(b.Bytes())
}

type indexData struct {
	Node       string
	Login      bool
	CSRFHeader string
}

type loginData struct{ Error string }

// page renders one of the embedded HTML templates.
func (d *Dashboard) page(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		d.cfg.Log.Error("rendering a dashboard page", "page", name, "err", err)
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// Landing answers GET / (exactly) with a short page on what Relay is and
// where to go; every other path is the API's.
func (d *Dashboard) Landing() http.Handler {
	return secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.page(w, http.StatusOK, "landing.html", struct{ Node string }{d.cfg.NodeID})
	}))
}

// Mount routes exact GET and HEAD / to the landing page and /dashboard/...
// to dash, and everything else to next. It costs a string comparison per
// request, so it can sit in front of the publish path.
func Mount(next, dash, landing http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			landing.ServeHTTP(w, r)
		case strings.HasPrefix(p, "/dashboard") && (len(p) == len("/dashboard") || p[len("/dashboard")] == '/'):
			dash.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}
