// Package e2e drives real Relay servers through the public client package
// over real sockets, counting every delivery.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect registers userID and connects, failing the test on error.
func connect(t *testing.T, in *relaytest.Instance, userID uint64) (client.Registration, *client.Conn) {
	t.Helper()
	ctx := ctxT(t)
	reg, err := in.Client.Register(ctx, userID)
	if err != nil {
		t.Fatalf("Register(%d): %v", userID, err)
	}
	conn, err := in.Client.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatalf("Connect(%s): %v", reg.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	return reg, conn
}

func publish(t *testing.T, in *relaytest.Instance, p client.Publish) client.PublishResult {
	t.Helper()
	res, err := in.Client.Publish(ctxT(t), p)
	if err != nil {
		t.Fatalf("Publish(%+v): %v", p, err)
	}
	return res
}

func receive(t *testing.T, conn *client.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := conn.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return m
}

// expectNothing proves conn has received nothing by sending a sync marker
// through the server after the publishes: anything published before it
// would have been queued before the pong.
func expectNothing(t *testing.T, conn *client.Conn) {
	t.Helper()
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	select {
	case m := <-conn.Messages():
		t.Fatalf("received %q, want nothing", m)
	default:
	}
}

// closeCode waits for conn to end and returns the server's close code.
func closeCode(t *testing.T, conn *client.Conn) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := conn.Receive(ctx)
		if err == nil {
			continue
		}
		var ce *client.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		t.Fatalf("connection ended without a close code: %v", err)
	}
}

