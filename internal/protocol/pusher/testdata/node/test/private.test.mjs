// Scenario 2: private channels authorized by the SDK's authorizeChannel
// through pusher-js's channelAuthorization.customHandler.
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

test("an authorized private channel: subscription_succeeded, then events", async () => {
  const c = pusherClient(server, app);
  const name = uniq("private-orders-");
  const ch = c.subscribe(name);
  const succeeded = collect(ch, "pusher:subscription_succeeded");
  const failed = collect(ch, "pusher:subscription_error");
  await waitFor(() => succeeded.length > 0 || failed.length > 0, "the subscription's outcome");
  assert.equal(succeeded.length, 1);
  assert.equal(failed.length, 0);
  assert.equal(ch.subscribed, true);
  const got = collect(ch, "shipped");
  await sdk.trigger(name, "shipped", { id: 7 });
  await waitFor(() => got.length >= 1, "the event");
  await sleep(200);
  assert.deepEqual(
    got.map((e) => e.data),
    [{ id: 7 }],
  );
  assert.deepEqual(c.errors, []);
});

test("a signature made with a wrong secret: pusher:subscription_error reaches the app's bind", async () => {
  const wrong = serverSdk(server, { ...app, secret: "not-the-secret-0123456789" });
  const c = pusherClient(server, app, { sdk: wrong });
  const name = uniq("private-secret-");
  const ch = c.subscribe(name);
  const succeeded = collect(ch, "pusher:subscription_succeeded");
  const failed = collect(ch, "pusher:subscription_error");
  await waitFor(() => failed.length > 0, "pusher:subscription_error");
  await sleep(300);
  assert.equal(failed.length, 1, "one subscription_error");
  assert.equal(succeeded.length, 0);
  assert.equal(ch.subscribed, false);
  const err = failed[0].data;
  assert.equal(err.type, "AuthError", JSON.stringify(err));
  assert.equal(err.status, 401, JSON.stringify(err));
  // The server also sends pusher:error (as Pusher does), which pusher-js
  // reports on the connection; the socket stays connected.
  assert.equal(c.errors.length, 1, JSON.stringify(c.errors));
  assert.equal(c.errors[0].type, "PusherError");
  assert.equal(c.connection.state, "connected");
  // Events of the channel do not reach it.
  const got = collect(ch, "leak");
  await sdk.trigger(name, "leak", {});
  await sleep(300);
  assert.equal(got.length, 0);
  // The socket still works: a public channel on it.
  await subscribe(c, uniq("public-after-"));
});
