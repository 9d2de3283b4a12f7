package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/ratelimit"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
	"github.com/relayhq/relay/internal/ws"
)

// logBuffer collects a server's log; safe for the server and a test to
// share.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// matching returns the lines that contain every one of subs.
func (l *logBuffer) matching(subs ...string) []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// waitLine waits for a line containing every one of subs and returns it.
func (l *logBuffer) waitLine(t *testing.T, subs ...string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m := l.matching(subs...); len(m) > 0 {
			return m[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", subs, l.String())
		}
	}
}

// startLogged runs a server like relaytest.Start, logging at Debug into
// the returned buffer. stop shuts it down (also at the test's end).
func startLogged(t *testing.T, cfg server.Config) (in *relaytest.Instance, logs *logBuffer, stop func()) {
	t.Helper()
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs = new(logBuffer)
	srv := server.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	in = &relaytest.Instance{URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(), Server: srv}
	if in.Client, err = client.New(in.URL); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("server stop: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("server did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return in, logs, stop
}

// checkLine fails unless line contains every one of want.
func checkLine(t *testing.T, line string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("log line %q lacks %s", line, w)
		}
	}
}

// dialSeed opens a bare seed socket for a new registration of user.
func dialSeed(t *testing.T, in *relaytest.Instance, user uint64) *websocket.Conn {
	t.Helper()
	reg, err := in.Client.Register(ctxT(t), user)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.DefaultDialer.Dial(reg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// metric returns the value of an unlabelled metric from /metrics.
func metric(t *testing.T, in *relaytest.Instance, name string) float64 {
	t.Helper()
	_, _, body := request(t, "GET", in.URL+"/metrics", "")
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestSeedIgnoresNonCommands: on a seed socket, texts that are no topics
// command (an app's own JSON, text that is not JSON, "topics" that is no
// array) are ignored as the tutorial's server ignores them: the socket
// stays open and keeps receiving, the counter moves, and a Debug line
// says so. A topics command the server refuses still closes with 1008;
// binary and oversized messages keep their codes; relay.v1 still answers
// error frames.
func TestSeedIgnoresNonCommands(t *testing.T) {
	in, logs, _ := startLogged(t, server.Config{Metrics: true, WS: ws.Config{MaxMessageBytes: 4096}})
	_, conn := connect(t, in, 1)
	ignored := []string{`{"type":"hello"}`, "not json", `{"topics":"x"}`, `{"topic":["dogs"]}`, `["cats"]`, `{"topics":null}`, "", "ping"}
	for _, m := range ignored {
		if err := conn.WriteText([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatalf("after ignored texts: %v", err)
	}
	if res := publish(t, in, client.Publish{Topic: "cats", Message: "still subscribed"}); res.Delivered != 1 {
		t.Fatalf("delivered %d, want 1", res.Delivered)
	}
	if m := receive(t, conn); m != "still subscribed" {
		t.Fatalf("after ignored texts: %q", m)
	}
	want := len(ignored) - 1 // "ping" is the protocol's own no-op
	if n := in.Server.API.Stats().SeedIgnored(); n != uint64(want) {
		t.Errorf("SeedIgnored = %d, want %d", n, want)
	}
	if v := metric(t, in, "relay_seed_ignored_frames_total"); v != float64(want) {
		t.Errorf("relay_seed_ignored_frames_total = %v, want %d", v, want)
	}
	line := logs.waitLine(t, "seed text ignored", "bytes=16")
	checkLine(t, line, "level=DEBUG", "user_id=1", "remote=127.0.0.1:", "conn=")
	if strings.Contains(logs.String(), "hello") {
		t.Error("an ignored text's content was logged")
	}
	// Topics commands are still commands: set the topics, or refuse.
	if err := conn.SetTopics(ctxT(t), "dogs"); err != nil {
		t.Fatal(err)
	}
	publish(t, in, client.Publish{Topic: "dogs", Message: "woof"})
	if m := receive(t, conn); m != "woof" {
		t.Fatalf("after a topics command: %q", m)
	}

	for _, tt := range []struct {
		name   string
		typ    int
		msg    string
		code   int
		reason string
	}{
		{"invalid topic", websocket.TextMessage, `{"topics":["a b"]}`, 1008, "white space"},
		{"topics of the wrong type", websocket.TextMessage, `{"topics":[5]}`, 1008, "array of strings"},
		{"binary", websocket.BinaryMessage, "{}", 1003, "binary"},
		{"oversized", websocket.TextMessage, strings.Repeat("x", 5000), 1009, "too large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialSeed(t, in, 2)
			if err := c.WriteMessage(tt.typ, []byte(tt.msg)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _, err := c.ReadMessage()
			ce, ok := err.(*websocket.CloseError)
			if !ok || ce.Code != tt.code || !strings.Contains(ce.Text, tt.reason) {
				t.Fatalf("got %v, want close %d mentioning %q", err, tt.code, tt.reason)
			}
		})
	}

	// relay.v1 answers the same texts with error frames, and stays open.
	reg, err := in.Client.Register(ctxT(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	v1 := dialV1(t, reg.URL)
	for _, m := range []string{"not json", `{"type":"hello"}`} {
		if err := v1.ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		if f := v1.expect("error"); f.Code != "bad_request" && f.Code != "invalid" {
			t.Errorf("%s: error code %q", m, f.Code)
		}
	}
	v1.pingPong(9)
	if n := in.Server.API.Stats().SeedIgnored(); n != uint64(want) {
		t.Errorf("SeedIgnored = %d after relay.v1 errors, want %d", n, want)
	}
}

// rawUpgrade sends an upgrade request for path with the given
// Sec-WebSocket-Version ("" for none) and returns the response.
func rawUpgrade(t *testing.T, addr, path, version string) (*http.Response, string, string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	if version != "" {
		req += "Sec-WebSocket-Version: " + version + "\r\n"
	}
	fmt.Fprint(nc, req+"\r\n")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), nc.LocalAddr().String()
}

// TestUpgradeVersionRefused: through the whole server (its own error
// handler installed), an upgrade without Sec-WebSocket-Version or with
// another version is refused with 400, the JSON error and
// Sec-WebSocket-Version: 13, and logged at Info with the client's address.
func TestUpgradeVersionRefused(t *testing.T) {
	in, logs, _ := startLogged(t, server.Config{})
	for _, version := range []string{"", "8", "7, 8"} {
		reg, err := in.Client.Register(ctxT(t), 1)
		if err != nil {
			t.Fatal(err)
		}
		path := reg.URL[strings.Index(reg.URL, "/ws/"):]
		resp, body, local := rawUpgrade(t, in.Addr, path, version)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("version %q: status %d, want 400", version, resp.StatusCode)
		}
		if got := resp.Header.Get("Sec-WebSocket-Version"); got != "13" {
			t.Errorf("version %q: Sec-WebSocket-Version %q, want 13", version, got)
		}
		if !strings.Contains(body, `"error":"websocket upgrade failed: websocket: unsupported version`) {
			t.Errorf("version %q: body %s", version, body)
		}
		line := logs.waitLine(t, "websocket upgrade refused", "remote="+local)
		checkLine(t, line, "level=INFO", "status=400", "route=/ws/{id}")
		if strings.Contains(line, path[len("/ws/"):]) {
			t.Errorf("the registration id was logged: %q", line)
		}
	}
	// Version 13 upgrades; a refusal for another cause names no version.
	reg, _ := in.Client.Register(ctxT(t), 1)
	resp, _, _ := rawUpgrade(t, in.Addr, reg.URL[strings.Index(reg.URL, "/ws/"):], "13")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("version 13: status %d", resp.StatusCode)
	}
	nc, err := net.Dial("tcp", in.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reg, _ = in.Client.Register(ctxT(t), 1)
	fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", reg.URL[strings.Index(reg.URL, "/ws/"):])
	resp, err = http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Sec-WebSocket-Version") != "" {
		t.Errorf("no key: status %d, Sec-WebSocket-Version %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Version"))
	}
}

// TestCloseAndRefusalLogs provokes each class of close and refusal on real
// sockets and checks its log line: level, close code or status, and the
// client's address.
func TestCloseAndRefusalLogs(t *testing.T) {
	in, logs, stop := startLogged(t, server.Config{
		// The connect rate refills at 50/s, so that the loop below outruns
		// it even when a loaded machine takes milliseconds per request;
		// its burst of 200 covers every socket the test opens before.
		API: api.Config{ConnectLimit: ratelimit.New(50, 200, nil, 100), RegisterLimit: ratelimit.New(1000, 1000, nil, 100)},
		WS:  ws.Config{MaxMessageBytes: 1024, MessageRate: 10, MessageBurst: 10, SendQueueBytes: 4096, MaxConnections: 20, CloseTimeout: time.Second},
	})
	// Closes the client causes: the code and the level.
	for i, tt := range []struct {
		name  string
		act   func(c *websocket.Conn)
		code  int
		level string
	}{
		{"binary", func(c *websocket.Conn) { c.WriteMessage(websocket.BinaryMessage, []byte{1}) }, 1003, "INFO"},
		{"oversized", func(c *websocket.Conn) { c.WriteMessage(websocket.TextMessage, make([]byte, 2000)) }, 1009, "INFO"},
		{"refused command", func(c *websocket.Conn) { c.WriteMessage(websocket.TextMessage, []byte(`{"topics":[""]}`)) }, 1008, "INFO"},
		{"rate limit", func(c *websocket.Conn) {
			for range 30 {
				c.WriteMessage(websocket.TextMessage, []byte("ping"))
			}
		}, 4004, "WARN"},
		{"client close", func(c *websocket.Conn) {
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
		}, 1000, "DEBUG"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			user := 100 + i
			c := dialSeed(t, in, uint64(user))
			tt.act(c)
			line := logs.waitLine(t, "socket closed", "code="+strconv.Itoa(tt.code), "remote="+c.LocalAddr().String())
			checkLine(t, line, "level="+tt.level, fmt.Sprintf("user_id=%d", user), "protocol=seed", "conn=")
		})
	}
	// A slow consumer (4002): one message larger than the send queue.
	_, slow := connect(t, in, 40)
	if err := slow.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	publish(t, in, client.Publish{Topic: "cats", UserID: new(uint64(40)), Message: strings.Repeat("x", 5000)})
	checkLine(t, logs.waitLine(t, "socket closed", "code=4002"), "level=WARN", "user_id=40", "remote=127.0.0.1:")

	// Unregistered (4000) and replaced (4001).
	reg, err := in.Client.Register(ctxT(t), 41)
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := websocket.DefaultDialer.Dial(reg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, _, err := websocket.DefaultDialer.Dial(reg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	checkLine(t, logs.waitLine(t, "socket closed", "code=4001", "remote="+first.LocalAddr().String()), "level=DEBUG", "user_id=41")
	if err := in.Client.Unregister(ctxT(t), reg.ID); err != nil {
		t.Fatal(err)
	}
	checkLine(t, logs.waitLine(t, "socket closed", "code=4000", "remote="+second.LocalAddr().String()), "level=DEBUG", "user_id=41")

	// HTTP refusals, one place: status, route, address.
	status, _, _ := request(t, "GET", in.URL+"/nope", "")
	if status != 404 {
		t.Fatalf("GET /nope: %d", status)
	}
	checkLine(t, logs.waitLine(t, "request refused", "status=404"), "level=INFO", "path=/nope", "remote=127.0.0.1:")
	request(t, "GET", in.URL+"/publish", "")
	checkLine(t, logs.waitLine(t, "request refused", "status=405"), "level=INFO", "route=/publish", "remote=127.0.0.1:")
	request(t, "POST", in.URL+"/publish", `{"topic":""}`)
	checkLine(t, logs.waitLine(t, "request refused", "status=400"), "level=INFO", "route=/publish", "error=", "remote=127.0.0.1:")
	request(t, "GET", in.URL+"/ws/0123456789abcdef0123456789abcdef", "")
	line := logs.waitLine(t, "request refused", "status=404", "route=/ws/{id}")
	if strings.Contains(line, "0123456789abcdef") {
		t.Errorf("an id was logged: %q", line)
	}

	// The connection limit (503, Warn) and the connect rate (429, Warn).
	stopFull := make([]*websocket.Conn, 0, 20)
	for in.Server.WS.Len() < 20 {
		reg, err := in.Client.Register(ctxT(t), 42)
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := websocket.DefaultDialer.Dial(reg.URL, nil)
		if err != nil {
			break
		}
		stopFull = append(stopFull, c)
	}
	reg, _ = in.Client.Register(ctxT(t), 43)
	if _, resp, err := websocket.DefaultDialer.Dial(reg.URL, nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("upgrade past the limit: %v", err)
	}
	checkLine(t, logs.waitLine(t, "websocket upgrade refused", "status=503"), "level=WARN", "connection limit", "remote=127.0.0.1:")
	for _, c := range stopFull {
		c.Close()
	}
	for range 2000 {
		if s, _, _ := request(t, "GET", in.URL+"/ws/x", ""); s == 429 {
			break
		}
	}
	checkLine(t, logs.waitLine(t, "request refused", "status=429"), "level=WARN", "too many connect requests", "remote=127.0.0.1:")

	// Shutdown closes the rest with 1001, at Debug.
	connectAfterRate(t, in, 44)
	stop()
	checkLine(t, logs.waitLine(t, "socket closed", "code=1001", "user_id=44"), "level=DEBUG", "remote=127.0.0.1:")
}

// connectAfterRate connects a seed client for user once the connect rate
// lets it.
func connectAfterRate(t *testing.T, in *relaytest.Instance, user uint64) *client.Conn {
	t.Helper()
	reg, err := in.Client.Register(ctxT(t), user)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := in.Client.Connect(ctxT(t), reg.URL)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			if err := c.Sync(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
}

// TestLogFlood: 10,000 refused requests and 300 refused sockets log a
// bounded number of lines, and the suppressed ones are reported by kind
// when the server stops.
func TestLogFlood(t *testing.T) {
	in, logs, stop := startLogged(t, server.Config{})
	const requests = 10000
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < requests; i += 8 {
				resp, err := hc.Get(in.URL + "/nope")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	const sockets = 300
	// At most 64 at once: the listener allows 256 connections per address
	// that are not WebSockets yet, and sheds past that (a register that
	// then fails with EOF is the cap working, not what this test is about).
	slots := make(chan struct{}, 64)
	for i := range sockets {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			c := dialSeed(t, in, uint64(i))
			c.WriteMessage(websocket.BinaryMessage, []byte{1})
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	relaytest.Eventually(t, "sockets to close", func() bool { return in.Server.WS.Len() == 0 })
	stop()
	refused := len(logs.matching("request refused", "status=404"))
	closed := len(logs.matching("socket closed", "code=1003"))
	total := strings.Count(logs.String(), "\n")
	t.Logf("%d lines: %d refusals, %d closes", total, refused, closed)
	if refused == 0 || refused > 100 || closed == 0 || closed > 100 || total > 500 {
		t.Errorf("%d lines in all, %d for 404s, %d for 1003 closes: not bounded", total, refused, closed)
	}
	count := func(kind string) int {
		n := 0
		for _, line := range logs.matching("log lines suppressed", "kind="+kind+" ") {
			i := strings.Index(line, "lines=")
			v, _ := strconv.Atoi(strings.Fields(line[i+len("lines="):])[0])
			n += v
		}
		return n
	}
	if n := count("http_404"); refused+n != requests {
		t.Errorf("%d 404 lines + %d suppressed, want %d", refused, n, requests)
	}
	if n := count("ws_close_1003"); closed+n != sockets {
		t.Errorf("%d 1003 lines + %d suppressed, want %d", closed, n, sockets)
	}
}
