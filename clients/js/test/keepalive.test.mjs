// Keepalive: a dead link (a proxy that stops carrying data but keeps the
// socket open) is noticed by an unanswered ping and replaced; a timer
// firing far too late (the machine slept) checks the connection at once.
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";
import { startServer, startProxy, register, publish, relay, seed, next, waitFor, via } from "./helpers.mjs";

/** A ws WebSocket that records what it sends and receives. */
function spy() {
  const sent = [], received = [];
  class SpyWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => received.push(String(e.data)));
    }
    send(data, ...rest) {
      sent.push(data);
      return super.send(data, ...rest);
    }
  }
  return { WebSocket: SpyWebSocket, sent, received, pings: () => sent.filter((d) => d == '{"type":"ping"}').length };
}

/** A clock that only moves when told: advance(ms, step) fires timers as they fall due, step by step. */
function manualClock() {
  let now = 1_000_000;
  const timers = new Set();
  const clock = {
    timers,
    now: () => now,
    setTimeout(fn, ms) {
      const h = { at: now + ms, fn };
      timers.add(h);
      return h;
    },
    clearTimeout: (h) => timers.delete(h),
    /** Moves time forward by ms in steps of step ms (one step: the machine slept), firing due timers. */
    advance(ms, step = ms) {
      for (let left = ms; left > 0; left -= step) {
        now += Math.min(step, left);
        for (;;) {
          const due = [...timers].filter((h) => h.at <= now).sort((a, b) => a.at - b.at)[0];
          if (!due) break;
          timers.delete(due);
          due.fn();
        }
      }
    },
  };
  return clock;
}

test("keepalive: a dead link is found by an unanswered ping, replaced, and recovered from", { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const s = spy();
  const client = relay({ url: via(await register(server, 1), proxy), WebSocket: s.WebSocket, keepalive: { idle: 100, timeout: 300 } });
  t.after(() => client.close());
  const errors = [];
  let opens = 0;
  client.on("error", (e) => errors.push(e.code));
  client.on("open", () => opens++);
  const sub = client.subscribe("feed");
  const offsets = [];
  sub.on("message", (m) => offsets.push(m.offset));
  await sub.ready;
  // Idle but alive: pings go out and pongs come back; the connection stays.
  await waitFor(() => s.pings() >= 3, "3 keepalive pings");
  assert.equal(opens, 1);
  assert.deepEqual(errors, []);
  for (let i = 0; i < 3; i++) await publish(server, "feed", `m${i}`);
  await waitFor(() => offsets.length == 3, "3 messages");
  proxy.freeze();
  for (let i = 3; i < 8; i++) await publish(server, "feed", `m${i}`);
  await waitFor(() => opens == 2, "the dead link to be replaced");
  assert.deepEqual(errors, ["timeout"]);
  await waitFor(() => offsets.length >= 8, "the messages published on the dead link");
  assert.deepEqual(offsets, [1, 2, 3, 4, 5, 6, 7, 8]);
});

test("keepalive: after a sleep the connection is checked at once (relay.v1: ping; no pong: reconnect)", { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const s = spy();
  const clock = manualClock();
  // idle is longer than the sleeps: only the sleep detection explains a ping.
  const client = relay({ url: via(await register(server, 1), proxy), WebSocket: s.WebSocket, clock, random: () => 0.5, keepalive: { idle: 120000, timeout: 10000 } });
  t.after(() => client.close());
  const errors = [];
  let opens = 0;
  client.on("error", (e) => errors.push(e.code));
  client.on("open", () => opens++);
  await client.subscribe("feed").ready;
  clock.advance(15000, 5000); // awake and idle, but not for 120 s
  assert.equal(s.pings(), 0);
  const frames = s.received.length;
  clock.advance(60000); // one step: the tick fires 55 s late
  assert.equal(s.pings(), 1, "a ping at once after the sleep");
  await waitFor(() => s.received.length > frames, "the pong");
  clock.advance(15000, 5000); // answered: the connection stays, and nothing is due
  assert.equal(s.pings(), 1);
  assert.equal(opens, 1);
  assert.deepEqual(errors, []);
  // Now the link died during the sleep.
  proxy.freeze();
  clock.advance(60000);
  assert.equal(s.pings(), 2);
  clock.advance(10000, 5000);
  assert.deepEqual(errors, ["timeout"]);
  assert.equal(client.state, "waiting");
  clock.advance(1000); // the backoff (base 20 ms, max 200 ms in these tests)
  await waitFor(() => opens == 2, "the reconnect");
});

test("keepalive: the seed client reconnects at once after a sleep, and sends ping when idle", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const s = spy();
  const clock = manualClock();
  const client = seed({ url: await register(server, 1), WebSocket: s.WebSocket, clock, keepalive: { idle: 20000, timeout: 10000 } });
  t.after(() => client.close());
  let opens = 0;
  const errors = [];
  client.on("open", () => opens++);
  client.on("error", (e) => errors.push(e.code));
  await next(client, "open");
  clock.advance(25000, 5000);
  assert.deepEqual(s.sent, ["ping"]);
  assert.equal(opens, 1);
  clock.advance(60000);
  assert.deepEqual(errors, ["timeout"]);
  clock.advance(1000);
  await waitFor(() => opens == 2, "the reconnect");
});

test("close() stops every timer and the connection; end fires once", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const clock = manualClock();
  const client = relay({ url: await register(server, 1), clock });
  let ends = 0;
  client.on("end", () => ends++);
  await client.subscribe("x").ready;
  assert.ok(clock.timers.size >= 1);
  client.close();
  client.close();
  assert.equal(clock.timers.size, 0);
  assert.equal(ends, 1);
  await waitFor(async () => (await publish(server, "x", "m")).delivered == 0, "the server to see the close");
});

test("an AbortSignal closes the client, even one aborted before the start", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const ac = new AbortController();
  const client = relay({ url: await register(server, 1), signal: ac.signal });
  const sub = client.subscribe("x");
  await sub.ready;
  const ended = next(client, "end");
  ac.abort();
  await ended;
  assert.equal(client.state, "closed");
  await waitFor(async () => (await publish(server, "x", "m")).delivered == 0, "the server to see the close");
  const dead = relay({ url: await register(server, 1), signal: AbortSignal.abort() });
  assert.equal(dead.state, "closed");
  await assert.rejects(dead.subscribe("x").ready, (e) => e.code == "closed");
});
