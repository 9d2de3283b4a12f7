package brokertest_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/brokertest"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relay"
)

// TestFakeCluster runs the suite against a small in-process cluster
// engine, so that the cases that need two nodes, a Registry and a Roster
// are themselves tested before a networked engine depends on them.
func TestFakeCluster(t *testing.T) {
	brokertest.Run(t, brokertest.Factory{
		Node: func(t *testing.T, n relay.Node) relay.Engine {
			return brokertest.Start(t, backendFor(t).join(), n)
		},
		Crash: func(t *testing.T, e relay.Engine) { e.(*fakeNode).crash() },
	})
}

// backends holds each test's backend: a Factory's nodes for one test
// share it.
var (
	backendsMu sync.Mutex
	backends   = map[string]*backend{}
)

// backendFor returns t's backend, creating it.
func backendFor(t *testing.T) *backend {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	b := backends[t.Name()]
	if b == nil {
		b = &backend{
			streams: map[string]*fakeStream{}, fresh: map[string]string{}, idem: map[string]relay.Receipt{},
			regs: map[relay.ClientID]*fakeReg{}, present: map[string]map[relay.UserID]map[*fakeNode]int{},
			infos: map[string]map[relay.UserID][]byte{},
		}
		backends[t.Name()] = b
	}
	return b
}

// backend is the fake cluster's shared state, all under mu. Deliveries
// happen under mu too, which keeps each topic's in order; a Recorder
// never blocks.
type backend struct {
	mu      sync.Mutex
	nodes   []*fakeNode
	streams map[string]*fakeStream
	fresh   map[string]string
	idem    map[string]relay.Receipt
	regs    map[relay.ClientID]*fakeReg
	present map[string]map[relay.UserID]map[*fakeNode]int
	infos   map[string]map[relay.UserID][]byte // what present users joined with
}

type fakeStream struct {
	epoch  string
	offset uint64
	kept   []*relay.Message
}

type fakeReg struct {
	reg     relay.Registration
	holder  *fakeNode
	socket  string
	expires time.Time // zero while attached
}

type fakeNode struct {
	b        *backend
	node     relay.Node
	interest map[string]int
	report   func(relay.Transition) // set before Run; called under b.mu
}

// join returns a new node of b.
func (b *backend) join() *fakeNode { return &fakeNode{b: b, interest: map[string]int{}} }

func (n *fakeNode) Bind(node relay.Node) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	n.node = node
	n.b.nodes = append(n.b.nodes, n)
}

func epoch() string { return rand.Text()[:13] }

func (n *fakeNode) Publish(ctx context.Context, m *relay.Message, opts relay.PublishOptions) (relay.Receipt, error) {
	b := n.b
	b.mu.Lock()
	defer b.mu.Unlock()
	key := ""
	if opts.IdempotencyKey != "" {
		key = fmt.Sprintf("%s\x00%v/%d\x00%s", m.Topic, m.HasUser, m.User, opts.IdempotencyKey)
		if r, ok := b.idem[key]; ok {
			r.Duplicate = true
			return r, nil
		}
	}
	var r relay.Receipt
	if !m.HasUser && !opts.Transient {
		s := b.streams[m.Topic]
		if s == nil {
			s = &fakeStream{epoch: cmp.Or(b.fresh[m.Topic], epoch())}
			delete(b.fresh, m.Topic)
			b.streams[m.Topic] = s
		}
		s.offset++
		m.Offset, m.Epoch = s.offset, s.epoch
		s.kept = append(s.kept, m)
		if len(s.kept) > memorybroker.DefaultHistory.Size {
			s.kept = s.kept[1:]
		}
		r.Position = relay.Position{Offset: m.Offset, Epoch: m.Epoch}
	}
	for _, o := range b.nodes {
		if o.interest[m.Topic] > 0 {
			d := o.node.Fanout(m)
			if o == n {
				r.Delivered = d
			}
		}
	}
	if key != "" {
		b.idem[key] = r
	}
	return r, nil
}

func (n *fakeNode) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	b := n.b
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.streams[topic]
	if s == nil {
		if b.fresh[topic] == "" {
			b.fresh[topic] = epoch()
		}
		return relay.HistoryPage{Latest: relay.Position{Epoch: b.fresh[topic]}, Complete: since == 0}, nil
	}
	p := relay.HistoryPage{Latest: relay.Position{Offset: s.offset, Epoch: s.epoch}}
	if since > s.offset {
		return p, nil
	}
	oldest := s.offset - uint64(len(s.kept)) + 1
	p.Complete = since+1 >= oldest
	for _, m := range s.kept {
		if m.Offset > since && (limit <= 0 || len(p.Messages) < limit) {
			p.Messages = append(p.Messages, m)
		}
	}
	return p, nil
}

func (n *fakeNode) Watch(topic string) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	n.interest[topic]++
}

func (n *fakeNode) Unwatch(topic string) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	n.interest[topic]--
}

func (n *fakeNode) Sync(context.Context, string) error { return nil }
func (n *fakeNode) Ready() error                       { return nil }
func (n *fakeNode) Registry() relay.Registry           { return n }
func (n *fakeNode) Roster() relay.Roster               { return n }

func (n *fakeNode) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// lookup returns id's live registration. The caller holds b.mu.
func (b *backend) lookup(id relay.ClientID) (*fakeReg, error) {
	r := b.regs[id]
	if r != nil && !r.expires.IsZero() && time.Now().After(r.expires) {
		delete(b.regs, id)
		r = nil
	}
	if r == nil {
		return nil, fmt.Errorf("registration %s: %w", id, relay.ErrNotFound)
	}
	return r, nil
}

