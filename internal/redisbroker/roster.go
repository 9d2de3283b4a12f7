package redisbroker

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/relayhq/relay/internal/relay"
)

// roster keeps presence in Redis (relay.Roster): per topic, each user's
// connections on every node, and per node its share, so that a node that
// dies without saying goodbye can be subtracted. Change only counts, in
// memory; one goroutine writes the counts that changed, in one pipelined
// round trip. It writes each count as a value, not as a difference, so
// writing it twice (a retry after a timeout whose writes did land) or
// again after the others removed this node's share changes nothing else.
//
// It is a relay.InfoRoster too: each count is written with the info this
// node's connections of the user joined with (that of the change that made
// the count positive here), which the script keeps in P:pi:{topic} when
// the write makes the user present anywhere and carries in the join; the
// write (or the dead node's clean-up) that takes the user back to none
// deletes it and carries it in the leave.
//
// It is a relay.TopicLister too: the sorted set P:pt holds, with score 0,
// every topic whose presence hash P:p:{topic} exists (some user has a
// connection on some node). The scripts that write the hash keep it:
// every write that leaves a user counted adds the topic (so the set heals
// after an upgrade or a loss of data as soon as counts are written again)
// and every write that deletes the hash's last field removes it, the dead
// node's clean-up included. Topics reads it with ZRANGEBYLEX.
//
// It is a relay.TransitionReporter too: a script that announces a join or
// a leave returns it to the node that ran it, which reports it (see
// its Transitions). Scripts run one at a time in Redis, so of nodes
// racing for one user only the write that takes the user's total across 0
// sees it cross.
type roster struct {
	b *Broker
	// Transitions makes the roster a relay.TransitionReporter: the function
	// set is called, on the roster's writer goroutine (or the heartbeat's,
	// for a dead node's clean-up, or Run's, for this node's own at start and
	// at shutdown), with each transition a script run by this node made:
	//
	//   - a join when this node's write took the user's total across all
	//     nodes from 0, with the info that write stored;
	//   - a leave when its write took the total back to 0, or when its
	//     clean-up of a node (a dead one, or an earlier process of this node
	//     at start, or this node's own share at shutdown) did, with the info
	//     the user joined with.
	//
	// Each script runs atomically in Redis, so of several nodes racing for
	// one user exactly one write crosses 0 and reports it, and a dead node is
	// cleaned up by exactly one script (the first removes it from P:nodes;
	// the others find it gone and do nothing). Writes are absolute counts: a
	// write retried after a timeout whose first attempt landed finds the
	// count it sets already there and reports nothing, and so does a node's
	// rewrite of its share (after a reconnect or being taken for dead) while
	// Redis still holds it. So a transition is never reported twice; it is
	// not reported at all when Redis ran the script but its answer was lost
	// (the retry changes nothing), which the join and leave messages share.
	//
	// When Redis loses its data (a restart without persistence, a flush),
	// the nodes' rewrites of their shares take each user from 0 again and
	// report joins for users that were present all along, without a leave
	// before them: webhooks then see member_added (channel_occupied) twice.
	// When the others removed this node as dead, they reported its users'
	// leaves, and the joins its rewrite reports pair with those.
	relay.Transitions

	mu       sync.Mutex
	counts   map[presenceKey]int      // this node's connections per topic and user
	infos    map[presenceKey]string   // the info the user joined with here, while counted
	dirty    map[presenceKey]struct{} // counts not yet written
	inflight map[string]int           // topics of the batch being written
	wake     chan struct{}
}

// MaxInfoBytes bounds the info ChangeInfo keeps for a user (Pusher's
// user_info, which the caller already limits to 1 KiB): a larger info is
// dropped, with a warning in the log, and the connection counted without
// it (its join and leave carry no Data, Present no Info). Nothing is ever
// truncated.
const MaxInfoBytes = 64 << 10

// write is what apply writes for one key: this node's count and the info
// it joined with ("" for none).
type write struct {
	count int
	info  string
}

type presenceKey struct {
	topic string
	user  relay.UserID
}

