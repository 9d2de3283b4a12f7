package connlimit

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/relayhq/relay/internal/logthrottle"
)

// TestCapLogs: shedding and refusing at a cap log the cap, the newcomer's
// address and the closed one's, at Debug (idle), Info (reading) and Warn
// (refused), and a flood of refusals logs a bounded number of lines plus a
// summary.
func TestCapLogs(t *testing.T) {
	var out syncBuffer
	lt := logthrottle.New(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})), logthrottle.Config{Burst: 3, Rate: 0.001})
	l := New(Config{MaxPending: 2, MaxPerAddress: -1, Logs: lt}, nil, nil)
	idler, _, _ := accept(l, "10.0.0.1")
	l.setState(idler, idle)
	accept(l, "10.0.0.2")
	mustAccept(t, l, "10.0.0.3") // sheds the idle one
	mustAccept(t, l, "10.0.0.4") // sheds the reader
	// Both pending connections are now being served: newcomers are refused.
	l.mu.Lock()
	for c := l.head; c != nil; c = c.next {
		c.state = active
	}
	l.mu.Unlock()
	const flood = 1000
	for range flood {
		if _, _, ok := accept(l, "10.0.0.9"); ok {
			t.Fatal("a newcomer was let in past busy connections")
		}
	}
	lt.Flush()
	lines := out.lines()
	want := []struct{ sub []string }{
		{[]string{"level=DEBUG", "idle connection closed to make room", "cap=http", "remote=10.0.0.3:40000", "closed=10.0.0.1:40000"}},
		{[]string{"level=INFO", "still sending its first request", "cap=http", "remote=10.0.0.4:40000", "closed=10.0.0.2:40000"}},
	}
	for i, w := range want {
		for _, s := range w.sub {
			if i >= len(lines) || !strings.Contains(lines[i], s) {
				t.Fatalf("line %d lacks %q:\n%s", i, s, strings.Join(lines, "\n"))
			}
		}
	}
	var refused, summary int
	for _, line := range lines {
		if strings.Contains(line, "connection refused") && strings.Contains(line, "level=WARN") && strings.Contains(line, "remote=10.0.0.9:40000") {
			refused++
		}
		if strings.Contains(line, "log lines suppressed") && strings.Contains(line, "kind=conn_refused") && strings.Contains(line, "lines=997") {
			summary++
		}
	}
	if refused != 3 || summary != 1 || len(lines) != 6 {
		t.Errorf("%d refusal lines (want 3), %d summaries (want 1), %d lines:\n%s", refused, summary, len(lines), strings.Join(lines, "\n"))
	}
}
