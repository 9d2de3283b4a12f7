package pusher_test

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/internal/protocol/pusher"
	"github.com/relayhq/relay/internal/ratelimit"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// The Pusher protocol against a real server, frame by frame, with raw
// WebSocket clients (the pusher-js and SDK suites are in testdata/node).

var testApp = pusher.App{
	Credentials:       pusher.Credentials{ID: "app1", Key: "key1", Secret: "secret-0123456789abcdef"},
	ClientEvents:      true,
	ClientEventRate:   5,
	SubscriptionCount: true,
	Bridge:            true,
}

func start(t *testing.T, apps ...pusher.App) *relaytest.Instance {
	t.Helper()
	if len(apps) == 0 {
		apps = []pusher.App{testApp}
	}
	set, err := pusher.NewApps(apps)
	if err != nil {
		t.Fatal(err)
	}
	return relaytest.Start(t, server.Config{Pusher: set})
}

// sock is a raw Pusher client. A goroutine reads its frames (gorilla's
// connection cannot be read again after a read deadline passes).
type sock struct {
	t        *testing.T
	c        *websocket.Conn
	socketID string
	frames   chan frame
	closed   chan int // the close code, once the server closed
	// counts keeps subscription_count events, which the tests that are
	// not about them skip (they arrive half a second late).
	counts bool
}

func newSock(t *testing.T, c *websocket.Conn) *sock {
	s := &sock{t: t, c: c, frames: make(chan frame, 1000), closed: make(chan int, 1)}
	go func() {
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				code := 0
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				s.closed <- code
				close(s.frames)
				return
			}
			var f frame
			if err := json.Unmarshal(msg, &f); err != nil {
				f = frame{Event: "!invalid", Data: msg}
			}
			s.frames <- f
		}
	}()
	return s
}

type frame struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
}

// str returns a frame's data as the string pusher-js would hold.
func (f frame) str() string {
	var s string
	if json.Unmarshal(f.Data, &s) != nil {
		return string(f.Data)
	}
	return s
}

func dial(t *testing.T, in *relaytest.Instance, query string) (*websocket.Conn, *http.Response, error) {
	return websocket.DefaultDialer.Dial("ws://"+in.Addr+"/app/"+query, nil)
}

func connect(t *testing.T, in *relaytest.Instance) *sock {
	t.Helper()
	c, _, err := dial(t, in, testApp.Key+"?protocol=7&client=js&version=8.4.0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := newSock(t, c)
	f := s.next()
	if f.Event != "pusher:connection_established" {
		t.Fatalf("first frame %+v, want connection_established", f)
	}
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if err := json.Unmarshal([]byte(f.str()), &d); err != nil {
		t.Fatalf("connection_established data %s: %v", f.Data, err)
	}
	if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(d.SocketID) || d.ActivityTimeout != 120 {
		t.Fatalf("connection_established %+v, want a socket_id N.M and activity_timeout 120", d)
	}
	s.socketID = d.SocketID
	return s
}

func (s *sock) send(event string, data any) {
	s.t.Helper()
	if err := s.c.WriteJSON(map[string]any{"event": event, "data": data}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sock) next() frame {
	s.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				s.t.Fatalf("the server closed the socket (%d) while a frame was expected", <-s.closed)
			}
			if f.Event == "pusher_internal:subscription_count" && !s.counts {
				continue
			}
			return f
		case <-timeout:
			s.t.Fatalf("no frame within 5s")
		}
	}
}

// expect reads frames until one with event arrives (skipping pings).
func (s *sock) expect(event string) frame {
	s.t.Helper()
	for {
		f := s.next()
		if f.Event == event {
			return f
		}
		if f.Event != "pusher:ping" {
			s.t.Fatalf("got %s %s %s, want %s", f.Event, f.Channel, f.Data, event)
		}
	}
}

