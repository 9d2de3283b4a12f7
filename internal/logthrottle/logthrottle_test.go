package logthrottle

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := strings.TrimSpace(s.b.String())
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

func (s *syncBuffer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// newTest returns a Throttle logging at level into a buffer, on a clock
// the test moves.
func newTest(level slog.Level, cfg Config) (*Throttle, *syncBuffer, *time.Time) {
	var buf syncBuffer
	now := time.Unix(1e9, 0)
	cfg.Now = func() time.Time { return now }
	lt := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})), cfg)
	return lt, &buf, &now
}

// log logs one line of kind as a caller would.
func log(lt *Throttle, level slog.Level, name string, i int) {
	ctx := context.Background()
	if lt.Allow(ctx, level, name) {
		lt.Logger().LogAttrs(ctx, level, "line", slog.String("kind", name), slog.Int("i", i))
	}
}

func count(lines []string, sub string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// TestBurstThenSuppressed: of 1000 lines at once, Burst pass; Flush then
// reports the rest in one line at their level.
func TestBurstThenSuppressed(t *testing.T) {
	lt, buf, _ := newTest(slog.LevelDebug, Config{Burst: 5, Rate: 1})
	for i := range 1000 {
		log(lt, slog.LevelInfo, "a", i)
	}
	if got := buf.lines(); len(got) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(got), strings.Join(got, "\n"))
	}
	lt.Flush()
	lines := buf.lines()
	if len(lines) != 6 {
		t.Fatalf("%d lines after Flush, want 6", len(lines))
	}
	last := lines[5]
	for _, want := range []string{"level=INFO", `msg="log lines suppressed"`, "kind=a", "lines=995"} {
		if !strings.Contains(last, want) {
			t.Errorf("summary %q lacks %s", last, want)
		}
	}
	buf.reset()
	lt.Flush() // nothing more suppressed: no line
	if got := buf.lines(); len(got) != 0 {
		t.Errorf("second Flush logged %q", got)
	}
}

// TestRefill: the bucket refills at Rate per second, up to Burst.
func TestRefill(t *testing.T) {
	lt, buf, now := newTest(slog.LevelInfo, Config{Burst: 2, Rate: 2})
	for i := range 10 {
		log(lt, slog.LevelInfo, "a", i)
	}
	*now = now.Add(time.Second) // 2 tokens
	for i := range 10 {
		log(lt, slog.LevelInfo, "a", i)
	}
	*now = now.Add(time.Hour) // capped at Burst
	for i := range 10 {
		log(lt, slog.LevelInfo, "a", i)
	}
	if n := count(buf.lines(), "msg=line"); n != 6 {
		t.Errorf("%d lines passed, want 6", n)
	}
}

// TestKindsAreSeparate: one kind's flood leaves another kind its budget,
// up to the global cap.
func TestKindsAreSeparate(t *testing.T) {
	lt, buf, _ := newTest(slog.LevelInfo, Config{Burst: 3, GlobalBurst: 100})
	for i := range 100 {
		log(lt, slog.LevelWarn, "flood", i)
	}
	log(lt, slog.LevelWarn, "rare", 0)
	lines := buf.lines()
	if n := count(lines, "kind=flood"); n != 3 {
		t.Errorf("flood: %d lines, want 3", n)
	}
	if n := count(lines, "kind=rare"); n != 1 {
		t.Errorf("rare: %d lines, want 1", n)
	}
}

// TestGlobalCap: many kinds together pass at most GlobalBurst lines; the
// suppressed ones are reported per kind.
func TestGlobalCap(t *testing.T) {
	lt, buf, _ := newTest(slog.LevelInfo, Config{Burst: 10, GlobalBurst: 25})
	for k := range 10 {
		for i := range 10 {
			log(lt, slog.LevelInfo, fmt.Sprintf("k%d", k), i)
		}
	}
	if n := count(buf.lines(), "msg=line"); n != 25 {
		t.Fatalf("%d lines passed, want 25", n)
	}
	buf.reset()
	lt.Flush()
	lines := buf.lines()
	var total int
	for _, l := range lines {
		var kind string
		var n int
		if _, err := fmt.Sscanf(l[strings.Index(l, "kind="):], "kind=%s lines=%d", &kind, &n); err != nil {
			t.Fatalf("summary %q: %v", l, err)
		}
		total += n
	}
	if total != 75 {
		t.Errorf("summaries count %d lines, want 75:\n%s", total, strings.Join(lines, "\n"))
	}
}

// TestDisabledLevel: a line below the logger's level is neither logged
// nor counted, and spends no token.
func TestDisabledLevel(t *testing.T) {
	lt, buf, _ := newTest(slog.LevelInfo, Config{Burst: 1})
	for i := range 100 {
		log(lt, slog.LevelDebug, "a", i)
	}
	log(lt, slog.LevelInfo, "a", 0)
	lt.Flush()
	lines := buf.lines()
	if len(lines) != 1 || !strings.Contains(lines[0], "msg=line") {
		t.Errorf("lines %q, want the one info line", lines)
	}
}

