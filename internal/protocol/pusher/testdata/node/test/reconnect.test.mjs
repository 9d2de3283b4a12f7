// Scenario 8: a graceful restart (SIGTERM, then a new server on the same
// port): pusher-js is closed with 4200, reconnects by itself and
// resubscribes, with fresh authorizations for its new socket id.
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";

import { closeClients, collect, connected, members, newApp, pusherClient, serverSdk, sleep, startServer, stopServers, subscribe, uniq, waitFor } from "./helpers.mjs";

afterEach(closeClients);
after(stopServers);

test("SIGTERM closes with 4200; pusher-js reconnects to the restarted server and resubscribes", async (t) => {
  const app = newApp();
  let server = await startServer({ app });
  const port = server.port;
  const sdk = serverSdk(server, app); // same host and port after the restart
  const c = pusherClient(server, app, { user: "alice", info: { n: 1 } });
  const before = await connected(c);
  const names = [uniq("news-"), uniq("private-news-"), uniq("presence-news-")];
  const chans = await Promise.all(names.map((n) => subscribe(c, n)));
  const succeeded = chans.map((ch) => collect(ch, "pusher:subscription_succeeded"));
  const got = chans.map((ch) => collect(ch, "headline"));

  const t1 = Date.now();
  const stopped = await server.terminate();
  const stopping = Date.now() - t1;
  assert.equal(stopped.code, 0, `exit ${JSON.stringify(stopped)}`);
  await waitFor(() => c.connection.state !== "connected", "pusher-js to see the close");
  const codes = new Set(c.errors.map((e) => e.data?.code ?? e.error?.data?.code));
  assert.ok(codes.has(4200), `close codes seen: ${JSON.stringify(c.errors)}`);

  const t0 = Date.now();
  server = await startServer({ app, addr: `127.0.0.1:${port}` });
  const after = await waitFor(() => c.connection.state === "connected" && c.connection.socket_id !== before && c.connection.socket_id, "pusher-js to reconnect", 30000);
  await waitFor(() => succeeded.every((l) => l.length >= 1), "every channel to resubscribe", 10000);
  const took = Date.now() - t0;
  assert.notEqual(after, before);
  assert.deepEqual(members(chans[2]), { count: 1, ids: ["alice"], me: { id: "alice", info: { n: 1 } } });

  for (const n of names) await sdk.trigger(n, "headline", { after: "restart", n });
  await waitFor(() => got.every((l) => l.length >= 1), "the events after the restart");
  await sleep(300);
  assert.deepEqual(
    got.map((l) => l.map((e) => e.data.n)),
    names.map((n) => [n]),
  );
  assert.deepEqual(
    succeeded.map((l) => l.length),
    [1, 1, 1],
  );
  // Reconnected "by itself": connected twice, never refused.
  assert.equal(c.states.filter((s) => s === "connected").length, 2, `states ${c.states}`);
  assert.ok(!c.states.includes("failed"), `states ${c.states}`);
  // pusher-js retries at once after 4200, finds nothing listening while
  // the port is free, and then waits out its own schedule (it reports
  // "unavailable" after 10 s and tries again after 15 s).
  t.diagnostic(`SIGTERM to exit ${stopping} ms; reconnected and resubscribed ${took} ms after the new server started; states ${c.states.join(" > ")}`);
});