// quiet checks that nothing but pings arrives for a while.
func (s *sock) quiet(d time.Duration) {
	s.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-s.frames:
			if ok && f.Event != "pusher:ping" && (f.Event != "pusher_internal:subscription_count" || s.counts) {
				s.t.Fatalf("unexpected frame %s %s %s", f.Event, f.Channel, f.Data)
			}
			if !ok {
				return
			}
		case <-deadline:
			return
		}
	}
}

func (s *sock) subscribe(channel string, extra ...string) frame {
	s.t.Helper()
	d := map[string]string{"channel": channel}
	for i := 0; i+1 < len(extra); i += 2 {
		d[extra[i]] = extra[i+1]
	}
	s.send("pusher:subscribe", d)
	return s.next()
}

// closeCode reads until the server closes and returns the code.
func (s *sock) closeCode() int {
	s.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-s.frames:
			if !ok {
				return <-s.closed
			}
		case <-timeout:
			s.t.Fatalf("the server did not close the socket within 5s")
		}
	}
}

// api makes a signed HTTP API call.
func api(t *testing.T, in *relaytest.Instance, creds pusher.Credentials, method, path string, query url.Values, body any) (int, string) {
	t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	q, err := pusher.SignRequest(creds, method, path, query, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, in.URL+path+"?"+q, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func trigger(t *testing.T, in *relaytest.Instance, body map[string]any) {
	t.Helper()
	if status, out := api(t, in, testApp.Credentials, "POST", "/apps/app1/events", nil, body); status != 200 {
		t.Fatalf("trigger %v: %d %s", body, status, out)
	}
}

func TestConnectRefusals(t *testing.T) {
	in := start(t)
	for _, tt := range []struct {
		query string
		code  int
	}{
		{"nokey?protocol=7", 4001},
		{"key1", 4008},
		{"key1?protocol=8", 4007},
	} {
		c, _, err := dial(t, in, tt.query)
		if err != nil {
			t.Fatalf("%s: %v", tt.query, err)
		}
		s := newSock(t, c)
		f := s.next()
		var d struct {
			Code int `json:"code"`
		}
		json.Unmarshal(f.Data, &d)
		if f.Event != "pusher:error" || d.Code != tt.code {
			t.Fatalf("%s: first frame %+v, want pusher:error %d", tt.query, f, tt.code)
		}
		if code := s.closeCode(); code != tt.code {
			t.Fatalf("%s: closed with %d, want %d", tt.query, code, tt.code)
		}
		c.Close()
	}
}

func TestPingPong(t *testing.T) {
	in := start(t)
	s := connect(t, in)
	s.send("pusher:ping", map[string]any{})
	if f := s.expect("pusher:pong"); f.str() != "{}" {
		t.Fatalf("pong data %s", f.Data)
	}
}

func TestPublicChannelAndExclusion(t *testing.T) {
	in := start(t)
	a, b := connect(t, in), connect(t, in)
	for _, s := range []*sock{a, b} {
		if f := s.subscribe("orders"); f.Event != "pusher_internal:subscription_succeeded" || f.Channel != "orders" {
			t.Fatalf("subscribe: %+v", f)
		}
	}
	for i := range 20 {
		trigger(t, in, map[string]any{"name": "created", "channel": "orders", "data": fmt.Sprintf(`{"n":%d}`, i)})
	}
	for _, s := range []*sock{a, b} {
		for i := range 20 {
			f := s.expect("created")
			if f.Channel != "orders" || f.str() != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("event %d: %+v", i, f)
			}
		}
	}
	// socket_id leaves a's socket out, on every channel of the event.
	trigger(t, in, map[string]any{"name": "created", "channels": []string{"orders", "other"}, "data": "x", "socket_id": a.socketID})
	if f := b.expect("created"); f.str() != "x" {
		t.Fatalf("b got %+v", f)
	}
	a.quiet(300 * time.Millisecond)
}

func TestPrivateChannelAuth(t *testing.T) {
	in := start(t)
	s := connect(t, in)
	f := s.subscribe("private-room", "auth", "key1:"+strings.Repeat("0", 64))
	if f.Event != "pusher:error" {
		t.Fatalf("bad auth: %+v, want pusher:error first", f)
	}
	if f := s.expect("pusher:subscription_error"); f.Channel != "private-room" || !strings.Contains(string(f.Data), `"status":401`) {
		t.Fatalf("bad auth: %+v", f)
	}
	auth := pusher.ChannelAuth(testApp.Credentials, s.socketID, "private-room", "")
	if f := s.subscribe("private-room", "auth", auth); f.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("good auth: %+v", f)
	}
	// Another socket's signature is not this one's.
	other := connect(t, in)
	if f := other.subscribe("private-room", "auth", auth); f.Event != "pusher:error" {
		t.Fatalf("replayed auth: %+v", f)
	}
}

