package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestErrorLogRateLimited: of 100 lines in one window, the first
// errorLogBurst pass and one more says the rest are dropped; the first
// line of the next window is preceded by how many were.
func TestErrorLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1e9, 0)
	lg := newLimitedLog(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now })
	for i := range 100 {
		lg.Printf("http: TLS handshake error from 10.0.0.1:%d: EOF", i)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != errorLogBurst+1 {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), errorLogBurst+1, buf.String())
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `msg="http: TLS handshake error from 10.0.0.1:0: EOF"`) {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.Contains(lines[errorLogBurst], "rate-limited") {
		t.Errorf("no notice that lines are dropped: %q", lines[errorLogBurst])
	}
	now = now.Add(errorLogWindow)
	buf.Reset()
	lg.Printf("http: next window")
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "lines=90") || !strings.Contains(lines[1], "next window") {
		t.Fatalf("next window logged:\n%s", buf.String())
	}
}
