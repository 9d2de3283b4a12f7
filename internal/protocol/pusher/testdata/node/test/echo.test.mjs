// Laravel Echo 2 (broadcaster: 'pusher') over pusher-js's Node build, as a
// Laravel app uses it: channel().listen(), private().listen(),
// join().here/joining/leaving, whisper/listenForWhisper, socketId() with
// toOthers (the SDK's socket_id).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import Echo from "laravel-echo";

import { closeClients, connected, newApp, pusherClient, PusherJS, serverSdk, sleep, startServer, stopServers, uniq, waitFor } from "./helpers.mjs";

const app = newApp({ client_events: true });
let server, sdk;
before(async () => {
  server = await startServer({ app });
  sdk = serverSdk(server, app);
});
afterEach(closeClients);
after(stopServers);

/** Echo on a pusher-js client of ours (the `client` form). */
function echoOf(opts) {
  const client = pusherClient(server, app, opts);
  const echo = new Echo({ broadcaster: "pusher", client });
  return { echo, client };
}

/** Echo's subscription of a channel, once subscribed. */
async function ready(echoChannel) {
  const outcomes = [];
  echoChannel.subscribed(() => outcomes.push("subscribed"));
  echoChannel.error((e) => outcomes.push(e));
  await waitFor(() => outcomes.length > 0, `Echo's subscription to ${echoChannel.name}`);
  assert.deepEqual(outcomes, ["subscribed"]);
  return echoChannel;
}

test("channel().listen: Laravel's namespaced event names and dot-prefixed raw names", async () => {
  const { echo } = echoOf();
  const name = uniq("orders-");
  const got = [];
  const ch = echo.channel(name);
  ch.listen("OrderShipped", (e) => got.push(["namespaced", e])).listen(".raw-event", (e) => got.push(["raw", e]));
  await ready(ch);
  await sdk.trigger(name, "App\\Events\\OrderShipped", { order: { id: 1 } });
  await sdk.trigger(name, "raw-event", { plain: true });
  await waitFor(() => got.length >= 2, "both events");
  await sleep(300);
  assert.deepEqual(got, [
    ["namespaced", { order: { id: 1 } }],
    ["raw", { plain: true }],
  ]);
});

test("socketId() with the SDK's socket_id: toOthers leaves the sender out", async () => {
  const a = echoOf();
  const b = echoOf();
  const name = uniq("others-");
  const gotA = [];
  const gotB = [];
  await ready(a.echo.channel(name).listen(".note", (e) => gotA.push(e)));
  await ready(b.echo.channel(name).listen(".note", (e) => gotB.push(e)));
  const socketId = a.echo.socketId();
  assert.equal(socketId, await connected(a.client));
  await sdk.trigger(name, "note", { n: 1 }, { socket_id: socketId });
  await waitFor(() => gotB.length >= 1, "b's event");
  await sleep(300);
  assert.equal(gotA.length, 0);
  assert.equal(gotB.length, 1);
});

test("private().listen, and whisper/listenForWhisper on a private channel", async () => {
  const a = echoOf();
  const b = echoOf();
  const name = uniq("doc-");
  const got = [];
  const whispersA = [];
  const whispersB = [];
  const chA = await ready(a.echo.private(name).listen("DocSaved", (e) => got.push(e)).listenForWhisper("typing", (e) => whispersA.push(e)));
  await ready(b.echo.private(name).listenForWhisper("typing", (e) => whispersB.push(e)));
  assert.equal(chA.name, `private-${name}`);
  await sdk.trigger(`private-${name}`, "App\\Events\\DocSaved", { rev: 2 });
  await waitFor(() => got.length >= 1, "the private event");
  a.echo.private(name).whisper("typing", { who: "a" });
  await waitFor(() => whispersB.length >= 1, "b's whisper");
  await sleep(300);
  assert.deepEqual(got, [{ rev: 2 }]);
  assert.deepEqual(whispersB, [{ who: "a" }]);
  assert.equal(whispersA.length, 0, "a whisper is not echoed");
});

test("join(): here, joining, leaving, and whispers on a presence channel", async () => {
  const name = uniq("room-");
  const alice = echoOf({ user: "1", info: { name: "Alice" } });
  const bob = echoOf({ user: "2", info: { name: "Bob" } });
  const hereA = [];
  const joiningA = [];
  const leavingA = [];
  const whispersA = [];
  alice.echo
    .join(name)
    .here((users) => hereA.push(users))
    .joining((u) => joiningA.push(u))
    .leaving((u) => leavingA.push(u))
    .listenForWhisper("typing", (e) => whispersA.push(e));
  await waitFor(() => hereA.length >= 1, "alice's here()");
  assert.deepEqual(hereA, [[{ name: "Alice" }]]);

  const hereB = [];
  const joiningB = [];
  bob.echo
    .join(name)
    .here((users) => hereB.push(users))
    .joining((u) => joiningB.push(u));
  await waitFor(() => hereB.length >= 1, "bob's here()");
  assert.deepEqual(
    hereB[0].map((u) => u.name).sort(),
    ["Alice", "Bob"],
  );
  await waitFor(() => joiningA.length >= 1, "alice's joining()");
  assert.deepEqual(joiningA, [{ name: "Bob" }]);

  bob.echo.join(name).whisper("typing", { name: "Bob" });
  await waitFor(() => whispersA.length >= 1, "alice's whisper");
  assert.deepEqual(whispersA, [{ name: "Bob" }]);

  bob.echo.leave(name);
  await waitFor(() => leavingA.length >= 1, "alice's leaving()");
  await sleep(300);
  assert.deepEqual(leavingA, [{ name: "Bob" }]);
  assert.equal(joiningA.length, 1);
  assert.equal(joiningB.length, 0, "bob never hears of himself");
});

test("the options form (Echo builds pusher-js itself, with the same options)", async () => {
  const echo = new Echo({
    broadcaster: "pusher",
    Pusher: PusherJS,
    key: app.key,
    cluster: "mt1",
    wsHost: "127.0.0.1",
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName)) },
  });
  try {
    const name = uniq("opts-");
    const got = [];
    await ready(echo.private(name).listen(".ping", (e) => got.push(e)));
    await sdk.trigger(`private-${name}`, "ping", { ok: 1 });
    await waitFor(() => got.length >= 1, "the event");
    assert.deepEqual(got, [{ ok: 1 }]);
    assert.equal(echo.connectionStatus(), "connected");
  } finally {
    echo.disconnect();
  }
});