func (r *roster) init(b *Broker) {
	r.b = b
	r.counts = make(map[presenceKey]int)
	r.infos = make(map[presenceKey]string)
	r.dirty = make(map[presenceKey]struct{})
	r.inflight = make(map[string]int)
	r.wake = make(chan struct{}, 1)
}

// presenceScript sets one node's count of a user's connections on a topic
// and announces a join (from none anywhere) or a leave (back to none),
// returning {1, info} for a join, {-1, info} for a leave, else 0 and an
// empty string: the node that ran it reports that transition. A write
// that changes nothing (this node's count is already count: a retry of a
// write that did land, or a rewrite of presence Redis still has) returns
// no transition.
// The user's info is kept in the topic's info hash from the join to the
// leave: the join sets it from ARGV[4] (or removes a stale one when
// ARGV[4] is empty), the leave takes it; both carry it as their payload,
// the last field of "kind\noffset\nepoch\nuser\npayload", so any bytes go.
// The topic is in the index of occupied topics while its presence hash
// exists: added by every write that leaves the user counted, removed by
// the write that deletes the hash's last field.
// KEYS topic presence, node presence, topic channel, topic info, topic
// index. ARGV user, count, node field, info ("" for none), topic.
var presenceScript = rueidis.NewLuaScript(`
local count = tonumber(ARGV[2])
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
if count == old then return {0, ''} end
if count > 0 then redis.call('HSET', KEYS[2], ARGV[3], count) else redis.call('HDEL', KEYS[2], ARGV[3]) end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], count - old)
local before = n - (count - old)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[5], ARGV[5]) end
  if before > 0 then
    local info = redis.call('HGET', KEYS[4], ARGV[1]) or ''
    redis.call('HDEL', KEYS[4], ARGV[1])
    redis.call('PUBLISH', KEYS[3], "l\n0\n\n" .. ARGV[1] .. "\n" .. info)
    return {-1, info}
  end
else
  redis.call('ZADD', KEYS[5], 0, ARGV[5])
  if before <= 0 then
    local info = ARGV[4] or ''
    if info ~= '' then redis.call('HSET', KEYS[4], ARGV[1], info) else redis.call('HDEL', KEYS[4], ARGV[1]) end
    redis.call('PUBLISH', KEYS[3], "j\n0\n\n" .. ARGV[1] .. "\n" .. info)
    return {1, info}
  end
end
return {0, ''}
`)

// presentScript reads a topic's presence and its users' infos at once.
// KEYS topic presence, topic info.
var presentScript = rueidis.NewLuaScript(`
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
`)

// Change implements relay.Roster.
func (r *roster) Change(topic string, user relay.UserID, delta int) {
	r.change(topic, user, delta, nil)
}

// ChangeInfo implements relay.InfoRoster. The info counts only when this
// change makes the user's count on this node positive (and is then what
// this node's writes carry); Redis keeps it only when such a write makes
// the user present anywhere. An info over MaxInfoBytes is dropped, with a
// warning.
func (r *roster) ChangeInfo(topic string, user relay.UserID, delta int, info []byte) {
	if len(info) > MaxInfoBytes {
		r.b.log.Warn("presence info over the limit dropped; the connection counts without it",
			"topic", topic, "user", user, "bytes", len(info), "limit", MaxInfoBytes)
		info = nil
	}
	r.change(topic, user, delta, info)
}

func (r *roster) change(topic string, user relay.UserID, delta int, info []byte) {
	r.mu.Lock()
	k := presenceKey{topic, user}
	before := r.counts[k]
	r.counts[k] += delta
	switch {
	case r.counts[k] <= 0:
		delete(r.infos, k)
	case before <= 0 && len(info) > 0:
		r.infos[k] = string(info)
	case before <= 0:
		delete(r.infos, k)
	}
	r.dirty[k] = struct{}{}
	r.mu.Unlock()
	r.wakeUp()
}