func TestInvalidChannelName(t *testing.T) {
	in := start(t)
	s := connect(t, in)
	for _, name := range []string{"bad name", strings.Repeat("a", 165), "#control-7"} {
		if f := s.subscribe(name); f.Event != "pusher:subscription_error" {
			t.Fatalf("%q: %+v, want subscription_error", name, f)
		}
	}
}

// presence subscribes s to channel as user with info.
func presence(t *testing.T, s *sock, channel, user, info string) frame {
	t.Helper()
	data := fmt.Sprintf(`{"user_id":%q,"user_info":%s}`, user, info)
	return s.subscribe(channel, "auth", pusher.ChannelAuth(testApp.Credentials, s.socketID, channel, data), "channel_data", data)
}

func TestPresence(t *testing.T) {
	in := start(t)
	a := connect(t, in)
	f := presence(t, a, "presence-room", "alice", `{"name":"Alice"}`)
	if f.Event != "pusher_internal:subscription_succeeded" || f.str() != `{"presence":{"ids":["alice"],"hash":{"alice":{"name":"Alice"}},"count":1}}` {
		t.Fatalf("alice's subscribe: %+v", f)
	}
	b1, b2 := connect(t, in), connect(t, in)
	f = presence(t, b1, "presence-room", "bob", `{"name":"Bob"}`)
	var got struct {
		Presence struct {
			IDs   []string                   `json:"ids"`
			Hash  map[string]json.RawMessage `json:"hash"`
			Count int                        `json:"count"`
		} `json:"presence"`
	}
	if err := json.Unmarshal([]byte(f.str()), &got); err != nil || got.Presence.Count != 2 || len(got.Presence.Hash) != 2 || string(got.Presence.Hash["alice"]) != `{"name":"Alice"}` {
		t.Fatalf("bob's subscribe: %+v (%v)", f, err)
	}
	if f := a.expect("pusher_internal:member_added"); f.str() != `{"user_id":"bob","user_info":{"name":"Bob"}}` {
		t.Fatalf("member_added: %+v", f)
	}
	// Bob's second socket: no member_added to anyone, bob's first socket
	// included.
	presence(t, b2, "presence-room", "bob", `{"name":"Bob 2"}`)
	a.quiet(300 * time.Millisecond)
	b1.quiet(100 * time.Millisecond)
	// Members over the HTTP API.
	status, out := api(t, in, testApp.Credentials, "GET", "/apps/app1/channels/presence-room/users", nil, nil)
	if status != 200 || (out != `{"users":[{"id":"alice"},{"id":"bob"}]}`+"\n" && out != `{"users":[{"id":"bob"},{"id":"alice"}]}`+"\n") {
		t.Fatalf("users: %d %s", status, out)
	}
	status, out = api(t, in, testApp.Credentials, "GET", "/apps/app1/channels/presence-room", url.Values{"info": {"user_count,subscription_count"}}, nil)
	if status != 200 || out != `{"occupied":true,"subscription_count":3,"user_count":2}`+"\n" {
		t.Fatalf("channel info: %d %s", status, out)
	}
	// member_removed after bob's last socket leaves, not before.
	b1.send("pusher:unsubscribe", map[string]string{"channel": "presence-room"})
	a.quiet(300 * time.Millisecond)
	b2.c.Close()
	if f := a.expect("pusher_internal:member_removed"); f.str() != `{"user_id":"bob"}` {
		t.Fatalf("member_removed: %+v", f)
	}
}

