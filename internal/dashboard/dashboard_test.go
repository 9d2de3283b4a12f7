package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/ws"
)

const key = "unit-test-api-key-0123456789"

// clock is a settable time for session expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTest builds a dashboard over a memory engine, with API keys when
// keys is true, and serves its public and admin handlers (mounted like the
// server does) on two test servers.
func newTest(t *testing.T, keys bool, cfg Config) (d *Dashboard, public, admin *httptest.Server, clk *clock) {
	t.Helper()
	var ac auth.Config
	if keys {
		ac.APIKeys = []string{key}
	}
	au, err := auth.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	b := memorybroker.New(memorybroker.Config{}, nil)
	h := hub.New(hub.Config{Interest: b, Registry: b.Registry(), Roster: b.Roster()}, nil)
	b.Bind(h)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go b.Run(ctx)
	w := ws.New(ws.Config{})
	a := api.New(api.Config{Auth: au}, h, b, w, nil)
	cfg.Hub, cfg.WS, cfg.API, cfg.Engine, cfg.Auth, cfg.NodeID = h, w, a, b, au, "node-1"
	d = New(cfg)
	clk = &clock{t: time.Now()}
	d.now = clk.now
	public = httptest.NewServer(Mount(a, d.Public(), d.Landing()))
	admin = httptest.NewServer(d.Admin())
	t.Cleanup(public.Close)
	t.Cleanup(admin.Close)
	t.Cleanup(func() { d.stopOnce.Do(func() { close(d.stopping) }) })
	return d, public, admin, clk
}

