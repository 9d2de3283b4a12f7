// Scenario 9: the HTTP API through the SDK: signatures, batches, the
// channel list.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { closeClients, collect, newApp, pusherClient, serverSdk, sleep, startServer, stopServers, subscribe, uniq, waitFor } from "./helpers.mjs";

const app = newApp({ subscription_count: true });
let server, sdk;
before(async () => {
  server = await startServer({ app });
  sdk = serverSdk(server, app);
});
afterEach(closeClients);
after(stopServers);

/** The SDK call's rejection (a RequestError), or a failure if it resolved. */
async function rejection(p) {
  try {
    const res = await p;
    assert.fail(`resolved with ${res.status}`);
  } catch (e) {
    if (e.name === "AssertionError") throw e;
    return e;
  }
}

test("a trigger signed with a wrong secret is rejected with 401, and nothing is delivered", async () => {
  const name = uniq("guarded-");
  const c = pusherClient(server, app);
  const ch = await subscribe(c, name);
  const got = collect(ch, "e");
  const wrong = serverSdk(server, { ...app, secret: "not-the-secret-0123456789" });
  const e = await rejection(wrong.trigger(name, "e", { x: 1 }));
  assert.equal(e.name, "PusherRequestError");
  assert.equal(e.status, 401, `${e.message}: ${e.body}`);
  // And an unknown app id: 404 (Pusher: 404 too? the SDK only sees a status).
  const unknown = serverSdk(server, { ...app, id: "no-such-app" });
  const e2 = await rejection(unknown.trigger(name, "e", { x: 2 }));
  assert.ok(e2.status >= 400 && e2.status < 500, `unknown app: ${e2.status}`);
  await sleep(300);
  assert.equal(got.length, 0);
});

test("triggerBatch of 2 events delivers both; a batch of 11 is refused with 400", async () => {
  const [a, b] = [uniq("batch-a-"), uniq("batch-b-")];
  const c = pusherClient(server, app);
  const [chA, chB] = await Promise.all([subscribe(c, a), subscribe(c, b)]);
  const gotA = collect(chA, "one");
  const gotB = collect(chB, "two");
  const res = await sdk.triggerBatch([
    { channel: a, name: "one", data: { i: 1 } },
    { channel: b, name: "two", data: "plain string" },
  ]);
  assert.equal(res.status, 200);
  await waitFor(() => gotA.length >= 1 && gotB.length >= 1, "both batch events");
  await sleep(300);
  assert.deepEqual(
    gotA.map((e) => e.data),
    [{ i: 1 }],
  );
  assert.deepEqual(
    gotB.map((e) => e.data),
    ["plain string"],
  );

  const eleven = Array.from({ length: 11 }, (_, i) => ({ channel: a, name: "one", data: { i } }));
  const e = await rejection(sdk.triggerBatch(eleven));
  assert.equal(e.status, 400, `${e.message}: ${e.body}`);
  await sleep(300);
  assert.equal(gotA.length, 1, "nothing of the refused batch delivered");
});

test("get /channels lists the occupied channels", async () => {
  const c = pusherClient(server, app, { user: "u1", info: {} });
  const names = [uniq("list-a-"), uniq("private-list-b-"), uniq("presence-list-c-")];
  await Promise.all(names.map((n) => subscribe(c, n)));
  let res = await sdk.get({ path: "/channels" });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.deepEqual(Object.keys(body.channels).sort(), [...names].sort());
  res = await sdk.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } });
  assert.deepEqual(await res.json(), { channels: { [names[2]]: { user_count: 1 } } });
  res = await sdk.get({ path: `/channels/${names[0]}`, params: { info: "subscription_count" } });
  assert.deepEqual(await res.json(), { occupied: true, subscription_count: 1 });
  // Once the client leaves, the channels empty (within the vacate delay).
  c.disconnect();
  await waitFor(
    async () => {
      const r = await sdk.get({ path: "/channels" });
      return Object.keys((await r.json()).channels).length === 0;
    },
    "the channel list to empty",
    10000,
  );
  res = await sdk.get({ path: `/channels/${names[0]}` });
  assert.deepEqual(await res.json(), { occupied: false });
});

test("subscription_count (enabled for this app): pusher-js's pusher:subscription_count and trigger's info", async () => {
  const name = uniq("counted-");
  const a = pusherClient(server, app);
  const b = pusherClient(server, app);
  const chA = await subscribe(a, name);
  const counts = collect(chA, "pusher:subscription_count");
  await subscribe(b, name);
  await waitFor(() => chA.subscriptionCount === 2, "a's subscription count to reach 2");
  const res = await sdk.trigger(name, "e", {}, { info: "subscription_count" });
  assert.deepEqual(await res.json(), { channels: { [name]: { subscription_count: 2 } } });
  b.disconnect();
  await waitFor(() => chA.subscriptionCount === 1, "a's subscription count to drop to 1", 10000);
  assert.deepEqual(
    counts.map((e) => e.data.subscription_count),
    [2, 1],
  );
});
