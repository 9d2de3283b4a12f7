// Scenario 6: cache channels: the last event on subscribe, or
// pusher:cache_miss.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { closeClients, collect, newApp, pusherClient, serverSdk, sleep, startServer, stopServers, subscribe, uniq, waitFor } from "./helpers.mjs";

const app = newApp();
let server, sdk;
before(async () => {
  server = await startServer({ app });
  sdk = serverSdk(server, app);
});
afterEach(closeClients);
after(stopServers);

/** Subscribes a new client to name, recording event and pusher:cache_miss from the start. */
async function fresh(name, event, opts) {
  const c = pusherClient(server, app, opts);
  const ch = c.subscribe(name);
  const got = collect(ch, event);
  const misses = collect(ch, "pusher:cache_miss");
  const ok = collect(ch, "pusher:subscription_succeeded");
  await waitFor(() => ok.length >= 1, `the subscription to ${name}`);
  return { c, ch, got, misses };
}

test("an empty cache channel: one pusher:cache_miss", async () => {
  const name = uniq("cache-empty-");
  const { got, misses } = await fresh(name, "price");
  await waitFor(() => misses.length >= 1, "pusher:cache_miss");
  await sleep(300);
  assert.equal(misses.length, 1);
  assert.equal(got.length, 0);
});

test("after triggers, a new client gets the last event on subscribe, once", async () => {
  const name = uniq("cache-x-");
  await sdk.trigger(name, "price", { v: 1 });
  await sdk.trigger(name, "price", { v: 2 });
  const { ch, got, misses } = await fresh(name, "price");
  await waitFor(() => got.length >= 1, "the cached event");
  await sleep(300);
  assert.deepEqual(
    got.map((e) => e.data),
    [{ v: 2 }],
  );
  assert.equal(misses.length, 0);
  // Live events follow as usual.
  await sdk.trigger(name, "price", { v: 3 });
  await waitFor(() => got.length >= 2, "the live event");
  assert.deepEqual(got[1].data, { v: 3 });
  assert.equal(ch.subscribed, true);
});

test("private-cache and presence-cache channels cache too", async () => {
  for (const prefix of ["private-cache-", "presence-cache-"]) {
    const name = uniq(prefix);
    const first = await fresh(name, "state", { user: "u1", info: {} });
    await waitFor(() => first.misses.length >= 1, `${name}: cache_miss`);
    await sdk.trigger(name, "state", { s: "on" });
    const second = await fresh(name, "state", { user: "u2", info: {} });
    await waitFor(() => second.got.length >= 1, `${name}: the cached event`);
    await sleep(200);
    assert.deepEqual(
      second.got.map((e) => e.data),
      [{ s: "on" }],
      name,
    );
    assert.equal(second.misses.length, 0, name);
    assert.equal(first.got.length, 1, name);
  }
});
