package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/relayhq/relay/internal/ratelimit"
)

// CookieName is the session cookie of the main listener's dashboard.
const CookieName = "relay_dashboard"

// sessions are the logins held, by the SHA-256 of their id (a memory dump
// or a timing leak of the map does not give the ids themselves), with
// their expiry. The API key is never stored: a session only proves that
// one was given.
type sessions struct {
	mu  sync.Mutex
	m   map[[32]byte]time.Time
	max int

	attempts *ratelimit.Limiter // login attempts per client address
}

// Login attempts per client address (IPv6 by /64): loginBurst at once,
// then loginRate a second (5 a minute); at most loginAddrs addresses are
// tracked. Every attempt that reaches the key check takes one, a right
// key too (a session lasts hours, so that costs nothing in practice):
// ratelimit has no refund, and checking the budget before the key is what
// keeps a throttled address from testing keys at all.
const (
	loginRate  = 5.0 / 60
	loginBurst = 10
	loginAddrs = 10_000
)

func newSessions(max int) *sessions {
	return &sessions{m: make(map[[32]byte]time.Time), max: max,
		attempts: ratelimit.New(loginRate, loginBurst, nil, loginAddrs)}
}

// allowLogin takes a login attempt from r's client address; false: too
// many lately. A remote address that is not ip:port is not limited.
func (s *sessions) allowLogin(r *http.Request, now time.Time) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err != nil || s.attempts.Allow(ap.Addr(), now)
}

// loginError is what the login form says after a refused login, from the
// "login" query parameter the refusal redirected with.
func loginError(reason string) string {
	switch reason {
	case "failed":
		return "That API key is not valid."
	case "throttled":
		return "Too many login attempts from your address: wait a minute, then try again."
	}
	return ""
}

// create returns a new random 256-bit session id valid until expires.
// At the bound, expired sessions are dropped, then the one closest to
// expiring.
func (s *sessions) create(now, expires time.Time) string {
	var b [32]byte
	rand.Read(b[:]) // never fails on supported platforms (crypto/rand docs)
	id := base64.RawURLEncoding.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		var oldest [32]byte
		var oldestAt time.Time
		for k, exp := range s.m {
			if !exp.After(now) {
				delete(s.m, k)
				continue
			}
			if oldestAt.IsZero() || exp.Before(oldestAt) {
				oldest, oldestAt = k, exp
			}
		}
		if len(s.m) >= s.max {
			delete(s.m, oldest)
		}
	}
	s.m[sha256.Sum256([]byte(id))] = expires
	return id
}

// valid reports whether id is a live session; an expired one is dropped.
func (s *sessions) valid(id string, now time.Time) bool {
	if id == "" {
		return false
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[k]
	if ok && !exp.After(now) {
		delete(s.m, k)
		ok = false
	}
	return ok
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	delete(s.m, sha256.Sum256([]byte(id)))
	s.mu.Unlock()
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// session reports whether r carries a live session cookie.
func (d *Dashboard) session(r *http.Request) bool {
	c, err := r.Cookie(CookieName)
	return err == nil && d.sessions.valid(c.Value, d.now())
}

// loggedIn refuses requests without a live session: 401 for the console
// and event stream (the page then shows the login again).
func (d *Dashboard) loggedIn(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !d.session(r) {
			jsonError(w, http.StatusUnauthorized, "log in to the dashboard first (your session may have expired)")
			return
		}
		h(w, r)
	}
}

// maxLoginBody bounds the login form.
const maxLoginBody = 4 << 10

// login takes an API key from the form field "key": a right one gets a
// session cookie and 303 to the dashboard, a wrong one 303 back to the
// form, which then says so. An address that made too many attempts lately
// gets 303 to the form saying so (?login=throttled), and its key is not
// checked.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		d.page(w, http.StatusForbidden, "login.html", loginData{Error: "This login came from another site."})
		return
	}
	if !d.sessions.allowLogin(r, d.now()) {
		d.cfg.Log.Debug("dashboard login throttled", "remote", r.RemoteAddr)
		http.Redirect(w, r, "/dashboard/?login=throttled", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		d.page(w, http.StatusBadRequest, "login.html", loginData{Error: "The form could not be read."})
		return
	}
	key := r.PostForm.Get("key")
	if key == "" || d.cfg.Auth.CheckKey("Bearer "+key) != nil {
		// Back to the form with 303, not a 401 page: a browser logs a
		// failed load for a 401 and offers to post the form again.
		d.cfg.Log.Warn("dashboard login refused", "remote", r.RemoteAddr)
		http.Redirect(w, r, "/dashboard/?login=failed", http.StatusSeeOther)
		return
	}
	now := d.now()
	exp := now.Add(d.cfg.SessionTTL)
	id := d.sessions.create(now, exp)
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    id,
		Path:     "/dashboard/",
		Expires:  exp,
		MaxAge:   int(d.cfg.SessionTTL / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
}

// logout ends the session and clears the cookie.
func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		d.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/dashboard/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	w.WriteHeader(http.StatusNoContent)
}

// sameOrigin reports whether a browser request came from a page of this
// host: its Origin (or, without one, its Referer) names the Host the
// request was sent to. Requests with neither (non-browser clients) pass.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}
