package redisbroker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/relayhq/relay/internal/relay"
)

// publishScript publishes one message in one round trip.
//
// KEYS: head, history, channel, idempotency key (the key "" part: unused
// when ARGV[7] is ""), the set of fresh heads.
// ARGV: payload, history size, history TTL ms, stream idle ms, a new
// epoch (used when the topic has none), user ("" for everyone), the
// idempotency key's TTL ms ("" for none), now ms, topic.
//
// It returns {offset, epoch, duplicate}. A message to one user is only
// published: it has no offset and no history.
var publishScript = rueidis.NewLuaScript(`
local head, hist, chan, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local size, histTTL, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[7] ~= "" then
  local prev = redis.call('GET', idem)
  if prev then
    local sp = string.find(prev, " ", 1, true)
    return {string.sub(prev, 1, sp - 1), string.sub(prev, sp + 1), 1}
  end
end
if ARGV[6] ~= "" then
  redis.call('PUBLISH', chan, "p\n0\n\n" .. ARGV[6] .. "\n" .. ARGV[1])
  if ARGV[7] ~= "" then redis.call('SET', idem, "0 ", 'PX', ARGV[7]) end
  return {"0", "", 0}
end
local epoch = redis.call('HGET', head, 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', head, 'e', epoch)
end
local offset = redis.call('HINCRBY', head, 'o', 1)
if offset == 1 then
  redis.call('DEL', hist)
  redis.call('ZREM', KEYS[5], ARGV[9])
end
if size > 0 then
  redis.call('XADD', hist, 'MAXLEN', size, offset .. '-0', 'd', ARGV[1], 't', ARGV[8])
  redis.call('PEXPIRE', hist, histTTL)
else
  redis.call('DEL', hist)
end
redis.call('PEXPIRE', head, math.max(idle, histTTL))
redis.call('PUBLISH', chan, "p\n" .. offset .. "\n" .. epoch .. "\n\n" .. ARGV[1])
if ARGV[7] ~= "" then redis.call('SET', idem, offset .. " " .. epoch, 'PX', ARGV[7]) end
return {tostring(offset), epoch, 0}
`)

// readScript reads a topic's head and the history after an offset.
//
// KEYS: head, history, the set of fresh heads. ARGV: since ("" for the
// head only), limit (0: all), a new epoch, the fresh epoch's TTL ms, now
// ms, topic, the head keys' prefix, the most fresh heads kept.
//
// A topic without a head gets a fresh one, holding only the epoch its
// first message will carry, for the fresh TTL: the same answer on every
// node, and no lasting state. Fresh heads are also listed in a sorted set,
// scored by when they were last read, or, for the topics nodes watch, by
// when their refreshed TTL ends (in the future), so that their number is
// bounded: past the bound the least recently read head that no node
// watches is forgotten, and when every one is watched the new head is not
// kept. Either way a reader told a forgotten epoch sees a new epoch with
// the first message, a gap, never a loss. Entries whose head expired are
// trimmed as new ones come. It returns {epoch, offset, entries}.
var readScript = rueidis.NewLuaScript(`
local head, hist, fresh = KEYS[1], KEYS[2], KEYS[3]
local ttl, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local epoch = redis.call('HGET', head, 'e')
if not epoch then
  redis.call('HSET', head, 'e', ARGV[3])
  redis.call('PEXPIRE', head, ttl)
  redis.call('ZREMRANGEBYSCORE', fresh, '-inf', now - ttl)
  redis.call('ZADD', fresh, now, ARGV[6])
  if redis.call('ZCARD', fresh) > tonumber(ARGV[8]) then
    local old = redis.call('ZRANGE', fresh, 0, 0, 'WITHSCORES')
    if old[1] ~= ARGV[6] and tonumber(old[2]) <= now then
      redis.call('ZREM', fresh, old[1])
      local h = ARGV[7] .. old[1]
      if redis.call('HEXISTS', h, 'o') == 0 then redis.call('DEL', h) end
    else
      redis.call('ZREM', fresh, ARGV[6])
      redis.call('DEL', head)
    end
  end
  return {ARGV[3], 0, {}}
end
local offset = tonumber(redis.call('HGET', head, 'o') or '0')
if offset == 0 then
  redis.call('PEXPIRE', head, ttl, 'GT')
  redis.call('ZADD', fresh, 'XX', 'GT', now, ARGV[6])
end
if ARGV[1] == "" or tonumber(ARGV[1]) >= offset then return {epoch, offset, {}} end
local entries
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', hist, (ARGV[1] + 1) .. '-0', '+', 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', hist, (ARGV[1] + 1) .. '-0', '+')
end
return {epoch, offset, entries}
`)

// rule returns the history rule for topic: the longest matching prefix.
func (b *Broker) rule(topic string) relay.HistoryRule {
	best, found := relay.DefaultHistory, false
	for _, r := range b.cfg.History {
		if strings.HasPrefix(topic, r.Prefix) && (!found || len(r.Prefix) > len(best.Prefix)) {
			best, found = r, true
		}
	}
	return best
}

