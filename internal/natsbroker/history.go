package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relayhq/relay/internal/relay"
)

// Values of the fresh-epoch bucket.
const (
	freshOffered = "f:" // the epoch readers were told; the first publish takes it
	freshTaken   = "t:" // a first publish is storing it (or failed): never reuse it
)

// head reads the newest message of topic from the stream; false when the
// topic has none (never published, or every message aged out).
func (b *Broker) headMsg(ctx context.Context, inf *infra, topic string) (stored, bool, error) {
	i := b.historyOf(topic)
	raw, err := inf.hist[i].GetLastMsgForSubject(ctx, b.hists[i].subj+"."+token(topic))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return stored{}, false, nil
	}
	if err != nil {
		return stored{}, false, err
	}
	s, err := decodeStored(topic, raw)
	return s, err == nil, err
}

func (b *Broker) head(ctx context.Context, inf *infra, topic string) (head, bool, error) {
	s, ok, err := b.headMsg(ctx, inf, topic)
	if !ok {
		return head{}, false, err
	}
	return head{seq: s.seq, pos: s.pos()}, true, nil
}

// latest returns topic's position: its newest message's, or offset 0 and
// the epoch its first message will carry (extending that entry's life
// when refresh is set, as for a watched topic).
func (b *Broker) latest(ctx context.Context, inf *infra, topic string, refresh bool) (relay.Position, error) {
	h, ok, err := b.head(ctx, inf, topic)
	if err != nil || ok {
		return h.pos, err
	}
	epoch, err := b.freshEpoch(ctx, inf, topic, refresh)
	if err != nil {
		return relay.Position{}, err
	}
	// A first publish may have landed between the two reads; the fresh
	// entry is read first on the way in and deleted last on the way out,
	// so looking at the stream again sees it.
	h, ok, err = b.head(ctx, inf, topic)
	if err != nil || ok {
		return h.pos, err
	}
	return relay.Position{Epoch: epoch}, nil
}

// History implements relay.HistoryReader. It walks back from the topic's
// newest message along the stream sequences each message records of its
// predecessor (the Nats-Expected-Last-Subject-Sequence it was stored
// with), so it reads only the messages it returns plus the newest. A topic
// without a stream answers offset 0 and the epoch its first message will
// carry, kept in a bucket entry that expires (FreshTTL).
func (b *Broker) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	_, inf, err := b.use()
	if err != nil {
		return relay.HistoryPage{}, err
	}
	last, ok, err := b.headMsg(ctx, inf, topic)
	if err != nil {
		return relay.HistoryPage{}, unavailable("reading history", err)
	}
	if !ok {
		pos, err := b.latest(ctx, inf, topic, false)
		if err != nil {
			return relay.HistoryPage{}, unavailable("reading history", err)
		}
		if pos.Offset == 0 {
			return relay.HistoryPage{Latest: pos, Complete: since == 0}, nil
		}
		if last, ok, err = b.headMsg(ctx, inf, topic); err != nil || !ok {
			return relay.HistoryPage{}, unavailable("reading history", fmt.Errorf("the newest message of %q changed while reading (%v)", topic, err))
		}
	}
	p := relay.HistoryPage{Latest: last.pos()}
	if since > last.msg.Offset { // from the future: not this stream's history
		return p, nil
	}
	i := b.historyOf(topic)
	size := b.hists[i].rule.Size
	// The stream keeps messages for the longer of the rule's TTL and
	// StreamIdle (the newest holds the topic's offset and epoch); history
	// is what is younger than the TTL.
	cutoff := time.Now().Add(-b.hists[i].rule.TTL)
	if size == 0 || last.at.Before(cutoff) { // the newest message is kept for its offset only
		p.Complete = since == last.msg.Offset
		return p, nil
	}
	var msgs []*relay.Message
	for cur, steps := last, 1; cur.msg.Offset > since && steps <= size; steps++ {
		msgs = append(msgs, cur.msg)
		if cur.prev == 0 || cur.msg.Offset == since+1 {
			break
		}
		raw, err := inf.hist[i].GetMsg(ctx, cur.prev)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // trimmed: history starts after it
		}
		if err != nil {
			return relay.HistoryPage{}, unavailable("reading history", err)
		}
		next, err := decodeStored(topic, raw)
		if err != nil || next.msg.Epoch != cur.msg.Epoch || next.msg.Offset+1 != cur.msg.Offset {
			break // not this stream's predecessor (the stream was recreated)
		}
		if next.at.Before(cutoff) {
			break // older than the rule's TTL: no longer history
		}
		cur = next
	}
	slices.Reverse(msgs)
	p.Complete = len(msgs) == 0 && since == last.msg.Offset || len(msgs) > 0 && msgs[0].Offset == since+1
	if limit > 0 && len(msgs) > limit {
		msgs = msgs[:limit]
	}
	p.Messages = msgs
	return p, nil
}

