package dashboard

import (
	"encoding/json"
	"net/http"

	"github.com/relayhq/relay/internal/relay"
)

// WatchUser is the user id the console's watch sockets register as; it
// shows in a watched topic's presence like any subscriber.
const WatchUser relay.UserID = 0

// watch answers POST /dashboard/api/watch with the path of a relay.v1
// socket for the console: a registration of WatchUser, connected through
// the dashboard's own socket route so that it is same-origin on either
// listener.
func (d *Dashboard) watch(w http.ResponseWriter, r *http.Request) {
	id, err := d.cfg.Hub.Register(r.Context(), WatchUser)
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, "could not register the watch socket: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(struct {
		Path     string `json:"path"`
		Protocol string `json:"protocol"`
	}{"/dashboard/api/ws/" + string(id), "relay.v1"})
}

// socket upgrades the console's watch socket through the API's own socket
// handler. The browser's origin is checked here (it must be this page's),
// then dropped, so that the API's allowed origins, which are about the
// application's pages, do not apply to the dashboard's.
func (d *Dashboard) socket(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") == "" || !sameOrigin(r) {
		jsonError(w, http.StatusForbidden, "the watch socket is for the dashboard page only")
		return
	}
	r.Header.Del("Origin")
	d.console.Socket(w, r)
}

func quoteJSON(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
