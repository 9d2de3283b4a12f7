package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// subscription is `relay subscribe` running in the background.
type subscription struct {
	stdout, stderr *syncBuffer
	done           chan int
}

// startSubscribe runs relay subscribe with args; every test gives it
// -count or -timeout so that it ends on its own.
func startSubscribe(t *testing.T, getenv func(string) string, args ...string) *subscription {
	t.Helper()
	s := &subscription{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan int, 1)}
	go func() { s.done <- run(append([]string{"subscribe"}, args...), getenv, s.stdout, s.stderr) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
			t.Errorf("relay subscribe still runs; stderr:\n%s", s.stderr.String())
		}
	})
	return s
}

// waitFor polls cond for up to 30s (a reconnect backs off up to 5s).
func waitFor(t *testing.T, s *subscription, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stdout:\n%s\nstderr:\n%s", what, s.stdout.String(), s.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// subscribed waits until every topic is subscribed.
func (s *subscription) subscribed(t *testing.T, topics ...string) {
	t.Helper()
	waitFor(t, s, "subscribed", func() bool {
		for _, tp := range topics {
			if !strings.Contains(s.stderr.String(), "# subscribed to "+tp+" ") {
				return false
			}
		}
		return true
	})
}

// exit waits for the command's exit code.
func (s *subscription) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-s.done:
		s.done <- code // for the cleanup
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("relay subscribe did not exit; stdout:\n%s\nstderr:\n%s", s.stdout.String(), s.stderr.String())
	}
	return 0
}

func publish(t *testing.T, c *client.Client, topic, msg string, user ...uint64) client.PublishResult {
	t.Helper()
	p := client.Publish{Topic: topic, Message: msg}
	if len(user) > 0 {
		p.UserID = &user[0]
	}
	r, err := c.Publish(cliCtx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// jsonLines decodes the -json output.
func jsonLines(t *testing.T, out string) []streamLine {
	t.Helper()
	var lines []streamLine
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var sl streamLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sl); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, sl)
	}
	return lines
}

func TestSubscribeCommand(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	s := startSubscribe(t, cliEnv(in.URL), "-count", "4", "-timeout", "60s", "a", "b")
	s.subscribed(t, "a", "b")
	// Published before: not printed (no -since).
	publish(t, c, "a", "one")
	publish(t, c, "b", "two ✓")
	publish(t, c, "c", "not subscribed")
	publish(t, c, "a", "three\twith a tab")
	waitFor(t, s, "three lines, flushed as they arrive", func() bool { return strings.Count(s.stdout.String(), "\n") == 3 })
	publish(t, c, "a", "to user 0", 0) // the default -user
	publish(t, c, "a", "to user 1", 1)
	publish(t, c, "a", "after the count")
	if code := s.exit(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, s.stderr.String())
	}
	if got, want := s.stdout.String(), "one\ntwo ✓\nthree\twith a tab\nto user 0\n"; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	// Stopping says where each topic stood, for -since.
	if !strings.Contains(s.stderr.String(), "# a stopped after offset 2 of epoch ") || !strings.Contains(s.stderr.String(), "# b stopped after offset 1 of epoch ") {
		t.Fatalf("stderr lacks where the topics stopped:\n%s", s.stderr.String())
	}
	// The registration was deleted on exit: nobody stays present.
	relaytest.Eventually(t, "nobody present after exit", func() bool {
		p, err := c.Presence(cliCtx(t), "a")
		return err == nil && len(p.Users) == 0
	})
}

