package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/relayhq/relay/internal/protocol/seed"
	"github.com/relayhq/relay/internal/relay"
)

// statuses is the one table from Relay's sentinel errors to HTTP statuses.
// (Each socket protocol maps them to its own codes: see
// relayv1.errorCode.)
var statuses = []struct {
	err    error
	status int
}{
	{relay.ErrInvalid, http.StatusBadRequest},
	{relay.ErrUnauthorized, http.StatusUnauthorized},
	{relay.ErrForbidden, http.StatusForbidden},
	{relay.ErrNotFound, http.StatusNotFound},
	{relay.ErrTooLarge, http.StatusRequestEntityTooLarge},
	{relay.ErrLimit, http.StatusTooManyRequests},
	{relay.ErrUnavailable, http.StatusServiceUnavailable},
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

// Stats count the requests the API refused, by status, those refused by a
// rate limit, by what was limited, and the seed texts ignored.
type Stats struct {
	rejected        [600]atomic.Uint64
	limitedRegister atomic.Uint64
	limitedConnect  atomic.Uint64
	seed            *seed.Protocol // counts its sockets' ignored texts
}

// SeedIgnored returns how many texts seed sockets sent that were neither a
// topics command nor "ping", and were ignored.
func (s *Stats) SeedIgnored() uint64 {
	if s.seed == nil {
		return 0
	}
	return s.seed.Ignored()
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
// clearer than "topic is required: invalid request". An error outside the
// table is the server's: the client is told no more than that.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := status(err)
	if code == http.StatusInternalServerError {
		a.logRefusal(r, code, "internal server error", err)
		a.answer(w, code, "internal server error")
		return
	}
	a.failStatus(w, r, code, relay.Detail(err))
}

// failStatus answers r with code and {"error": msg}, and logs the refusal
// (see logRefusal). Every refusal of the API goes through here, except
// refused upgrades, which the WebSocket server logs (UpgradeError).
func (a *API) failStatus(w http.ResponseWriter, r *http.Request, code int, msg string) {
	a.logRefusal(r, code, msg, nil)
	a.answer(w, code, msg)
}

// answer counts the refusal and writes it.
func (a *API) answer(w http.ResponseWriter, code int, msg string) {
	if code >= 0 && code < len(a.stats.rejected) {
		a.stats.rejected[code].Add(1)
	}
	writeJSON(w, code, errorBody{msg})
}

// logRefusal logs a refused request with the client's address, within the
// budget of its status (kind "http_<status>"): at Info for the client's
// mistakes (4xx), Warn for rate limits (429) and for what the operator may
// have to act on (5xx: engine unreachable, limits reached), Error for the
// server's own errors (500, with err), Debug for refusals during shutdown.
// The message is left out of 404s on routes with an id, whose message
// would name it: ids are credentials. Nothing is built when the level is
// disabled.
func (a *API) logRefusal(r *http.Request, code int, msg string, err error) {
	level := slog.LevelInfo
	switch {
	case a.closing.Load() && code == http.StatusServiceUnavailable:
		level = slog.LevelDebug
	case code == http.StatusInternalServerError:
		level = slog.LevelError
	case code == http.StatusTooManyRequests || code >= 500:
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !a.logs.Enabled(ctx, level) || !a.logs.Allow(ctx, level, "http_"+strconv.Itoa(code)) {
		return
	}
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.Int("status", code), slog.String("method", r.Method), slog.String("route", r.Pattern), slog.String("remote", r.RemoteAddr))
	switch {
	case code == http.StatusNotFound && r.Pattern != "/":
	case r.Pattern == "/":
		attrs = append(attrs, slog.String("path", r.URL.Path), slog.String("error", msg))
	default:
		attrs = append(attrs, slog.String("error", msg))
	}
	if err != nil {
		attrs = append(attrs, slog.Any("err", err))
	}
	a.logs.Logger().LogAttrs(ctx, level, "request refused", attrs...)
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
