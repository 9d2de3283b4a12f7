package natsbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/relay"
)

// Headers of the messages the engine writes.
const (
	hdrOffset = "Relay-Offset" // a stored message's offset in its topic
	hdrEpoch  = "Relay-Epoch"  // and its epoch
	hdrKind   = "Relay-Kind"   // "join" or "leave"; absent for a publish
	hdrUser   = "Relay-User"   // the user of a message to one user, or who joined or left
	hdrNode   = "Relay-Node"   // the node that sent a message the stream does not hold
)

// maxPublishAttempts bounds the compare-and-set retries of one publish
// when other nodes publish to the same topic at the same time. It is a
// backstop: the command timeout (Config.Timeout) ends the retries first,
// so that a node that keeps losing to busy nodes on one topic (CI under
// -race saw 32 losses in a row) answers late rather than fails early.
const maxPublishAttempts = 1000

// token encodes s as one subject token (or KV key part): base64url
// without padding, so no '.', '*', '>' or white space; "_" for "".
func token(s string) string {
	if s == "" {
		return "_"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// untoken decodes a token.
func untoken(t string) (string, bool) {
	if t == "_" {
		return "", true
	}
	b, err := base64.RawURLEncoding.DecodeString(t)
	return string(b), err == nil
}

// newEpoch returns 64 random bits in base32, like memorybroker's.
func newEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// idemKey scopes key to m's topic and audience, hashed: JetStream's
// Nats-Msg-Id window is stream-wide, and a KV key must be short.
func idemKey(m *relay.Message, key string) string {
	audience := "*"
	if m.HasUser {
		audience = m.User.String()
	}
	sum := sha256.Sum256([]byte(m.Topic + "\x00" + audience + "\x00" + key))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// stored is one message of the history stream.
type stored struct {
	msg  *relay.Message
	seq  uint64    // its stream sequence
	prev uint64    // the stream sequence of its topic's previous message; 0 for the first of an epoch
	at   time.Time // when the stream stored it
}

func (s stored) pos() relay.Position { return relay.Position{Offset: s.msg.Offset, Epoch: s.msg.Epoch} }

// decodeStored reads a message of topic from the stream.
func decodeStored(topic string, raw *jetstream.RawStreamMsg) (stored, error) {
	off, err := strconv.ParseUint(raw.Header.Get(hdrOffset), 10, 64)
	if err != nil || off == 0 {
		return stored{}, fmt.Errorf("message %d of %q has no offset", raw.Sequence, topic)
	}
	prev, _ := strconv.ParseUint(raw.Header.Get(jetstream.ExpectedLastSubjSeqHeader), 10, 64)
	m := &relay.Message{Topic: topic, Data: raw.Data, Offset: off, Epoch: raw.Header.Get(hdrEpoch)}
	return stored{msg: m, seq: raw.Sequence, prev: prev, at: raw.Time}, nil
}

// decodeLive reads a message from a topic's core subject: a stored message
// republished by the stream (its sequence is returned), a message to one
// user, or a presence event (its data: the info the user joined with,
// empty for none). It reports whether this node sent it.
func decodeLive(topic string, msg *nats.Msg, self string) (m *relay.Message, seq uint64, mine bool) {
	m = &relay.Message{Topic: topic, Data: msg.Data}
	h := msg.Header
	if o := h.Get(hdrOffset); o != "" {
		m.Offset, _ = strconv.ParseUint(o, 10, 64)
		m.Epoch = h.Get(hdrEpoch)
		seq, _ = strconv.ParseUint(h.Get(jetstream.SequenceHeader), 10, 64)
		return m, seq, false
	}
	switch h.Get(hdrKind) {
	case "join":
		m.Kind = relay.KindJoin
	case "leave":
		m.Kind = relay.KindLeave
	}
	if m.Kind != relay.KindPublish && len(m.Data) == 0 {
		m.Data = nil // a join or leave without info
	}
	if u := h.Get(hdrUser); u != "" {
		n, _ := strconv.ParseUint(u, 10, 64)
		m.User, m.HasUser = relay.UserID(n), m.Kind == relay.KindPublish
	}
	return m, 0, h.Get(hdrNode) == self
}

// Publish implements relay.Broker. A message for the topic's subscribers
// is stored in the history stream with the next offset, by
// compare-and-set on the subject's last sequence, and returns once
// JetStream acknowledged it; the stream republishes it to every node. A
// message to one user is not stored: it goes to every node on the topic's
// core subject. An idempotency key is scoped to the topic and audience.
func (b *Broker) Publish(ctx context.Context, m *relay.Message, opts relay.PublishOptions) (relay.Receipt, error) {
	c, inf, err := b.use()
	if err != nil {
		return relay.Receipt{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	if m.HasUser || opts.Transient {
		return b.publishLive(ctx, c, inf, m, opts)
	}
	r, err := b.publishStored(ctx, c, inf, m, opts)
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) {
		b.signalConnected() // NATS lost the stream: create it again
	}
	if err == nil && !r.Duplicate {
		m.Offset, m.Epoch = r.Offset, r.Epoch
		r.Delivered = b.seq.Offer(m) // outside the topic's publish lock
	}
	return r, err
}

// publishLive sends a message outside the topic's stream (to one user's
// clients, or transient) to every node on the topic's core subject. An
// idempotency key is recorded first (create-if-absent) and dropped again
// if the send fails, so a retry is not taken for a duplicate.
func (b *Broker) publishLive(ctx context.Context, c *conn, inf *infra, m *relay.Message, opts relay.PublishOptions) (relay.Receipt, error) {
	var key string
	var keyRev uint64
	if opts.IdempotencyKey != "" && !opts.Transient {
		key = idemKey(m, opts.IdempotencyKey)
		rev, err := inf.idem.Create(ctx, key, nil)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return relay.Receipt{Duplicate: true}, nil
		}
		if err != nil {
			return relay.Receipt{}, unavailable("recording the idempotency key", err)
		}
		keyRev = rev
	}
	msg := nats.NewMsg(b.n.topic + "." + token(m.Topic))
	msg.Data = m.Data
	if m.HasUser {
		msg.Header.Set(hdrUser, m.User.String())
	}
	msg.Header.Set(hdrNode, b.cfg.NodeID)
	err := c.nc.PublishMsg(msg)
	if err == nil {
		err = c.nc.FlushWithContext(ctx)
	}
	if err != nil {
		if keyRev != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.remove(rctx, b.n.idem, key, keyRev) // best effort: NATS is likely down
			cancel()
		}
		return relay.Receipt{}, unavailable("publishing outside the stream", err)
	}
	m.Offset, m.Epoch = 0, ""
	return relay.Receipt{Delivered: b.seq.Offer(m)}, nil
}

func (b *Broker) publishStored(ctx context.Context, c *conn, inf *infra, m *relay.Message, opts relay.PublishOptions) (relay.Receipt, error) {
	p := b.pubs.acquire(m.Topic)
	defer b.pubs.release(p)
	p.mu.Lock()
	defer p.mu.Unlock()
	var freshRev uint64 // the fresh-epoch entry this publish took, to delete
	defer func() {
		if freshRev != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			b.remove(ctx, b.n.fresh, token(m.Topic), freshRev) // best effort: it expires anyway
		}
	}()
	hist := b.historyOf(m.Topic)
	subject := b.hists[hist].subj + "." + token(m.Topic)
	var msgID string
	if opts.IdempotencyKey != "" {
		msgID = idemKey(m, opts.IdempotencyKey)
	}
	for try := range maxPublishAttempts {
		if !p.known {
			if h := b.pubs.hint(p); h.seq > p.last.seq {
				p.last, p.known = h, true
			}
		}
		if !p.known {
			last, ok, err := b.head(ctx, inf, m.Topic)
			if err != nil {
				return relay.Receipt{}, unavailable("reading the topic's last message", err)
			}
			if !ok {
				epoch, rev, err := b.takeFresh(ctx, inf, m.Topic)
				if err != nil {
					return relay.Receipt{}, unavailable("taking the topic's epoch", err)
				}
				freshRev = max(freshRev, rev)
				last = head{pos: relay.Position{Epoch: epoch}}
			}
			p.last, p.known = last, true
		}
		msg := nats.NewMsg(subject)
		msg.Data = m.Data
		msg.Header.Set(hdrOffset, strconv.FormatUint(p.last.pos.Offset+1, 10))
		msg.Header.Set(hdrEpoch, p.last.pos.Epoch)
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(p.last.seq, 10))
		if msgID != "" {
			msg.Header.Set(jetstream.MsgIDHeader, msgID)
		}
		ack, err := c.js.PublishMsg(ctx, msg)
		if isWrongLastSeq(err) {
			// Another node published: read its position and retry, after
			// a short random wait that grows with the losses, so that
			// nodes racing on one busy topic take turns instead of one
			// losing every round.
			p.known = false
			if err := contended(ctx, min(try/4, 4)); err != nil {
				return relay.Receipt{}, unavailable("waiting to retry", err)
			}
			continue
		}
		if err != nil {
			p.known = false
			return relay.Receipt{}, unavailable("storing the message", err)
		}
		if ack.Duplicate {
			return b.duplicate(ctx, inf.hist[hist], m.Topic, ack.Sequence), nil
		}
		pos := relay.Position{Offset: p.last.pos.Offset + 1, Epoch: p.last.pos.Epoch}
		p.last = head{seq: ack.Sequence, pos: pos}
		return relay.Receipt{Position: pos}, nil
	}
	p.known = false
	return relay.Receipt{}, fmt.Errorf("natsbroker: publishing to %q: the topic's last message kept changing (%d attempts): %w", m.Topic, maxPublishAttempts, relay.ErrUnavailable)
}

