// Package server assembles one Relay node (hub, broker, WebSocket server,
// HTTP API, metrics) from structured configuration and runs it until its
// context ends. cmd/relay builds the configuration; tests build it directly
// to run real servers in-process.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/connlimit"
	"github.com/relayhq/relay/internal/dashboard"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/logthrottle"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/metrics"
	"github.com/relayhq/relay/internal/protocol/pusher"
	"github.com/relayhq/relay/internal/protocol/relayv1"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// Config configures a node. The zero value serves the seed API with
// defaults everywhere.
type Config struct {
	Hub    hub.Config
	WS     ws.Config
	API    api.Config
	Memory memorybroker.Config
	// Engine is the engine the node runs on, built by the caller (a
	// networked one shares registrations, streams and presence with other
	// nodes); nil runs the embedded memory engine configured by Memory.
	Engine relay.Engine
	// NodeID names this node in logs, metrics and /readyz.
	NodeID string
	// Metrics serves /metrics on the main listener.
	Metrics bool
	// ShutdownTimeout bounds a graceful stop: in-flight requests finish and
	// sockets get their 1001 close within it.
	ShutdownTimeout time.Duration // default 10s
	// AdminAddr, when set, serves pprof and /metrics on a second listener
	// (keep it private).
	AdminAddr string
	// TLSCert and TLSKey, when set, serve HTTPS and wss:// with the
	// standard library.
	TLSCert, TLSKey string
	// HTTP server timeouts against slow clients.
	ReadHeaderTimeout time.Duration // default 10s
	ReadTimeout       time.Duration // default 30s
	WriteTimeout      time.Duration // default 30s; upgraded sockets clear it
	IdleTimeout       time.Duration // default 120s
	// Pusher, when it holds apps, serves the Pusher Channels protocol
	// (sockets at /app/{key}, the HTTP API at /apps/{id}/...) beside
	// Relay's own, under PusherPathPrefix.
	Pusher           *pusher.Apps
	PusherPathPrefix string
	// PusherVacateDelay: see pusher.Config.VacateDelay (tests shorten it).
	PusherVacateDelay time.Duration
	// Conns caps the main listener's connections, in total and per client
	// address, so that slow or idle connections cannot exhaust file
	// descriptors and starve health checks, publishes and WebSockets; see
	// package connlimit. The zero value caps them below the open-file
	// limit.
	Conns connlimit.Config
}

// Server is one Relay node.
type Server struct {
	cfg     Config
	log     *slog.Logger
	Hub     *hub.Hub
	WS      *ws.Server
	API     *api.API
	Engine  relay.Engine
	Broker  *memorybroker.Broker // the memory engine, nil with another
	metrics http.Handler
	// pusherHTTP serves the Pusher routes when there are apps;
	// pusherSockets is its socket endpoint behind the connect rate.
	pusherHTTP    http.Handler
	pusherSockets http.HandlerFunc
	conns         connlimit.Stats // the main listener's connections; see ConnStats
	// logs budgets the lines clients can cause (refusals, closes) for
	// every component, under one global cap.
	logs *logthrottle.Throttle

	// Dashboard is served at /dashboard/ on the admin listener, and on the
	// main listener behind a login when API keys are configured.
	Dashboard *dashboard.Dashboard
	// Pusher is the Pusher protocol, nil when no app is configured.
	Pusher *pusher.Protocol
}

