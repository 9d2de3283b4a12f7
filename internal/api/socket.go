package api

import (
	"bytes"
	"net/http"

	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// socket upgrades GET /ws/{id} for a registered id and binds the socket to
// the registration. Unknown ids get 404 and no upgrade.
func (a *API) socket(w http.ResponseWriter, r *http.Request) {
	id := relay.ClientID(r.PathValue("id"))
	if !a.hub.Registered(id) {
		a.failStatus(w, http.StatusNotFound, "no registration with id "+string(id)+"; POST /register first")
		return
	}
	c, err := a.ws.Upgrade(w, r, relay.FormatSeed)
	if err != nil {
		return // answered by the upgrader
	}
	s := &seedSession{api: a}
	s.client, err = a.hub.Attach(id, c)
	if err != nil { // unregistered between the check and the upgrade
		c.Close(relay.CloseUnregistered)
	} else {
		a.log.Debug("socket connected", "user_id", s.client.User, "remote", c.RemoteAddr().String())
	}
	c.Start(s)
}

// seedSession speaks the seed protocol on one socket: the text
// {"topics": [...]} replaces the client's topics, the text "ping" is
// ignored, and anything else closes the socket with 1008 and a reason.
type seedSession struct {
	api    *API
	client *hub.Client // nil when the attach failed
}

func (s *seedSession) HandleText(c *ws.Conn, msg []byte) {
	if s.client == nil {
		return
	}
	if string(bytes.TrimSpace(msg)) == "ping" { // websocat sends "ping\n"
		return
	}
	topics, err := decodeTopics(msg)
	if err == nil {
		err = s.api.hub.SetTopics(s.client, c, topics)
	}
	if err != nil {
		c.CloseWith(relay.ClosePolicy, trimSentinel(err))
	}
}

func (s *seedSession) HandleClose(c *ws.Conn) {
	if s.client != nil {
		s.api.hub.Detach(s.client, c)
		s.api.log.Debug("socket closed", "user_id", s.client.User, "remote", c.RemoteAddr().String())
	}
}
