// Scenario 3: presence channels with pusher-js members, and the SDK's
// users and channel-info calls.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { closeClients, collect, members, newApp, pusherClient, serverSdk, sleep, startServer, stopServers, subscribe, subscribed, uniq, waitFor } from "./helpers.mjs";

const app = newApp({ subscription_count: true });
let server, sdk;
before(async () => {
  server = await startServer({ app });
  sdk = serverSdk(server, app);
});
afterEach(closeClients);
after(stopServers);

test("members, member_added once per user, member_removed after the user's last connection", async () => {
  const name = uniq("presence-x-");
  const alice = pusherClient(server, app, { user: "alice", info: { name: "Alice" } });
  const bob1 = pusherClient(server, app, { user: "bob", info: { name: "Bob" } });
  const bob2 = pusherClient(server, app, { user: "bob", info: { name: "Bob (phone)" } });

  const chA = await subscribe(alice, name);
  assert.deepEqual(members(chA), { count: 1, ids: ["alice"], me: { id: "alice", info: { name: "Alice" } } });
  const addedA = collect(chA, "pusher:member_added");
  const removedA = collect(chA, "pusher:member_removed");

  // Collectors are bound before subscribing, so that a member_added to the
  // joiner itself would be seen.
  const chB1 = bob1.subscribe(name);
  const addedB1 = collect(chB1, "pusher:member_added");
  const removedB1 = collect(chB1, "pusher:member_removed");
  await subscribed(chB1);
  assert.deepEqual(members(chB1), { count: 2, ids: ["alice", "bob"], me: { id: "bob", info: { name: "Bob" } } });
  assert.deepEqual(chB1.members.get("alice"), { id: "alice", info: { name: "Alice" } });
  await waitFor(() => addedA.length >= 1, "alice's member_added for bob");
  assert.deepEqual(addedA[0].data, { id: "bob", info: { name: "Bob" } });

  // Bob's second connection: no member_added to anyone.
  const chB2 = bob2.subscribe(name);
  const addedB2 = collect(chB2, "pusher:member_added");
  await subscribed(chB2);
  const m2 = members(chB2);
  assert.equal(m2.count, 2);
  assert.deepEqual(m2.ids, ["alice", "bob"]);
  assert.equal(m2.me.id, "bob");
  await sleep(500);
  assert.equal(addedA.length, 1, "alice: one member_added (bob's first connection only)");
  assert.equal(addedB1.length, 0, "bob's first connection: no member_added for his second");
  assert.equal(addedB2.length, 0);
  assert.equal(members(chA).count, 2);

  // The SDK's users list and channel info.
  let res = await sdk.get({ path: `/channels/${name}/users` });
  assert.equal(res.status, 200);
  const users = (await res.json()).users.map((u) => u.id).sort();
  assert.deepEqual(users, ["alice", "bob"]);
  res = await sdk.get({ path: `/channels/${name}`, params: { info: "user_count,subscription_count" } });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { occupied: true, user_count: 2, subscription_count: 3 });

  // Bob's first connection goes: he is still there.
  bob1.disconnect();
  await sleep(800);
  assert.equal(removedA.length, 0, "no member_removed while bob has a connection left");
  assert.equal(members(chA).count, 2);
  // His last one goes: member_removed, once.
  bob2.disconnect();
  await waitFor(() => removedA.length >= 1, "alice's member_removed for bob");
  await sleep(500);
  assert.equal(removedA.length, 1);
  assert.deepEqual(removedA[0].data, { id: "bob", info: { name: "Bob" } });
  assert.equal(removedB1.length, 0);
  assert.deepEqual(members(chA), { count: 1, ids: ["alice"], me: { id: "alice", info: { name: "Alice" } } });
  res = await sdk.get({ path: `/channels/${name}/users` });
  assert.deepEqual(await res.json(), { users: [{ id: "alice" }] });
});

test("unsubscribing (not disconnecting) is a leave too", async () => {
  const name = uniq("presence-y-");
  const a = pusherClient(server, app, { user: "u1", info: {} });
  const b = pusherClient(server, app, { user: "u2" }); // no user_info
  const chA = await subscribe(a, name);
  const added = collect(chA, "pusher:member_added");
  const removed = collect(chA, "pusher:member_removed");
  const chB = await subscribe(b, name);
  assert.deepEqual(members(chB).ids, ["u1", "u2"]);
  await waitFor(() => added.length >= 1, "member_added");
  b.unsubscribe(name);
  await waitFor(() => removed.length >= 1, "member_removed");
  await sleep(300);
  assert.equal(added.length, 1);
  assert.equal(removed.length, 1);
  assert.equal(removed[0].data.id, "u2");
  assert.equal(members(chA).count, 1);
});