// Present implements relay.Roster. It first lets this node's changes to
// topic reach Redis (for at most the command timeout), so that a socket
// that just subscribed finds itself counted.
func (r *roster) Present(ctx context.Context, topic string) ([]relay.Present, error) {
	b := r.b
	r.settle(ctx, topic)
	res, err := b.exec(ctx, presentScript, []string{b.keys.presence(topic), b.keys.info(topic)}, nil).ToArray()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("the presence script answered %d values, want 2", len(res))
	}
	var counts, infos []string
	if err == nil {
		counts, err = res[0].AsStrSlice()
	}
	if err == nil {
		infos, err = res[1].AsStrSlice()
	}
	if err != nil {
		return nil, unavailable("reading presence", err)
	}
	info := make(map[string]string, len(infos)/2)
	for i := 0; i+1 < len(infos); i += 2 {
		info[infos[i]] = infos[i+1]
	}
	out := make([]relay.Present, 0, len(counts)/2)
	for i := 0; i+1 < len(counts); i += 2 {
		u, n := counts[i], counts[i+1]
		user, err1 := strconv.ParseUint(u, 10, 64)
		count, err2 := strconv.Atoi(n)
		if err1 == nil && err2 == nil && count > 0 {
			p := relay.Present{User: relay.UserID(user), Connections: count}
			if s, ok := info[u]; ok && s != "" {
				p.Info = []byte(s)
			}
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b relay.Present) int { return cmp.Compare(a.User, b.User) })
	return out, nil
}

// MaxTopics bounds what one Topics call returns: the first MaxTopics
// occupied topics with the prefix, in byte order; the rest are left out.
const MaxTopics = 10_000

// Topics implements relay.TopicLister: the topics starting with prefix
// whose presence hash exists, sorted by byte, at most MaxTopics of them.
// It is one ZRANGEBYLEX on P:pt, O(log N + returned) in Redis for N
// occupied topics. The prefix is matched byte for byte ('*', '[', '?'
// and '\' are no patterns). It reads what the nodes have written: this
// node's latest changes show once its presence writer wrote them
// (normally within a round trip; longer for a count that waits for its
// topic's subscription).
func (r *roster) Topics(ctx context.Context, prefix string) ([]string, error) {
	return r.topics(ctx, prefix, MaxTopics)
}

func (r *roster) topics(ctx context.Context, prefix string, limit int) ([]string, error) {
	b := r.b
	lo, hi := lexRange(prefix)
	out, err := b.call(ctx, b.client.B().Zrangebylex().Key(b.keys.topics()).Min(lo).Max(hi).Limit(0, int64(limit)).Build()).AsStrSlice()
	if err != nil {
		return nil, unavailable("listing occupied topics", err)
	}
	return out, nil
}

// lexRange returns the ZRANGEBYLEX bounds of the members starting with
// prefix: from prefix itself (inclusive) to the first string after every
// string with the prefix (exclusive): the prefix without its trailing
// 0xff bytes, with its last byte incremented; none ("+") when the prefix
// is all 0xff bytes or empty.
func lexRange(prefix string) (lo, hi string) {
	if prefix == "" {
		return "-", "+"
	}
	end := []byte(prefix)
	for len(end) > 0 && end[len(end)-1] == 0xff {
		end = end[:len(end)-1]
	}
	if len(end) == 0 {
		return "[" + prefix, "+"
	}
	end[len(end)-1]++
	return "[" + prefix, "(" + string(end)
}

