// Scenario 7: user sign-in (pusher-js signin() through the SDK's
// authenticateUser), sendToUser and terminateUserConnections.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { closeClients, collect, connected, newApp, pusherClient, serverSdk, sleep, startServer, stopServers, subscribe, uniq, waitFor } from "./helpers.mjs";

const app = newApp();
let server, sdk;
before(async () => {
  server = await startServer({ app });
  sdk = serverSdk(server, app);
});
afterEach(closeClients);
after(stopServers);

/** A client signed in as user, once its #server-to-user- channel is subscribed. */
async function signedIn(user) {
  const c = pusherClient(server, app, { user, info: { name: user.toUpperCase() } });
  await connected(c);
  c.signin();
  await waitFor(() => c.user.serverToUserChannel?.subscribed, `${user}'s sign-in and #server-to-user-${user}`);
  return c;
}

test("sendToUser reaches that user's connections only", async () => {
  const alice1 = await signedIn("alice");
  const alice2 = await signedIn("alice");
  const bob = await signedIn("bob");
  assert.deepEqual(alice1.user.user_data, { id: "alice", name: "ALICE" });
  const logs = [alice1, alice2, bob].map((c) => collect(c.user, "note"));
  const res = await sdk.sendToUser("alice", "note", { text: "hi alice" });
  assert.equal(res.status, 200);
  await sdk.sendToUser("bob", "note", { text: "hi bob" });
  await waitFor(() => logs.every((l) => l.length >= 1), "every connection's note");
  await sleep(300);
  assert.deepEqual(
    logs.map((l) => l.map((e) => e.data.text)),
    [["hi alice"], ["hi alice"], ["hi bob"]],
  );
});

test("terminateUserConnections closes that user's connections (4009, no reconnect) and not another's", async () => {
  const alice1 = await signedIn("alice");
  const alice2 = await signedIn("alice");
  const bob = await signedIn("bob");
  const name = uniq("after-terminate-");
  const chBob = await subscribe(bob, name);
  const res = await sdk.terminateUserConnections("alice");
  assert.equal(res.status, 200);
  for (const c of [alice1, alice2]) {
    await waitFor(() => ["disconnected", "unavailable", "failed"].includes(c.connection.state), "alice's connection to close");
  }
  // No reconnect: give pusher-js time to try.
  await sleep(2000);
  for (const c of [alice1, alice2]) {
    assert.ok(["disconnected", "unavailable"].includes(c.connection.state), `state ${c.connection.state}, states ${c.states}`);
    // pusher-js reports the close as a PusherError and again wrapped in a WebSocketError.
    const codes = new Set(c.errors.map((e) => e.data?.code ?? e.error?.data?.code));
    assert.deepEqual([...codes], [4009], JSON.stringify(c.errors));
    assert.equal(c.states.filter((s) => s === "connected").length, 1, `states ${c.states}`);
  }
  assert.equal(bob.connection.state, "connected");
  assert.deepEqual(bob.states, ["connected"]);
  const got = collect(chBob, "still");
  await sdk.trigger(name, "still", { here: true });
  await waitFor(() => got.length >= 1, "bob's event");
});

test("watchlists: online for who is signed in already, then online and offline as watched users come and go", async () => {
  const [bobId, carolId] = [uniq("bob-"), uniq("carol-")];
  const carol = await signedIn(carolId);
  const c = pusherClient(server, app, { user: uniq("alice-"), info: { watchlist: [bobId, carolId] } });
  const online = collect(c.user.watchlist, "online");
  const offline = collect(c.user.watchlist, "offline");
  await connected(c);
  c.signin();
  await waitFor(() => c.user.serverToUserChannel?.subscribed, "alice's sign-in");
  await waitFor(() => online.length >= 1, "the initial online event");
  assert.deepEqual(online[0].data, { name: "online", user_ids: [carolId] });
  const bob = await signedIn(bobId);
  await waitFor(() => online.length >= 2, "bob's online event");
  assert.deepEqual(online[1].data, { name: "online", user_ids: [bobId] });
  bob.disconnect();
  await waitFor(() => offline.length >= 1, "bob's offline event", 10000);
  assert.deepEqual(offline[0].data, { name: "offline", user_ids: [bobId] });
  await sleep(300);
  assert.equal(online.length, 2);
  assert.equal(offline.length, 1);
  assert.equal(carol.connection.state, "connected");
});