// duplicate answers a repeated idempotency key with the first publish's
// position, read from the stream. If that message is gone from history
// the position is zero.
func (b *Broker) duplicate(ctx context.Context, hist jetstream.Stream, topic string, seq uint64) relay.Receipt {
	r := relay.Receipt{Duplicate: true}
	raw, err := hist.GetMsg(ctx, seq)
	if err != nil {
		return r
	}
	if s, err := decodeStored(topic, raw); err == nil {
		r.Position = s.pos()
	}
	return r
}

// isWrongLastSeq reports whether a publish failed its compare-and-set.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// head is the newest stored message of a topic, as far as a node knows.
type head struct {
	seq uint64 // stream sequence; 0 before the topic's first message
	pos relay.Position
}

// pubCache remembers, per topic this node publishes to, the last message
// it stored, so that a publish needs one round trip unless another node
// published in between. It is bounded: entries not in use are dropped
// past maxPubTopics.
type pubCache struct {
	mu     sync.Mutex
	topics map[string]*pubTopic
}

const maxPubTopics = 10_000

type pubTopic struct {
	topic string
	users int  // publishes holding it; guarded by pubCache.mu
	seen  head // newest message seen on the subscription; guarded by pubCache.mu

	mu    sync.Mutex // serialises this node's publishes to the topic
	known bool
	last  head
}

