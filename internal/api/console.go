package api

import "net/http"

// Console holds the handlers of POST /publish, GET /history/{topic}, GET
// /presence/{topic} and GET /ws/{id} without their API key check and rate
// limits, for a caller that authenticated the request itself: the
// dashboard (package dashboard) serves its console through them, so that
// it has no second implementation of publishing. History and Presence
// read the path value "topic", Socket the path value "id"; mount them
// under patterns that define those.
type Console struct {
	Publish, History, Presence, Socket http.HandlerFunc
}

// Console returns the API's handlers for an already authenticated caller.
func (a *API) Console() Console {
	return Console{Publish: a.publish, History: a.history, Presence: a.presence, Socket: a.socket}
}