// TestSummaryAfterPeriod: the first line after the summary period reports
// what was suppressed before it, without Run.
func TestSummaryAfterPeriod(t *testing.T) {
	lt, buf, now := newTest(slog.LevelInfo, Config{Burst: 1, Summary: 10 * time.Second})
	for i := range 50 {
		log(lt, slog.LevelWarn, "a", i)
	}
	*now = now.Add(10 * time.Second)
	log(lt, slog.LevelWarn, "a", 50)
	lines := buf.lines()
	if len(lines) != 3 || !strings.Contains(lines[1], "lines=49") || !strings.Contains(lines[1], "level=WARN") || !strings.Contains(lines[2], "i=50") {
		t.Fatalf("lines:\n%s", strings.Join(lines, "\n"))
	}
}

// TestLimit: a kind with a budget of its own.
func TestLimit(t *testing.T) {
	lt, buf, now := newTest(slog.LevelInfo, Config{})
	lt.Limit("accept", 1, 10*time.Second)
	for i := range 100 {
		log(lt, slog.LevelError, "accept", i)
	}
	*now = now.Add(5 * time.Second)
	log(lt, slog.LevelError, "accept", 100)
	*now = now.Add(5 * time.Second)
	log(lt, slog.LevelError, "accept", 101)
	if n := count(buf.lines(), "msg=line"); n != 2 {
		t.Errorf("%d lines passed, want 2:\n%s", n, strings.Join(buf.lines(), "\n"))
	}
}

// TestRun: Run reports on its ticker and when its context ends.
func TestRun(t *testing.T) {
	var buf syncBuffer
	lt := New(slog.New(slog.NewTextHandler(&buf, nil)), Config{Burst: 1, Summary: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { lt.Run(ctx); close(done) }()
	for i := range 20 {
		log(lt, slog.LevelInfo, "a", i)
	}
	for deadline := time.Now().Add(5 * time.Second); count(buf.lines(), "lines=19") == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no summary from Run:\n%s", strings.Join(buf.lines(), "\n"))
		}
	}
	for i := range 5 {
		log(lt, slog.LevelInfo, "b", i)
	}
	cancel()
	<-done
	if count(buf.lines(), "kind=b lines=4") != 1 {
		t.Errorf("no final summary:\n%s", strings.Join(buf.lines(), "\n"))
	}
}

// TestManyKinds: past maxKinds, new kinds share "other".
func TestManyKinds(t *testing.T) {
	lt, _, _ := newTest(slog.LevelInfo, Config{Burst: 1, GlobalBurst: 1 << 20})
	for k := range 2 * maxKinds {
		log(lt, slog.LevelInfo, fmt.Sprintf("k%d", k), 0)
	}
	if n := len(lt.kinds); n > maxKinds+1 {
		t.Errorf("%d kinds tracked", n)
	}
}

// TestNil: a nil Throttle allows nothing.
func TestNil(t *testing.T) {
	var lt *Throttle
	if lt.Allow(context.Background(), slog.LevelError, "a") || lt.Enabled(context.Background(), slog.LevelError) {
		t.Error("nil Throttle allowed a line")
	}
	lt.Flush()
	lt.Logger().Error("discarded")
}

// TestConcurrent: lines from many goroutines stay within budget (run with
// -race).
func TestConcurrent(t *testing.T) {
	var buf syncBuffer
	lt := New(slog.New(slog.NewTextHandler(&buf, nil)), Config{Burst: 10, Rate: 0.001, GlobalBurst: 1000})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				log(lt, slog.LevelInfo, fmt.Sprintf("k%d", g%2), i)
			}
		})
	}
	wg.Wait()
	lt.Flush()
	lines := buf.lines()
	if n := count(lines, "msg=line"); n != 20 {
		t.Errorf("%d lines passed, want 20", n)
	}
	if n := count(lines, "lines=3990"); n != 2 {
		t.Errorf("summaries:\n%s", strings.Join(lines[20:], "\n"))
	}
}

// TestAllowAllocates nothing, whether the level is enabled or not, and
// whether the line passes or not.
func TestAllowAllocates(t *testing.T) {
	lt, _, _ := newTest(slog.LevelInfo, Config{Burst: 1})
	ctx := context.Background()
	lt.Allow(ctx, slog.LevelInfo, "a")
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		if n := testing.AllocsPerRun(1000, func() { lt.Allow(ctx, level, "a") }); n != 0 {
			t.Errorf("Allow at %v: %v allocations", level, n)
		}
	}
}