func TestPresenceLimits(t *testing.T) {
	app := testApp
	app.MaxPresenceMembers, app.MaxMemberInfo = 2, 16
	in := start(t, app)
	for i, user := range []string{"u1", "u2"} {
		s := connect(t, in)
		if f := presence(t, s, "presence-full", user, "{}"); f.Event != "pusher_internal:subscription_succeeded" {
			t.Fatalf("member %d: %+v", i, f)
		}
	}
	s := connect(t, in)
	if f := presence(t, s, "presence-full", "u3", "{}"); f.Event != "pusher:subscription_error" || !strings.Contains(f.str(), "LimitReached") && !strings.Contains(string(f.Data), "LimitReached") {
		t.Fatalf("third member: %+v", f)
	}
	if f := presence(t, s, "presence-full", "u1", "{}"); f.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("a present user's second socket: %+v", f)
	}
	if f := presence(t, connect(t, in), "presence-other", "u4", `{"name":"a very long name"}`); f.Event != "pusher:subscription_error" {
		t.Fatalf("info past the limit: %+v", f)
	}
}

func TestClientEvents(t *testing.T) {
	in := start(t)
	a, b := connect(t, in), connect(t, in)
	presence(t, a, "presence-chat", "alice", "{}")
	presence(t, b, "presence-chat", "bob", "{}")
	a.expect("pusher_internal:member_added")
	a.c.WriteJSON(map[string]any{"event": "client-typing", "channel": "presence-chat", "data": map[string]any{"typing": true}})
	f := b.expect("client-typing")
	if string(f.Data) != `{"typing":true}` || f.UserID != "alice" || f.Channel != "presence-chat" {
		t.Fatalf("client event: %+v", f)
	}
	a.quiet(300 * time.Millisecond) // not echoed
	// Public channels take no client events.
	a.subscribe("public")
	a.c.WriteJSON(map[string]any{"event": "client-x", "channel": "public", "data": 1})
	if f := a.expect("pusher:error"); !strings.Contains(f.str()+string(f.Data), "private and presence") {
		t.Fatalf("client event on a public channel: %+v", f)
	}
	// Past the rate (5/s here): 4301, and the socket stays open.
	rejected := 0
	for range 20 {
		a.c.WriteJSON(map[string]any{"event": "client-x", "channel": "presence-chat", "data": 1})
	}
	for range 20 - 5 {
		f := a.expect("pusher:error")
		if strings.Contains(string(f.Data), "4301") {
			rejected++
		}
	}
	if rejected < 10 {
		t.Fatalf("%d of 20 client events refused with 4301, want at least 10", rejected)
	}
	a.send("pusher:ping", map[string]any{})
	a.expect("pusher:pong")
}

func TestClientEventsDisabled(t *testing.T) {
	app := testApp
	app.ClientEvents = false
	in := start(t, app)
	s := connect(t, in)
	s.subscribe("private-x", "auth", pusher.ChannelAuth(app.Credentials, s.socketID, "private-x", ""))
	s.c.WriteJSON(map[string]any{"event": "client-x", "channel": "private-x", "data": 1})
	if f := s.expect("pusher:error"); !strings.Contains(string(f.Data), "enable") {
		t.Fatalf("disabled client events: %+v", f)
	}
}

func TestCacheChannel(t *testing.T) {
	in := start(t)
	s := connect(t, in)
	s.subscribe("cache-prices")
	if f := s.next(); f.Event != "pusher:cache_miss" || f.Channel != "cache-prices" {
		t.Fatalf("empty cache channel: %+v, want cache_miss", f)
	}
	trigger(t, in, map[string]any{"name": "price", "channel": "cache-prices", "data": "1"})
	trigger(t, in, map[string]any{"name": "price", "channel": "cache-prices", "data": "2"})
	late := connect(t, in)
	late.subscribe("cache-prices")
	if f := late.next(); f.Event != "price" || f.str() != "2" {
		t.Fatalf("late subscriber: %+v, want the last event", f)
	}
}

