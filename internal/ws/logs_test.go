package ws

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/logthrottle"
	"github.com/relayhq/relay/internal/relay"
)

// logBuffer collects log lines; safe for a logger and a test to share.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// matching returns the lines that contain every one of subs.
func (l *logBuffer) matching(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.SplitSeq(l.b.String(), "\n") {
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

// waitLine waits for a line containing every one of subs.
func (l *logBuffer) waitLine(t *testing.T, subs ...string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m := l.matching(subs...); len(m) > 0 {
			return m[0]
		}
		if time.Now().After(deadline) {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("no line with %q in:\n%s", subs, l.b.String())
		}
	}
}

// throttled returns a Throttle logging at Debug into a new buffer.
func throttled(cfg logthrottle.Config) (*logthrottle.Throttle, *logBuffer) {
	buf := new(logBuffer)
	return logthrottle.New(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), cfg), buf
}

// TestCloseLogs: every way a connection ends logs one line with its code,
// reason, level, connection number and client address.
func TestCloseLogs(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	tests := []struct {
		name string
		act  func(nc net.Conn, c *Conn)
		want []string
	}{
		{"binary", func(nc net.Conn, c *Conn) { nc.Write(clientFrame(true, opBinary, []byte{1}, key)) },
			[]string{"level=INFO", "code=1003", `reason="binary messages are not supported"`, "by=server"}},
		{"too large", func(nc net.Conn, c *Conn) { nc.Write(clientFrame(true, opText, make([]byte, 2000), key)) },
			[]string{"level=INFO", "code=1009", "by=server"}},
		{"protocol error", func(nc net.Conn, c *Conn) { nc.Write([]byte{0x81, 0x01, 'x'}) },
			[]string{"level=INFO", "code=1002", "by=server"}},
		{"invalid UTF-8", func(nc net.Conn, c *Conn) { nc.Write(clientFrame(true, opText, []byte{0xff}, key)) },
			[]string{"level=INFO", "code=1007"}},
		{"rate limit", func(nc net.Conn, c *Conn) {
			var b []byte
			for range 50 {
				b = append(b, clientFrame(true, opPing, nil, key)...)
			}
			nc.Write(b)
		}, []string{"level=WARN", "code=4004", "by=server"}},
		{"refused command", func(nc net.Conn, c *Conn) { c.CloseWith(relay.ClosePolicy, "topics must be an array") },
			[]string{"level=INFO", "code=1008", `reason="topics must be an array"`}},
		{"slow consumer", func(nc net.Conn, c *Conn) { c.SendText(make([]byte, 5000)) },
			[]string{"level=WARN", "code=4002"}},
		{"unregistered", func(nc net.Conn, c *Conn) { c.Close(relay.CloseUnregistered) },
			[]string{"level=DEBUG", "code=4000", "reason=unregistered"}},
		{"replaced", func(nc net.Conn, c *Conn) { c.Close(relay.CloseReplaced) },
			[]string{"level=DEBUG", "code=4001"}},
		{"client close", func(nc net.Conn, c *Conn) {
			nc.Write(clientFrame(true, opClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}, key))
		}, []string{"level=DEBUG", "code=1000", "reason=bye", "by=client"}},
		{"client vanished", func(nc net.Conn, c *Conn) { nc.Close() },
			[]string{"level=DEBUG", `cause="connection lost"`}},
	}
	bothModes(t, func(t *testing.T, goroutines bool) {
		lt, buf := throttled(logthrottle.Config{})
		h := startHarness(t, Config{MaxMessageBytes: 1024, SendQueueBytes: 4096, MessageRate: 10, MessageBurst: 10, CloseTimeout: 200 * time.Millisecond, Log: lt}, false, goroutines)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				nc, _, c := h.rawDial(t, 0)
				c.SetLogAttrs(slog.String("test", tt.name))
				tt.act(nc, c)
				line := buf.waitLine(t, "socket closed", fmt.Sprintf("conn=%d ", c.ID()))
				want := append([]string{"remote=" + nc.LocalAddr().String(), "test="}, tt.want...)
				for _, w := range want {
					if !strings.Contains(line, w) {
						t.Errorf("line %q lacks %s", line, w)
					}
				}
			})
		}
	})
}

