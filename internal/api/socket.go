package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/protocol/relayv1"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// socket upgrades GET /ws/{id} for a registered id and binds the socket to
// the registration. Unknown ids get 404 and no upgrade.
func (a *API) socket(w http.ResponseWriter, r *http.Request) {
	id := relay.ClientID(r.PathValue("id"))
	if !a.ready(w, r) {
		return
	}
	// Claimed before the upgrade, so that of two sockets for one id the
	// one whose handshake completed last wins, on any node.
	ctx, cancel := context.WithTimeout(r.Context(), claimTimeout)
	ticket, err := a.hub.Claim(ctx, id)
	cancel()
	if err != nil {
		if errors.Is(err, relay.ErrNotFound) {
			a.failStatus(w, r, http.StatusNotFound, "no registration with id "+string(id)+"; POST /register first")
		} else {
			a.fail(w, r, err)
		}
		return
	}
	c, err := a.ws.Upgrade(w, r)
	if err != nil {
		a.hub.Abandon(ticket)
		return // answered by the upgrader
	}
	a.start(c, func(keepTopics bool) (*hub.Client, error) { return a.hub.AttachTicket(ticket, c, keepTopics) })
}

// claimTimeout bounds claiming a registration from a networked engine.
const claimTimeout = 5 * time.Second

// ready refuses new sockets with 503 while the engine is unreachable: they
// could neither subscribe nor be found by other nodes.
func (a *API) ready(w http.ResponseWriter, r *http.Request) bool {
	if err := a.broker.Ready(); err != nil {
		w.Header().Set("Retry-After", "1")
		a.fail(w, r, err)
		return false
	}
	return true
}

// tokenSocket upgrades GET /ws?token=<JWT>: a socket that authenticates
// with a signed connect token instead of a registration. The token is
// checked before the upgrade; a refused one gets 401 and no socket.
func (a *API) tokenSocket(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if tok == "" {
		a.failStatus(w, r, http.StatusUnauthorized, "connect with /ws?token=<JWT>, or to a registration's /ws/{id}")
		return
	}
	claims, err := a.cfg.Auth.Verify(tok)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !a.ready(w, r) {
		return
	}
	c, err := a.ws.Upgrade(w, r)
	if err != nil {
		return // answered by the upgrader
	}
	var allowed hub.TopicFilter
	if claims.Topics != nil {
		allowed = claims.Topics
	}
	a.start(c, func(keepTopics bool) (*hub.Client, error) {
		return a.hub.Connect(claims.User, c, allowed, keepTopics)
	})
}

// start binds an upgraded socket to its registration with attach and
// starts reading it with the session of the protocol it negotiated: seed
// sockets keep the registration's topics (new ones start on "cats"),
// relay.v1 sockets start with none.
func (a *API) start(c *ws.Conn, attach func(keepTopics bool) (*hub.Client, error)) {
	var (
		h      ws.Handler
		client *hub.Client
		err    error
	)
	if c.Subprotocol() == relayv1.Subprotocol {
		client, err = attach(false)
		h = a.relayv1.NewSession(client)
	} else {
		client, err = attach(true)
		h = a.seed.NewSession(client)
	}
	switch {
	case errors.Is(err, hub.ErrSuperseded): // a later connect for the id won
		c.Close(relay.CloseReplaced)
	case errors.Is(err, relay.ErrNotFound): // unregistered between the check and the upgrade
		c.Close(relay.CloseUnregistered)
	case err != nil:
		if ctx := context.Background(); a.logs.Allow(ctx, slog.LevelWarn, "ws_bind_failed") {
			a.logs.Logger().LogAttrs(ctx, slog.LevelWarn, "binding a socket to its registration failed", slog.Any("err", err), slog.String("remote", c.RemoteAddr().String()))
		}
		c.CloseWith(relay.CloseInternal, "the server could not bind the connection; reconnect")
	default:
		proto := c.Subprotocol()
		if proto == "" {
			proto = "seed"
		}
		c.SetLogAttrs(slog.Uint64("user_id", uint64(client.User)), slog.String("protocol", proto))
		if ctx := context.Background(); a.logs.Allow(ctx, slog.LevelDebug, "ws_connect") {
			a.logs.Logger().LogAttrs(ctx, slog.LevelDebug, "socket connected", slog.Uint64("conn", c.ID()), slog.Uint64("user_id", uint64(client.User)),
				slog.String("protocol", proto), slog.String("remote", c.RemoteAddr().String()))
		}
	}
	c.Start(h)
}
