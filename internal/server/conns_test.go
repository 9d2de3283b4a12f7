package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/logthrottle"
)

// TestErrorLogRateLimited: of 100 lines at once, the first errorLogBurst
// pass; the first line after the summary period is preceded by how many
// were dropped.
func TestErrorLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1e9, 0)
	lt := logthrottle.New(slog.New(slog.NewTextHandler(&buf, nil)), logthrottle.Config{Now: func() time.Time { return now }})
	lg := errorLog(lt)
	for i := range 100 {
		lg.Printf("http: TLS handshake error from 10.0.0.1:%d: EOF", i)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != errorLogBurst {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), errorLogBurst, buf.String())
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `msg="http: TLS handshake error from 10.0.0.1:0: EOF"`) {
		t.Errorf("first line %q", lines[0])
	}
	now = now.Add(errorLogWindow)
	buf.Reset()
	lg.Printf("http: next window")
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "kind=http_server_error lines=90") || !strings.Contains(lines[1], "next window") {
		t.Fatalf("next window logged:\n%s", buf.String())
	}
}