func TestSigninAndTerminate(t *testing.T) {
	in := start(t)
	s := connect(t, in)
	// Not signed in: the user channel is refused.
	if f := s.subscribe("#server-to-user-7"); f.Event != "pusher:subscription_error" {
		t.Fatalf("user channel before sign-in: %+v", f)
	}
	userData := `{"id":"7","name":"Seven"}`
	s.send("pusher:signin", map[string]string{"user_data": userData, "auth": "key1:" + strings.Repeat("a", 64)})
	if f := s.expect("pusher:error"); !strings.Contains(string(f.Data), "4009") {
		t.Fatalf("bad sign-in: %+v", f)
	}
	s.send("pusher:signin", map[string]string{"user_data": userData, "auth": pusher.UserAuth(testApp.Credentials, s.socketID, userData)})
	f := s.expect("pusher:signin_success")
	var d struct {
		UserData string `json:"user_data"`
	}
	if json.Unmarshal([]byte(f.str()), &d); d.UserData != userData {
		t.Fatalf("signin_success: %+v", f)
	}
	if f := s.subscribe("#server-to-user-7"); f.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("user channel after sign-in: %+v", f)
	}
	trigger(t, in, map[string]any{"name": "note", "channel": "#server-to-user-7", "data": "hi"})
	if f := s.expect("note"); f.str() != "hi" {
		t.Fatalf("event to the user: %+v", f)
	}
	other := connect(t, in)
	if status, out := api(t, in, testApp.Credentials, "POST", "/apps/app1/users/7/terminate_connections", nil, map[string]any{}); status != 200 {
		t.Fatalf("terminate: %d %s", status, out)
	}
	if code := s.closeCode(); code != 4009 {
		t.Fatalf("terminated socket closed with %d, want 4009", code)
	}
	other.send("pusher:ping", map[string]any{})
	other.expect("pusher:pong") // another user's socket is untouched
}

func TestHTTPAPIErrors(t *testing.T) {
	in := start(t)
	wrong := testApp.Credentials
	wrong.Secret = "another-secret-0123456789"
	for _, tt := range []struct {
		name   string
		creds  pusher.Credentials
		method string
		path   string
		body   any
		status int
	}{
		{"bad signature", wrong, "POST", "/apps/app1/events", map[string]any{"name": "e", "channel": "c", "data": "x"}, 401},
		{"unknown key", pusher.Credentials{ID: "app1", Key: "nokey", Secret: "s"}, "POST", "/apps/app1/events", map[string]any{"name": "e", "channel": "c", "data": "x"}, 401},
		{"unknown app", testApp.Credentials, "POST", "/apps/app9/events", map[string]any{"name": "e", "channel": "c", "data": "x"}, 404},
		{"data too large", testApp.Credentials, "POST", "/apps/app1/events", map[string]any{"name": "e", "channel": "c", "data": strings.Repeat("x", 10241)}, 413},
		{"no name", testApp.Credentials, "POST", "/apps/app1/events", map[string]any{"channel": "c", "data": "x"}, 400},
		{"bad channel", testApp.Credentials, "POST", "/apps/app1/events", map[string]any{"name": "e", "channel": "a b", "data": "x"}, 400},
		{"101 channels", testApp.Credentials, "POST", "/apps/app1/events", map[string]any{"name": "e", "channels": make101(), "data": "x"}, 400},
		{"users of a public channel", testApp.Credentials, "GET", "/apps/app1/channels/public/users", nil, 400},
		{"user_count without presence prefix", testApp.Credentials, "GET", "/apps/app1/channels?info=user_count", nil, 400},
	} {
		q := url.Values{}
		path := tt.path
		if p, raw, ok := strings.Cut(tt.path, "?"); ok {
			path = p
			q, _ = url.ParseQuery(raw)
		}
		if status, out := api(t, in, tt.creds, tt.method, path, q, tt.body); status != tt.status || !strings.HasSuffix(out, "\n") {
			t.Errorf("%s: %d %q, want %d and a line of text", tt.name, status, out, tt.status)
		}
	}
	// A stale timestamp.
	b := []byte(`{"name":"e","channel":"c","data":"x"}`)
	sum := md5.Sum(b)
	q, _ := pusher.SignRequest(testApp.Credentials, "POST", "/apps/app1/events", url.Values{"body_md5": {hex.EncodeToString(sum[:])}}, b, time.Now().Add(-11*time.Minute))
	resp, err := http.Post(in.URL+"/apps/app1/events?"+q, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("stale timestamp: %d, want 401", resp.StatusCode)
	}
}

