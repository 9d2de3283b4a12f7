package natsbroker_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/relay"
)

// sharedNATS is the NATS server every machine runs; destructive tests
// start their own.
const sharedNATS = "nats://127.0.0.1:4222"

// newPrefix returns a prefix no other test or run uses, and removes what
// the engine created under it when the test ends.
func newPrefix(t *testing.T, url string) string {
	t.Helper()
	prefix := "rt_" + strings.ToLower(rand.Text()[:10])
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	return prefix
}

// dropPrefix deletes the streams and buckets of prefix.
func dropPrefix(t testing.TB, url, prefix string) {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		t.Logf("cleaning up %s: %v", prefix, err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var drop []string
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		if strings.HasPrefix(name, prefix+"_") || strings.HasPrefix(name, "KV_"+prefix+"_") {
			drop = append(drop, name)
		}
	}
	if err := names.Err(); err != nil {
		t.Logf("cleaning up %s: %v", prefix, err)
	}
	for _, name := range drop {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Logf("cleaning up %s: deleting %s: %v", prefix, name, err)
		}
	}
}

// fast are settings that make the timing of tests short. NodeTTL leaves
// room for a loaded machine (CI runs every package at once, with -race):
// at 1 s a starved heartbeat made a live node look dead.
func fast(c *natsbroker.Config) {
	c.Heartbeat = 200 * time.Millisecond
	c.NodeTTL = 2500 * time.Millisecond
	c.CheckInterval = 300 * time.Millisecond
	c.ReconnectWait = 100 * time.Millisecond
}

// newNode starts a node of the cluster under prefix, bound to n, and
// waits until it is ready.
func newNode(t *testing.T, url, prefix string, n relay.Node, tune ...func(*natsbroker.Config)) *natsbroker.Broker {
	t.Helper()
	b := newEngine(t, url, prefix, tune...)
	brokertest.Start(t, b, n)
	waitReady(t, b, 10*time.Second)
	return b
}

// newPrefixB and newNodeB are newPrefix and newNode for benchmarks.
func newPrefixB(b *testing.B) string {
	prefix := "rb_" + strings.ToLower(rand.Text()[:10])
	b.Cleanup(func() { dropPrefix(b, sharedNATS, prefix) })
	return prefix
}

func newNodeB(b *testing.B, prefix string, n relay.Node) *natsbroker.Broker {
	e, err := natsbroker.New(natsbroker.Config{URL: sharedNATS, Prefix: prefix}, nil)
	if err != nil {
		b.Fatal(err)
	}
	e.Bind(n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	if !brokertest.Eventually(10*time.Second, func() bool { return e.Ready() == nil }) {
		b.Fatalf("not ready: %v", e.Ready())
	}
	return e
}

func newEngine(t *testing.T, url, prefix string, tune ...func(*natsbroker.Config)) *natsbroker.Broker {
	t.Helper()
	cfg := natsbroker.Config{URL: url, Prefix: prefix}
	fast(&cfg)
	for _, f := range tune {
		f(&cfg)
	}
	b, err := natsbroker.New(cfg, nil)
	if err != nil {
		t.Fatalf("natsbroker.New(%+v) = %v", cfg, err)
	}
	return b
}

func waitReady(t *testing.T, b *natsbroker.Broker, within time.Duration) {
	t.Helper()
	if !brokertest.Eventually(within, func() bool { return b.Ready() == nil }) {
		t.Fatalf("node %s not ready within %v: %v", b.NodeID(), within, b.Ready())
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newTopic(name string) string {
	return name + "-" + strings.ToLower(rand.Text()[:8])
}

// watch marks topic watched on n and its engine, and waits for Sync.
func watch(t *testing.T, ctx context.Context, e relay.Engine, rec *brokertest.Recorder, topic string) {
	t.Helper()
	rec.SetWatched(topic, true)
	e.Watch(topic)
	if err := e.Sync(ctx, topic); err != nil {
		t.Fatalf("Sync(%q) = %v, want nil", topic, err)
	}
}

// server is a private nats-server on a free loopback port.
type server struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startServer starts nats-server with JetStream, storing in dir (a new
// temporary directory when dir is "").
func startServer(t *testing.T) *server {
	t.Helper()
	if _, err := exec.LookPath("nats-server"); err != nil {
		t.Fatalf("nats-server is not installed (.ci/run installs it): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &server{t: t, port: port, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// start runs the server (again) and waits until it accepts connections.
func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command("nats-server", "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(s.port), "-sd", s.dir)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting nats-server: %v", err)
	}
	done := make(chan struct{})
	s.done = done
	go func(cmd *exec.Cmd) { cmd.Wait(); close(done) }(s.cmd)
	if !brokertest.Eventually(10*time.Second, func() bool {
		nc, err := nats.Connect(s.url(), nats.Timeout(200*time.Millisecond))
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	}) {
		s.t.Fatalf("nats-server on port %d did not start within 10s", s.port)
	}
}

// stop kills the server, as a crash would, and waits for it to exit.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("nats-server on port %d did not exit", s.port)
	}
	s.cmd = nil
}
