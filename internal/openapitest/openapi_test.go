package openapitest

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/relayhq/relay/docs"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/dashboard"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/ratelimit"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
	"github.com/relayhq/relay/internal/ws"
)

// serverRoutes are the routes internal/server mounts in front of the
// API's: the dashboard's (dashboard.Mount), described under the tag "ui".
func serverRoutes() []api.Route {
	var out []api.Route
	for _, r := range dashboard.Routes() {
		out = append(out, api.Route{Method: r.Method, Pattern: r.Pattern})
	}
	return out
}

// under reports whether pattern lies strictly under the described path
// spec ending in "/" (other than "/"): the dashboard's page at /dashboard/
// stands for the scripts, styles and JSON routes under it that serve the
// page only, whatever their method.
func under(spec, pattern string) bool {
	return spec != "/" && strings.HasSuffix(spec, "/") && len(pattern) > len(spec) && strings.HasPrefix(pattern, spec)
}

// TestRoutesDescribed checks that every route the server mounts is
// described, and every described operation is mounted: the API's routes
// from (*api.API).Routes (with the optional /metrics on) and the
// dashboard's from dashboard.Routes (those under /dashboard/ are described
// by the page at /dashboard/); HEAD only where GET is mounted (the API
// answers HEAD on every GET route); OPTIONS on every API path (its CORS
// layer answers it before routing), and on no other.
func TestRoutesDescribed(t *testing.T) {
	s := load(t)
	in := relaytest.Start(t, server.Config{Metrics: true})
	routes := in.Server.API.Routes()
	if len(routes) == 0 {
		t.Fatal("the API lists no routes")
	}
	apiPaths := map[string]bool{}
	mounted := map[string]bool{}
	for _, r := range append(routes, serverRoutes()...) {
		if strings.ContainsAny(r.Pattern, " ") || !strings.HasPrefix(r.Pattern, "/") {
			t.Errorf("route pattern %q is not a plain path", r.Pattern)
		}
		mounted[r.Method+" "+r.Pattern] = true
		described := s.hasOperation(r.Pattern, r.Method)
		for _, p := range s.paths() {
			if under(p, r.Pattern) && s.hasOperation(p, "get") {
				described = true
			}
		}
		if !described {
			t.Errorf("%s %s is mounted but docs/openapi.yaml does not describe it", r.Method, r.Pattern)
		}
	}
	for _, r := range routes {
		apiPaths[r.Pattern] = true
	}
	for _, p := range s.paths() {
		for _, m := range s.operations(p) {
			key := strings.ToUpper(m) + " " + p
			switch m {
			case "options":
				if !apiPaths[p] {
					t.Errorf("%s is described but only the API's paths answer OPTIONS", key)
				}
			case "head":
				if !mounted["GET "+p] {
					t.Errorf("%s is described but GET %s is not mounted", key, p)
				}
			default:
				if !mounted[key] {
					t.Errorf("%s is described but not mounted", key)
				}
			}
		}
		if apiPaths[p] && !s.hasOperation(p, "options") {
			t.Errorf("%s answers OPTIONS (CORS) but its options operation is not described", p)
		}
	}
}

// kase is one request to a running server and the status it must get.
type kase struct {
	name   string
	in     *relaytest.Instance
	method string
	path   string // escaped, with the query
	hdr    []string
	body   string
	want   int
	// resp names the component response describing the answer, for the
	// answers to any path: MethodNotAllowed and NoRoute.
	resp string
	// allow is the Allow header a 405 must carry.
	allow string
	// offSchema marks a request that is answered 2xx although its body
	// does not match the request schema (skips checkRequest).
	offSchema bool
}

const (
	apiKey     = "openapi-test-key-0123456789"
	allowed    = "https://app.example"
	refused    = "https://evil.example"
	unknownID  = "0123456789abcdef0123456789abcdef"
	handshakeK = "dGhlIHNhbXBsZSBub25jZQ=="
)

var tokenSecret = []byte("openapi-test-secret-0123456789abcdef")

// upgrade is a valid WebSocket handshake's headers.
var upgrade = []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", handshakeK}