func make101() []string {
	out := make([]string, 101)
	for i := range out {
		out[i] = fmt.Sprintf("c%d", i)
	}
	return out
}

func TestBatchEvents(t *testing.T) {
	in := start(t)
	s := connect(t, in)
	s.subscribe("a")
	s.subscribe("b")
	batch := []map[string]any{{"name": "e1", "channel": "a", "data": "1"}, {"name": "e2", "channel": "b", "data": "2"}}
	if status, out := api(t, in, testApp.Credentials, "POST", "/apps/app1/batch_events", nil, map[string]any{"batch": batch}); status != 200 {
		t.Fatalf("batch: %d %s", status, out)
	}
	if f := s.expect("e1"); f.Channel != "a" {
		t.Fatalf("%+v", f)
	}
	if f := s.expect("e2"); f.Channel != "b" {
		t.Fatalf("%+v", f)
	}
	// One bad event: nothing is published.
	bad := append(batch, map[string]any{"name": "e3", "channel": "bad name", "data": "3"})
	if status, _ := api(t, in, testApp.Credentials, "POST", "/apps/app1/batch_events", nil, map[string]any{"batch": bad}); status != 400 {
		t.Fatalf("batch with a bad event: %d", status)
	}
	s.quiet(300 * time.Millisecond)
	eleven := make([]map[string]any, 11)
	for i := range eleven {
		eleven[i] = map[string]any{"name": "e", "channel": "a", "data": "x"}
	}
	if status, _ := api(t, in, testApp.Credentials, "POST", "/apps/app1/batch_events", nil, map[string]any{"batch": eleven}); status != 400 {
		t.Fatalf("batch of 11: %d", status)
	}
}

