package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/server"
)

func apiWithAuth(a *auth.Auth) api.Config { return api.Config{Auth: a} }

// startAt runs a server on addr (a restart on a stopped server's
// address) until the test ends.
func startAt(t *testing.T, addr string, cfg server.Config) *server.Server {
	t.Helper()
	ln, err := server.Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server stop: %v", err)
		}
	})
	return srv
}

// fakeServer is a relay.v1 server scripted by a test, for what a real
// server does not do on demand (close with any code, answer a subscribe
// with "unavailable", drop the subprotocol). Each upgrade request is
// handed to serve with its number, from 1.
type fakeServer struct {
	URL    string // the socket URL to open a Stream on
	Client *client.Client
	n      atomic.Int32
}

func startFake(t *testing.T, serve func(n int, w http.ResponseWriter, r *http.Request)) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(int(f.n.Add(1)), w, r)
	}))
	t.Cleanup(ts.Close)
	f.URL = "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws/fake"
	var err error
	if f.Client, err = client.New(ts.URL); err != nil {
		t.Fatal(err)
	}
	return f
}

// Conns returns how many upgrade requests arrived.
func (f *fakeServer) Conns() int { return int(f.n.Load()) }

var upgradeV1 = websocket.Upgrader{Subprotocols: []string{"relay.v1"}}

// closeWith closes ws with code and waits (up to 2s) for the client to
// answer or go.
func closeWith(ws *websocket.Conn, code int) {
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "test"), time.Now().Add(time.Second))
	ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	readUntilGone(ws)
}

// readUntilGone reads and discards until the client leaves, then closes.
func readUntilGone(ws *websocket.Conn) {
	defer ws.Close()
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}

// ended waits for s to end and returns its Err.
func ended(t *testing.T, s *client.Stream) error {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-s.Events():
			if !ok {
				return s.Err()
			}
		case <-timeout:
			t.Fatal("the stream did not end within 20s")
		}
	}
}
