package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/relayhq/relay/internal/relay"
)

// History paging bounds for GET /history/{topic}.
const (
	defaultHistoryLimit = 100
	maxHistoryLimit     = 1000
)

// historyMessage is one message in a history answer.
type historyMessage struct {
	Offset  uint64 `json:"offset"`
	Message string `json:"message"`
}

// history answers GET /history/{topic}?since=N&limit=L: the messages after
// offset N that the topic's history still holds, oldest first.
func (a *API) history(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := a.hub.CheckTopic(topic); err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	since, err := queryUint(q.Get("since"), "since", 0, ^uint64(0), 0)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, err := queryUint(q.Get("limit"), "limit", 1, maxHistoryLimit, defaultHistoryLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	page, err := a.broker.History(r.Context(), topic, since, int(limit))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	msgs := make([]historyMessage, len(page.Messages))
	for i, m := range page.Messages {
		msgs[i] = historyMessage{Offset: m.Offset, Message: string(m.Data)}
	}
	writeJSON(w, http.StatusOK, struct {
		Topic    string           `json:"topic"`
		Offset   uint64           `json:"offset"`
		Epoch    string           `json:"epoch"`
		Complete bool             `json:"complete"`
		Messages []historyMessage `json:"messages"`
	}{topic, page.Latest.Offset, page.Latest.Epoch, page.Complete, msgs})
}

// presence answers GET /presence/{topic}: the users with a connection
// subscribed to the topic, and how many connections each has.
func (a *API) presence(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := a.hub.CheckTopic(topic); err != nil {
		a.fail(w, r, err)
		return
	}
	users, err := a.hub.Presence(r.Context(), topic)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	total := 0
	for _, u := range users {
		total += u.Connections
	}
	writeJSON(w, http.StatusOK, struct {
		Topic       string          `json:"topic"`
		Users       []relay.Present `json:"users"`
		Connections int             `json:"connections"`
	}{topic, users, total})
}

// queryUint parses an optional unsigned query parameter within [lo, hi].
func queryUint(s, name string, lo, hi, def uint64) (uint64, error) {
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("%s must be an integer from %d to %d, got %q: %w", name, lo, hi, s, relay.ErrInvalid)
	}
	return v, nil
}
