package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/relayhq/relay/internal/relay"
)

// registry keeps registrations in Redis (relay.Registry). A registration
// is a hash with a TTL while no socket holds it; the node holding it
// records the socket, so that a late release of an older socket changes
// nothing, and lists it in its own set, so that the node's death releases
// it.
type registry struct {
	b *Broker

	mu         sync.Mutex
	held       map[relay.ClientID]holding // the registrations this node holds
	reclaiming atomic.Bool                // reassert is running
}

func (r *registry) init(b *Broker) {
	r.b = b
	r.held = make(map[relay.ClientID]holding)
}

// attachScript: KEYS registration, this node's set. ARGV node, socket,
// node channel prefix, this node's set prefix. Returns {user, topics} or
// nil when there is no registration; the previous holder, if another
// node, is told to close its socket.
var attachScript = rueidis.NewLuaScript(`
local reg = KEYS[1]
local f = redis.call('HMGET', reg, 'u', 't', 'n', 'k')
if not f[1] then return false end
if f[3] and f[3] ~= ARGV[1] then
  redis.call('PUBLISH', ARGV[3] .. f[3], "k\n" .. ARGV[5] .. "\n" .. (f[4] or "") .. "\nreplaced")
  redis.call('SREM', ARGV[4] .. f[3], ARGV[5])
end
redis.call('HSET', reg, 'n', ARGV[1], 'k', ARGV[2])
local claim = redis.call('HINCRBY', reg, 'g', 1)
redis.call('PERSIST', reg)
redis.call('SADD', KEYS[2], ARGV[5])
return {f[1], f[2] or "", tostring(claim)}
`)

// detachScript: KEYS registration, this node's set. ARGV socket, topics,
// grace ms (negative: forget), id. Does nothing unless socket holds it.
var detachScript = rueidis.NewLuaScript(`
local reg = KEYS[1]
if redis.call('HGET', reg, 'k') ~= ARGV[1] then return 0 end
redis.call('SREM', KEYS[2], ARGV[4])
if tonumber(ARGV[3]) < 0 then
  redis.call('DEL', reg)
  return 1
end
redis.call('HDEL', reg, 'n', 'k')
redis.call('HSET', reg, 't', ARGV[2])
redis.call('PEXPIRE', reg, ARGV[3])
return 1
`)

// unregisterScript: KEYS registration. ARGV node channel prefix, node set
// prefix, id, this node. Returns nil when there is no registration, else
// {node, socket} of the holder ("" when none). Another node is told to
// close the socket; this node does it itself.
var unregisterScript = rueidis.NewLuaScript(`
local f = redis.call('HMGET', KEYS[1], 'u', 'n', 'k')
if not f[1] then return false end
redis.call('DEL', KEYS[1])
if f[2] then
  redis.call('SREM', ARGV[2] .. f[2], ARGV[3])
  if f[2] ~= ARGV[4] then
    redis.call('PUBLISH', ARGV[1] .. f[2], "k\n" .. ARGV[3] .. "\n" .. (f[3] or "") .. "\nunregistered")
  end
end
return {f[2] or "", f[3] or ""}
`)

// holding is a registration held by a socket on this node.
type holding struct {
	socket string
	user   relay.UserID
}

func joinTopics(topics []string) string { return strings.Join(topics, "\n") }

func splitTopics(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, "\n")
}

func notFound(id relay.ClientID) error {
	return fmt.Errorf("no registration with id %q: %w", id, relay.ErrNotFound)
}

// Register implements relay.Registry.
func (r *registry) Register(ctx context.Context, id relay.ClientID, reg relay.Registration, ttl time.Duration) error {
	b := r.b
	key := b.keys.reg(id)
	cmds := rueidis.Commands{
		b.client.B().Hset().Key(key).FieldValue().FieldValue("u", reg.User.String()).FieldValue("t", joinTopics(reg.Topics)).Build(),
		b.client.B().Pexpire().Key(key).Milliseconds(ttl.Milliseconds()).Build(),
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	for _, res := range b.client.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			return unavailable("storing the registration", err)
		}
	}
	return nil
}

// Lookup implements relay.Registry.
func (r *registry) Lookup(ctx context.Context, id relay.ClientID) (relay.Registration, error) {
	b := r.b
	vals, err := b.call(ctx, b.client.B().Hmget().Key(b.keys.reg(id)).Field("u", "t").Build()).ToArray()
	if err != nil {
		return relay.Registration{}, unavailable("looking up the registration", err)
	}
	return decodeRegistration(id, vals)
}

func decodeRegistration(id relay.ClientID, vals []rueidis.RedisMessage) (relay.Registration, error) {
	if len(vals) != 2 || vals[0].IsNil() {
		return relay.Registration{}, notFound(id)
	}
	u, _ := vals[0].ToString()
	user, err := strconv.ParseUint(u, 10, 64)
	if err != nil {
		return relay.Registration{}, notFound(id)
	}
	t, _ := vals[1].ToString()
	return relay.Registration{User: relay.UserID(user), Topics: splitTopics(t)}, nil
}

