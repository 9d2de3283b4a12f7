package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// proxy forwards TCP to a server and can cut every connection at once,
// like a network drop.
type proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	paused bool // refuse new connections: the network is down
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			paused := p.paused
			p.mu.Unlock()
			if paused {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// down cuts every connection and refuses new ones until up.
func (p *proxy) down() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	p.cut()
}

func (p *proxy) up() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// nextEvent reads one event or fails.
func nextEvent(t *testing.T, s *client.Stream) client.Event {
	t.Helper()
	select {
	case e, ok := <-s.Events():
		if !ok {
			t.Fatalf("stream ended: %v", s.Err())
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	panic("unreachable")
}

// TestStreamRecoversAcrossDrop runs the Go client through a connection
// that drops: it reconnects by itself and the application sees every
// offset exactly once, in order, across the drop.
func TestStreamRecoversAcrossDrop(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	px := startProxy(t, in.Addr)
	viaProxy, _ := client.New("http://" + px.ln.Addr().String())
	ctx := ctxT(t)
	reg, err := viaProxy.Register(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := viaProxy.OpenStream(ctx, reg.URL, client.StreamOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Subscribe(ctx, false, "news"); err != nil {
		t.Fatal(err)
	}
	next := uint64(1)
	expect := func(upto uint64) {
		t.Helper()
		for ; next <= upto; next++ {
			e := nextEvent(t, s)
			if e.Type != "message" || e.Offset != next || e.Message != fmt.Sprintf("m%d", next) {
				t.Fatalf("event %+v, want message m%d at offset %d", e, next, next)
			}
		}
	}
	publishN(t, in, "news", 1, 5)
	expect(5)
	for drop := range 3 {
		px.down()
		relaytest.Eventually(t, "the server to see the drop", func() bool { return in.Server.Hub.Subscribers("news") == 0 })
		from := int(next)
		publishN(t, in, "news", from, from+9) // while the client is away
		px.up()
		relaytest.Eventually(t, "the stream to resubscribe", func() bool { return in.Server.Hub.Subscribers("news") == 1 })
		publishN(t, in, "news", from+10, from+14) // live again
		expect(uint64(from + 14))
		if pos, ok := s.Position("news"); !ok || pos.Offset != uint64(from+14) {
			t.Fatalf("after drop %d: position %+v", drop, pos)
		}
	}
	select {
	case e := <-s.Events():
		t.Fatalf("unexpected event %+v", e)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestStreamReportsGap lets history roll past the client while it is
// away: the stream says so with a gap event, then carries on live.
func TestStreamReportsGap(t *testing.T) {
	in := relaytest.Start(t, server.Config{Memory: memorybroker.Config{History: []memorybroker.HistoryRule{{Size: 3, TTL: time.Minute, Bytes: 1 << 20}}}})
	px := startProxy(t, in.Addr)
	viaProxy, _ := client.New("http://" + px.ln.Addr().String())
	ctx := ctxT(t)
	reg, _ := viaProxy.Register(ctx, 1)
	s, err := viaProxy.OpenStream(ctx, reg.URL, client.StreamOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Subscribe(ctx, false, "news"); err != nil {
		t.Fatal(err)
	}
	publishN(t, in, "news", 1, 2)
	for i := 1; i <= 2; i++ {
		if e := nextEvent(t, s); e.Offset != uint64(i) {
			t.Fatalf("event %+v", e)
		}
	}
	px.down()
	relaytest.Eventually(t, "the server to see the drop", func() bool { return in.Server.Hub.Subscribers("news") == 0 })
	publishN(t, in, "news", 3, 10) // history keeps 8..10: 3..7 are lost
	px.up()
	if e := nextEvent(t, s); e.Type != "gap" || e.Offset != 10 {
		t.Fatalf("event %+v, want a gap resuming after 10", e)
	}
	publishN(t, in, "news", 11, 11)
	if e := nextEvent(t, s); e.Type != "message" || e.Offset != 11 {
		t.Fatalf("event %+v, want message 11", e)
	}
}

// TestStreamStopsWhenUnregistered ends the stream for good on close code
// 4000: reconnecting to a deleted registration cannot succeed.
func TestStreamStopsWhenUnregistered(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	ctx := ctxT(t)
	reg := register(t, in, 1)
	s, err := in.Client.OpenStream(ctx, reg.URL, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Client.Unregister(ctx, reg.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-s.Events():
		if ok {
			t.Fatal("event after unregister")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open after its registration was deleted")
	}
	var ce *client.CloseError
	if err := s.Err(); !errors.As(err, &ce) || ce.Code != 4000 {
		t.Fatalf("stream ended with %v, want close 4000", err)
	}

}

// TestStreamPresence keeps the set of present users from the subscribe
// snapshot and the join and leave events that follow.
func TestStreamPresence(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	ctx := ctxT(t)
	_, other := connect(t, in, 8) // a seed client of user 8, on "cats"
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := in.Client.OpenStream(ctx, register(t, in, 7).URL, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Subscribe(ctx, true, "cats"); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, s); e.Type != "join" || e.UserID != 7 {
		t.Fatalf("event %+v, want its own join", e)
	}
	if got := fmt.Sprint(s.Present("cats")); got != "[7 8]" {
		t.Fatalf("present = %s, want [7 8]", got)
	}
	other.Close()
	if e := nextEvent(t, s); e.Type != "leave" || e.UserID != 8 {
		t.Fatalf("event %+v, want user 8 leaving", e)
	}
	if got := fmt.Sprint(s.Present("cats")); got != "[7]" {
		t.Fatalf("present = %s, want [7]", got)
	}
}
