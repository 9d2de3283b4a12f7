// Package relaytest runs real Relay servers on 127.0.0.1:0 for tests.
package relaytest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/server"
)

// testOutput is t's output until t's cleanups run, then nothing: a
// socket's command goroutine may still log after the server stopped (it
// finishes the command it was running), and writing to a finished test's
// output is a data race the race detector reports.
func testOutput(t testing.TB) io.Writer {
	w := &cutWriter{w: t.Output()}
	t.Cleanup(func() {
		w.mu.Lock()
		w.w = nil
		w.mu.Unlock()
	})
	return w
}

type cutWriter struct {
	mu sync.Mutex
	w  io.Writer // nil once the test is over
}

func (c *cutWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return len(p), nil
	}
	return c.w.Write(p)
}

// Instance is a running server.
type Instance struct {
	URL    string // http://127.0.0.1:port
	Addr   string // 127.0.0.1:port
	Server *server.Server
	Client *client.Client

	cancel context.CancelFunc
	done   chan error
}

// Start runs a server with cfg until the test ends (or Stop).
func Start(t testing.TB, cfg server.Config) *Instance {
	t.Helper()
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testOutput(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := server.New(cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{
		URL:    "http://" + ln.Addr().String(),
		Addr:   ln.Addr().String(),
		Server: srv,
		cancel: cancel,
		done:   make(chan error, 1),
	}
	go func() { in.done <- srv.Run(ctx, ln) }()
	in.Client, err = client.New(in.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Stop(); err != nil {
			t.Errorf("server stop: %v", err)
		}
	})
	return in
}

// Stop shuts the server down gracefully and returns Run's result. It is
// safe to call twice.
func (in *Instance) Stop() error {
	in.cancel()
	select {
	case err, ok := <-in.done:
		if ok {
			close(in.done)
		}
		return err
	case <-time.After(30 * time.Second):
		var dump strings.Builder
		pprof.Lookup("goroutine").WriteTo(&dump, 1)
		return fmt.Errorf("%w; goroutines:\n%s", context.DeadlineExceeded, dump.String())
	}
}

// Eventually polls cond every 5ms until it holds or 10s pass.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
