package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"sync"
	"time"
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
}

func newSessions(max int) *sessions {
	return &sessions{m: make(map[[32]byte]time.Time), max: max}
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
// form, which then says so.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		d.page(w, http.StatusForbidden, "login.html", loginData{Error: "This login came from another site."})
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