func TestSubscribeJSONAndPresence(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	s := startSubscribe(t, cliEnv(in.URL), "-json", "-presence", "-user", "3", "-count", "3", "-timeout", "60s", "room")
	s.subscribed(t, "room")
	waitFor(t, s, "its own join", func() bool { return strings.Contains(s.stdout.String(), `"user_id":3`) })
	other := cliListen(t, c, 8, "room")
	waitFor(t, s, "user 8's join", func() bool { return strings.Contains(s.stdout.String(), `"user_id":8`) })
	r1 := publish(t, c, "room", "line 1\nline 2")
	other.Close()
	waitFor(t, s, "user 8's leave", func() bool { return strings.Contains(s.stdout.String(), `"leave"`) })
	publish(t, c, "room", "only for 3", 3)
	r3 := publish(t, c, "room", `{"json":"inside"}`)
	if code := s.exit(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, s.stderr.String())
	}
	u3, u8 := uint64(3), uint64(8)
	m1, m2, m3 := "line 1\nline 2", "only for 3", `{"json":"inside"}`
	o1, o3 := r1.Offset, r3.Offset
	want := []streamLine{
		{Type: "join", Topic: "room", UserID: &u3},
		{Type: "join", Topic: "room", UserID: &u8},
		{Type: "message", Topic: "room", Offset: &o1, Epoch: r1.Epoch, Message: &m1},
		{Type: "leave", Topic: "room", UserID: &u8},
		{Type: "message", Topic: "room", Message: &m2, Private: true},
		{Type: "message", Topic: "room", Offset: &o3, Epoch: r3.Epoch, Message: &m3},
	}
	got := jsonLines(t, s.stdout.String())
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), s.stdout.String())
	}
	for i := range want {
		g, _ := json.Marshal(got[i])
		w, _ := json.Marshal(want[i])
		if string(g) != string(w) {
			t.Errorf("line %d = %s, want %s", i, g, w)
		}
	}
	// The first line's exact bytes, so that scripts can rely on them.
	if first := strings.SplitN(s.stdout.String(), "\n", 2)[0]; first != `{"type":"join","topic":"room","user_id":3}` {
		t.Errorf("first line %s", first)
	}
}

func TestSubscribeSinceCommand(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	var r client.PublishResult
	for i := 1; i <= 5; i++ {
		r = publish(t, c, "t", fmt.Sprint("m", i))
	}
	s := startSubscribe(t, cliEnv(in.URL), "-since", "2:"+r.Epoch, "-count", "4", "-timeout", "60s", "t")
	s.subscribed(t, "t")
	waitFor(t, s, "the replay", func() bool { return strings.Count(s.stdout.String(), "\n") == 3 })
	publish(t, c, "t", "m6")
	if code := s.exit(t); code != 0 || s.stdout.String() != "m3\nm4\nm5\nm6\n" {
		t.Fatalf("exit %d, stdout %q, want m3 to m6", code, s.stdout.String())
	}
	if strings.Contains(s.stderr.String(), "gap") {
		t.Fatalf("a gap on a recovered start:\n%s", s.stderr.String())
	}

	// From an epoch the stream no longer has: a gap, said on stderr, then
	// the live messages.
	s = startSubscribe(t, cliEnv(in.URL), "-since", "2:gone", "-count", "1", "-timeout", "60s", "t")
	waitFor(t, s, "the gap", func() bool { return strings.Contains(s.stderr.String(), "gap on t") })
	publish(t, c, "t", "m7")
	if code := s.exit(t); code != 0 || s.stdout.String() != "m7\n" {
		t.Fatalf("exit %d, stdout %q, want m7", code, s.stdout.String())
	}
	if want := fmt.Sprintf("resuming after offset 6 of epoch %s\n", r.Epoch); !strings.Contains(s.stderr.String(), want) {
		t.Fatalf("stderr %q lacks %q", s.stderr.String(), want)
	}

	for _, args := range [][]string{
		{"subscribe"},
		{"subscribe", ""},
		{"subscribe", "a", "a"},
		{"subscribe", "-since", "2:e", "a", "b"},
		{"subscribe", "-since", "2", "a"},
		{"subscribe", "-user", "x", "a"},
		{"subscribe", "-count", "-1", "a"},
	} {
		if code, out, errb := cliRun(cliEnv(in.URL), args...); code != exitUsage || out != "" || strings.Count(errb, "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and one line", args, code, out, errb)
		}
	}
}