// freshEpoch returns the epoch topic's first message will carry, creating
// the bucket entry if there is none. With refresh, an offered entry older
// than half its life is written again, so it lives on while watched.
func (b *Broker) freshEpoch(ctx context.Context, inf *infra, topic string, refresh bool) (string, error) {
	key := token(topic)
	for try := range freshTries {
		if err := contended(ctx, try); err != nil {
			return "", err
		}
		e, err := inf.fresh.Get(ctx, key)
		if err == nil {
			state, epoch := parseFresh(e.Value())
			if refresh && state == freshOffered && time.Since(e.Created()) > b.cfg.FreshTTL/2 {
				inf.fresh.Update(ctx, key, e.Value(), e.Revision()) // a conflict means someone else wrote it
			}
			return epoch, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return "", err
		}
		epoch := newEpoch()
		_, err = inf.fresh.Create(ctx, key, []byte(freshOffered+epoch))
		switch {
		case err == nil:
			return epoch, nil
		case errors.Is(err, jetstream.ErrKeyExists):
			continue // another node created it: read theirs
		case isFull(err):
			return epoch, nil // not remembered: a subscriber sees a new epoch later
		default:
			return "", err
		}
	}
	return "", fmt.Errorf("the fresh epoch of %q keeps changing", topic)
}

// takeFresh marks topic's offered epoch taken by a first publish and
// returns it with the entry's revision (0 when none could be kept). An
// entry already taken (by a publish that is storing it, or that failed)
// is never reused: the publish takes a new epoch.
func (b *Broker) takeFresh(ctx context.Context, inf *infra, topic string) (string, uint64, error) {
	key := token(topic)
	for try := range freshTries {
		if err := contended(ctx, try); err != nil {
			return "", 0, err
		}
		e, err := inf.fresh.Get(ctx, key)
		var rev uint64
		epoch := newEpoch()
		switch {
		case err == nil:
			if state, offered := parseFresh(e.Value()); state == freshOffered {
				epoch = offered
			}
			rev, err = inf.fresh.Update(ctx, key, []byte(freshTaken+epoch), e.Revision())
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev, err = inf.fresh.Create(ctx, key, []byte(freshTaken+epoch))
		}
		switch {
		case err == nil:
			return epoch, rev, nil
		case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue
		case isFull(err):
			return newEpoch(), 0, nil
		default:
			return "", 0, err
		}
	}
	return "", 0, fmt.Errorf("the fresh epoch of %q keeps changing", topic)
}

// freshTries bounds the compare-and-set rounds on a fresh-epoch entry. Every
// node's first publishes (and subscribes) on a new topic race on the one
// entry, and a round fails when another wrote between its read and its
// write, so a few racers on a loaded machine can lose several rounds in a
// row; contended spaces the rounds out.
const freshTries = 12

// contended waits before round try of a compare-and-set (not before the
// first): a random time up to 1 ms << try, at most 64 ms, so racers that
// collided spread out.
func contended(ctx context.Context, try int) error {
	if try == 0 {
		return nil
	}
	t := time.NewTimer(rand.N(time.Millisecond << min(try, 6)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func parseFresh(v []byte) (state, epoch string) {
	s := string(v)
	if len(s) < 2 {
		return "", s
	}
	return s[:2], s[2:]
}

// isFull reports whether a write failed because the bucket is full.
func isFull(err error) bool {
	return err != nil && strings.Contains(err.Error(), "maximum bytes")
}

// remove deletes key from bucket if its revision is still rev, leaving no
// tombstone: JetStream purges the key's subject up to rev, which removes
// the entry only if nothing newer was written (every bucket keeps one
// revision per key). It reports whether the entry was removed.
func (b *Broker) remove(ctx context.Context, bucket, key string, rev uint64) (bool, error) {
	c := b.conn.Load()
	if c == nil {
		return false, errors.New("not running")
	}
	req, err := json.Marshal(struct {
		Filter string `json:"filter"`
		Seq    uint64 `json:"seq"`
	}{"$KV." + bucket + "." + key, rev + 1})
	if err != nil {
		return false, err
	}
	resp, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE.KV_"+bucket, req)
	if err != nil {
		return false, err
	}
	var r struct {
		Purged uint64              `json:"purged"`
		Error  *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return false, err
	}
	if r.Error != nil {
		return false, r.Error
	}
	return r.Purged > 0, nil
}
