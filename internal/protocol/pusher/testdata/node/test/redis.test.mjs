// Scenario 11: two nodes on one Redis (127.0.0.1:6379, or RELAY_TEST_REDIS
// as host:port). The relay binary has no key-prefix option, so nothing is
// flushed: each run uses an app id of its own, which puts every channel of
// the run under topics no other run uses (*pusher/{app}/{channel}).
// Skipped when nothing listens there.
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { closeClients, collect, connected, members, newApp, pusherClient, reachable, serverSdk, sleep, startServer, stopServers, subscribe, uniq, waitFor } from "./helpers.mjs";

const [host, port] = (process.env.RELAY_TEST_REDIS ?? "127.0.0.1:6379").split(":");
const redis = await reachable(+port, host);

describe("two nodes on Redis", { skip: redis ? false : `no Redis at ${host}:${port}` }, () => {
  const app = newApp({ client_events: true, subscription_count: true });
  let node1, node2, sdk1, sdk2;
  before(async () => {
    const flags = ["-broker", `redis://${host}:${port}/0`];
    [node1, node2] = await Promise.all([startServer({ app, flags }), startServer({ app, flags })]);
    sdk1 = serverSdk(node1, app);
    sdk2 = serverSdk(node2, app);
  });
  afterEach(closeClients);
  after(stopServers);

  test("presence across nodes: members, member_added and member_removed", async () => {
    const name = uniq("presence-x-");
    const a = pusherClient(node1, app, { user: "alice", info: { node: 1 } });
    const b = pusherClient(node2, app, { user: "bob", info: { node: 2 } });
    const chA = await subscribe(a, name);
    const added = collect(chA, "pusher:member_added");
    const removed = collect(chA, "pusher:member_removed");
    const chB = await subscribe(b, name);
    assert.deepEqual(members(chB), { count: 2, ids: ["alice", "bob"], me: { id: "bob", info: { node: 2 } } });
    assert.deepEqual(chB.members.get("alice"), { id: "alice", info: { node: 1 } });
    await waitFor(() => added.length >= 1, "alice's member_added for bob (node 2 to node 1)");
    await sleep(300);
    assert.equal(added.length, 1);
    assert.deepEqual(added[0].data, { id: "bob", info: { node: 2 } });
    // Either node's HTTP API sees both members.
    for (const sdk of [sdk1, sdk2]) {
      const res = await sdk.get({ path: `/channels/${name}/users` });
      assert.deepEqual(
        (await res.json()).users.map((u) => u.id).sort(),
        ["alice", "bob"],
      );
    }
    // Bob's second connection, on node 1: no member_added anywhere.
    const b2 = pusherClient(node1, app, { user: "bob", info: { node: 1 } });
    const chB2 = await subscribe(b2, name);
    assert.deepEqual(members(chB2).ids, ["alice", "bob"]);
    const addedB = collect(chB, "pusher:member_added");
    await sleep(500);
    assert.equal(added.length, 1, "alice: still one member_added");
    assert.equal(addedB.length, 0);
    // member_removed only once bob's connections on both nodes are gone.
    b.disconnect();
    await sleep(1000);
    assert.equal(removed.length, 0, "no member_removed while bob is on node 1");
    b2.disconnect();
    await waitFor(() => removed.length >= 1, "alice's member_removed for bob");
    await sleep(300);
    assert.equal(removed.length, 1);
    assert.equal(removed[0].data.id, "bob");
    assert.equal(members(chA).count, 1);
  });

  test("a trigger on node 1 reaches clients on both nodes exactly once, in order", async () => {
    const name = uniq("news-");
    const on1 = pusherClient(node1, app);
    const on2 = pusherClient(node2, app);
    const logs = [];
    for (const c of [on1, on2]) logs.push(collect(await subscribe(c, name), "tick"));
    for (let i = 0; i < 20; i++) await sdk1.trigger(name, "tick", { i });
    await waitFor(() => logs.every((l) => l.length >= 20), "20 events on each node");
    await sleep(500);
    for (const l of logs)
      assert.deepEqual(
        l.map((e) => e.data.i),
        [...Array(20).keys()],
      );
    // socket_id exclusion across nodes: triggered on node 2, leaving out a socket of node 1.
    await sdk2.trigger(name, "tick", { i: "x" }, { socket_id: await connected(on1) });
    await waitFor(() => logs[1].length >= 21, "node 2's client's event");
    await sleep(500);
    assert.equal(logs[0].length, 20, "the excluded socket on node 1 got nothing");
    assert.equal(logs[1].length, 21);
  });

  test("client events cross nodes, with user_id, not echoed", async () => {
    const name = uniq("presence-chat-");
    const a = pusherClient(node1, app, { user: "alice", info: {} });
    const b = pusherClient(node2, app, { user: "bob", info: {} });
    const chA = await subscribe(a, name);
    const chB = await subscribe(b, name);
    const atA = collect(chA, "client-typing");
    const atB = collect(chB, "client-typing");
    chA.trigger("client-typing", { from: "node 1" });
    chB.trigger("client-typing", { from: "node 2" });
    await waitFor(() => atA.length >= 1 && atB.length >= 1, "each side's client event");
    await sleep(500);
    assert.deepEqual(
      atB.map((e) => [e.data, e.meta]),
      [[{ from: "node 1" }, { user_id: "alice" }]],
    );
    assert.deepEqual(
      atA.map((e) => [e.data, e.meta]),
      [[{ from: "node 2" }, { user_id: "bob" }]],
    );
  });

  test("the channel list and subscription_count span both nodes", async () => {
    const names = [uniq("list-a-"), uniq("list-b-")];
    const c1 = pusherClient(node1, app);
    const c2 = pusherClient(node2, app);
    await subscribe(c1, names[0]);
    await subscribe(c2, names[1]);
    await subscribe(c2, names[0]);
    for (const sdk of [sdk1, sdk2]) {
      const res = await sdk.get({ path: "/channels" });
      const listed = Object.keys((await res.json()).channels).filter((n) => names.includes(n));
      assert.deepEqual(listed.sort(), [...names].sort());
      const info = await (await sdk.get({ path: `/channels/${names[0]}`, params: { info: "subscription_count" } })).json();
      assert.deepEqual(info, { occupied: true, subscription_count: 2 });
    }
  });

  test("terminateUserConnections on node 1 closes the user's connection on node 2", async () => {
    const u = uniq("user-");
    const c = pusherClient(node2, app, { user: u, info: {} });
    const other = pusherClient(node2, app, { user: "someone-else", info: {} });
    await Promise.all([connected(c), connected(other)]);
    c.signin();
    await waitFor(() => c.user.serverToUserChannel?.subscribed, "the sign-in");
    await sdk1.terminateUserConnections(u);
    await waitFor(() => ["disconnected", "unavailable"].includes(c.connection.state), "the connection to close");
    const codes = new Set(c.errors.map((e) => e.data?.code ?? e.error?.data?.code));
    assert.deepEqual([...codes], [4009]);
    await sleep(1000);
    assert.notEqual(c.connection.state, "connected", "no reconnect");
    assert.equal(other.connection.state, "connected");
  });
});