// TestSubscribeAcrossRedisRestart: the server restarts on the same
// address while messages are published through another node on the same
// Redis; the command reconnects (registering again), recovers from
// history, and prints every offset exactly once, in order, with no gap.
func TestSubscribeAcrossRedisRestart(t *testing.T) {
	prefix := relaytest.Prefix()
	node := func(addr string) *cliNode {
		b, err := redisbroker.New(redisbroker.Config{
			URL: relaytest.SharedRedis, Prefix: prefix, NodeID: redisbroker.NewNodeID(),
			Heartbeat: 250 * time.Millisecond, NodeTTL: 2 * time.Second,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cliServe(t, addr, server.Config{Engine: b})
	}
	addr := cliFreeAddr(t)
	a := node(addr)
	other := node("127.0.0.1:0")
	pub, _ := client.New(other.URL)

	const total = 90
	s := startSubscribe(t, cliEnv(a.URL), "-json", "-count", fmt.Sprint(total), "-timeout", "120s", "orders")
	s.subscribed(t, "orders")
	want := map[uint64]string{}
	send := func(i int) {
		r := publish(t, pub, "orders", fmt.Sprint("m", i))
		want[r.Offset] = fmt.Sprint("m", i)
	}
	for i := range 30 {
		send(i)
	}
	waitFor(t, s, "the first 30", func() bool { return strings.Count(s.stdout.String(), "\n") >= 30 })

	a.Stop(t)
	for i := 30; i < 60; i++ { // while the command's server is down
		send(i)
	}
	node(addr)
	waitFor(t, s, "the 30 published while it was down", func() bool { return strings.Count(s.stdout.String(), "\n") >= 60 })
	for i := 60; i < total; i++ {
		send(i)
	}
	if code := s.exit(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, s.stderr.String())
	}
	lines := jsonLines(t, s.stdout.String())
	if len(lines) != total {
		t.Fatalf("%d lines, want %d", len(lines), total)
	}
	for i, l := range lines {
		if l.Type != "message" || l.Offset == nil || *l.Offset != uint64(i+1) || *l.Message != want[*l.Offset] {
			t.Fatalf("line %d = %+v, want offset %d (%q): every offset once, in order", i, l, i+1, want[uint64(i+1)])
		}
	}
	if strings.Contains(s.stderr.String(), "gap") || !strings.Contains(s.stderr.String(), "# reconnecting: registered again as user 0") {
		t.Fatalf("want a reconnect and no gap (Redis kept the history); stderr:\n%s", s.stderr.String())
	}
}

// TestSubscribeGapAfterMemoryRestart: the in-memory engine forgets
// everything on a restart, so the command cannot recover: it registers
// again, says on stderr that messages were lost and where the topic now
// stands, and goes on printing.
func TestSubscribeGapAfterMemoryRestart(t *testing.T) {
	addr := cliFreeAddr(t)
	a := cliServe(t, addr, server.Config{})
	c, _ := client.New(a.URL)
	s := startSubscribe(t, cliEnv(a.URL), "-count", "3", "-timeout", "120s", "t")
	s.subscribed(t, "t")
	publish(t, c, "t", "before 1")
	publish(t, c, "t", "before 2")
	waitFor(t, s, "two lines", func() bool { return strings.Count(s.stdout.String(), "\n") == 2 })
	a.Stop(t)
	cliServe(t, addr, server.Config{})
	// The restarted server has no stream for t yet: the command's
	// resubscribe learns the epoch the first message will carry.
	waitFor(t, s, "the gap notice", func() bool { return strings.Contains(s.stderr.String(), "relay subscribe: gap on t") })
	r := publish(t, c, "t", "after")
	if code := s.exit(t); code != 0 || s.stdout.String() != "before 1\nbefore 2\nafter\n" {
		t.Fatalf("exit %d, stdout %q; stderr:\n%s", code, s.stdout.String(), s.stderr.String())
	}
	if want := "resuming after offset 0 of epoch " + r.Epoch + "\n"; !strings.Contains(s.stderr.String(), want) || r.Offset != 1 {
		t.Fatalf("stderr %q lacks %q (publish %+v)", s.stderr.String(), want, r)
	}
}

// TestSubscribeSignal: SIGINT ends the command cleanly, with exit 0 and
// the topics' positions on stderr.
func TestSubscribeSignal(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	s := startSubscribe(t, cliEnv(in.URL), "-timeout", "60s", "t")
	s.subscribed(t, "t") // the handler is installed before it subscribes
	publish(t, in.Client, "t", "x")
	waitFor(t, s, "the message", func() bool { return s.stdout.String() == "x\n" })
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := s.exit(t); code != 0 || !strings.Contains(s.stderr.String(), "# t stopped after offset 1") {
		t.Fatalf("exit %d after SIGINT; stderr:\n%s", code, s.stderr.String())
	}
}

// TestSubscribeAuth: with API keys the command registers with the key,
// and says what to do without one; with a connect token it connects to
// /ws?token=, and says what to do with a refused one.
func TestSubscribeAuth(t *testing.T) {
	const key, secret = "key-0123456789abcdef0123456789", "token-secret-0123456789abcdef0123456789"
	a, err := auth.New(auth.Config{APIKeys: []string{key}, TokenSecret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	in := relaytest.Start(t, server.Config{API: api.Config{Auth: a}})
	keyed, _ := client.New(in.URL, client.WithHeader("Authorization", "Bearer "+key))

	code, out, errb := cliRun(cliEnv(in.URL), "subscribe", "-count", "1", "t")
	if code != exitFailure || out != "" || !strings.Contains(errb, "pass -api-key or set RELAY_API_KEY") {
		t.Fatalf("without a key: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	s := startSubscribe(t, cliEnv(in.URL, "RELAY_API_KEY", key), "-count", "1", "-timeout", "60s", "t")
	s.subscribed(t, "t")
	publish(t, keyed, "t", "with a key")
	if code := s.exit(t); code != 0 || s.stdout.String() != "with a key\n" {
		t.Fatalf("with a key: exit %d, stdout %q", code, s.stdout.String())
	}

	tok, _ := auth.Mint([]byte(secret), 42, time.Minute, []string{"t"})
	s = startSubscribe(t, cliEnv(in.URL, "RELAY_TOKEN", tok), "-count", "2", "-timeout", "60s", "t")
	s.subscribed(t, "t")
	publish(t, keyed, "t", "to everyone")
	publish(t, keyed, "t", "to 42", 42)
	if code := s.exit(t); code != 0 || s.stdout.String() != "to everyone\nto 42\n" {
		t.Fatalf("with a token: exit %d, stdout %q, stderr %q", code, s.stdout.String(), s.stderr.String())
	}
	code, _, errb = cliRun(cliEnv(in.URL), "subscribe", "-token", tok, "-count", "1", "not-allowed")
	if code != exitFailure || !strings.Contains(errb, "forbidden") {
		t.Fatalf("a topic the token does not allow: exit %d, stderr %q", code, errb)
	}
	forged, _ := auth.Mint([]byte("another-secret-0123456789abcdefghij"), 42, time.Minute, nil)
	code, _, errb = cliRun(cliEnv(in.URL), "subscribe", "-token", forged, "-count", "1", "t")
	if code != exitFailure || !strings.Contains(errb, "refused the connect token") {
		t.Fatalf("a forged token: exit %d, stderr %q", code, errb)
	}
	dead := "http://" + cliFreeAddr(t)
	if code, _, errb := cliRun(cliEnv(dead), "subscribe", "-count", "1", "t"); code != exitFailure || !strings.Contains(errb, "Set -server or RELAY_SERVER") {
		t.Fatalf("unreachable: exit %d, stderr %q", code, errb)
	}
}

// TestSubscribeCountTimeout: -timeout before -count is reached is exit 1
// and says how many arrived; -timeout alone is a clean stop.
func TestSubscribeCountTimeout(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	code, out, errb := cliRun(cliEnv(in.URL), "subscribe", "-count", "1", "-timeout", "500ms", "t")
	if code != exitFailure || out != "" || !strings.Contains(errb, "-timeout 500ms passed after 0 of the 1 messages") {
		t.Fatalf("-count 1 with nothing published: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, errb = cliRun(cliEnv(in.URL), "subscribe", "-timeout", "200ms", "t")
	if code != 0 || out != "" || !strings.Contains(errb, "# t stopped after offset 0") {
		t.Fatalf("-timeout alone: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}