func TestTutorial(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	_, conn := connect(t, in, 1)
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// New clients start on "cats".
	if got := publish(t, in, client.Publish{Topic: "cats", Message: "meow"}); got.Delivered != 1 {
		t.Fatalf("publish to cats delivered %d, want 1", got.Delivered)
	}
	if m := receive(t, conn); m != "meow" {
		t.Fatalf("received %q, want %q", m, "meow")
	}
	if err := conn.SetTopics(ctxT(t), "dogs"); err != nil {
		t.Fatal(err)
	}
	publish(t, in, client.Publish{Topic: "cats", Message: "meow again"})
	publish(t, in, client.Publish{Topic: "dogs", Message: `{"woof": true}`})
	if m := receive(t, conn); m != `{"woof": true}` {
		t.Fatalf("received %q, want the dogs message", m)
	}
	// "ping" is harmless: the connection stays and keeps receiving.
	if err := conn.WriteText([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	publish(t, in, client.Publish{Topic: "dogs", Message: "after ping"})
	if m := receive(t, conn); m != "after ping" {
		t.Fatalf("received %q after ping", m)
	}
	expectNothing(t, conn)
}

// TestFanoutCounts sends M messages to N clients on two topics and checks
// that every client got exactly its topic's messages, in order.
func TestFanoutCounts(t *testing.T) {
	const n, m = 40, 300
	in := relaytest.Start(t, server.Config{})
	topics := []string{"even", "odd"}
	conns := make([]*client.Conn, n)
	for i := range conns {
		_, conns[i] = connect(t, in, uint64(i))
		if err := conns[i].SetTopics(ctxT(t), topics[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, topic := range topics {
		wg.Go(func() {
			for j := range m {
				res, err := in.Client.Publish(context.Background(), client.Publish{Topic: topic, Message: fmt.Sprintf("%s-%d", topic, j)})
				if err != nil || res.Delivered != n/2 {
					t.Errorf("publish %s-%d: delivered %d, err %v; want %d", topic, j, res.Delivered, err, n/2)
					return
				}
			}
		})
	}
	for i, conn := range conns {
		wg.Go(func() {
			topic := topics[i%2]
			for j := range m {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				got, err := conn.Receive(ctx)
				cancel()
				if want := fmt.Sprintf("%s-%d", topic, j); err != nil || got != want {
					t.Errorf("client %d message %d = %q, %v; want %q", i, j, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, conn := range conns {
		expectNothing(t, conn)
	}
	st := in.Server.Hub.Stats()
	if got, want := st.Deliveries.Load(), uint64(n*m); got != want {
		t.Errorf("hub deliveries = %d, want %d", got, want)
	}
}

func TestPublishToOneUser(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	_, tab1 := connect(t, in, 7)
	_, tab2 := connect(t, in, 7)
	_, other := connect(t, in, 8)
	_, offTopic := connect(t, in, 7)
	if err := offTopic.SetTopics(ctxT(t), "dogs"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{tab1, tab2, other} {
		if err := c.Sync(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	user := uint64(7)
	if res := publish(t, in, client.Publish{Topic: "cats", UserID: &user, Message: "for 7"}); res.Delivered != 2 {
		t.Fatalf("delivered = %d, want 2 (both tabs of user 7)", res.Delivered)
	}
	for _, c := range []*client.Conn{tab1, tab2} {
		if m := receive(t, c); m != "for 7" {
			t.Fatalf("received %q, want %q", m, "for 7")
		}
	}
	expectNothing(t, other)
	expectNothing(t, offTopic)
	// A user with no clients reaches nobody, without error.
	nobody := uint64(999)
	if res := publish(t, in, client.Publish{Topic: "cats", UserID: &nobody, Message: "x"}); res.Delivered != 0 {
		t.Fatalf("delivered = %d to a user without clients", res.Delivered)
	}
}

func TestUnregisterClosesSocket(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	reg, conn := connect(t, in, 1)
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := in.Client.Unregister(ctxT(t), reg.ID); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, conn); code != 4000 {
		t.Fatalf("close code = %d, want 4000 (unregistered)", code)
	}
	_, err := in.Client.Connect(ctxT(t), reg.URL)
	if err == nil {
		t.Fatal("reconnecting to an unregistered id succeeded")
	}
	var ce *client.Error
	if err := in.Client.Unregister(ctxT(t), reg.ID); !errors.As(err, &ce) || ce.Status != 404 {
		t.Fatalf("second unregister: %v, want a 404", err)
	}
}

func TestNewestConnectionWins(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	reg, first := connect(t, in, 1)
	if err := first.SetTopics(ctxT(t), "news"); err != nil {
		t.Fatal(err)
	}
	second, err := in.Client.Connect(ctxT(t), reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if code := closeCode(t, first); code != 4001 {
		t.Fatalf("first connection's close code = %d, want 4001 (replaced)", code)
	}
	if err := second.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// The registration's topics carry over to the new socket.
	if res := publish(t, in, client.Publish{Topic: "news", Message: "hi"}); res.Delivered != 1 {
		t.Fatalf("delivered = %d, want 1", res.Delivered)
	}
	if m := receive(t, second); m != "hi" {
		t.Fatalf("received %q", m)
	}
}

func TestReconnectWithinGrace(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	reg, conn := connect(t, in, 1)
	if err := conn.SetTopics(ctxT(t), "news"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	relaytest.Eventually(t, "the socket to detach", func() bool { return in.Server.Hub.Stats().Connections.Load() == 0 })
	again, err := in.Client.Connect(ctxT(t), reg.URL)
	if err != nil {
		t.Fatalf("reconnect within the grace period: %v", err)
	}
	defer again.Close()
	if err := again.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if res := publish(t, in, client.Publish{Topic: "news", Message: "back"}); res.Delivered != 1 {
		t.Fatalf("delivered = %d after reconnect, want 1 (topics kept)", res.Delivered)
	}
	if m := receive(t, again); m != "back" {
		t.Fatalf("received %q", m)
	}
}

func TestForgetOnCloseWithoutGrace(t *testing.T) {
	in := relaytest.Start(t, server.Config{Hub: hubConfig(-1, 0)})
	reg, conn := connect(t, in, 1)
	if err := conn.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	relaytest.Eventually(t, "the registration to be forgotten", func() bool {
		return in.Server.Hub.Stats().Registrations.Load() == 0
	})
	if _, err := in.Client.Connect(ctxT(t), reg.URL); err == nil {
		t.Fatal("reconnect succeeded with no grace period; want 404")
	}
}

func TestUnconnectedRegistrationExpires(t *testing.T) {
	in := relaytest.Start(t, server.Config{Hub: hubConfig(0, 50*time.Millisecond)})
	reg, err := in.Client.Register(ctxT(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "the registration to expire", func() bool {
		return in.Server.Hub.Stats().Registrations.Load() == 0
	})
	if _, err := in.Client.Connect(ctxT(t), reg.URL); err == nil {
		t.Fatal("connect to an expired registration succeeded")
	}
	if got := in.Server.Hub.Stats().Expired.Load(); got != 1 {
		t.Fatalf("expired = %d, want 1", got)
	}
}

func TestGracefulShutdownCloses1001(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	conns := make([]*client.Conn, 5)
	for i := range conns {
		_, conns[i] = connect(t, in, uint64(i))
		if err := conns[i].Sync(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, in, client.Publish{Topic: "cats", Message: "last words"})
	if err := in.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for i, c := range conns {
		// Queued messages are sent before the close.
		if m := receive(t, c); m != "last words" {
			t.Fatalf("client %d received %q before the close", i, m)
		}
		if code := closeCode(t, c); code != 1001 {
			t.Fatalf("client %d close code = %d, want 1001", i, code)
		}
	}
	if n := in.Server.WS.Len(); n != 0 {
		t.Fatalf("%d connections left after shutdown", n)
	}
}

// hubConfig returns a hub configuration with a fast sweep; zero values
// keep the defaults.
func hubConfig(grace, ttl time.Duration) hub.Config {
	return hub.Config{ReconnectGrace: grace, RegistrationTTL: ttl, SweepInterval: 10 * time.Millisecond}
}
