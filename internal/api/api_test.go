package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

func do(t *testing.T, method, u, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestBadInput sends every kind of bad request and checks the status and
// that the JSON error names the problem. A publish afterwards proves the
// server stayed healthy and a connected client saw nothing but its message.
func TestBadInput(t *testing.T) {
	in := relaytest.Start(t, server.Config{API: api.Config{MaxBodyBytes: 4096, MaxMessageBytes: 1000}})
	ctx := context.Background()
	reg, err := in.Client.Register(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := in.Client.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		errRe                    string
	}{
		{"register: malformed JSON", "POST", "/register", `{"user_id": `, 400, `not valid JSON`},
		{"register: empty body", "POST", "/register", ``, 400, `body is empty`},
		{"register: not an object", "POST", "/register", `[1]`, 400, `must be a JSON object`},
		{"register: missing user_id", "POST", "/register", `{}`, 400, `user_id is required`},
		{"register: null user_id", "POST", "/register", `{"user_id": null}`, 400, `user_id is required`},
		{"register: negative user_id", "POST", "/register", `{"user_id": -1}`, 400, `non-negative integer, got -1`},
		{"register: fractional user_id", "POST", "/register", `{"user_id": 1.5}`, 400, `non-negative integer, got 1.5`},
		{"register: exponent user_id", "POST", "/register", `{"user_id": 1e3}`, 400, `non-negative integer`},
		{"register: string user_id", "POST", "/register", `{"user_id": "1"}`, 400, `non-negative integer, got "1"`},
		{"register: huge user_id", "POST", "/register", `{"user_id": 18446744073709551616}`, 400, `too large`},
		{"register: trailing garbage", "POST", "/register", `{"user_id": 1} x`, 400, `not valid JSON`},
		{"register: body too large", "POST", "/register", `{"user_id": 1, "pad": "` + strings.Repeat("x", 5000) + `"}`, 413, `exceeds 4096 bytes`},
		{"publish: missing topic", "POST", "/publish", `{"message": "m"}`, 400, `topic is required`},
		{"publish: empty topic", "POST", "/publish", `{"topic": "", "message": "m"}`, 400, `topic must not be empty`},
		{"publish: numeric topic", "POST", "/publish", `{"topic": 5, "message": "m"}`, 400, `topic must be a string, got 5`},
		{"publish: control char topic", "POST", "/publish", `{"topic": "a\nb", "message": "m"}`, 400, `control character`},
		{"publish: long topic", "POST", "/publish", `{"topic": "` + strings.Repeat("t", 300) + `", "message": "m"}`, 400, `300 bytes long, the limit is 256`},
		{"publish: missing message", "POST", "/publish", `{"topic": "cats"}`, 400, `message is required`},
		{"publish: object message", "POST", "/publish", `{"topic": "cats", "message": {"a": 1}}`, 400, `message must be a string`},
		{"publish: negative user_id", "POST", "/publish", `{"topic": "cats", "user_id": -3, "message": "m"}`, 400, `non-negative integer, got -3`},
		{"publish: message too large", "POST", "/publish", `{"topic": "cats", "message": "` + strings.Repeat("m", 1001) + `"}`, 413, `1001 bytes, the limit is 1000`},
		{"unregister: unknown id", "DELETE", "/register/nope", ``, 404, `no registration with id "nope"`},
		{"socket: unknown id", "GET", "/ws/nope", ``, 404, `no registration with id nope`},
		{"socket: not a websocket", "GET", "/ws/" + reg.ID, ``, 400, `websocket upgrade failed`},
		{"wrong method: publish", "GET", "/publish", ``, 405, `method GET is not allowed on /publish; use POST`},
		{"wrong method: register", "PUT", "/register", `{}`, 405, `use POST`},
		{"wrong method: health", "POST", "/health", ``, 405, `use GET`},
		{"unknown route", "GET", "/nope", ``, 404, `no route for GET /nope`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := do(t, tt.method, in.URL+tt.path, tt.body)
			if status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", status, tt.status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type = %q", ct)
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || !regexp.MustCompile(tt.errRe).MatchString(e.Error) {
				t.Fatalf("body = %s, want an error matching %q", body, tt.errRe)
			}
		})
	}
	if status, hdr, _ := do(t, "DELETE", in.URL+"/publish", ""); status != 405 || hdr.Get("Allow") != "POST, OPTIONS" {
		t.Fatalf("405 Allow header = %q", hdr.Get("Allow"))
	}
	res, err := in.Client.Publish(ctx, client.Publish{Topic: "cats", Message: "still fine"})
	if err != nil || res.Delivered != 1 {
		t.Fatalf("publish after bad input: %+v %v", res, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if m, err := conn.Receive(rctx); err != nil || m != "still fine" {
		t.Fatalf("client received %q, %v", m, err)
	}
	var rejected int
	in.Server.API.Stats().Rejected(func(_ int, n uint64) { rejected += int(n) })
	if rejected != len(tests)+1 {
		t.Fatalf("rejected counter = %d, want %d", rejected, len(tests)+1)
	}
}

func TestSeedResponsesAreByteCompatible(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	status, _, body := do(t, "GET", in.URL+"/health", "")
	if status != 200 || body != "" {
		t.Fatalf("health = %d %q", status, body)
	}
	status, hdr, body := do(t, "POST", in.URL+"/register", `{"user_id": 1}`, "Content-Type", "application/json")
	re := regexp.MustCompile(`^\{"url":"ws://` + regexp.QuoteMeta(in.Addr) + `/ws/([0-9a-f]{32})"\}$`)
	m := re.FindStringSubmatch(body)
	if status != 200 || m == nil || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("register = %d %q %q; want %s", status, body, hdr.Get("Content-Type"), re)
	}
	status, _, body = do(t, "POST", in.URL+"/publish", `{"topic": "cats", "user_id": null, "message": "hi"}`)
	if status != 200 || !regexp.MustCompile(`^\{"offset":1,"epoch":"[a-z0-9]+","delivered":0\}$`).MatchString(body) {
		t.Fatalf("publish = %d %q", status, body)
	}
	status, _, body = do(t, "DELETE", in.URL+"/register/"+m[1], "")
	if status != 200 || body != "" {
		t.Fatalf("unregister = %d %q", status, body)
	}
}

