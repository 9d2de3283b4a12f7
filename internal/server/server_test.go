package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/connlimit"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// slowloris runs n attackers against addr until stop is closed: each
// opens a connection, sends a request line, then a header line every
// 100ms without ever finishing the request, and reconnects (after a
// pause) when the server closes it. It returns when every attacker has
// closed its connection, and how many connections they opened.
func slowloris(addr string, n int, stop <-chan struct{}) (wait func() int64) {
	var wg sync.WaitGroup
	var dials atomic.Int64
	for i := range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				dials.Add(1)
				_, err = io.WriteString(c, "GET /health HTTP/1.1\r\nHost: relay\r\n")
				t := time.NewTicker(100 * time.Millisecond)
				for j := 0; err == nil; j++ {
					select {
					case <-stop:
						err = io.EOF
					case <-t.C:
						_, err = fmt.Fprintf(c, "X-Slow-%d-%d: y\r\n", i, j)
					}
				}
				t.Stop()
				c.Close()
				time.Sleep(100 * time.Millisecond) // a real attacker's pace does not matter here
			}
		})
	}
	return func() int64 { wg.Wait(); return dials.Load() }
}

// TestSlowloris: 200 connections from 127.0.0.1 that never finish their
// request headers, against a cap of 64 pending connections, do not stop
// health checks from the same address: each is served, because the
// limiter closes the oldest slow connection to let it in. The caps hold
// throughout, and everything is released once the attack ends.
func TestSlowloris(t *testing.T) {
	const maxPending, maxOpen = 64, 80
	in := relaytest.Start(t, server.Config{Conns: connlimit.Config{MaxPending: maxPending, MaxOpen: maxOpen}})
	stats := in.Server.ConnStats()
	stop := make(chan struct{})
	wait := slowloris(in.Addr, 200, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
			wait()
		}
	}()
	relaytest.Eventually(t, "the attack to fill the pending cap", func() bool { return stats.AtMaxPending.Load() > 0 })

	httpc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/health", nil)
		resp, err := httpc.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("health check %d during the attack: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("health check %d during the attack: %s", i, resp.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	dials := wait()

	relaytest.Eventually(t, "connections released", func() bool { return stats.Pending.Load() == 0 && stats.Open.Load() == 0 })
	if p := stats.PeakPending.Load(); p != maxPending {
		t.Errorf("pending connections peaked at %d, want the cap, %d", p, maxPending)
	}
	if p := stats.PeakOpen.Load(); p > maxOpen {
		t.Errorf("open connections peaked at %d, cap %d", p, maxOpen)
	}
	// Every newcomer got in: there was always a slow connection to close.
	if n := stats.Refused.Load(); n != 0 {
		t.Errorf("%d connections refused", n)
	}
	t.Logf("attackers opened %d connections; %d shed while reading, %d idle", dials, stats.ShedReading.Load(), stats.ShedIdle.Load())
}

// TestWebSocketsNotPending: WebSockets upgraded through the limited
// listener work (the WebSocket layer reaches the descriptor through the
// wrapper), count as open but not pending, so more of them than
// MaxPending and MaxPerAddress can be open, and give their slot back when
// they close.
func TestWebSocketsNotPending(t *testing.T) {
	const n = 5
	in := relaytest.Start(t, server.Config{Conns: connlimit.Config{MaxPending: 2, MaxPerAddress: 2, MaxOpen: n + 2}})
	stats := in.Server.ConnStats()
	httpc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	c, err := client.New(in.URL, client.WithHTTPClient(httpc))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conns []*client.Conn
	for i := range n {
		reg, err := c.Register(ctx, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := c.Connect(ctx, reg.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.SetTopics(ctx, "news"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	relaytest.Eventually(t, "sockets open, nothing pending", func() bool { return stats.Open.Load() == n && stats.Pending.Load() == 0 })
	res, err := c.Publish(ctx, client.Publish{Topic: "news", Message: "hello"})
	if err != nil || res.Delivered != n {
		t.Fatalf("publish: %+v, %v", res, err)
	}
	for i, conn := range conns {
		if m, err := conn.Receive(ctx); err != nil || m != "hello" {
			t.Fatalf("socket %d received %q, %v", i, m, err)
		}
	}
	if s := stats.ShedIdle.Load() + stats.ShedReading.Load() + stats.Refused.Load(); s != 0 {
		t.Fatalf("%d connections shed or refused", s)
	}
	for _, conn := range conns {
		conn.Close()
	}
	relaytest.Eventually(t, "sockets released", func() bool { return stats.Open.Load() == 0 })
}

// TestTLSOnlyAEAD: TLS 1.2 clients get only AEAD suites (finding 9c), and
// TLS 1.3 and HTTP/2 still work. The CBC-SHA suites are the ones Go's
// defaults still offer, so these rows fail without Relay's settings.
func TestTLSOnlyAEAD(t *testing.T) {
	certFile, keyFile, pool := relaytest.SelfSigned(t)
	in := relaytest.Start(t, server.Config{TLSCert: certFile, TLSKey: keyFile})
	handshake := func(cfg *tls.Config) error {
		cfg.RootCAs = pool
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", in.Addr, cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, tc := range []struct {
		name  string
		cfg   *tls.Config
		works bool
	}{
		{"1.2 AES-CBC-SHA", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false},
		{"1.2 AES-256-CBC-SHA", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}, false},
		{"1.2 AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
		{"1.2 ChaCha20", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, true},
		{"1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true},
	} {
		if err := handshake(tc.cfg); (err == nil) != tc.works {
			t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.works)
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + in.Addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("GET /health over TLS: %s %s, want 200 over HTTP/2", resp.Proto, resp.Status)
	}
}