// Publish implements relay.Broker: one script run, then this node's own
// subscribers get the message at once through the sequencer (the copy
// that comes back over pub/sub is dropped as a repeat).
//
// A publish needs only the command connection: while the pub/sub
// connection is being replaced, publishes go on, and what the node misses
// meanwhile is repaired from history once it is back.
func (b *Broker) Publish(ctx context.Context, m *relay.Message, opts relay.PublishOptions) (relay.Receipt, error) {
	if opts.Transient {
		return b.publishTransient(ctx, m)
	}
	r := b.rule(m.Topic)
	user, idemKey, idemTTL := "", b.keys.idem(""), ""
	if m.HasUser {
		user = m.User.String()
	}
	if opts.IdempotencyKey != "" {
		audience := "*"
		if m.HasUser {
			audience = user
		}
		sum := sha256.Sum256([]byte(m.Topic + "\x00" + audience + "\x00" + opts.IdempotencyKey))
		idemKey = b.keys.idem(hex.EncodeToString(sum[:]))
		idemTTL = strconv.FormatInt(b.cfg.IdempotencyWindow.Milliseconds(), 10)
	}
	res, err := b.exec(ctx, publishScript,
		[]string{b.keys.head(m.Topic), b.keys.history(m.Topic), b.keys.channel(m.Topic), idemKey, b.keys.fresh()},
		[]string{string(m.Data), strconv.Itoa(r.Size), strconv.FormatInt(r.TTL.Milliseconds(), 10),
			strconv.FormatInt(b.cfg.StreamIdle.Milliseconds(), 10), relay.NewEpoch(), user, idemTTL,
			strconv.FormatInt(time.Now().UnixMilli(), 10), m.Topic}).ToArray()
	if err != nil {
		return relay.Receipt{}, unavailable("publishing", err)
	}
	if len(res) != 3 {
		return relay.Receipt{}, fmt.Errorf("publishing: unexpected answer from Redis: %w", relay.ErrUnavailable)
	}
	offStr, _ := res[0].ToString()
	epoch, _ := res[1].ToString()
	dup, _ := res[2].AsInt64()
	offset, _ := strconv.ParseUint(offStr, 10, 64)
	rc := relay.Receipt{Position: relay.Position{Offset: offset, Epoch: epoch}, Duplicate: dup == 1}
	if !rc.Duplicate && offset > 0 {
		m.Offset, m.Epoch = offset, epoch
		rc.Delivered = b.seq.Offer(m)
	}
	return rc, nil
}

// publishTransient publishes m outside its topic's stream: one PUBLISH of
// an offset-0 message, which every node (this one included, through its
// pub/sub connection) hands to its subscribers as it would a message to
// one user. Nodes that predate transient publishes read it the same way.
func (b *Broker) publishTransient(ctx context.Context, m *relay.Message) (relay.Receipt, error) {
	user := ""
	if m.HasUser {
		user = m.User.String()
	}
	err := b.call(ctx, b.client.B().Publish().Channel(b.keys.channel(m.Topic)).Message("p\n0\n\n"+user+"\n"+string(m.Data)).Build()).Error()
	if err != nil {
		return relay.Receipt{}, unavailable("publishing", err)
	}
	return relay.Receipt{}, nil
}

// History implements relay.HistoryReader.
func (b *Broker) History(ctx context.Context, topic string, since uint64, limit int) (relay.HistoryPage, error) {
	sinceArg := strconv.FormatUint(since, 10)
	if since == ^uint64(0) {
		sinceArg = "" // the head only
	}
	res, err := b.exec(ctx, readScript, []string{b.keys.head(topic), b.keys.history(topic), b.keys.fresh()},
		[]string{sinceArg, strconv.Itoa(max(limit, 0)), relay.NewEpoch(), strconv.FormatInt(b.cfg.FreshTTL.Milliseconds(), 10),
			strconv.FormatInt(time.Now().UnixMilli(), 10), topic, b.keys.head(""), strconv.Itoa(b.cfg.FreshMax)}).ToArray()
	if err != nil {
		return relay.HistoryPage{}, unavailable("reading history", err)
	}
	if len(res) != 3 {
		return relay.HistoryPage{}, fmt.Errorf("reading history: unexpected answer from Redis: %w", relay.ErrUnavailable)
	}
	epoch, _ := res[0].ToString()
	offset, _ := res[1].AsInt64()
	entries, _ := res[2].ToArray()
	p := relay.HistoryPage{Latest: relay.Position{Offset: uint64(offset), Epoch: epoch}}
	if since > p.Latest.Offset {
		return p, nil // from the future, or the head only
	}
	ttl := b.rule(topic).TTL
	oldest := time.Now().Add(-ttl).UnixMilli()
	for _, e := range entries {
		m, at, ok := decodeEntry(topic, epoch, e)
		if !ok || at < oldest {
			continue // expired: the stream keeps it until the next publish trims it
		}
		p.Messages = append(p.Messages, m)
	}
	p.Complete = since == p.Latest.Offset || (len(p.Messages) > 0 && p.Messages[0].Offset == since+1)
	return p, nil
}

// decodeEntry turns a history stream entry into a message and its time.
func decodeEntry(topic, epoch string, e rueidis.RedisMessage) (*relay.Message, int64, bool) {
	kv, err := e.ToArray()
	if err != nil || len(kv) != 2 {
		return nil, 0, false
	}
	id, _ := kv[0].ToString()
	dash := strings.IndexByte(id, '-')
	if dash < 0 {
		return nil, 0, false
	}
	offset, err := strconv.ParseUint(id[:dash], 10, 64)
	if err != nil {
		return nil, 0, false
	}
	fields, _ := kv[1].AsStrSlice()
	m := &relay.Message{Topic: topic, Offset: offset, Epoch: epoch}
	var at int64
	for i := 0; i+1 < len(fields); i += 2 {
		switch fields[i] {
		case "d":
			m.Data = []byte(fields[i+1])
		case "t":
			at, _ = strconv.ParseInt(fields[i+1], 10, 64)
		}
	}
	return m, at, true
}