// TestIdleAndShutdownLogs: the idle timeout and the shutdown close log at
// Debug.
func TestIdleAndShutdownLogs(t *testing.T) {
	lt, buf := throttled(logthrottle.Config{})
	h := startHarness(t, Config{PingInterval: 20 * time.Millisecond, IdleTimeout: 100 * time.Millisecond, Log: lt}, false, false)
	nc, _, c := h.rawDial(t, 0) // never answers pings
	line := buf.waitLine(t, "socket closed", fmt.Sprintf("conn=%d ", c.ID()))
	for _, w := range []string{"level=DEBUG", "code=4003", `reason="idle timeout"`, "remote=" + nc.LocalAddr().String()} {
		if !strings.Contains(line, w) {
			t.Errorf("line %q lacks %s", line, w)
		}
	}
}

// TestCloseLogFlood: 300 clients refused at once log at most the kind's
// burst, and the rest is reported as suppressed.
func TestCloseLogFlood(t *testing.T) {
	lt, buf := throttled(logthrottle.Config{Burst: 5, Rate: 0.001, Summary: time.Hour})
	h := startHarness(t, Config{Log: lt}, false, false)
	const n = 300
	var wg sync.WaitGroup
	for range n {
		nc, br, _ := h.rawDial(t, 0)
		wg.Go(func() {
			nc.Write(clientFrame(true, opBinary, []byte{1}, [4]byte{}))
			readUntilClose(t, nc, br)
			nc.Close()
		})
	}
	wg.Wait()
	for deadline := time.Now().Add(10 * time.Second); h.srv.Len() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("connections still open")
		}
	}
	lt.Flush()
	if got := buf.matching("socket closed", "code=1003"); len(got) != 5 {
		t.Errorf("%d close lines, want 5", len(got))
	}
	sum := buf.matching("log lines suppressed", "kind=ws_close_1003")
	if len(sum) != 1 || !strings.Contains(sum[0], fmt.Sprintf("lines=%d", n-5)) || !strings.Contains(sum[0], "level=INFO") {
		t.Errorf("summary %q, want one line counting %d", sum, n-5)
	}
}

// TestVersionHeaderOnRefusal: an upgrade without a version, or with one
// other than 13, is refused with Sec-WebSocket-Version: 13, whether or not
// an Error handler is installed (RFC 6455 §4.2.2); the refusal is logged
// with the client's address.
func TestVersionHeaderOnRefusal(t *testing.T) {
	custom := func(w http.ResponseWriter, r *http.Request, status int, reason error) {
		w.WriteHeader(status)
		fmt.Fprint(w, "custom: ", reason)
	}
	for _, handler := range []struct {
		name string
		f    func(http.ResponseWriter, *http.Request, int, error)
	}{{"default", nil}, {"custom", custom}} {
		t.Run(handler.name, func(t *testing.T) {
			lt, buf := throttled(logthrottle.Config{})
			h := startHarness(t, Config{Error: handler.f, Log: lt}, false, false)
			for _, tt := range []struct {
				version string // "" sends none
				header  bool
			}{{"", true}, {"8", true}, {"8, 13", false}, {"13", false}} {
				nc, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: bad\r\n"
				if tt.version != "" {
					req += "Sec-WebSocket-Version: " + tt.version + "\r\n"
				}
				fmt.Fprint(nc, req+"\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("version %q: status %d, want 400", tt.version, resp.StatusCode)
				}
				got := resp.Header.Get("Sec-WebSocket-Version")
				if tt.header && got != "13" || !tt.header && got != "" {
					t.Errorf("version %q: Sec-WebSocket-Version %q", tt.version, got)
				}
				line := buf.waitLine(t, "websocket upgrade refused", "remote="+nc.LocalAddr().String())
				for _, w := range []string{"level=INFO", "status=400"} {
					if !strings.Contains(line, w) {
						t.Errorf("line %q lacks %s", line, w)
					}
				}
			}
		})
	}
}