// noRedirect is a client that keeps cookies and does not follow redirects.
func noRedirect(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func login(t *testing.T, c *http.Client, base, k string) *http.Response {
	t.Helper()
	res, err := c.PostForm(base+"/dashboard/login", url.Values{"key": {k}})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

func do(t *testing.T, c *http.Client, method, u, body string, h ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

func TestLogin(t *testing.T) {
	_, public, _, _ := newTest(t, true, Config{})
	c := noRedirect(t)

	// Not logged in: the page is the login form, the rest is refused.
	res, body := do(t, c, "GET", public.URL+"/dashboard/", "")
	if res.StatusCode != 200 || !strings.Contains(body, `action="/dashboard/login"`) {
		t.Fatalf("GET /dashboard/ before login: %s %q", res.Status, body)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	for _, path := range []string{"/dashboard/events", "/dashboard/api/snapshot", "/dashboard/api/history/x", "/dashboard/api/presence/x"} {
		if res, _ := do(t, c, "GET", public.URL+path, ""); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s before login: %s", path, res.Status)
		}
	}
	if res, _ := do(t, c, "POST", public.URL+"/dashboard/api/publish", `{"topic":"a","message":"b"}`, CSRFHeader, "1"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("publish before login: %s", res.Status)
	}

	// A wrong or empty key: 303 back to the form, which says so; no cookie.
	for _, k := range []string{"wrong-key-wrong-key-wrong", ""} {
		res := login(t, c, public.URL, k)
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/dashboard/?login=failed" || len(res.Cookies()) != 0 {
			t.Errorf("login with %q: %s to %q, cookies %v", k, res.Status, res.Header.Get("Location"), res.Cookies())
		}
	}
	res, body = do(t, c, "GET", public.URL+"/dashboard/?login=failed", "")
	if res.StatusCode != 200 || !strings.Contains(body, "not valid") || !strings.Contains(body, `action="/dashboard/login"`) {
		t.Errorf("the form after a wrong key: %s %q", res.Status, body)
	}
	if _, body = do(t, c, "GET", public.URL+"/dashboard/", ""); strings.Contains(body, "not valid") {
		t.Error("the form says the key was wrong before any login")
	}
	// A login posted from another site's page is refused.
	res, _ = do(t, c, "POST", public.URL+"/dashboard/login", "key="+key, "Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example")
	if res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 0 {
		t.Errorf("cross-site login: %s", res.Status)
	}

	// The right key: 303 to the dashboard and a strict session cookie.
	res = login(t, c, public.URL, key)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/dashboard/" {
		t.Fatalf("login: %s to %q", res.Status, res.Header.Get("Location"))
	}
	cookies := res.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v", cookies)
	}
	ck := cookies[0]
	if ck.Name != CookieName || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/dashboard/" || len(ck.Value) < 43 || ck.MaxAge <= 0 {
		t.Errorf("cookie %+v", ck)
	}
	if strings.Contains(ck.Value, key) {
		t.Error("the cookie holds the key")
	}
	res, body = do(t, c, "GET", public.URL+"/dashboard/", "")
	if res.StatusCode != 200 || !strings.Contains(body, `src="/dashboard/app.js"`) || strings.Contains(body, key) {
		t.Fatalf("GET /dashboard/ after login: %s", res.Status)
	}

	// Logged in, state changes still need the CSRF header.
	res, _ = do(t, c, "POST", public.URL+"/dashboard/api/publish", `{"topic":"a","message":"b"}`)
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("publish without the CSRF header: %s", res.Status)
	}
	res, body = do(t, c, "POST", public.URL+"/dashboard/api/publish", `{"topic":"a","message":"b"}`, CSRFHeader, "1")
	if res.StatusCode != 200 || !strings.Contains(body, `"offset":1`) {
		t.Errorf("publish: %s %s", res.Status, body)
	}
	res, body = do(t, c, "GET", public.URL+"/dashboard/api/history/a", "")
	if res.StatusCode != 200 || !strings.Contains(body, `"message":"b"`) {
		t.Errorf("history: %s %s", res.Status, body)
	}
	res, _ = do(t, c, "POST", public.URL+"/dashboard/api/watch", "")
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("watch without the CSRF header: %s", res.Status)
	}
	res, body = do(t, c, "POST", public.URL+"/dashboard/api/watch", "", CSRFHeader, "1")
	if res.StatusCode != 200 || !strings.Contains(body, `"path":"/dashboard/api/ws/`) {
		t.Errorf("watch: %s %s", res.Status, body)
	}
	// The watch socket is for the dashboard's own page.
	var w struct{ Path string }
	json.Unmarshal([]byte(body), &w)
	res, _ = do(t, c, "GET", public.URL+w.Path, "", "Origin", "https://evil.example", "Connection", "Upgrade", "Upgrade", "websocket")
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("watch socket from another origin: %s", res.Status)
	}

	// Logout needs the CSRF header, then ends the session.
	if res, _ := do(t, c, "POST", public.URL+"/dashboard/logout", ""); res.StatusCode != http.StatusForbidden {
		t.Errorf("logout without the CSRF header: %s", res.Status)
	}
	if res, _ := do(t, c, "POST", public.URL+"/dashboard/logout", "", CSRFHeader, "1"); res.StatusCode != http.StatusNoContent {
		t.Errorf("logout: %s", res.Status)
	}
	if res, _ := do(t, c, "GET", public.URL+"/dashboard/api/snapshot", ""); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("after logout: %s", res.Status)
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	d, _, _, _ := newTest(t, true, Config{})
	srv := httptest.NewTLSServer(d.Public())
	defer srv.Close()
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res := login(t, c, srv.URL, key)
	if res.StatusCode != http.StatusSeeOther || len(res.Cookies()) != 1 || !res.Cookies()[0].Secure {
		t.Fatalf("login over TLS: %s %+v", res.Status, res.Cookies())
	}
}

func TestSessionExpiry(t *testing.T) {
	_, public, _, clk := newTest(t, true, Config{SessionTTL: time.Hour})
	c := noRedirect(t)
	login(t, c, public.URL, key)
	if res, _ := do(t, c, "GET", public.URL+"/dashboard/api/snapshot", ""); res.StatusCode != 200 {
		t.Fatalf("fresh session: %s", res.Status)
	}
	clk.add(59 * time.Minute)
	if res, _ := do(t, c, "GET", public.URL+"/dashboard/api/snapshot", ""); res.StatusCode != 200 {
		t.Fatalf("session before expiry: %s", res.Status)
	}
	clk.add(2 * time.Minute)
	if res, _ := do(t, c, "GET", public.URL+"/dashboard/api/snapshot", ""); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired session: %s", res.Status)
	}
	if res, body := do(t, c, "GET", public.URL+"/dashboard/", ""); !strings.Contains(body, `action="/dashboard/login"`) {
		t.Fatalf("expired session page: %s", res.Status)
	}
}