func (n *fakeNode) Register(ctx context.Context, id relay.ClientID, reg relay.Registration, ttl time.Duration) error {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	n.b.regs[id] = &fakeReg{reg: reg, expires: time.Now().Add(ttl)}
	return nil
}

func (n *fakeNode) Lookup(ctx context.Context, id relay.ClientID) (relay.Registration, error) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	r, err := n.b.lookup(id)
	if err != nil {
		return relay.Registration{}, err
	}
	return r.reg, nil
}

func (n *fakeNode) Attach(ctx context.Context, id relay.ClientID, socket string) (relay.Registration, error) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	r, err := n.b.lookup(id)
	if err != nil {
		return relay.Registration{}, err
	}
	if r.holder != nil {
		r.holder.node.Kick(id, r.socket, relay.CloseReplaced)
	}
	r.holder, r.socket, r.expires = n, socket, time.Time{}
	return r.reg, nil
}

func (n *fakeNode) Detach(ctx context.Context, id relay.ClientID, socket string, topics []string, grace time.Duration) error {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	r, err := n.b.lookup(id)
	if err != nil || r.holder != n || r.socket != socket {
		return nil
	}
	if grace < 0 {
		delete(n.b.regs, id)
		return nil
	}
	r.holder, r.socket, r.expires = nil, "", time.Now().Add(grace)
	r.reg.Topics = topics
	return nil
}

func (n *fakeNode) Unregister(ctx context.Context, id relay.ClientID) error {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	r, err := n.b.lookup(id)
	if err != nil {
		return err
	}
	delete(n.b.regs, id)
	if r.holder != nil {
		r.holder.node.Kick(id, r.socket, relay.CloseUnregistered)
	}
	return nil
}

func (n *fakeNode) Change(topic string, user relay.UserID, delta int) {
	n.ChangeInfo(topic, user, delta, nil)
}

func (n *fakeNode) ChangeInfo(topic string, user relay.UserID, delta int, info []byte) {
	b := n.b
	b.mu.Lock()
	defer b.mu.Unlock()
	users := b.present[topic]
	if users == nil {
		users = map[relay.UserID]map[*fakeNode]int{}
		b.present[topic] = users
	}
	if users[user] == nil {
		users[user] = map[*fakeNode]int{}
	}
	b.change(n, topic, user, func(per map[*fakeNode]int) { per[n] += delta }, info)
}

// ReportTransitions implements relay.TransitionReporter.
func (n *fakeNode) ReportTransitions(f func(relay.Transition)) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	n.report = f
}

// change edits user's connections per node on topic, announcing a join
// (and keeping info) or a leave (and forgetting it), which by reports
// (nil: nobody). The caller holds b.mu.
func (b *backend) change(by *fakeNode, topic string, user relay.UserID, edit func(map[*fakeNode]int), info []byte) {
	users := b.present[topic]
	before := total(users[user])
	edit(users[user])
	after := total(users[user])
	infos := b.infos[topic]
	if infos == nil {
		infos = map[relay.UserID][]byte{}
		b.infos[topic] = infos
	}
	kind := relay.KindPublish
	switch {
	case before == 0 && after > 0:
		kind = relay.KindJoin
		if len(info) > 0 {
			infos[user] = bytes.Clone(info)
		}
	case before > 0 && after == 0:
		kind = relay.KindLeave
		info = infos[user]
		delete(users, user)
		delete(infos, user)
	default:
		return
	}
	if by != nil && by.report != nil {
		by.report(relay.Transition{Topic: topic, User: user, Info: bytes.Clone(info), Joined: kind == relay.KindJoin})
	}
	for _, o := range b.nodes {
		if o.interest[topic] > 0 {
			o.node.Fanout(&relay.Message{Kind: kind, Topic: topic, User: user, HasUser: true, Data: info})
		}
	}
}

// crash removes n as a node that died: it gets nothing more, and its
// share of presence goes, with the leaves that causes, which the first
// surviving node reports, as the one that cleaned up.
func (n *fakeNode) crash() {
	b := n.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nodes = slices.DeleteFunc(b.nodes, func(o *fakeNode) bool { return o == n })
	var cleaner *fakeNode
	if len(b.nodes) > 0 {
		cleaner = b.nodes[0]
	}
	for topic, users := range b.present {
		for user, per := range users {
			if per[n] != 0 {
				b.change(cleaner, topic, user, func(per map[*fakeNode]int) { delete(per, n) }, nil)
			}
		}
	}
}

func total(per map[*fakeNode]int) int {
	n := 0
	for _, c := range per {
		n += c
	}
	return n
}

func (n *fakeNode) Present(ctx context.Context, topic string) ([]relay.Present, error) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	var ps []relay.Present
	for u, per := range n.b.present[topic] {
		if c := total(per); c > 0 {
			ps = append(ps, relay.Present{User: u, Connections: c, Info: n.b.infos[topic][u]})
		}
	}
	slices.SortFunc(ps, func(x, y relay.Present) int { return cmp.Compare(x.User, y.User) })
	return ps, nil
}

// Topics lists the topics with prefix where some user has connections.
func (n *fakeNode) Topics(ctx context.Context, prefix string) ([]string, error) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	var out []string
	for topic, users := range n.b.present {
		if !strings.HasPrefix(topic, prefix) {
			continue
		}
		for _, per := range users {
			if total(per) > 0 {
				out = append(out, topic)
				break
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

var (
	_ relay.Engine      = (*fakeNode)(nil)
	_ relay.InfoRoster  = (*fakeNode)(nil)
	_ relay.TopicLister = (*fakeNode)(nil)

	_ relay.TransitionReporter = (*fakeNode)(nil)
)