func (c *pubCache) init() { c.topics = make(map[string]*pubTopic) }

func (c *pubCache) acquire(topic string) *pubTopic {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.topics[topic]
	if p == nil {
		if len(c.topics) >= maxPubTopics {
			for name, q := range c.topics { // map order: a random victim
				if q.users == 0 {
					delete(c.topics, name)
					break
				}
			}
		}
		p = &pubTopic{topic: topic}
		c.topics[topic] = p
	}
	p.users++
	return p
}

func (c *pubCache) release(p *pubTopic) {
	c.mu.Lock()
	p.users--
	c.mu.Unlock()
}

// forget drops what the cache learnt from the subscriptions: after a
// reconnect NATS may hold another stream (with lower sequences).
func (c *pubCache) forget() {
	c.mu.Lock()
	for _, p := range c.topics {
		p.seen = head{}
	}
	c.mu.Unlock()
}

// observe records a stored message seen on the subscription.
func (c *pubCache) observe(topic string, h head) {
	c.mu.Lock()
	if p := c.topics[topic]; p != nil && h.seq > p.seen.seq {
		p.seen = h
	}
	c.mu.Unlock()
}

func (c *pubCache) hint(p *pubTopic) head {
	c.mu.Lock()
	defer c.mu.Unlock()
	return p.seen
}