func TestSessionBound(t *testing.T) {
	s := newSessions(3)
	now := time.Now()
	var ids []string
	for i := range 5 {
		ids = append(ids, s.create(now, now.Add(time.Duration(i+1)*time.Minute)))
	}
	if s.len() != 3 {
		t.Fatalf("%d sessions held, want 3", s.len())
	}
	// The ones closest to expiry went first.
	for i, want := range []bool{false, false, true, true, true} {
		if got := s.valid(ids[i], now); got != want {
			t.Errorf("session %d valid = %v, want %v", i, got, want)
		}
	}
	if s.valid("", now) || s.valid("made-up", now) {
		t.Error("an unknown session is valid")
	}
	if s.valid(ids[2], now.Add(3*time.Minute)) {
		t.Error("a session is valid at its expiry")
	}
	if s.len() != 2 {
		t.Errorf("an expired session was kept: %d", s.len())
	}
}

func TestNoKeysNoPublicDashboard(t *testing.T) {
	_, public, admin, _ := newTest(t, false, Config{})
	res, body := do(t, http.DefaultClient, "GET", public.URL+"/dashboard/", "")
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, "-admin-addr") {
		t.Errorf("public dashboard without keys: %s %q", res.Status, body)
	}
	for _, p := range []string{"/dashboard/api/snapshot", "/dashboard/events"} {
		if res, _ := do(t, http.DefaultClient, "GET", public.URL+p, ""); res.StatusCode != http.StatusNotFound {
			t.Errorf("public %s without keys: %s", p, res.Status)
		}
	}
	if res, _ := do(t, http.DefaultClient, "POST", public.URL+"/dashboard/api/publish", `{"topic":"a","message":"b"}`, CSRFHeader, "1"); res.StatusCode != http.StatusNotFound {
		t.Errorf("public publish without keys: %s", res.Status)
	}
	// The admin listener needs no login, but still the CSRF header.
	res, body = do(t, http.DefaultClient, "GET", admin.URL+"/dashboard/", "")
	if res.StatusCode != 200 || !strings.Contains(body, "app.js") {
		t.Errorf("admin dashboard: %s", res.Status)
	}
	if res, _ := do(t, http.DefaultClient, "POST", admin.URL+"/dashboard/api/publish", `{"topic":"a","message":"b"}`); res.StatusCode != http.StatusForbidden {
		t.Errorf("admin publish without the CSRF header: %s", res.Status)
	}
	if res, body := do(t, http.DefaultClient, "POST", admin.URL+"/dashboard/api/publish", `{"topic":"a","message":"b"}`, CSRFHeader, "1"); res.StatusCode != 200 {
		t.Errorf("admin publish: %s %s", res.Status, body)
	}
	// An invalid publish is refused like the API refuses it.
	if res, body := do(t, http.DefaultClient, "POST", admin.URL+"/dashboard/api/publish", `{"message":"b"}`, CSRFHeader, "1"); res.StatusCode != 400 || !strings.Contains(body, "topic") {
		t.Errorf("admin publish without a topic: %s %s", res.Status, body)
	}
	for _, f := range []string{"app.js", "app.css", "icon.svg"} {
		if res, _ := do(t, http.DefaultClient, "GET", public.URL+"/dashboard/"+f, ""); res.StatusCode != 200 {
			t.Errorf("%s: %s", f, res.Status)
		}
	}
}

