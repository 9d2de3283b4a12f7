package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// The tests of the client subcommands run them as `relay` would, through
// run, against real servers on 127.0.0.1, and check what real WebSocket
// clients received.

func cliCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// cliEnv points the commands at a server, with more variables.
func cliEnv(url string, kv ...string) func(string) string {
	m := map[string]string{"RELAY_SERVER": url}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// cliRun runs relay with args and returns its exit code and output.
func cliRun(getenv func(string) string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, getenv, &out, &errb)
	return code, out.String(), errb.String()
}

// cliListen registers a seed client for user on topic and returns it
// once the server has applied its topics.
func cliListen(t *testing.T, c *client.Client, user uint64, topic string) *client.Conn {
	t.Helper()
	ctx := cliCtx(t)
	reg, err := c.Register(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetTopics(ctx, topic); err != nil {
		t.Fatal(err)
	}
	return conn
}

// cliDrain returns every message conn received before a marker published
// after the command under test: everything it delivered, and nothing it
// did not.
func cliDrain(t *testing.T, c *client.Client, conn *client.Conn, topic string) []string {
	t.Helper()
	ctx := cliCtx(t)
	if _, err := c.Publish(ctx, client.Publish{Topic: topic, Message: "end-marker"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := conn.Receive(ctx)
		if err != nil {
			t.Fatalf("receiving after %d messages: %v", len(got), err)
		}
		if m == "end-marker" {
			return got
		}
		got = append(got, m)
	}
}

func cliOneLine(t *testing.T, what, s string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("%s: want exactly one line, got %q", what, s)
	}
}

func decodeReceipt(t *testing.T, line string) receiptLine {
	t.Helper()
	var r receiptLine
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("receipt %q: %v", line, err)
	}
	return r
}

