package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/ratelimit"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
	"github.com/relayhq/relay/internal/ws"
)

const (
	key1   = "key-one-0123456789"
	key2   = "key-two-0123456789"
	secret = "secret-0123456789abcdef0123456789"
)

func secured(t *testing.T, cfg server.Config) *relaytest.Instance {
	t.Helper()
	a, err := auth.New(auth.Config{APIKeys: []string{key1, key2}, TokenSecret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.Auth = a
	cfg.Metrics = true
	in := relaytest.Start(t, cfg)
	in.Client, _ = client.New(in.URL, client.WithHeader("Authorization", "Bearer "+key1))
	return in
}

func request(t testing.TB, method, url, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// TestAPIKeysGuardServerSideCalls: every server-side call needs a valid key
// (either of two, for rotation); health, metrics and the upgrade do not.
func TestAPIKeysGuardServerSideCalls(t *testing.T) {
	in := secured(t, server.Config{})
	reg, err := in.Client.Register(ctxT(t), 1)
	if err != nil {
		t.Fatalf("register with a valid key: %v", err)
	}
	calls := []struct{ method, path, body string }{
		{"POST", "/register", `{"user_id":1}`},
		{"DELETE", "/register/" + reg.ID, ``},
		{"POST", "/publish", `{"topic":"t","message":"m"}`},
		{"POST", "/publish/batch", `[{"topic":"t","message":"m"}]`},
		{"GET", "/history/t", ``},
		{"GET", "/presence/t", ``},
	}
	for _, c := range calls {
		for _, hdr := range []string{"", "Bearer wrong-key-0123456789", "Bearer " + key1[:len(key1)-1], key1} {
			status, h, body := request(t, c.method, in.URL+c.path, c.body, "Authorization", hdr)
			if status != 401 || !strings.Contains(body, "API key") || h.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with Authorization %q = %d %s, want 401 naming the API key", c.method, c.path, hdr, status, body)
			}
		}
	}
	for _, k := range []string{key2, key1} { // DELETE last: it removes the registration
		for _, c := range calls {
			if status, _, body := request(t, c.method, in.URL+c.path, c.body, "Authorization", "Bearer "+k); status != 200 {
				t.Errorf("%s %s with a valid key = %d %s", c.method, c.path, status, body)
			}
		}
		reg, _ = in.Client.Register(ctxT(t), 1)
		calls[1].path = "/register/" + reg.ID
	}
	for _, path := range []string{"/health", "/metrics"} {
		if status, _, _ := request(t, "GET", in.URL+path, ""); status != 200 {
			t.Errorf("GET %s without a key = %d, want 200", path, status)
		}
	}
	conn, err := in.Client.Connect(ctxT(t), reg.URL) // the upgrade needs no key
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsCanRequireTheKey(t *testing.T) {
	in := secured(t, server.Config{API: api.Config{MetricsNeedKey: true}})
	if status, _, _ := request(t, "GET", in.URL+"/metrics", ""); status != 401 {
		t.Fatalf("GET /metrics without a key = %d, want 401", status)
	}
	if status, _, body := request(t, "GET", in.URL+"/metrics", "", "Authorization", "Bearer "+key2); status != 200 || !strings.Contains(body, "relay_connections") {
		t.Fatalf("GET /metrics with a key = %d", status)
	}
}

func token(t *testing.T, user uint64, ttl time.Duration, topics []string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(secret), relayUser(user), ttl, topics)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestConnectTokens connects with signed tokens: a valid one gets a
// socket for its user; expired, forged or malformed ones get 401 before
// any upgrade.
func TestConnectTokens(t *testing.T) {
	in := secured(t, server.Config{})
	wsBase := "ws://" + in.Addr + "/ws?token="
	conn, err := in.Client.Connect(ctxT(t), wsBase+token(t, 9, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	nine := uint64(9)
	if res := publish(t, in, client.Publish{Topic: "cats", UserID: &nine, Message: "hi 9"}); res.Delivered != 1 {
		t.Fatalf("a publish to user 9 reached %d connections, want the token's socket", res.Delivered)
	}
	if m := receive(t, conn); m != "hi 9" {
		t.Fatalf("received %q", m)
	}
	forged, _ := auth.Mint([]byte("another-secret-0123456789abcdefgh"), 9, time.Minute, nil)
	for _, tt := range []struct {
		name, url, why string
	}{
		{"expired", wsBase + token(t, 9, -time.Minute, nil), "expired"},
		{"forged", wsBase + forged, "signature"},
		{"garbage", wsBase + "x.y.z", "malformed"},
		{"missing", "ws://" + in.Addr + "/ws", "token"},
	} {
		_, resp, err := websocket.DefaultDialer.Dial(tt.url, nil)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Errorf("%s token: %v (status %v), want 401 and no upgrade", tt.name, err, resp)
			continue
		}
		b := make([]byte, 1024)
		n, _ := resp.Body.Read(b)
		if !strings.Contains(string(b[:n]), tt.why) {
			t.Errorf("%s token: body %s, want it to mention %q", tt.name, b[:n], tt.why)
		}
	}
	if got := in.Server.WS.Stats().Accepted.Load(); got != 1 {
		t.Fatalf("%d upgrades accepted, want only the valid token's", got)
	}
}

// TestTokenTopicLimit enforces a token's topics claim on every subscribe,
// in both protocols; other clients are unaffected.
func TestTokenTopicLimit(t *testing.T) {
	in := secured(t, server.Config{})
	url := "ws://" + in.Addr + "/ws?token=" + token(t, 5, time.Minute, []string{"chat.*", "news"})

	seed, err := in.Client.Connect(ctxT(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	if err := seed.SetTopics(ctxT(t), "chat.1", "news"); err != nil {
		t.Fatalf("allowed topics: %v", err)
	}
	if in.Server.Hub.Subscribers("cats") != 0 {
		t.Fatal("the seed default topic was subscribed although the token does not allow it")
	}
	if err := seed.WriteText([]byte(`{"topics":["chat.1","sports"]}`)); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, seed); code != 1008 {
		t.Fatalf("seed socket subscribing to a forbidden topic: close %d, want 1008", code)
	}

	d := websocket.Dialer{Subprotocols: []string{"relay.v1"}}
	raw, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1 := &v1conn{t: t, ws: raw}
	defer raw.Close()
	v1.send(map[string]any{"type": "subscribe", "topics": []string{"sports"}})
	if f := v1.expect("error"); f.Code != "forbidden" {
		t.Fatalf("relay.v1 forbidden subscribe: %+v", f)
	}
	v1.subscribe(map[string]any{"topics": []string{"chat.room"}})
	publish(t, in, client.Publish{Topic: "chat.room", Message: "m1"})
	if f := v1.expect("message"); f.Message != "m1" {
		t.Fatalf("message = %+v", f)
	}
}

// TestRateLimitsHitAndRecover: past the per-address rate, registrations
// and upgrades get 429 with Retry-After, and pass again once the bucket
// refills; a client sending too fast is closed with 4004 while its
// neighbour is unaffected.
func TestRateLimitsHitAndRecover(t *testing.T) {
	in := secured(t, server.Config{
		API: api.Config{
			RegisterLimit: ratelimit.New(2, 3, nil, 100),
			ConnectLimit:  ratelimit.New(2, 3, nil, 100),
		},
		WS: ws.Config{MessageRate: 10, MessageBurst: 10},
	})
	var regs []client.Registration
	for i := range 5 {
		reg, err := in.Client.Register(ctxT(t), uint64(i))
		if i < 3 && err != nil {
			t.Fatalf("register %d within the burst: %v", i, err)
		}
		if i >= 3 {
			var e *client.Error
			if !errorsAs(err, &e) || e.Status != 429 {
				t.Fatalf("register %d past the burst: %v, want 429", i, err)
			}
			continue
		}
		regs = append(regs, reg)
	}
	time.Sleep(600 * time.Millisecond) // 2/s: a token back
	if _, err := in.Client.Register(ctxT(t), 9); err != nil {
		t.Fatalf("register after the bucket refilled: %v", err)
	}
	var conns []*websocket.Conn
	for i := range 5 {
		c, resp, err := websocket.DefaultDialer.Dial(regs[i%3].URL, nil)
		if i < 3 {
			if err != nil {
				t.Fatalf("connect %d within the burst: %v", i, err)
			}
			conns = append(conns, c)
			continue
		}
		if err == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("connect %d past the burst: %v %v, want 429 with Retry-After", i, err, resp)
		}
	}
	time.Sleep(600 * time.Millisecond)
	fast, _, err := websocket.DefaultDialer.Dial(regs[0].URL, nil) // replaces conns[0]
	if err != nil {
		t.Fatalf("connect after the bucket refilled: %v", err)
	}
	defer fast.Close()
	for range 30 {
		fast.WriteMessage(websocket.TextMessage, []byte("ping"))
	}
	fast.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := fast.ReadMessage(); !websocket.IsCloseError(err, 4004) {
		t.Fatalf("flooding client: %v, want close 4004", err)
	}
	neighbour := conns[1]
	neighbour.WriteMessage(websocket.TextMessage, []byte(`{"topics":["calm"]}`))
	relaytest.Eventually(t, "the neighbour to subscribe", func() bool { return in.Server.Hub.Subscribers("calm") == 1 })
	publish(t, in, client.Publish{Topic: "calm", Message: "still here"})
	neighbour.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, m, err := neighbour.ReadMessage(); err != nil || string(m) != "still here" {
		t.Fatalf("neighbour: %q %v", m, err)
	}
	_, _, metrics := request(t, "GET", in.URL+"/metrics", "")
	for _, want := range []string{`relay_rate_limited_total{what="register"} 2`, `relay_rate_limited_total{what="connect"} 2`, `relay_rate_limited_total{what="messages"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

func TestConnectionLimit(t *testing.T) {
	in := secured(t, server.Config{WS: ws.Config{MaxConnections: 2}})
	for i := range 3 {
		reg, _ := in.Client.Register(ctxT(t), uint64(i))
		c, resp, err := websocket.DefaultDialer.Dial(reg.URL, nil)
		if i < 2 {
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			continue
		}
		if err == nil || resp.StatusCode != 503 {
			t.Fatalf("connection past the limit: %v %v, want 503", err, resp)
		}
	}
	if n := in.Server.WS.Stats().Refused.Load(); n != 1 {
		t.Fatalf("refused = %d", n)
	}
}

// TestTLS serves HTTPS and wss:// with a self-signed certificate: the
// register URL says wss://, and both protocols work over TLS, where
// sockets are read by a goroutine each rather than the epoll loop.
func TestTLS(t *testing.T) {
	certFile, keyFile, pool := relaytest.SelfSigned(t)
	in := relaytest.Start(t, server.Config{TLSCert: certFile, TLSKey: keyFile})
	tlsCfg := &tls.Config{RootCAs: pool}
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	c, _ := client.New("https://"+in.Addr, client.WithHTTPClient(httpc), client.WithDialer(&websocket.Dialer{TLSClientConfig: tlsCfg}))
	ctx := ctxT(t)
	reg, err := c.Register(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(reg.URL, "wss://"+in.Addr+"/ws/") {
		t.Fatalf("register over TLS gave %s", reg.URL)
	}
	conn, err := c.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetTopics(ctx, "secure"); err != nil {
		t.Fatal(err)
	}
	reg2, _ := c.Register(ctx, 2)
	s, err := c.OpenStream(ctx, reg2.URL, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Subscribe(ctx, false, "secure"); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if _, err := c.Publish(ctx, client.Publish{Topic: "secure", Message: fmt.Sprintf("m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if m := receive(t, conn); m != fmt.Sprintf("m%d", i) {
			t.Fatalf("seed over TLS: %q, want m%d", m, i)
		}
		if e := nextEvent(t, s); e.Offset != uint64(i+1) {
			t.Fatalf("relay.v1 over TLS: %+v, want offset %d", e, i+1)
		}
	}
}

// relayUser converts a test user id.
func relayUser(u uint64) relay.UserID { return relay.UserID(u) }

func errorsAs(err error, target any) bool { return errors.As(err, target) }
