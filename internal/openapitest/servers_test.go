package openapitest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

// downEngine is the embedded engine with its networked parts failing the
// way an unreachable Redis or NATS makes them fail: every call that needs
// the engine wraps relay.ErrUnavailable, and readiness reports it.
type downEngine struct{ *memorybroker.Broker }

var errDown = fmt.Errorf("the engine is unreachable (test): %w", relay.ErrUnavailable)

func newDownEngine() downEngine { return downEngine{memorybroker.New(memorybroker.Config{}, nil)} }

func (downEngine) Ready() error { return errDown }
func (downEngine) Publish(context.Context, *relay.Message, relay.PublishOptions) (relay.Receipt, error) {
	return relay.Receipt{}, errDown
}
func (downEngine) History(context.Context, string, uint64, int) (relay.HistoryPage, error) {
	return relay.HistoryPage{}, errDown
}
func (downEngine) Registry() relay.Registry { return downRegistry{} }
func (downEngine) Roster() relay.Roster     { return downRoster{} }

type downRegistry struct{}

func (downRegistry) Register(context.Context, relay.ClientID, relay.Registration, time.Duration) error {
	return errDown
}
func (downRegistry) Lookup(context.Context, relay.ClientID) (relay.Registration, error) {
	return relay.Registration{}, errDown
}
func (downRegistry) Attach(context.Context, relay.ClientID, string) (relay.Registration, error) {
	return relay.Registration{}, errDown
}
func (downRegistry) Detach(context.Context, relay.ClientID, string, []string, time.Duration) error {
	return errDown
}
func (downRegistry) Unregister(context.Context, relay.ClientID) error { return errDown }

type downRoster struct{}

func (downRoster) Change(string, relay.UserID, int) {}
func (downRoster) Present(context.Context, string) ([]relay.Present, error) {
	return nil, errDown
}

// startDown runs a server on a down engine.
func startDown(t *testing.T, cfg server.Config) *relaytest.Instance {
	cfg.Engine = newDownEngine()
	return relaytest.Start(t, cfg)
}
