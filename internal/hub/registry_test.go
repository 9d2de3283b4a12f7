package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// claimingRegistry is a relay.Registry that numbers claims, as the
// networked engines do.
type claimingRegistry struct {
	mu     sync.Mutex
	claims uint64
}

func (r *claimingRegistry) Register(context.Context, relay.ClientID, relay.Registration, time.Duration) error {
	return nil
}
func (r *claimingRegistry) Lookup(context.Context, relay.ClientID) (relay.Registration, error) {
	return relay.Registration{User: 1}, nil
}
func (r *claimingRegistry) Attach(context.Context, relay.ClientID, string) (relay.Registration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claims++
	return relay.Registration{User: 1, Topics: []string{"cats"}, Claim: r.claims}, nil
}
func (r *claimingRegistry) Detach(context.Context, relay.ClientID, string, []string, time.Duration) error {
	return nil
}
func (r *claimingRegistry) Unregister(context.Context, relay.ClientID) error { return nil }

// Two sockets claim one id on this node; whatever order their attaches
// finish in, the later claim wins and the other socket is closed as
// replaced. So without a Registry too: the handler of the earlier
// handshake may attach after the later one's (it is scheduled late), and
// must lose. A claim after both still replaces the winner.
func TestLaterClaimWinsOnOneNode(t *testing.T) {
	for _, setup := range []struct {
		name string
		hub  func(t *testing.T) (*Hub, relay.ClientID)
	}{
		{"registry", func(*testing.T) (*Hub, relay.ClientID) { return New(Config{Registry: &claimingRegistry{}}, nil), "id" }},
		{"no registry", func(t *testing.T) (*Hub, relay.ClientID) {
			h := New(Config{}, nil)
			id, err := h.Register(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			return h, id
		}},
	} {
		for _, order := range []string{"in order", "out of order"} {
			t.Run(setup.name+"/"+order, func(t *testing.T) {
				h, id := setup.hub(t)
				first, err := h.Claim(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				second, err := h.Claim(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				s1, s2 := &fakeSub{}, &fakeSub{}
				if order == "in order" {
					if _, err := h.AttachTicket(first, s1, true); err != nil {
						t.Fatal(err)
					}
					if _, err := h.AttachTicket(second, s2, true); err != nil {
						t.Fatal(err)
					}
				} else {
					if _, err := h.AttachTicket(second, s2, true); err != nil {
						t.Fatal(err)
					}
					if _, err := h.AttachTicket(first, s1, true); !errors.Is(err, ErrSuperseded) {
						t.Fatalf("attaching the earlier claim last = %v, want ErrSuperseded", err)
					}
				}
				if got := fmt.Sprint(s2.closes); got != "[]" {
					t.Fatalf("the later claim's socket was closed: %s", got)
				}
				if order == "in order" && fmt.Sprint(s1.closes) != fmt.Sprint([]relay.CloseReason{relay.CloseReplaced}) {
					t.Fatalf("the earlier socket's closes = %v, want replaced", s1.closes)
				}
				if setup.name == "registry" { // the fake registry's client holds "cats"
					if n := h.Fanout(msg("cats", "x")); n != 1 || len(s2.received()) != 1 || len(s1.received()) != 0 {
						t.Fatalf("fan-out reached %d (s1 %v, s2 %v), want only the later socket", n, s1.received(), s2.received())
					}
				}
				third, err := h.Claim(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := h.AttachTicket(third, &fakeSub{}, true); err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(s2.closes) != fmt.Sprint([]relay.CloseReason{relay.CloseReplaced}) {
					t.Fatalf("the second socket's closes = %v, want replaced by the third", s2.closes)
				}
			})
		}
	}
}