func TestMount(t *testing.T) {
	_, public, _, _ := newTest(t, false, Config{})
	res, body := do(t, http.DefaultClient, "GET", public.URL+"/", "")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "/openapi.yaml") || !strings.Contains(body, "/dashboard/") {
		t.Errorf("GET /: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	for _, p := range []string{"/nope", "/dashboardx", "/index.html"} {
		res, body := do(t, http.DefaultClient, "GET", public.URL+p, "")
		if res.StatusCode != 404 || !strings.Contains(body, `"error"`) {
			t.Errorf("GET %s: %s %q, want the API's JSON 404", p, res.Status, body)
		}
	}
	if res, body := do(t, http.DefaultClient, "POST", public.URL+"/", ""); res.StatusCode != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("POST /: %s %q", res.Status, body)
	}
	c := noRedirect(t)
	if res, _ := do(t, c, "GET", public.URL+"/dashboard", ""); res.StatusCode/100 != 3 || res.Header.Get("Location") != "/dashboard/" {
		t.Errorf("GET /dashboard: %s %q", res.Status, res.Header.Get("Location"))
	}
}

// readEvent reads one server-sent event's data.
func readEvent(t *testing.T, r *bufio.Reader) Snapshot {
	t.Helper()
	var name, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if name != "snapshot" {
				t.Fatalf("event %q", name)
			}
			var s Snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatalf("event data %q: %v", data, err)
			}
			return s
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