func TestRegisterURLHost(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	// The Host header decides the URL when no public URL is configured.
	_, _, body := do(t, "POST", in.URL+"/register", `{"user_id": 1}`, "Host", "relay.example.com:443")
	if !strings.HasPrefix(body, `{"url":"ws://relay.example.com:443/ws/`) {
		t.Fatalf("register with Host relay.example.com:443 = %s", body)
	}
	for _, host := range []string{"evil.com/path", "a@b", "x\"y"} {
		nc, err := net.Dial("tcp", in.Addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(nc, "POST /register HTTP/1.1\r\nHost: %s\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"user_id\":1}", host)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		nc.Close()
		if resp.StatusCode != 400 || strings.Contains(string(b), "url") {
			t.Fatalf("register with Host %q = %d %s; want 400", host, resp.StatusCode, b)
		}
	}
	pub, _ := url.Parse("https://rt.example.com/relay/")
	in2 := relaytest.Start(t, server.Config{API: api.Config{PublicURL: pub}})
	_, _, body = do(t, "POST", in2.URL+"/register", `{"user_id": 1}`)
	if !regexp.MustCompile(`^\{"url":"wss://rt\.example\.com/relay/ws/[0-9a-f]{32}"\}$`).MatchString(body) {
		t.Fatalf("register with a public URL = %s", body)
	}
}

func TestCORS(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	status, hdr, _ := do(t, "OPTIONS", in.URL+"/publish", "", "Origin", "https://app.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type")
	if status != 204 || hdr.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(hdr.Get("Access-Control-Allow-Methods"), "POST") || hdr.Get("Access-Control-Allow-Headers") != "content-type" {
		t.Fatalf("preflight = %d %v", status, hdr)
	}
	_, hdr, _ = do(t, "POST", in.URL+"/register", `{"user_id": 1}`, "Origin", "https://app.example")
	if hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("simple request: Access-Control-Allow-Origin = %q", hdr.Get("Access-Control-Allow-Origin"))
	}

	limited := relaytest.Start(t, server.Config{API: api.Config{AllowedOrigins: []string{"https://good.example"}}})
	_, hdr, _ = do(t, "POST", limited.URL+"/register", `{"user_id": 1}`, "Origin", "https://good.example")
	if hdr.Get("Access-Control-Allow-Origin") != "https://good.example" || hdr.Get("Vary") != "Origin" {
		t.Fatalf("allowed origin: %v", hdr)
	}
	status, hdr, body := do(t, "OPTIONS", limited.URL+"/register", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	if status != 403 || hdr.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(body, "not allowed") {
		t.Fatalf("preflight from a refused origin = %d %v %s", status, hdr, body)
	}
	// The upgrade checks the origin too.
	reg, err := limited.Client.Register(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	_, resp, err := websocket.DefaultDialer.Dial(reg.URL, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("upgrade from a refused origin: %v %v", resp, err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(reg.URL, http.Header{"Origin": {"https://good.example"}})
	if err != nil {
		t.Fatalf("upgrade from an allowed origin: %v", err)
	}
	ws.Close()
}

func TestMetrics(t *testing.T) {
	in := relaytest.Start(t, server.Config{Metrics: true})
	ctx := context.Background()
	reg, _ := in.Client.Register(ctx, 1)
	conn, err := in.Client.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Sync(ctx)
	in.Client.Publish(ctx, client.Publish{Topic: "cats", Message: "x"})
	do(t, "GET", in.URL+"/ws/unknown", "")
	_, _, body := do(t, "GET", in.URL+"/metrics", "")
	for _, want := range []string{
		"relay_connections 1", "relay_registrations 1", "relay_publishes_total 1",
		"relay_deliveries_total 1", `relay_http_rejected_total{status="404"} 1`,
		"relay_slow_consumer_closes_total 0", "go_goroutines",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") {
			t.Errorf("metrics lack %q", want)
		}
	}
}