// settle waits until no count of this node on topic is waiting to be
// written or being written, or the command timeout passes.
func (r *roster) settle(ctx context.Context, topic string) {
	deadline := time.Now().Add(r.b.cfg.Timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r.mu.Lock()
		busy := r.inflight[topic] > 0
		for k := range r.dirty {
			busy = busy || k.topic == topic
		}
		r.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// run writes changed counts until ctx ends; a batch that fails is marked
// changed again and retried.
func (r *roster) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		}
		for ctx.Err() == nil {
			batch := r.ready()
			if len(batch) == 0 {
				break
			}
			failed := r.apply(ctx, batch)
			r.mu.Lock()
			for k := range batch {
				if r.inflight[k.topic]--; r.inflight[k.topic] <= 0 {
					delete(r.inflight, k.topic)
				}
			}
			for _, k := range failed {
				r.dirty[k] = struct{}{}
			}
			r.mu.Unlock()
			if len(failed) > 0 {
				r.b.log.Warn("updating presence in Redis failed; retrying", "failed", len(failed))
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}
}

// ready takes the changed counts that can be written now, with their
// values and infos. A user's arrival on a topic this node watches waits
// until its subscription to the topic is in place: its own join,
// published by Redis, must reach it. On a topic it does not watch (the
// Pusher layer counts channels' occupancy on topics nobody subscribes to)
// there is nothing to wait for. A count back at 0 is written and
// forgotten.
func (r *roster) ready() map[presenceKey]write {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := make(map[presenceKey]write)
	for k := range r.dirty {
		n := r.counts[k]
		if n > 0 && r.b.sub.syncing(k.topic) {
			continue
		}
		batch[k] = write{count: max(n, 0), info: r.infos[k]}
		delete(r.dirty, k)
		if n <= 0 {
			delete(r.counts, k)
			delete(r.infos, k)
		}
		r.inflight[k.topic]++
	}
	return batch
}

// wakeUp has run look at the changed counts.
func (r *roster) wakeUp() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// apply writes batch in one pipeline and returns the keys whose write
// failed.
func (r *roster) apply(ctx context.Context, batch map[presenceKey]write) []presenceKey {
	b := r.b
	keys := make([]presenceKey, 0, len(batch))
	execs := make([]rueidis.LuaExec, 0, len(batch))
	for k, w := range batch {
		keys = append(keys, k)
		execs = append(execs, rueidis.LuaExec{
			Keys: []string{b.keys.presence(k.topic), b.keys.nodePresence(b.cfg.NodeID), b.keys.channel(k.topic), b.keys.info(k.topic), b.keys.topics()},
			Args: []string{k.user.String(), strconv.Itoa(w.count), presenceField(k), w.info, k.topic},
		})
	}
	// Not cut short by the node stopping: a write that lands must have
	// its transition reported (the clean-up at shutdown finds nothing
	// left to remove, so no one else would report it).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.Timeout)
	defer cancel()
	var failed []presenceKey
	for i, res := range presenceScript.ExecMulti(ctx, b.client, execs...) {
		if res.Error() != nil {
			failed = append(failed, keys[i])
			continue
		}
		if t, ok := transition(res, keys[i]); ok {
			r.Report(t)
		} else if t.Topic == "" {
			b.log.Warn("the presence script answered something unexpected; its transition is not reported", "topic", keys[i].topic, "user", keys[i].user)
		}
	}
	return failed
}

// transition reads the presence script's answer for k: the transition
// its write made (ok), none (ok false, Topic set), or an unexpected answer
// (ok false, zero Transition).
func transition(res rueidis.RedisResult, k presenceKey) (t relay.Transition, ok bool) {
	arr, err := res.ToArray()
	if err != nil || len(arr) != 2 {
		return relay.Transition{}, false
	}
	kind, err1 := arr[0].AsInt64()
	info, err2 := arr[1].ToString()
	if err1 != nil || err2 != nil {
		return relay.Transition{}, false
	}
	t = relay.Transition{Topic: k.topic, User: k.user, Joined: kind > 0}
	if info != "" {
		t.Info = []byte(info)
	}
	return t, kind != 0
}

func presenceField(k presenceKey) string { return k.topic + "\n" + k.user.String() }

// reassert writes this node's whole share again, after other nodes
// removed it (they took this node for dead) or Redis lost it.
func (r *roster) reassert() {
	r.mu.Lock()
	for k := range r.counts {
		r.dirty[k] = struct{}{}
	}
	r.mu.Unlock()
	r.wakeUp()
}

// cleanupScript removes a node: its share of presence (announcing the
// leaves, each with the info its user joined with, which goes too), its
// hold on registrations (which then expire after the grace) and its
// heartbeat; a topic whose presence hash it empties leaves the index of
// occupied topics. With a cutoff it does nothing unless the node's last
// heartbeat is older. It returns the leaves it announced, for the node
// that ran it to report: {topic, user, info, topic, user, info, …}.
// KEYS nodes, node presence, node registrations, topic index. ARGV node,
// cutoff ms ("" for none), presence prefix, channel prefix, registration
// prefix, grace ms, info prefix.
var cleanupScript = rueidis.NewLuaScript(`
if ARGV[2] ~= "" then
  local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not last or tonumber(last) >= tonumber(ARGV[2]) then return {} end
end
local leaves = {}
redis.call('ZREM', KEYS[1], ARGV[1])
local share = redis.call('HGETALL', KEYS[2])
for i = 1, #share, 2 do
  local nl = string.find(share[i], "\n", 1, true)
  local topic, user = string.sub(share[i], 1, nl - 1), string.sub(share[i], nl + 1)
  local key = ARGV[3] .. topic
  local n = redis.call('HINCRBY', key, user, -tonumber(share[i + 1]))
  if n <= 0 then
    redis.call('HDEL', key, user)
    if redis.call('EXISTS', key) == 0 then redis.call('ZREM', KEYS[4], topic) end
    local ikey = ARGV[7] .. topic
    local info = redis.call('HGET', ikey, user) or ''
    redis.call('HDEL', ikey, user)
    redis.call('PUBLISH', ARGV[4] .. topic, "l\n0\n\n" .. user .. "\n" .. info)
    leaves[#leaves + 1] = topic
    leaves[#leaves + 1] = user
    leaves[#leaves + 1] = info
  end
end
redis.call('DEL', KEYS[2])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local reg = ARGV[5] .. id
  if redis.call('HGET', reg, 'n') == ARGV[1] then
    redis.call('HDEL', reg, 'n', 'k')
    redis.call('PEXPIRE', reg, ARGV[6])
  end
end
redis.call('DEL', KEYS[3])
return leaves
`)

// cleanup removes node's share: at once when force (this node leaving),
// else only if its last heartbeat is older than the node TTL. It reports
// the leaves that causes (relay.TransitionReporter).
func (b *Broker) cleanup(ctx context.Context, node string, force bool) error {
	cutoff := ""
	if !force {
		cutoff = strconv.FormatInt(time.Now().Add(-b.cfg.NodeTTL).UnixMilli(), 10)
	}
	grace := max(b.cfg.ReconnectGrace.Milliseconds(), 1)
	res := b.exec(ctx, cleanupScript, []string{b.keys.nodes(), b.keys.nodePresence(node), b.keys.nodeRegs(node), b.keys.topics()},
		[]string{node, cutoff, b.keys.presence(""), b.keys.channel(""), b.keys.reg(""), strconv.FormatInt(grace, 10), b.keys.info("")})
	if err := res.Error(); err != nil {
		return err
	}
	leaves, err := res.AsStrSlice()
	if err != nil || len(leaves)%3 != 0 {
		b.log.Warn("the clean-up script answered something unexpected; the leaves it made are not reported", "node", node, "err", err)
		return nil
	}
	for i := 0; i+2 < len(leaves); i += 3 {
		user, err := strconv.ParseUint(leaves[i+1], 10, 64)
		if err != nil {
			continue
		}
		t := relay.Transition{Topic: leaves[i], User: relay.UserID(user)}
		if leaves[i+2] != "" {
			t.Info = []byte(leaves[i+2])
		}
		b.roster.Report(t)
	}
	return nil
}

// heartbeat says every Heartbeat that this node is alive, sends its own
// pub/sub heartbeat, removes nodes that stopped, and checks the heads of
// the watched topics so that lost last messages are repaired.
func (b *Broker) heartbeat(ctx context.Context) error {
	tick := time.NewTicker(b.cfg.Heartbeat)
	defer tick.Stop()
	for {
		b.beat(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (b *Broker) beat(ctx context.Context) {
	now := time.Now()
	cmds := rueidis.Commands{
		b.client.B().Zadd().Key(b.keys.nodes()).ScoreMember().ScoreMember(float64(now.UnixMilli()), b.cfg.NodeID).Build(),
		b.client.B().Publish().Channel(b.keys.nodeChannel(b.cfg.NodeID)).Message("h").Build(),
		b.client.B().Zrangebyscore().Key(b.keys.nodes()).Min("-inf").Max(strconv.FormatInt(now.Add(-b.cfg.NodeTTL).UnixMilli(), 10)).Build(),
	}
	cctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	res := b.client.DoMulti(cctx, cmds...)
	cancel()
	for _, r := range res {
		if err := r.Error(); err != nil {
			if ctx.Err() == nil {
				b.setDown(err.Error())
			}
			return
		}
	}
	if b.sub.healthy.Load() {
		b.setUp()
	}
	first := b.beats.Add(1) == 1
	if added, _ := res[0].AsInt64(); added == 1 && !first {
		// This node was removed as dead (or Redis lost its data) while
		// its sockets lived on: claim them again.
		b.log.Warn("this node was taken for dead by the others (or Redis lost its data); claiming its registrations and presence again")
		b.bg.Go(func() { b.reg.reassert(ctx) })
		b.roster.reassert()
	}
	dead, _ := res[2].AsStrSlice()
	for _, node := range dead {
		if node == b.cfg.NodeID {
			continue
		}
		if err := b.cleanup(ctx, node, false); err != nil {
			b.log.Warn("removing a dead node's presence failed", "dead_node", node, "err", err)
		} else {
			b.log.Info("removed a node that stopped sending heartbeats", "dead_node", node)
		}
	}
	b.checkHeads(ctx)
}

// checkHeads compares every watched topic's head with what the node fanned
// out, in batches of one round trip each.
func (b *Broker) checkHeads(ctx context.Context) {
	topics := b.seq.Tracked()
	now, next := time.Now(), map[string]time.Time{}
	defer func() { b.refreshed = next }() // only topics still fresh and watched
	for len(topics) > 0 {
		n := min(len(topics), 1000)
		heads, err := b.heads(ctx, topics[:n])
		if err != nil {
			return
		}
		var fresh rueidis.Commands
		var refreshing []string
		for i, t := range topics[:n] {
			b.seq.Check(t, heads[i])
			if heads[i].Offset == 0 && heads[i].Epoch != "" {
				if at, ok := b.refreshed[t]; ok && now.Sub(at) < b.freshRefresh() {
					next[t] = at
					continue
				}
				next[t] = now
				refreshing = append(refreshing, t)
				fresh = append(fresh, b.refreshFresh(t)...)
			}
		}
		if len(fresh) > 0 {
			rctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
			res := b.client.DoMulti(rctx, fresh...)
			cancel()
			for _, r := range res {
				if r.Error() != nil {
					for _, t := range refreshing {
						delete(next, t) // retried next beat
					}
					return // the next heartbeat must not wait for more
				}
			}
		}
		topics = topics[n:]
	}
}

// freshRefresh is how often a watched fresh topic's head is refreshed.
func (b *Broker) freshRefresh() time.Duration { return b.cfg.FreshTTL / 4 }

// refreshFresh keeps the epoch handed out for a watched topic nobody
// published to yet: its subscribers were told it, and the first message
// must carry it, however long that takes. Its entry in the set of fresh
// heads is scored by when its TTL now ends, in the future, which the
// bound on fresh heads spares. Neither command touches a head that a
// publish made meanwhile (GT never shortens its TTL nor lowers a score,
// XX adds no entry).
func (b *Broker) refreshFresh(topic string) rueidis.Commands {
	return rueidis.Commands{
		b.client.B().Pexpire().Key(b.keys.head(topic)).Milliseconds(b.cfg.FreshTTL.Milliseconds()).Gt().Build(),
		b.client.B().Zadd().Key(b.keys.fresh()).Xx().Gt().ScoreMember().ScoreMember(float64(time.Now().Add(b.cfg.FreshTTL).UnixMilli()), topic).Build(),
	}
}
