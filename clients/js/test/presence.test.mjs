// Presence per user: one join when a user's first connection subscribes,
// one leave when their last one goes, whatever the number of tabs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startServer, register, relay, waitFor } from "./helpers.mjs";

test("presence: join and leave per user, not per connection", { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const clients = [];
  t.after(() => clients.forEach((c) => c.close()));
  const open = async (user, presence = true) => {
    const c = relay({ url: await register(server, user) });
    clients.push(c);
    const sub = c.subscribe("room", { presence });
    await sub.ready;
    return { c, sub };
  };
  const a = await open(1);
  const events = [];
  a.sub.on("join", (e) => events.push(`join ${e.userId}`));
  a.sub.on("leave", (e) => events.push(`leave ${e.userId}`));
  const clientEvents = [];
  a.c.on("join", (e) => clientEvents.push(`${e.topic} join ${e.userId}`));
  await waitFor(() => a.sub.present.has("1"), "user 1 to see themself");
  // The barrier: user N+1 joining proves every event before it arrived.
  let barrier = 100;
  const sync = async () => {
    const u = String(++barrier);
    const b = await open(+u, false);
    await waitFor(() => events.includes(`join ${u}`), `join ${u}`);
    b.c.close();
    await waitFor(() => events.includes(`leave ${u}`), `leave ${u}`);
    events.splice(events.indexOf(`join ${u}`), 1);
    events.splice(events.indexOf(`leave ${u}`), 1);
  };
  const tab1 = await open(2);
  await waitFor(() => events.length == 1, "a join");
  assert.deepEqual(events, ["join 2"]);
  // The newcomer's snapshot holds user 1, announced as a join.
  assert.ok(tab1.sub.present.has("1"));
  const tab2 = await open(2); // a second tab of user 2: not a second join
  assert.ok(tab2.sub.present.has("2"), "the second tab sees user 2 in its snapshot");
  await sync();
  assert.deepEqual(events, ["join 2"]);
  tab1.c.close(); // user 2 still has a tab open: no leave
  await sync();
  assert.deepEqual(events, ["join 2"]);
  assert.deepEqual([...a.sub.present].sort(), ["1", "2"]);
  tab2.c.close(); // the last one: leave
  await waitFor(() => events.length == 2, "a leave");
  assert.deepEqual(events, ["join 2", "leave 2"]);
  assert.deepEqual([...a.sub.present].sort(), ["1"]);
  assert.ok(clientEvents.includes("room join 2"), "client-level events carry the topic");
});

test("presence: user ids above 2^53 keep every digit", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const big = "18446744073709551615";
  const a = relay({ url: await register(server, 1) });
  t.after(() => a.close());
  const sub = a.subscribe("room", { presence: true });
  await sub.ready;
  const res = await fetch(server.http + "/register", { method: "POST", body: `{"user_id": ${big}}` });
  const b = relay({ url: (await res.json()).url });
  t.after(() => b.close());
  const bsub = b.subscribe("room", { presence: true });
  await bsub.ready;
  await waitFor(() => sub.present.has(big), `user ${big} in ${[...sub.present]}`);
  assert.ok(bsub.present.has("1"));
});
