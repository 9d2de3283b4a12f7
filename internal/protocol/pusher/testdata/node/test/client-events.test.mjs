// Scenario 4: client events from pusher-js's channel.trigger, on an apps
// file of two apps: one with client_events, one without.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { closeClients, collect, newApp, pusherClient, sleep, startServer, stopServers, subscribe, uniq, waitFor } from "./helpers.mjs";

const app = newApp({ client_events: true });
const closed = newApp({ client_events: false });
let server;
before(async () => {
  server = await startServer({ apps: [app, closed] });
});
afterEach(closeClients);
after(stopServers);

test("presence: a client event reaches the other member with user_id, and is not echoed", async () => {
  const name = uniq("presence-chat-");
  const alice = pusherClient(server, app, { user: "alice", info: {} });
  const bob = pusherClient(server, app, { user: "bob", info: {} });
  const chA = await subscribe(alice, name);
  const chB = await subscribe(bob, name);
  const atAlice = collect(chA, "client-typing");
  const atBob = collect(chB, "client-typing");
  for (let i = 0; i < 3; i++) assert.equal(chA.trigger("client-typing", { typing: true, i }), true);
  await waitFor(() => atBob.length >= 3, "bob's 3 client events");
  await sleep(300);
  assert.equal(atBob.length, 3);
  assert.deepEqual(
    atBob.map((e) => e.data),
    [0, 1, 2].map((i) => ({ typing: true, i })),
  );
  for (const e of atBob) assert.deepEqual(e.meta, { user_id: "alice" });
  assert.equal(atAlice.length, 0, "not echoed to the sender");
  assert.deepEqual(alice.errors, []);
});

test("private: a client event reaches the other subscriber, without user_id", async () => {
  const name = uniq("private-doc-");
  const a = pusherClient(server, app);
  const b = pusherClient(server, app);
  const chA = await subscribe(a, name);
  const chB = await subscribe(b, name);
  const atA = collect(chA, "client-edit");
  const atB = collect(chB, "client-edit");
  chA.trigger("client-edit", { line: 3, text: "héllo" });
  await waitFor(() => atB.length >= 1, "b's client event");
  await sleep(300);
  assert.equal(atB.length, 1);
  assert.deepEqual(atB[0].data, { line: 3, text: "héllo" });
  assert.equal(atB[0].meta.user_id, undefined);
  assert.equal(atA.length, 0);
});

test("an app without client events: pusher:error, and nothing delivered", async () => {
  const name = uniq("private-locked-");
  const a = pusherClient(server, closed);
  const b = pusherClient(server, closed);
  const chA = await subscribe(a, name);
  const chB = await subscribe(b, name);
  const atB = collect(chB, "client-x");
  chA.trigger("client-x", { n: 1 });
  await waitFor(() => a.errors.length >= 1, "a pusher:error on the sender's connection");
  await sleep(300);
  assert.equal(a.errors.length, 1, JSON.stringify(a.errors));
  assert.equal(a.errors[0].type, "PusherError");
  assert.match(a.errors[0].data.message, /enable/);
  assert.equal(atB.length, 0);
  assert.equal(a.connection.state, "connected");
});