func with(h []string, more ...string) []string { return append(slices.Clone(h), more...) }

// TestResponsesMatchSpec runs real requests against in-process servers,
// producing every status each operation describes, and checks each answer
// against the document: the status is described for its operation, the
// required headers are there and match their schemas, the Content-Type is
// a described media type, and the body matches the schema (or is empty
// when none is described). Every described status must have a case.
func TestResponsesMatchSpec(t *testing.T) {
	s := load(t)
	keys, err := auth.New(auth.Config{APIKeys: []string{apiKey}, TokenSecret: tokenSecret})
	if err != nil {
		t.Fatal(err)
	}
	tokensOnly, err := auth.New(auth.Config{TokenSecret: tokenSecret})
	if err != nil {
		t.Fatal(err)
	}
	// main: API keys, connect tokens, an origin allowlist, metrics behind
	// the key, small body and message limits.
	main := relaytest.Start(t, server.Config{Metrics: true, API: api.Config{
		Auth: keys, AllowedOrigins: []string{allowed}, MetricsNeedKey: true,
		MaxBodyBytes: 2048, MaxMessageBytes: 64,
	}})
	// limited: one register and one upgrade per address, then 429.
	limited := relaytest.Start(t, server.Config{API: api.Config{
		RegisterLimit: ratelimit.New(0.001, 1, nil, 100),
		ConnectLimit:  ratelimit.New(0.001, 1, nil, 100),
	}})
	// full: a registration table of one.
	full := relaytest.Start(t, server.Config{Hub: hub.Config{MaxRegistrations: 1}})
	// capped: one WebSocket connection at most.
	capped := relaytest.Start(t, server.Config{WS: ws.Config{MaxConnections: 1}})
	// draining: as after a shutdown began.
	draining := relaytest.Start(t, server.Config{})
	draining.Server.API.Drain()
	// down: its engine is unreachable.
	down := startDown(t, server.Config{API: api.Config{Auth: tokensOnly}})

	key := []string{"Authorization", "Bearer " + apiKey}
	badKey := []string{"Authorization", "Bearer not-the-key-0123456789"}
	register := func() string {
		t.Helper()
		code, _, body := do(t, main, "POST", "/register", `{"user_id": 7}`, key...)
		if code != http.StatusOK {
			t.Fatalf("register: %d %s", code, body)
		}
		var r struct{ URL string }
		json.Unmarshal(body, &r)
		return r.URL[strings.LastIndex(r.URL, "/")+1:]
	}
	token, err := auth.Mint(tokenSecret, 9, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A seed socket of user 7 on "cats", so presence lists someone.
	present := register()
	sock, _, err := websocket.DefaultDialer.Dial("ws://"+main.Addr+"/ws/"+present, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	// capped's one socket, and a registration that finds no room.
	var capIDs []string
	for range 2 {
		reg, err := capped.Client.Register(t.Context(), 1)
		if err != nil {
			t.Fatal(err)
		}
		capIDs = append(capIDs, reg.ID)
	}
	capSock, _, err := websocket.DefaultDialer.Dial("ws://"+capped.Addr+"/ws/"+capIDs[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer capSock.Close()
	relaytest.Eventually(t, "user 7 present", func() bool {
		_, _, body := do(t, main, "GET", "/presence/cats", "", key...)
		return bytes.Contains(body, []byte(`"user_id":7`))
	})

	cases := []kase{
		{name: "health", in: main, method: "GET", path: "/health", want: 200},
		{name: "health head", in: main, method: "HEAD", path: "/health", want: 200},
		{name: "health draining", in: draining, method: "GET", path: "/health", want: 503},
		{name: "health head draining", in: draining, method: "HEAD", path: "/health", want: 503},

		{name: "readyz", in: main, method: "GET", path: "/readyz", want: 200},
		{name: "readyz head", in: main, method: "HEAD", path: "/readyz", want: 200},
		{name: "readyz draining", in: draining, method: "GET", path: "/readyz", want: 503},
		{name: "readyz engine down", in: down, method: "GET", path: "/readyz", want: 503},
		{name: "readyz head engine down", in: down, method: "HEAD", path: "/readyz", want: 503},

		{name: "register", in: main, method: "POST", path: "/register", hdr: key, body: `{"user_id": 18446744073709551615}`, want: 200},
		{name: "register no user", in: main, method: "POST", path: "/register", hdr: key, body: `{}`, want: 400},
		{name: "register not JSON", in: main, method: "POST", path: "/register", hdr: key, body: `{"user_id":`, want: 400},
		{name: "register no key", in: main, method: "POST", path: "/register", body: `{"user_id": 1}`, want: 401},
		{name: "register wrong key", in: main, method: "POST", path: "/register", hdr: badKey, body: `{"user_id": 1}`, want: 401},
		{name: "register body too large", in: main, method: "POST", path: "/register", hdr: key, body: `{"user_id": 1, "pad": "` + strings.Repeat("x", 3000) + `"}`, want: 413},
		{name: "register first", in: limited, method: "POST", path: "/register", body: `{"user_id": 1}`, want: 200},
		{name: "register rate limited", in: limited, method: "POST", path: "/register", body: `{"user_id": 1}`, want: 429},
		{name: "register fills the table", in: full, method: "POST", path: "/register", body: `{"user_id": 1}`, want: 200},
		{name: "register table full", in: full, method: "POST", path: "/register", body: `{"user_id": 1}`, want: 429},
		{name: "register engine down", in: down, method: "POST", path: "/register", body: `{"user_id": 1}`, want: 503},

		{name: "unregister", in: main, method: "DELETE", path: "/register/" + register(), hdr: key, want: 200},
		{name: "unregister no key", in: main, method: "DELETE", path: "/register/" + unknownID, want: 401},
		{name: "unregister unknown", in: main, method: "DELETE", path: "/register/" + unknownID, hdr: key, want: 404},
		{name: "unregister engine down", in: down, method: "DELETE", path: "/register/" + unknownID, want: 503},

		{name: "publish", in: main, method: "POST", path: "/publish", hdr: key, body: `{"topic":"cats","message":"hi"}`, want: 200},
		{name: "publish to a user", in: main, method: "POST", path: "/publish", hdr: key, body: `{"topic":"cats","user_id":7,"message":"hi"}`, want: 200},
		{name: "publish idempotent", in: main, method: "POST", path: "/publish", hdr: key, body: `{"topic":"news","message":"a","idempotency_key":"k1"}`, want: 200},
		{name: "publish duplicate", in: main, method: "POST", path: "/publish", hdr: key, body: `{"topic":"news","message":"a","idempotency_key":"k1"}`, want: 200},
		{name: "publish empty topic", in: main, method: "POST", path: "/publish", hdr: key, body: `{"topic":"","message":"hi"}`, want: 400},
		{name: "publish no key", in: main, method: "POST", path: "/publish", body: `{"topic":"cats","message":"hi"}`, want: 401},
		{name: "publish message too large", in: main, method: "POST", path: "/publish", hdr: key, body: `{"topic":"cats","message":"` + strings.Repeat("x", 65) + `"}`, want: 413},
		{name: "publish engine down", in: down, method: "POST", path: "/publish", body: `{"topic":"cats","message":"hi"}`, want: 503},

		{name: "batch", in: main, method: "POST", path: "/publish/batch", hdr: key, body: `{"events":[{"topic":"news","message":"b"},{"topic":"","message":"x"},{"topic":"news","user_id":7,"message":"c"},{"topic":"news","message":"` + strings.Repeat("x", 65) + `"}]}`, want: 200,
			// Events are checked one by one: invalid ones get an error
			// result in their place, the batch is still answered 200.
			offSchema: true},
		{name: "batch bare array", in: main, method: "POST", path: "/publish/batch", hdr: key, body: `[{"topic":"news","message":"d"}]`, want: 200},
		{name: "batch empty", in: main, method: "POST", path: "/publish/batch", hdr: key, body: `[]`, want: 400},
		{name: "batch no key", in: main, method: "POST", path: "/publish/batch", body: `[]`, want: 401},
		{name: "batch too large", in: main, method: "POST", path: "/publish/batch", hdr: key, body: "[" + strings.Repeat(`{},`, 1000) + "{}]", want: 413},

		{name: "history", in: main, method: "GET", path: "/history/news?since=0&limit=10", hdr: key, want: 200},
		{name: "history unpublished topic", in: main, method: "GET", path: "/history/a%2Fb", hdr: key, want: 200},
		{name: "history bad limit", in: main, method: "GET", path: "/history/news?limit=0", hdr: key, want: 400},
		{name: "history bad topic", in: main, method: "GET", path: "/history/a%20b", hdr: key, want: 400},
		{name: "history no key", in: main, method: "GET", path: "/history/news", want: 401},
		{name: "history engine down", in: down, method: "GET", path: "/history/news", want: 503},

		{name: "presence", in: main, method: "GET", path: "/presence/cats", hdr: key, want: 200},
		{name: "presence nobody", in: main, method: "GET", path: "/presence/empty", hdr: key, want: 200},
		{name: "presence bad topic", in: main, method: "GET", path: "/presence/a*", hdr: key, want: 400},
		{name: "presence no key", in: main, method: "GET", path: "/presence/cats", want: 401},
		{name: "presence engine down", in: down, method: "GET", path: "/presence/cats", want: 503},

		{name: "connect", in: main, method: "GET", path: "/ws/" + register(), hdr: upgrade, want: 101},
		{name: "connect relay.v1", in: main, method: "GET", path: "/ws/" + register(), hdr: with(upgrade, "Sec-WebSocket-Protocol", "relay.v1", "Origin", allowed), want: 101},
		{name: "connect without handshake", in: main, method: "GET", path: "/ws/" + register(), want: 400},
		{name: "connect wrong version", in: main, method: "GET", path: "/ws/" + register(), hdr: with(upgrade[:4], "Sec-WebSocket-Version", "8", "Sec-WebSocket-Key", handshakeK), want: 400},
		{name: "connect refused origin", in: main, method: "GET", path: "/ws/" + register(), hdr: with(upgrade, "Origin", refused), want: 403},
		{name: "connect unknown", in: main, method: "GET", path: "/ws/" + unknownID, hdr: upgrade, want: 404},
		{name: "connect first", in: limited, method: "GET", path: "/ws/" + unknownID, hdr: upgrade, want: 404},
		{name: "connect rate limited", in: limited, method: "GET", path: "/ws/" + unknownID, hdr: upgrade, want: 429},
		{name: "connect at the connection limit", in: capped, method: "GET", path: "/ws/" + capIDs[1], hdr: upgrade, want: 503},
		{name: "connect engine down", in: down, method: "GET", path: "/ws/" + unknownID, hdr: upgrade, want: 503},

		{name: "token", in: main, method: "GET", path: "/ws?token=" + token, hdr: upgrade, want: 101},
		{name: "token without handshake", in: main, method: "GET", path: "/ws?token=" + token, want: 400},
		{name: "token missing", in: main, method: "GET", path: "/ws", hdr: upgrade, want: 401},
		{name: "token forged", in: main, method: "GET", path: "/ws?token=" + token + "x", hdr: upgrade, want: 401},
		{name: "token tokens disabled", in: draining, method: "GET", path: "/ws?token=" + token, hdr: upgrade, want: 401},
		{name: "token refused origin", in: main, method: "GET", path: "/ws?token=" + token, hdr: with(upgrade, "Origin", refused), want: 403},
		{name: "token rate limited", in: limited, method: "GET", path: "/ws", hdr: upgrade, want: 429},
		{name: "token engine down", in: down, method: "GET", path: "/ws?token=" + token, hdr: upgrade, want: 503},

		{name: "metrics", in: main, method: "GET", path: "/metrics", hdr: key, want: 200},
		{name: "metrics no key", in: main, method: "GET", path: "/metrics", want: 401},

		{name: "openapi", in: main, method: "GET", path: "/openapi.yaml", want: 200},

		{name: "landing page", in: main, method: "GET", path: "/", want: 200},
		{name: "dashboard login page", in: main, method: "GET", path: "/dashboard/", want: 200},
		{name: "dashboard without API keys", in: draining, method: "GET", path: "/dashboard/", want: 404},

		{name: "no route", in: main, method: "GET", path: "/nope", want: 404, resp: "NoRoute"},
	}
	// Every API path: a preflight from an allowed and from a refused
	// origin, and a method it does not serve.
	for _, r := range main.Server.API.Routes() {
		p := strings.NewReplacer("{id}", unknownID, "{topic}", "cats").Replace(r.Pattern)
		cases = append(cases,
			kase{name: "preflight " + r.Pattern, in: main, method: "OPTIONS", path: p, hdr: []string{"Origin", allowed, "Access-Control-Request-Method", r.Method}, want: 204},
			kase{name: "plain OPTIONS " + r.Pattern, in: main, method: "OPTIONS", path: p, want: 204},
			kase{name: "preflight refused " + r.Pattern, in: main, method: "OPTIONS", path: p, hdr: []string{"Origin", refused, "Access-Control-Request-Method", r.Method}, want: 403},
			kase{name: "wrong method " + r.Pattern, in: main, method: "PUT", path: p, hdr: key, want: 405, resp: "MethodNotAllowed", allow: r.Method + ", OPTIONS"},
		)
	}

	covered := map[string]bool{}
	for _, c := range cases {
		code, hdr, body := do(t, c.in, c.method, c.path, c.body, c.hdr...)
		if code != c.want {
			t.Errorf("%s: %s %s answered %d, the case wants %d: %s", c.name, c.method, c.path, code, c.want, body)
			continue
		}
		if key := s.check(t, c, hdr, body); key != "" {
			covered[key] = true
		}
		if c.name == "openapi" && !bytes.Equal(body, docs.OpenAPI) {
			t.Errorf("GET /openapi.yaml does not answer docs/openapi.yaml")
		}
		if c.allow != "" && hdr.Get("Allow") != c.allow {
			t.Errorf("%s: Allow is %q, want %q", c.name, hdr.Get("Allow"), c.allow)
		}
	}

	// Every described status has a case.
	var missing []string
	for _, p := range s.paths() {
		for _, m := range s.operations(p) {
			op := strings.ToUpper(m) + " " + p
			resps, _ := s.doc["paths"].(map[string]any)[p].(map[string]any)[m].(map[string]any)["responses"].(map[string]any)
			for code := range resps {
				if !covered[op+" "+code] {
					missing = append(missing, op+" "+code)
				}
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("%s is described but no case produces it", m)
	}
}

// do sends one request and returns the status, headers and body (empty
// for a 101: the socket is closed at once).
func do(t *testing.T, in *relaytest.Instance, method, path, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, in.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, resp.Header, nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

var jsonType = regexp.MustCompile(`^application/([a-z0-9.+-]+\+)?json$`)

// check validates one answer against the document and returns the
// operation and status it covered ("" for a component response).
func (s *spec) check(t *testing.T, c kase, hdr http.Header, body []byte) string {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(c.name+": "+format, args...)
	}
	status := strconv.Itoa(c.want)
	var rptr, covered string
	if c.resp != "" {
		rptr = pointer("components", "responses", c.resp)
	} else {
		reqPath := strings.SplitN(c.path, "?", 2)[0]
		p, ok := s.match(reqPath)
		if !ok {
			fail("no described path matches %s", reqPath)
			return ""
		}
		m := strings.ToLower(c.method)
		if !s.hasOperation(p, m) {
			fail("%s %s answered %s but the operation is not described", c.method, p, status)
			return ""
		}
		_, itemPtr, _ := s.deref(pointer("paths", p))
		rptr = itemPtr + pointer(m, "responses", status)
		if _, ok := s.at(rptr); !ok {
			fail("%s %s answered %s, which the document does not describe for it", c.method, p, status)
			return ""
		}
		covered = c.method + " " + p + " " + status
		if c.want < 300 && !c.offSchema {
			s.checkRequest(t, c, itemPtr, m)
		}
	}
	r, rptr, err := s.deref(rptr)
	if err != nil {
		fail("%v", err)
		return ""
	}
	headers, _ := r["headers"].(map[string]any)
	for name := range headers {
		h, hptr, err := s.deref(rptr + pointer("headers", name))
		if err != nil {
			fail("header %s: %v", name, err)
			continue
		}
		v := hdr.Get(name)
		if v == "" {
			if req, _ := h["required"].(bool); req {
				fail("the required header %s is missing", name)
			}
			continue
		}
		if _, ok := h["schema"]; !ok {
			continue
		}
		sch, err := s.schema(hptr + "/schema")
		if err != nil {
			fail("header %s: %v", name, err)
			continue
		}
		var val any = v
		if typ, _ := h["schema"].(map[string]any)["type"].(string); typ == "integer" {
			val = json.Number(v)
		}
		if err := sch.Validate(val); err != nil {
			fail("header %s: %q does not match its schema: %v", name, v, err)
		}
	}
	content, _ := r["content"].(map[string]any)
	if len(content) == 0 || c.method == "HEAD" || c.want == http.StatusSwitchingProtocols {
		if len(body) != 0 {
			fail("no body is described, got %q", body)
		}
		return covered
	}
	ct := hdr.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		fail("Content-Type %q: %v", ct, err)
		return covered
	}
	media, ok := content[mt].(map[string]any)
	if !ok {
		fail("Content-Type %q is not a described media type", ct)
		return covered
	}
	if _, ok := media["schema"]; !ok {
		return covered
	}
	sch, err := s.schema(rptr + pointer("content", mt, "schema"))
	if err != nil {
		fail("%v", err)
		return covered
	}
	var val any = string(body)
	if jsonType.MatchString(mt) {
		if val, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
			fail("the body is not JSON: %v: %q", err, body)
			return covered
		}
	}
	if err := sch.Validate(val); err != nil {
		fail("the body does not match the schema: %v\n%s", err, body)
	}
	return covered
}

// checkRequest validates an accepted request against its operation: the
// body against the described request body, each query parameter against
// its described schema.
func (s *spec) checkRequest(t *testing.T, c kase, itemPtr, method string) {
	t.Helper()
	opPtr := itemPtr + pointer(method)
	if c.body != "" {
		b, bptr, err := s.deref(opPtr + "/requestBody")
		if err != nil {
			t.Errorf("%s: a body was accepted but the operation describes none: %v", c.name, err)
			return
		}
		if _, ok := b["content"].(map[string]any)["application/json"]; !ok {
			t.Errorf("%s: a JSON body was accepted but the operation describes none", c.name)
			return
		}
		sch, err := s.schema(bptr + pointer("content", "application/json", "schema"))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			return
		}
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(c.body))
		if err != nil {
			t.Errorf("%s: the accepted body is not JSON: %v", c.name, err)
			return
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("%s: the accepted body does not match the request schema: %v", c.name, err)
		}
	}
	_, query, _ := strings.Cut(c.path, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Errorf("%s: %v", c.name, err)
		return
	}
	for name, vals := range q {
		found := false
		for _, ptr := range []string{itemPtr + "/parameters", opPtr + "/parameters"} {
			ps, _ := s.at(ptr)
			list, _ := ps.([]any)
			for i := range list {
				p, pptr, err := s.deref(ptr + "/" + strconv.Itoa(i))
				if err != nil || p["in"] != "query" || p["name"] != name {
					continue
				}
				found = true
				sch, err := s.schema(pptr + "/schema")
				if err != nil {
					t.Errorf("%s: %v", c.name, err)
					continue
				}
				var v any = vals[0]
				if typ, _ := p["schema"].(map[string]any)["type"].(string); typ == "integer" {
					v = json.Number(vals[0])
				}
				if err := sch.Validate(v); err != nil {
					t.Errorf("%s: the accepted query parameter %s=%s does not match its schema: %v", c.name, name, vals[0], err)
				}
			}
		}
		if !found {
			t.Errorf("%s: the query parameter %s was accepted but is not described", c.name, name)
		}
	}
}