// New assembles a node; it starts nothing.
func New(cfg Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.ShutdownTimeout, 10*time.Second)
	def(&cfg.ReadHeaderTimeout, 10*time.Second)
	def(&cfg.ReadTimeout, 30*time.Second)
	def(&cfg.WriteTimeout, 30*time.Second)
	def(&cfg.IdleTimeout, 120*time.Second)

	s := &Server{cfg: cfg, log: log, Engine: cfg.Engine, logs: logthrottle.New(log, logthrottle.Config{})}
	if s.Engine == nil {
		s.Broker = memorybroker.New(cfg.Memory, nil)
		s.Engine = s.Broker
	}
	hubCfg := cfg.Hub
	hubCfg.Interest = s.Engine
	hubCfg.Registry = s.Engine.Registry()
	hubCfg.Roster = s.Engine.Roster()
	// Presence transitions feed the Pusher webhooks: from the hub on the
	// memory engine, from the roster (once across the cluster) otherwise.
	transitions := func(t relay.Transition) {
		if s.Pusher != nil {
			s.Pusher.Transition(t)
		}
	}
	if r, ok := hubCfg.Roster.(relay.TransitionReporter); ok {
		r.ReportTransitions(transitions)
	} else if hubCfg.Roster == nil {
		hubCfg.Transitions = transitions
	}
	s.Hub = hub.New(hubCfg, log.With("component", "hub"))
	// The engine delivers to the hub; a topic with local subscribers keeps
	// its stream or fresh epoch, since they were told its epoch.
	s.Engine.Bind(s.Hub)
	var a *api.API
	wsCfg := cfg.WS
	wsCfg.Subprotocols = map[string]relay.Format{relayv1.Subprotocol: relay.FormatV1}
	wsCfg.Encoders[relay.FormatV1] = relayv1.Encode
	wsCfg.Encoders[relay.FormatPusher] = pusher.Encode
	if wsCfg.CheckOrigin == nil {
		wsCfg.CheckOrigin = func(r *http.Request) bool { return a.CheckOrigin(r) }
	}
	if cfg.Pusher.Len() > 0 {
		// A Pusher socket from a refused origin is upgraded and closed
		// with 4009 by the protocol: a 403 would make pusher-js retry
		// forever.
		check := wsCfg.CheckOrigin
		wsCfg.CheckOrigin = func(r *http.Request) bool { return s.isPusher(r) || check(r) }
	}
	wsCfg.Error = func(w http.ResponseWriter, r *http.Request, status int, reason error) {
		a.UpgradeError(w, r, status, reason)
	}
	if wsCfg.Log == nil {
		wsCfg.Log = s.logs
	}
	s.WS = ws.New(wsCfg)
	apiCfg := cfg.API
	if cfg.Metrics {
		apiCfg.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.metrics.ServeHTTP(w, r) })
	}
	apiCfg.NodeID = cfg.NodeID
	if apiCfg.Logs == nil {
		apiCfg.Logs = s.logs
	}
	a = api.New(apiCfg, s.Hub, s.Engine, s.WS, log.With("component", "api"))
	s.API = a
	if cfg.Pusher.Len() > 0 {
		s.Pusher = pusher.New(pusher.Config{Apps: cfg.Pusher, Hub: s.Hub, Broker: s.Engine, Roster: hubCfg.Roster, WS: s.WS,
			CheckOrigin: a.CheckOrigin, PathPrefix: cfg.PusherPathPrefix, Log: s.logs, VacateDelay: cfg.PusherVacateDelay})
		s.pusherHTTP = s.Pusher.Handler()
		s.pusherSockets = a.ConnectLimited(s.pusherHTTP.ServeHTTP)
	}
	src := metrics.Sources{Hub: s.Hub.Stats(), WS: s.WS.Stats(), API: a.Stats(), Memory: s.Broker, Conns: &s.conns, Engine: s.Engine, NodeID: cfg.NodeID}
	if s.Pusher != nil {
		src.Pusher = s.Pusher.Stats()
	}
	s.metrics = metrics.Handler(src)
	s.Dashboard = dashboard.New(dashboard.Config{Hub: s.Hub, WS: s.WS, API: a, Conns: &s.conns, Engine: s.Engine,
		NodeID: cfg.NodeID, Auth: cfg.API.Auth, Log: log.With("component", "dashboard")})
	return s
}

// Listen opens the TCP listener Relay serves on. TCP keepalive is off:
// WebSocket pings already detect dead peers, and configuring keepalive
// costs four setsockopt calls on every accepted connection.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(ctx, "tcp", addr)
}

// maxStreamsPerConn bounds the requests one HTTP/2 connection runs at once.
const maxStreamsPerConn = 16

