package client_test

import (
	"context"
	"testing"

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
