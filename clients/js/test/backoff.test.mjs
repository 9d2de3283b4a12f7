// Reconnect backoff with an injected clock and random source: no real
// sleeping, every wait checked against its bound.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startServer, startProxy, relay, register, waitFor, via, next } from "./helpers.mjs";

const NEVER = 99999; // the connect timeout: never fired by the fake clock

/** A clock whose timers fire at once (next turn of the event loop), recording each wait asked for. */
function fakeClock() {
  const waits = [];
  return {
    waits,
    now: () => Date.now(),
    setTimeout(fn, ms) {
      if (ms === NEVER) return null;
      waits.push(ms);
      return setImmediate(fn);
    },
    clearTimeout(h) {
      if (h) clearImmediate(h);
    },
  };
}

test("backoff: full jitter within [0, min(max, base·2^(n-1))), doubling, capped, reset once a connection opens", { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  proxy.refuse = true; // every attempt fails
  const base = 100, max = 1600;
  const seq = [0.999, 0.999, 0.999, 0.999, 0.999, 0.999, 0.5, 0];
  let k = 0;
  const clock = fakeClock();
  const client = relay({
    url: via(await register(server, 1), proxy),
    backoff: { base, max },
    keepalive: false,
    connectTimeout: NEVER,
    clock,
    random: () => (k < seq.length ? seq[k++] : 0.999),
  });
  t.after(() => client.close());
  const events = [];
  let opened = -1;
  client.on("reconnect", (e) => events.push(e));
  client.on("open", () => opened < 0 && (opened = events.length));
  const connectErrors = [];
  client.on("error", (e) => connectErrors.push(e.code));
  await waitFor(() => events.length >= 10, "10 reconnect attempts");
  proxy.refuse = false;
  await next(client, "open");
  const before = events.length;
  proxy.cut();
  await waitFor(() => events.length > before && client.state == "open", "a reconnect after the cut");
  client.close();

  const bound = (n) => Math.min(max, base * 2 ** (n - 1));
  // The first attempts: the draws were known, so the waits are exact.
  assert.deepEqual(
    events.slice(0, 8).map((e) => [e.attempt, e.delay]),
    [[1, 99], [2, 199], [3, 399], [4, 799], [5, 1598], [6, 1598], [7, 800], [8, 0]],
  );
  for (const [i, e] of events.entries()) {
    assert.ok(e.delay >= 0 && e.delay < bound(e.attempt), `wait ${i}: ${e.delay} outside [0, ${bound(e.attempt)})`);
  }
  // Each announced wait is the one the client really waited.
  assert.deepEqual(clock.waits, events.map((e) => e.delay));
  // Attempts count failures in a row: after the open, the cut starts again at 1.
  assert.ok(opened >= 10);
  assert.deepEqual(events.slice(0, opened).map((e) => e.attempt), Array.from({ length: opened }, (_, i) => i + 1));
  assert.deepEqual(events[opened], { attempt: 1, delay: 99 });
  assert.ok(connectErrors.length >= 10 && connectErrors.every((c) => c == "connect"));
});

test("backoff: close() while waiting cancels the reconnect; nothing runs after end", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  proxy.refuse = true;
  const pending = [];
  const clock = {
    now: () => Date.now(),
    setTimeout: (fn, ms) => {
      const h = { fn, ms, cleared: false };
      pending.push(h);
      return h;
    },
    clearTimeout: (h) => h && (h.cleared = true),
  };
  const client = relay({ url: via(await register(server, 1), proxy), clock, keepalive: false });
  const ended = next(client, "end");
  await next(client, "reconnect");
  const accepted = proxy.accepted;
  const waiting = pending.filter((h) => !h.cleared);
  assert.equal(client.state, "waiting");
  client.close();
  assert.equal(client.state, "closed");
  assert.deepEqual(await ended, {});
  assert.ok(waiting.length >= 1 && waiting.every((h) => h.cleared), "every timer cleared on close");
  for (const h of waiting) h.fn(); // even a timer that fires anyway does nothing
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(proxy.accepted, accepted);
});
