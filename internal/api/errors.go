package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/relayhq/relay/internal/relay"
)

// statuses is the one table from Relay's sentinel errors to HTTP statuses
// and to the codes of relay.v1 error frames.
var statuses = []struct {
	err    error
	status int
	code   string
}{
	{relay.ErrInvalid, http.StatusBadRequest, "invalid"},
	{relay.ErrUnauthorized, http.StatusUnauthorized, "unauthorized"},
	{relay.ErrForbidden, http.StatusForbidden, "forbidden"},
	{relay.ErrNotFound, http.StatusNotFound, "not_found"},
	{relay.ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
	{relay.ErrLimit, http.StatusTooManyRequests, "limit_exceeded"},
	{relay.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
}

// v1Code maps err to a relay.v1 error code.
func v1Code(err error) string {
	for _, s := range statuses {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return "internal"
}

// status maps err to an HTTP status; errors outside the table are the
// server's fault.
func status(err error) int {
	for _, s := range statuses {
		if errors.Is(err, s.err) {
			return s.status
		}
	}
	return http.StatusInternalServerError
}

// Stats count the requests the API refused, by status, and those refused
// by a rate limit, by what was limited.
type Stats struct {
	rejected        [600]atomic.Uint64
	limitedRegister atomic.Uint64
	limitedConnect  atomic.Uint64
}

func (s *Stats) limited(what string) {
	if what == "register" {
		s.limitedRegister.Add(1)
	} else {
		s.limitedConnect.Add(1)
	}
}

// Limited returns how many register and connect requests were refused by
// the per-address rate limits.
func (s *Stats) Limited() (register, connect uint64) {
	return s.limitedRegister.Load(), s.limitedConnect.Load()
}

// Rejected calls f with every status that was answered at least once and
// its count.
func (s *Stats) Rejected(f func(status int, n uint64)) {
	for code := range s.rejected {
		if n := s.rejected[code].Load(); n > 0 {
			f(code, n)
		}
	}
}

// fail answers with err's status and a JSON error a person can act on. The
// sentinel's own text is dropped from the message: "topic is required" is
// clearer than "topic is required: invalid request".
func (a *API) fail(w http.ResponseWriter, err error) {
	code := status(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		a.log.Error("request failed", "err", err)
		msg = "internal server error"
	} else {
		msg = trimSentinel(err)
	}
	a.failStatus(w, code, msg)
}

// trimSentinel returns err's message without the sentinel's own text at
// its end.
func trimSentinel(err error) string {
	msg := err.Error()
	for _, s := range statuses {
		msg = strings.TrimSuffix(msg, ": "+s.err.Error())
	}
	return msg
}

func (a *API) failStatus(w http.ResponseWriter, code int, msg string) {
	if code >= 0 && code < len(a.stats.rejected) {
		a.stats.rejected[code].Add(1)
	}
	writeJSON(w, code, errorBody{msg})
}

type errorBody struct {
	Error string `json:"error"`
}

// writeJSON writes v as the whole response, without a trailing newline (the
// tutorial's byte format).
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal server error"}`)
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(code)
	w.Write(b)
}