func TestChannelsList(t *testing.T) {
	in := start(t)
	s := connect(t, in)
	s.subscribe("news")
	presence(t, s, "presence-lobby", "u1", "{}")
	status, out := api(t, in, testApp.Credentials, "GET", "/apps/app1/channels", nil, nil)
	if status != 200 || out != `{"channels":{"news":{},"presence-lobby":{}}}`+"\n" {
		t.Fatalf("channels: %d %s", status, out)
	}
	status, out = api(t, in, testApp.Credentials, "GET", "/apps/app1/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, nil)
	if status != 200 || out != `{"channels":{"presence-lobby":{"user_count":1}}}`+"\n" {
		t.Fatalf("presence channels: %d %s", status, out)
	}
	s.c.Close()
	relaytest.Eventually(t, "the channels to empty", func() bool {
		status, out = api(t, in, testApp.Credentials, "GET", "/apps/app1/channels", nil, nil)
		return status == 200 && out == `{"channels":{}}`+"\n"
	})
}

func TestHistory(t *testing.T) {
	in := start(t)
	for i := range 5 {
		trigger(t, in, map[string]any{"name": "tick", "channel": "ticks", "data": fmt.Sprint(i)})
	}
	status, out := api(t, in, testApp.Credentials, "GET", "/apps/app1/channels/ticks/history", url.Values{"since": {"3"}}, nil)
	var h struct {
		Events []struct {
			Offset uint64 `json:"offset"`
			Event  string `json:"event"`
			Data   string `json:"data"`
		} `json:"events"`
		Offset   uint64 `json:"offset"`
		Complete bool   `json:"complete"`
	}
	if err := json.Unmarshal([]byte(out), &h); status != 200 || err != nil || len(h.Events) != 2 || h.Events[0].Offset != 4 || h.Events[1].Data != "4" || h.Offset != 5 || !h.Complete {
		t.Fatalf("history since 3: %d %s", status, out)
	}
}

// TestPusherTopicsUnreachable: Relay's own API cannot name a Pusher
// channel's topic.
func TestPusherTopicsUnreachable(t *testing.T) {
	in := start(t)
	resp, err := http.Post(in.URL+"/publish", "application/json", strings.NewReader(`{"topic":"*pusher/app1/private-x","message":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("publish to a Pusher topic through /publish: %d, want 400", resp.StatusCode)
	}
}

// TestSubscriptionCount: subscribers of a public channel are told its
// count when it changes; an app without the option refuses the attribute.
func TestSubscriptionCount(t *testing.T) {
	in := start(t)
	a := connect(t, in)
	a.counts = true
	a.subscribe("room")
	if f := a.expect("pusher_internal:subscription_count"); f.str() != `{"subscription_count":1}` {
		t.Fatalf("first count: %+v", f)
	}
	b := connect(t, in)
	b.subscribe("room")
	if f := a.expect("pusher_internal:subscription_count"); f.str() != `{"subscription_count":2}` {
		t.Fatalf("second count: %+v", f)
	}
	app := testApp
	app.SubscriptionCount = false
	in2 := start(t, app)
	if status, out := api(t, in2, app.Credentials, "GET", "/apps/app1/channels/room", url.Values{"info": {"subscription_count"}}, nil); status != 400 {
		t.Fatalf("subscription_count without the option: %d %s", status, out)
	}
}

// TestBridge: a seed client reads a bridged public channel through its
// Relay topic; private channels are not bridged.
func TestBridge(t *testing.T) {
	in := start(t)
	reg, err := in.Client.Register(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.DefaultDialer.Dial(reg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte(`{"topics":["pusher/app1/news","pusher/app1/private-x"]}`))
	time.Sleep(200 * time.Millisecond)
	trigger(t, in, map[string]any{"name": "secret", "channel": "private-x", "data": "no"})
	trigger(t, in, map[string]any{"name": "headline", "channel": "news", "data": "yes"})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil || string(msg) != `{"event":"headline","channel":"news","data":"yes"}` {
		t.Fatalf("bridged frame %q, %v", msg, err)
	}
}

// signin signs s in as user, with user_data's extra fields.
func signin(t *testing.T, s *sock, userData string) {
	t.Helper()
	s.send("pusher:signin", map[string]string{"user_data": userData, "auth": pusher.UserAuth(testApp.Credentials, s.socketID, userData)})
	s.expect("pusher:signin_success")
}

// TestWatchlist: a signed-in user hears when the users it watches come
// online (first signed-in socket) and go offline (last one gone).
func TestWatchlist(t *testing.T) {
	in := start(t)
	b1 := connect(t, in)
	signin(t, b1, `{"id":"b"}`)
	a := connect(t, in)
	signin(t, a, `{"id":"a","watchlist":["b","c"]}`)
	if f := a.expect("pusher_internal:watchlist_events"); f.str() != `{"events":[{"name":"online","user_ids":["b"]}]}` {
		t.Fatalf("initial watchlist events: %+v", f)
	}
	c := connect(t, in)
	signin(t, c, `{"id":"c"}`)
	if f := a.expect("pusher_internal:watchlist_events"); f.str() != `{"events":[{"name":"online","user_ids":["c"]}]}` {
		t.Fatalf("c online: %+v", f)
	}
	b2 := connect(t, in)
	signin(t, b2, `{"id":"b"}`) // b's second socket: nothing
	b1.c.Close()
	a.quiet(300 * time.Millisecond)
	b2.c.Close()
	if f := a.expect("pusher_internal:watchlist_events"); f.str() != `{"events":[{"name":"offline","user_ids":["b"]}]}` {
		t.Fatalf("b offline: %+v", f)
	}
}

// TestPathPrefix: behind a proxy serving Relay under /pusher, sockets and
// signed calls work whether the proxy strips the prefix or not, and
// whether the SDK signed the path with it or without.
func TestPathPrefix(t *testing.T) {
	set, _ := pusher.NewApps([]pusher.App{testApp})
	in := relaytest.Start(t, server.Config{Pusher: set, PusherPathPrefix: "/pusher"})
	c, _, err := websocket.DefaultDialer.Dial("ws://"+in.Addr+"/pusher/app/key1?protocol=7", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	body := []byte(`{"name":"e","channel":"c","data":"x"}`)
	for _, tt := range []struct{ signed, sent string }{
		{"/pusher/apps/app1/events", "/pusher/apps/app1/events"}, // pusher-php-server with path, proxy keeps it
		{"/pusher/apps/app1/events", "/apps/app1/events"},        // the same, proxy strips it
		{"/apps/app1/events", "/pusher/apps/app1/events"},        // an SDK unaware of the prefix
	} {
		q, _ := pusher.SignRequest(testApp.Credentials, "POST", tt.signed, nil, body, time.Now())
		resp, err := http.Post(in.URL+tt.sent+"?"+q, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("signed %s, sent to %s: %d", tt.signed, tt.sent, resp.StatusCode)
		}
	}
}

// TestOriginRefused: a browser from an origin -allowed-origins does not
// list is told 4009 in the protocol (pusher-js then stops), not 403.
func TestOriginRefused(t *testing.T) {
	set, _ := pusher.NewApps([]pusher.App{testApp})
	cfg := server.Config{Pusher: set}
	cfg.API.AllowedOrigins = []string{"https://good.example"}
	in := relaytest.Start(t, cfg)
	for origin, want := range map[string]int{"https://evil.example": 4009, "https://good.example": 0} {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+in.Addr+"/app/key1?protocol=7", http.Header{"Origin": {origin}})
		if err != nil {
			t.Fatalf("%s: %v", origin, err)
		}
		s := newSock(t, c)
		f := s.next()
		if want == 0 {
			if f.Event != "pusher:connection_established" {
				t.Fatalf("%s: %+v", origin, f)
			}
		} else if code := s.closeCode(); f.Event != "pusher:error" || code != want {
			t.Fatalf("%s: %+v, closed with %d; want pusher:error and %d", origin, f, code, want)
		}
		c.Close()
	}
}

// TestConnectRate: Pusher sockets count against -connect-rate per address,
// as Relay's own do.
func TestConnectRate(t *testing.T) {
	set, _ := pusher.NewApps([]pusher.App{testApp})
	cfg := server.Config{Pusher: set}
	cfg.API.ConnectLimit = ratelimit.New(1, 3, nil, 100)
	in := relaytest.Start(t, cfg)
	refused := 0
	for range 6 {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+in.Addr+"/app/key1?protocol=7", nil)
		if err == nil {
			c.Close()
			continue
		}
		if resp == nil || resp.StatusCode != 429 {
			t.Fatalf("dial: %v", err)
		}
		refused++
	}
	if refused < 2 {
		t.Fatalf("%d of 6 quick sockets refused with 429, want at least 2 (burst 3, 1/s)", refused)
	}
}

// onEachEngine runs f against a server on the memory engine and a node on
// each networked one.
func onEachEngine(t *testing.T, f func(t *testing.T, in *relaytest.Instance)) {
	set, _ := pusher.NewApps([]pusher.App{testApp})
	t.Run("memory", func(t *testing.T) { f(t, relaytest.Start(t, server.Config{Pusher: set})) })
	for name, url := range relaytest.Engines {
		t.Run(name, func(t *testing.T) { f(t, relaytest.Cluster(t, 1, url, server.Config{Pusher: set})[0]) })
	}
}
