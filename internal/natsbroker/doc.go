// Package natsbroker is the NATS engine: several Relay nodes share one
// NATS server (2.9 or later, with JetStream) for topic streams, fan-out,
// registrations and presence. Each node holds its own sockets; NATS holds
// what must be the same on every node.
//
// Streams, buckets and subjects, under Config.Prefix P (default "relay");
// T is a topic (or node id) as one subject token: base64url without
// padding, "_" for the empty name.
//
//	P_history             stream of the default rule's topics: subjects P.h.T, one per topic,
//	                      MaxMsgsPerSubject = rule Size, MaxAge = max(rule TTL, StreamIdle),
//	                      MaxBytes = HistoryBytes,
//	                      RePublish P.h.* → P.t.T
//	P_history_<id>        the same for the rule with a Prefix (id: 8 hex digits of its SHA-256):
//	                      subjects P.h.<id>.T, RePublish → P.t.T
//	P.t.T                 core subject per topic: stored messages (republished by the stream
//	                      once stored), messages to one user, joins and leaves
//	P.node.T              core subject per node: kicks (JSON id, socket, reason)
//	KV P_fresh            key T: "f:<epoch>" offered to readers of a topic without messages,
//	                      "t:<epoch>" while a first publish stores it; MaxAge FreshTTL
//	KV P_idem             key base64url(SHA-256(topic, user, key)): idempotency keys of
//	                      messages to one user; MaxAge IdempotencyWindow
//	KV P_registry         key base64url(id): JSON user, seed topics, holder (node#incarnation),
//	                      socket, deadline; MaxAge RegistryMaxAge
//	KV P_presence         key T.<user>: JSON {node#incarnation: connections}, or, for a user
//	                      that joined with an info (relay.InfoRoster), {"m": that object,
//	                      "i": base64 info}; the topics of its keys are the occupied
//	                      topics (relay.TopicLister lists the keys, without values)
//	KV P_nodes            key T (node id): JSON incarnation and beat count; MaxAge 10m
//	KV P_dashboard        key T (node id): the node's dashboard summary (JSON, at most
//	                      2 KiB); memory storage, MaxAge the summaries' ttl (peers.go)
//
// A stored message carries headers Relay-Offset and Relay-Epoch, and is
// written by compare-and-set: Nats-Expected-Last-Subject-Sequence is the
// stream sequence of the topic's newest message, so offsets are 1, 2, 3…
// per topic, cluster-wide, without gaps; on a conflict the publisher reads
// the newest message again and retries. The header stays with the stored
// message, so History walks from the newest message back to since. An
// idempotency key becomes a Nats-Msg-Id (hashed with the topic and
// audience); JetStream answers a repeat with the first message's sequence.
// A topic's offsets and epoch live in its messages. History returns those
// younger than the rule's TTL, but the stream keeps them for StreamIdle
// (1h) when that is longer, so the newest message holds the topic's offset
// and epoch until the topic had no publish for that long; then its next
// publish starts a new epoch (the fresh entry it takes is never reused).
// Reading a topic without messages stores only its fresh entry.
//
// Core subjects deliver at most once, and a node sees its own publishes
// twice, so every node passes what it receives through a sequencer that
// drops repeats, orders by offset and reads gaps from history; every
// CheckInterval it reads each watched topic's newest position, so a lost
// last message is repaired too. After a reconnect the client resends the
// subscriptions, the engine recreates the streams and buckets (NATS may
// have lost them) and rewrites this node's heartbeat before Ready turns
// nil; then it rewrites this node's presence and checks every topic, each
// on its own (a topic that cannot be read is repaired later).
//
// Joins and leaves are core messages with headers Relay-Kind, Relay-User
// and Relay-Node; their body is the info the user joined with (empty for
// none), which the write that takes the user's total from 0 stores in the
// entry and the write that empties it announces. An info over
// MaxInfoBytes (64 KiB) is dropped with a warning, never truncated.
//
// Registry and Roster change bucket entries by compare-and-set on their
// revision; a delete is a purge of the key's subject up to that revision
// (every bucket keeps one revision per key), so it is conditional too and
// leaves no tombstone. Nodes heartbeat every Heartbeat; a node whose
// heartbeat revision stood still for NodeTTL (by the observer's clock) is
// removed by the first node that notices, and every node then sweeps the
// presence bucket for members of incarnations without a heartbeat,
// announcing one leave per user whose count falls to zero (the write that
// empties an entry announces it, so once; the node that made that write
// reports it, relay.TransitionReporter), and releases the registrations
// such nodes held (they expire after ReconnectGrace). A node that finds
// its heartbeat gone starts a new incarnation: it writes its presence
// again and claims back the registrations its sockets still hold.
//
// What is lost when NATS loses its data: the history (subscribers get a
// reset or a new epoch), registrations (their clients get 404 and must
// register again), and presence until each node rewrites its own after
// reconnecting. Messages published while a node is disconnected are
// repaired from history after it reconnects, as far as history holds
// them; joins and leaves announced meanwhile are not.
//
// Goroutines and locks: Run owns the connection and seven goroutines —
// dispatch (the only reader of the subscriptions' channel), interestLoop
// (subscribes and unsubscribes for Watch and Unwatch, which only count and
// queue), maintain (setup after each connect, periodic checks), roster
// apply (the only writer of this node's presence), heartbeat (nothing
// else, so slow work never delays it), watchNodes (dead nodes, sweeps) and
// registry keep (claiming held registrations back, keeping them alive) —
// and returns after they and the connection are gone. interest.mu guards the watched
// topics; pubCache.mu the publish cache, and each pubTopic.mu serialises
// this node's publishes to one topic through their round trip;
// roster.mu the counts of changes (taken before interest.mu, never
// after); roster.hbMu the heartbeat's revision
// (held through its write; it takes roster.mu briefly); registry.mu the
// registrations held here; Broker.mu the readiness. None is held while
// calling the node or the sequencer, except the sequencer's own locks,
// which it holds through Fanout.
package natsbroker