func TestEvents(t *testing.T) {
	d, _, admin, clk := newTest(t, false, Config{})
	// Three earlier samples a second apart, so the first event carries a
	// series.
	for range 3 {
		clk.add(time.Second)
		d.sample()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", admin.URL+"/dashboard/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := bufio.NewReader(res.Body)
	first := readEvent(t, r)
	if first.Node != "node-1" || first.Engine != "memory" || !first.Ready || first.Scope != "this node" || len(first.Series) != 3 {
		t.Fatalf("first event: %+v", first)
	}

	// Publish through the admin console, then sample: the next event
	// counts it, with a rate over the second since.
	for range 2 {
		if res, body := do(t, http.DefaultClient, "POST", admin.URL+"/dashboard/api/publish", `{"topic":"t","message":"m"}`, CSRFHeader, "1"); res.StatusCode != 200 {
			t.Fatalf("publish: %s %s", res.Status, body)
		}
	}
	do(t, http.DefaultClient, "GET", admin.URL+"/dashboard/api/history/"+strings.Repeat("x", 300), "") // a rejected request
	clk.add(time.Second)
	d.sample()
	next := readEvent(t, r)
	if next.Publishes != first.Publishes+2 || next.PublishRate != 2 || len(next.Series) != 1 || next.Series[0][1] != 2 {
		t.Errorf("next event: publishes %d (first %d), rate %v, series %v", next.Publishes, first.Publishes, next.PublishRate, next.Series)
	}
	if next.Rejected != 1 || next.RejectedByStatus["400"] != 1 {
		t.Errorf("rejected %d %v", next.Rejected, next.RejectedByStatus)
	}

	// The stream ends when the dashboard stops.
	d.stopOnce.Do(func() { close(d.stopping) })
	if _, err := io.ReadAll(r); err != nil {
		t.Errorf("the stream did not end cleanly: %v", err)
	}
}

func TestRing(t *testing.T) {
	var r ring
	for i := range seriesLen + 5 {
		r.add([3]float64{float64(i)})
	}
	all := r.all()
	if len(all) != seriesLen || all[0][0] != 5 || all[seriesLen-1][0] != seriesLen+4 {
		t.Fatalf("ring: len %d, first %v, last %v", len(all), all[0], all[len(all)-1])
	}
}

func TestEngineName(t *testing.T) {
	if got := engineName(memorybroker.New(memorybroker.Config{}, nil)); got != "memory" {
		t.Errorf("engineName = %q", got)
	}
}

// peerStore is a shared table of summaries, as a networked engine would
// keep them.
type peerStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

// peerEngine is a memory engine that implements Peers over a peerStore.
type peerEngine struct {
	*memorybroker.Broker
	store *peerStore
}

func (p peerEngine) ShareSummary(_ context.Context, node string, summary []byte, _ time.Duration) error {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	p.store.m[node] = summary
	return nil
}

func (p peerEngine) Summaries(context.Context) (map[string][]byte, error) {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	out := make(map[string][]byte, len(p.store.m))
	for k, v := range p.store.m {
		out[k] = v
	}
	return out, nil
}

func TestPeers(t *testing.T) {
	store := &peerStore{m: map[string][]byte{"forged": []byte(`{"node":"other"}`)}}
	var ds []*Dashboard
	for _, id := range []string{"node-b", "node-a"} {
		b := memorybroker.New(memorybroker.Config{}, nil)
		h := hub.New(hub.Config{Interest: b, Registry: b.Registry(), Roster: b.Roster()}, nil)
		b.Bind(h)
		w := ws.New(ws.Config{})
		a := api.New(api.Config{}, h, b, w, nil)
		ds = append(ds, New(Config{Hub: h, WS: w, API: a, Engine: peerEngine{b, store}, NodeID: id}))
	}
	ctx := context.Background()
	for _, d := range ds {
		d.exchange(ctx, d.cfg.Engine.(Peers))
	}
	for _, d := range ds {
		d.exchange(ctx, d.cfg.Engine.(Peers))
		d.sample()
		s := d.cur.Load().snap
		if len(s.Nodes) != 2 || s.Nodes[0].Node != "node-a" || s.Nodes[1].Node != "node-b" || s.Scope != "this node" || !s.Nodes[0].Ready {
			t.Errorf("%s: nodes %+v", s.Node, s.Nodes)
		}
	}
	// Without Peers, no node list.
	d, _, _, _ := newTest(t, false, Config{})
	if s := d.cur.Load().snap; s.Nodes != nil {
		t.Errorf("nodes without Peers: %+v", s.Nodes)
	}
}

// After 10 attempts at once, an address gets 303 to the form saying it
// is throttled, whatever key it sends, until a token refills (5 a
// minute); another address is not affected.
func TestLoginThrottled(t *testing.T) {
	_, public, _, clk := newTest(t, true, Config{})
	c := noRedirect(t)
	for i := range loginBurst {
		res := login(t, c, public.URL, "wrong-key-wrong-key-wrong")
		if loc := res.Header.Get("Location"); res.StatusCode != http.StatusSeeOther || loc != "/dashboard/?login=failed" {
			t.Fatalf("wrong key %d: %s to %q", i+1, res.Status, loc)
		}
	}
	// Throttled: even the right key is not checked.
	for _, k := range []string{"wrong-key-wrong-key-wrong", key} {
		res := login(t, c, public.URL, k)
		if loc := res.Header.Get("Location"); res.StatusCode != http.StatusSeeOther || loc != "/dashboard/?login=throttled" || len(res.Cookies()) != 0 {
			t.Fatalf("login with %q after the burst: %s to %q, cookies %v", k, res.Status, loc, res.Cookies())
		}
	}
	res, body := do(t, c, "GET", public.URL+"/dashboard/?login=throttled", "")
	if res.StatusCode != 200 || !strings.Contains(body, "Too many login attempts") || !strings.Contains(body, "wait a minute") || !strings.Contains(body, `action="/dashboard/login"`) {
		t.Errorf("the form after throttling: %s %q", res.Status, body)
	}

	// Another address (127.0.0.2) logs in meanwhile.
	other := noRedirect(t)
	other.Transport = &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}
	if res := login(t, other, public.URL, key); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/dashboard/" || len(res.Cookies()) != 1 {
		t.Errorf("login from another address: %s to %q", res.Status, res.Header.Get("Location"))
	}

	// 13 s later one attempt is allowed again: the right key logs in, and
	// the next attempt is throttled.
	clk.add(13 * time.Second)
	res = login(t, c, public.URL, key)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/dashboard/" || len(res.Cookies()) != 1 {
		t.Fatalf("login after a token refilled: %s to %q", res.Status, res.Header.Get("Location"))
	}
	if res := login(t, noRedirect(t), public.URL, key); res.Header.Get("Location") != "/dashboard/?login=throttled" {
		t.Fatalf("the next login: %s to %q, want throttled", res.Status, res.Header.Get("Location"))
	}
}