// Run serves on ln until ctx ends, then stops gracefully: /health turns
// 503, the listener closes, in-flight requests finish, and every socket
// gets a 1001 close, all within the shutdown timeout.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	// The limiter wraps the TCP listener, beneath TLS, so it counts and
	// caps connections whether or not they speak TLS.
	connCfg := s.cfg.Conns
	if connCfg.Logs == nil {
		connCfg.Logs = s.logs
	}
	limiter := connlimit.New(connCfg, &s.conns, s.log)
	ln = limiter.Listener(ln)
	srv := &http.Server{
		Handler:           s.withPusher(dashboard.Mount(s.API, s.Dashboard.Public(), s.Dashboard.Landing())),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errorLog(s.logs),
	}
	if s.cfg.TLSCert != "" {
		srv.TLSConfig = tlsConfig()
		// The connection caps count connections, and an HTTP/2 connection
		// carries many requests: bound them, or one connection could run
		// 250 slow handlers that are never shed.
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreamsPerConn}
	}
	limiter.Install(srv)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		if s.cfg.TLSCert != "" {
			err = srv.ServeTLS(ln, s.cfg.TLSCert, s.cfg.TLSKey)
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return s.API.Run(ctx) })
	g.Go(func() error { return s.logs.Run(ctx) })
	defer s.logs.Flush() // what was suppressed during the shutdown
	g.Go(func() error { return s.Dashboard.Run(ctx) })
	g.Go(func() error { return s.Hub.Run(ctx) })
	// The engine outlives the sockets, so that those closed at shutdown
	// hand their registrations back to it (clients reconnect elsewhere).
	engineCtx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEngine()
	// The Pusher webhooks outlive the engine: it reports the leaves of
	// this node's presence as it stops, and they are sent from here.
	pusherCtx, stopPusher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPusher()
	if s.Pusher != nil {
		g.Go(func() error { return s.Pusher.Run(pusherCtx) })
	}
	g.Go(func() error {
		err := s.Engine.Run(engineCtx)
		stopPusher()
		if err == nil && ctx.Err() == nil {
			err = errors.New("the engine stopped")
		}
		return err
	})
	g.Go(func() error {
		err := s.WS.Run(ctx, s.cfg.ShutdownTimeout)
		if s.Pusher != nil {
			s.Pusher.Flush() // the closed sockets' channels are vacated now
		}
		s.Hub.Settle() // the closed sockets' registrations reach the engine
		stopEngine()
		return err
	})
	if s.cfg.AdminAddr != "" {
		admin, err := s.admin(ctx)
		if err != nil {
			srv.Close()
			return err
		}
		g.Go(admin)
	}
	g.Go(func() error {
		<-ctx.Done()
		s.API.Drain()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	})
	return g.Wait()
}

// admin listens on the admin address for pprof, metrics and the
// dashboard (without a login: the address is private).
func (s *Server) admin(ctx context.Context) (func() error, error) {
	ln, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/metrics", s.metrics)
	mux.Handle("/dashboard/", s.Dashboard.Admin())
	mux.Handle("GET /{$}", s.Dashboard.Landing())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("admin listener (pprof, metrics, dashboard)", "addr", ln.Addr().String())
	return func() error {
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}

// isPusher reports whether r is for the Pusher protocol: its sockets and
// HTTP API, which authenticate with an app's key and secret, not with
// Relay's API keys, and answer errors as Pusher does.
func (s *Server) isPusher(r *http.Request) bool {
	return s.pusherRoute(r) != ""
}

// pusherRoute is "app" for a Pusher socket, "apps" for the HTTP API, ""
// for neither.
func (s *Server) pusherRoute(r *http.Request) string {
	if s.pusherHTTP == nil {
		return ""
	}
	p := r.URL.Path
	if s.cfg.PusherPathPrefix != "" {
		p = strings.TrimPrefix(p, s.cfg.PusherPathPrefix) // a proxy may have stripped it already
	}
	switch {
	case strings.HasPrefix(p, "/app/"):
		return "app"
	case strings.HasPrefix(p, "/apps/"):
		return "apps"
	}
	return ""
}

// withPusher sends the Pusher routes to the Pusher protocol, the rest to
// next.
func (s *Server) withPusher(next http.Handler) http.Handler {
	if s.pusherHTTP == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch s.pusherRoute(r) {
		case "app":
			s.pusherSockets(w, r)
			return
		case "apps":
			s.pusherHTTP.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