// Attach implements relay.Registry.
func (r *registry) Attach(ctx context.Context, id relay.ClientID, socket string) (relay.Registration, error) {
	b := r.b
	res := b.exec(ctx, attachScript, []string{b.keys.reg(id), b.keys.nodeRegs(b.cfg.NodeID)},
		[]string{b.cfg.NodeID, socket, b.keys.nodeChannel(""), b.keys.nodeRegs(""), string(id)})
	if res.Error() != nil && rueidis.IsRedisNil(res.Error()) {
		return relay.Registration{}, notFound(id)
	}
	vals, err := res.ToArray()
	if err != nil {
		return relay.Registration{}, unavailable("claiming the registration", err)
	}
	reg, err := decodeRegistration(id, vals[:min(len(vals), 2)])
	if len(vals) == 3 {
		c, _ := vals[2].ToString()
		reg.Claim, _ = strconv.ParseUint(c, 10, 64)
	}
	if err == nil {
		r.mu.Lock()
		r.held[id] = holding{socket, reg.User}
		r.mu.Unlock()
	}
	return reg, err
}

// Detach implements relay.Registry.
func (r *registry) Detach(ctx context.Context, id relay.ClientID, socket string, topics []string, grace time.Duration) error {
	b := r.b
	r.mu.Lock()
	if r.held[id].socket == socket {
		delete(r.held, id)
	}
	r.mu.Unlock()
	ms := grace.Milliseconds()
	if grace < 0 {
		ms = -1
	} else if ms == 0 {
		ms = 1
	}
	err := b.exec(ctx, detachScript, []string{b.keys.reg(id), b.keys.nodeRegs(b.cfg.NodeID)},
		[]string{socket, joinTopics(topics), strconv.FormatInt(ms, 10), string(id)}).Error()
	return unavailable("releasing the registration", err)
}

// Unregister implements relay.Registry.
func (r *registry) Unregister(ctx context.Context, id relay.ClientID) error {
	b := r.b
	res := b.exec(ctx, unregisterScript, []string{b.keys.reg(id)},
		[]string{b.keys.nodeChannel(""), b.keys.nodeRegs(""), string(id), b.cfg.NodeID})
	if rueidis.IsRedisNil(res.Error()) {
		return notFound(id)
	}
	holder, err := res.AsStrSlice()
	if err != nil {
		return unavailable("removing the registration", err)
	}
	if len(holder) == 2 && holder[0] == b.cfg.NodeID {
		r.forget(id, holder[1])
		if b.node != nil {
			b.node.Kick(id, holder[1], relay.CloseUnregistered)
		}
	}
	return nil
}

// reclaimScript claims again a registration this node's socket holds,
// after other nodes took the node for dead: it returns 1 when claimed, 0
// when the registration is gone (expired, unregistered, or lost with
// Redis's data: it is not re-created), 2 when another node holds it now.
// KEYS registration, this node's set. ARGV node, socket, id.
var reclaimScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HGET', KEYS[1], 'n')
if n and n ~= ARGV[1] then return 2 end
if n == ARGV[1] and redis.call('HGET', KEYS[1], 'k') ~= ARGV[2] then return 2 end
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'k', ARGV[2])
redis.call('PERSIST', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
`)

// reclaimBatch bounds the registrations claimed again per round trip.
const reclaimBatch = 500

// reassert claims again the registrations this node's sockets hold, after
// other nodes took the node for dead and released them. Those another node
// took meanwhile are closed here as replaced; those gone are forgotten.
// It runs beside the heartbeat, never in its way.
func (r *registry) reassert(ctx context.Context) {
	if !r.reclaiming.CompareAndSwap(false, true) {
		return
	}
	defer r.reclaiming.Store(false)
	b := r.b
	r.mu.Lock()
	ids := make([]relay.ClientID, 0, len(r.held))
	socks := make([]string, 0, len(r.held))
	for id, h := range r.held {
		ids, socks = append(ids, id), append(socks, h.socket)
	}
	r.mu.Unlock()
	for len(ids) > 0 {
		n := min(len(ids), reclaimBatch)
		execs := make([]rueidis.LuaExec, n)
		for i := range n {
			execs[i] = rueidis.LuaExec{Keys: []string{b.keys.reg(ids[i]), b.keys.nodeRegs(b.cfg.NodeID)}, Args: []string{b.cfg.NodeID, socks[i], string(ids[i])}}
		}
		cctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
		results := reclaimScript.ExecMulti(cctx, b.client, execs...)
		cancel()
		for i, res := range results {
			got, err := res.AsInt64()
			if err != nil {
				b.log.Warn("claiming a registration again failed; it expires after the reconnect grace", "err", err)
				continue
			}
			if got != 1 {
				r.forget(ids[i], socks[i])
			}
			if got == 2 && b.node != nil {
				b.node.Kick(ids[i], socks[i], relay.CloseReplaced)
			}
		}
		ids, socks = ids[n:], socks[n:]
	}
}

// forget drops id from the registrations this node holds, if socket
// holds it ("" for any): it was kicked, or another node has it.
func (r *registry) forget(id relay.ClientID, socket string) {
	r.mu.Lock()
	if h, ok := r.held[id]; ok && (socket == "" || h.socket == socket) {
		delete(r.held, id)
	}
	r.mu.Unlock()
}