// syncBuffer is an output a command writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cliNode is a server on a chosen address, so that a test can restart
// it where its clients will look for it.
type cliNode struct {
	URL    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func cliServe(t *testing.T, addr string, cfg server.Config) *cliNode {
	t.Helper()
	var ln net.Listener
	var err error
	// The address was just freed by the previous server or the kernel.
	for range 100 {
		if ln, err = server.Listen(context.Background(), addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &cliNode{URL: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	srv := server.New(cfg, nil)
	go func() { n.done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() { n.Stop(t) })
	if cfg.Engine != nil {
		relaytest.Eventually(t, "the engine ready", func() bool { return cfg.Engine.Ready() == nil })
	}
	return n
}

func (n *cliNode) Stop(t *testing.T) {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("server stop: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the server did not stop within 30s")
		}
	})
}

func cliFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestPublishCommand(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	all := cliListen(t, c, 1, "orders")
	user5 := cliListen(t, c, 5, "orders")
	getenv := cliEnv(in.URL)

	code, out, errb := cliRun(getenv, "publish", "orders", "order 42 shipped ✓")
	if code != 0 || errb != "" {
		t.Fatalf("publish: exit %d, stderr %q", code, errb)
	}
	cliOneLine(t, "receipt", out)
	r := decodeReceipt(t, out)
	if r.Topic != "orders" || r.Offset != 1 || r.Epoch == "" || r.Delivered != 2 || r.Duplicate {
		t.Fatalf("receipt = %+v, want offset 1 delivered to both connections", r)
	}
	wantPrefix := fmt.Sprintf(`{"topic":"orders","offset":1,"epoch":%q,"delivered":2,"duplicate":false}`, r.Epoch)
	if strings.TrimSpace(out) != wantPrefix {
		t.Fatalf("receipt line = %s, want %s", out, wantPrefix)
	}

	// Stdin, less exactly one final newline; -raw keeps it; "-" is stdin
	// too; flags may follow the arguments.
	var o, e bytes.Buffer
	if code := publishMain([]string{"orders"}, getenv, strings.NewReader("line 1\nline 2\n\n"), &o, &e); code != 0 {
		t.Fatalf("publish from stdin: exit %d: %s", code, e.String())
	}
	if code := publishMain([]string{"-raw", "orders", "-"}, getenv, strings.NewReader("raw\n"), &o, &e); code != 0 {
		t.Fatalf("publish -raw: exit %d: %s", code, e.String())
	}
	if code := publishMain([]string{"orders", "-"}, getenv, strings.NewReader("crlf\r\n"), &o, &e); code != 0 {
		t.Fatalf("publish crlf: exit %d: %s", code, e.String())
	}
	// To one user: outside the stream (offset 0), reaching only user 5.
	code, out, errb = cliRun(getenv, "publish", "orders", "for 5", "-user", "5")
	if code != 0 {
		t.Fatalf("publish -user: exit %d: %s", code, errb)
	}
	if r := decodeReceipt(t, out); r.Offset != 0 || r.Epoch != "" || r.Delivered != 1 {
		t.Fatalf("receipt to one user = %+v", r)
	}
	// An idempotency key: the repeat publishes nothing and says so.
	code, out, _ = cliRun(getenv, "publish", "-idempotency-key", "k-1", "orders", "once")
	first := decodeReceipt(t, out)
	code2, out2, _ := cliRun(getenv, "publish", "-idempotency-key", "k-1", "orders", "once")
	again := decodeReceipt(t, out2)
	if code != 0 || code2 != 0 || first.Duplicate || !again.Duplicate || again.Offset != first.Offset || first.Offset != 5 {
		t.Fatalf("idempotent publishes: %+v then %+v, want offset 5 then a duplicate of it", first, again)
	}
	// A message starting with "-" after "--".
	if code, _, errb := cliRun(getenv, "publish", "orders", "--", "-5 degrees"); code != 0 {
		t.Fatalf("publish -- -5: exit %d: %s", code, errb)
	}

	want := []string{"order 42 shipped ✓", "line 1\nline 2\n", "raw\n", "crlf", "once", "-5 degrees"}
	if got := cliDrain(t, c, all, "orders"); !equal(got, want) {
		t.Fatalf("user 1 received %q, want %q", got, want)
	}
	want5 := []string{"order 42 shipped ✓", "line 1\nline 2\n", "raw\n", "crlf", "for 5", "once", "-5 degrees"}
	if got := cliDrain(t, c, user5, "orders"); !equal(got, want5) {
		t.Fatalf("user 5 received %q, want %q", got, want5)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPublishUsageErrors(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	conn := cliListen(t, in.Client, 1, "t")
	getenv := cliEnv(in.URL)
	for _, args := range [][]string{
		{"publish"},
		{"publish", "", "m"},
		{"publish", "-user", "seven", "t", "m"},
		{"publish", "-user", "-1", "t", "m"},
		{"publish", "t", "m", "extra"},
		{"publish", "-nope", "t", "m"},
		{"publish", "-batch", "x.jsonl", "t"},
		{"publish", "-batch", "-", "-user", "3"},
		{"publish", "-idempotency-key", strings.Repeat("k", 257), "t", "m"},
	} {
		code, out, errb := cliRun(getenv, args...)
		if code != exitUsage || out != "" {
			t.Errorf("%q: exit %d, stdout %q; want 2 and nothing on stdout", args, code, out)
		}
		if strings.Count(strings.TrimSpace(errb), "\n") > 1 || errb == "" {
			t.Errorf("%q: stderr %q, want one line (and at most a hint)", args, errb)
		}
	}
	if got := cliDrain(t, in.Client, conn, "t"); len(got) != 0 {
		t.Fatalf("bad command lines published %q", got)
	}
}

// TestPublishRefusals: an API key the server needs, a server that is not
// there, a message the server refuses: exit 1 with advice.
func TestPublishRefusals(t *testing.T) {
	const key = "key-0123456789abcdef0123456789"
	a, err := auth.New(auth.Config{APIKeys: []string{key}})
	if err != nil {
		t.Fatal(err)
	}
	in := relaytest.Start(t, server.Config{API: api.Config{Auth: a, MaxMessageBytes: 10}})
	keyed, _ := client.New(in.URL, client.WithHeader("Authorization", "Bearer "+key))
	conn := cliListen(t, keyed, 1, "t")

	code, out, errb := cliRun(cliEnv(in.URL), "publish", "t", "m")
	if code != exitFailure || out != "" || !strings.Contains(errb, "needs an API key") || !strings.Contains(errb, "pass -api-key or set RELAY_API_KEY") {
		t.Fatalf("without a key: exit %d, stdout %q, stderr %q; want 1 and advice to set -api-key", code, out, errb)
	}
	code, _, errb = cliRun(cliEnv(in.URL, "RELAY_API_KEY", "wrong"), "publish", "t", "m")
	if code != exitFailure || !strings.Contains(errb, "refused this API key") {
		t.Fatalf("with a wrong key: exit %d, stderr %q", code, errb)
	}
	code, out, errb = cliRun(cliEnv(in.URL, "RELAY_API_KEY", key), "publish", "t", "m")
	if code != 0 || decodeReceipt(t, out).Offset != 1 {
		t.Fatalf("with the key from RELAY_API_KEY: exit %d, %s %s", code, out, errb)
	}
	code, _, errb = cliRun(cliEnv(in.URL), "publish", "-api-key", key, "t", "0123456789+")
	if code != exitFailure || !strings.Contains(errb, "413") || !strings.Contains(errb, "limit is 10") {
		t.Fatalf("an oversized message: exit %d, stderr %q", code, errb)
	}
	if got := cliDrain(t, keyed, conn, "t"); !equal(got, []string{"m"}) {
		t.Fatalf("received %q, want only the keyed publish", got)
	}

	dead := "http://" + cliFreeAddr(t)
	code, out, errb = cliRun(cliEnv(dead), "publish", "t", "m")
	if code != exitFailure || out != "" || !strings.Contains(errb, "Is Relay running at "+dead) || !strings.Contains(errb, "-server") {
		t.Fatalf("unreachable server: exit %d, stdout %q, stderr %q; want 1 and advice to set -server", code, out, errb)
	}
}

func writeBatch(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPublishBatchFile: 2,500 events go in requests of at most 1,000,
// every event gets its receipt line, the subscriber receives each once in
// order, and an event the server refuses is reported (exit 1) without
// stopping the others.
func TestPublishBatchFile(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	conn := cliListen(t, c, 1, "b")
	var lines, want []string
	for i := range 2500 {
		msg := fmt.Sprintf("event %d \"quoted\"\n", i)
		b, _ := json.Marshal(map[string]any{"topic": "b", "message": msg})
		lines = append(lines, string(b))
		want = append(want, msg)
		if i == 1200 {
			lines = append(lines, "", `{"topic":"has space","message":"refused"}`) // a blank line, then lines 1203
		}
	}
	code, out, errb := cliRun(cliEnv(in.URL), "publish", "-batch", writeBatch(t, lines...))
	if code != exitFailure || !strings.Contains(errb, "refused 1 of 2501 events") {
		t.Fatalf("batch: exit %d, stderr %q; want 1 naming the refused event", code, errb)
	}
	outLines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(outLines) != 2501 {
		t.Fatalf("%d receipt lines, want 2501", len(outLines))
	}
	var epoch string
	offset := uint64(0)
	for i, l := range outLines {
		lineNo := i + 1
		if i >= 1201 {
			lineNo = i + 2 // the blank line
		}
		if lineNo == 1203 {
			var ref refusalLine
			if err := json.Unmarshal([]byte(l), &ref); err != nil || ref.Line != 1203 || ref.Status != 400 || ref.Topic != "has space" || strings.HasPrefix(ref.Error, "event") || !strings.Contains(ref.Error, "white space") {
				t.Fatalf("the refused event's line = %s", l)
			}
			continue
		}
		r := decodeReceipt(t, l)
		offset++
		if epoch == "" {
			epoch = r.Epoch
		}
		if r.Line != lineNo || r.Offset != offset || r.Epoch != epoch || r.Delivered != 1 || r.Topic != "b" {
			t.Fatalf("receipt %d = %+v, want line %d offset %d", i, r, lineNo, offset)
		}
	}
	if got := cliDrain(t, c, conn, "b"); !equal(got, want) {
		t.Fatalf("received %d messages, want the %d events in order, byte for byte", len(got), len(want))
	}
}

// TestPublishBatchSplitsForSmallBodies: a server whose -max-body is below
// the command's request budget answers 413, and the command splits the
// request until it fits, publishing every event once.
func TestPublishBatchSplitsForSmallBodies(t *testing.T) {
	in := relaytest.Start(t, server.Config{API: api.Config{MaxBodyBytes: 8 << 10}})
	c := in.Client
	conn := cliListen(t, c, 1, "s")
	var lines, want []string
	for i := range 300 {
		msg := fmt.Sprintf("%03d %s", i, strings.Repeat("x", 100))
		b, _ := json.Marshal(map[string]any{"topic": "s", "message": msg, "idempotency_key": fmt.Sprint("k", i)})
		lines, want = append(lines, string(b)), append(want, msg)
	}
	code, out, errb := cliRun(cliEnv(in.URL), "publish", "-batch", writeBatch(t, lines...))
	if code != 0 {
		t.Fatalf("batch: exit %d: %s", code, errb)
	}
	if n := strings.Count(out, "\n"); n != 300 || strings.Contains(out, `"duplicate":true`) {
		t.Fatalf("%d receipt lines (duplicates: %v), want 300 fresh ones", n, strings.Contains(out, `"duplicate":true`))
	}
	if got := cliDrain(t, c, conn, "s"); !equal(got, want) {
		t.Fatalf("received %d messages, want the 300 events once each in order", len(got))
	}
}

// TestPublishBatchBadLine: a line that is not an event stops the command
// before anything is published, naming the line.
func TestPublishBatchBadLine(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	conn := cliListen(t, in.Client, 1, "t")
	for _, c := range []struct{ line, want string }{
		{`{"topic":"t","message":"ok"`, "events.jsonl:3: unexpected EOF"},
		{`{"topic":"t","msg":"typo"}`, `events.jsonl:3: json: unknown field "msg"`},
		{`{"topic":"t"}`, `events.jsonl:3: "message" is required`},
		{`{"topic":"","message":"m"}`, "events.jsonl:3: topic must not be empty"},
		{`{"topic":"t","message":5}`, "events.jsonl:3: message must be a string"},
		{`{"topic":"t","message":"m","user_id":-1}`, "events.jsonl:3: user_id must be a non-negative integer"},
		{`{"topic":"t","message":"m"} {}`, "events.jsonl:3: more than one JSON value"},
	} {
		file := writeBatch(t, `{"topic":"t","message":"1"}`, `{"topic":"t","message":"2"}`, c.line, `{"topic":"t","message":"4"}`)
		code, out, errb := cliRun(cliEnv(in.URL), "publish", "-batch", file)
		if code != exitUsage || out != "" || !strings.Contains(errb, c.want) || !strings.Contains(errb, "Nothing was published") {
			t.Errorf("line %s: exit %d, stdout %q, stderr %q; want 2 and %q", c.line, code, out, errb, c.want)
		}
	}
	// From stdin, named so.
	var o, e bytes.Buffer
	code := publishMain([]string{"-batch", "-"}, cliEnv(in.URL), strings.NewReader("{\"topic\":\"t\",\"message\":\"1\"}\nnot json\n"), &o, &e)
	if code != exitUsage || !strings.Contains(e.String(), "stdin:2: ") {
		t.Errorf("stdin batch with a bad line 2: exit %d, stderr %q", code, e.String())
	}
	if got := cliDrain(t, in.Client, conn, "t"); len(got) != 0 {
		t.Fatalf("bad batches published %q", got)
	}
}
