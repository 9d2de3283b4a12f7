// Scenario 1: public channels, pusher-js against the SDK's trigger.
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

test("50 triggers arrive exactly once, in order, objects round-tripping through the SDK's JSON", async () => {
  const c = pusherClient(server, app);
  const name = uniq("orders-");
  const ch = await subscribe(c, name);
  const got = collect(ch, "created");
  const sent = [];
  for (let i = 0; i < 50; i++) {
    const data = { n: i, text: `order <${i}> & "quotes" é ✓`, nested: { list: [i, i * 2, null, true], empty: {} } };
    sent.push(data);
    const res = await sdk.trigger(name, "created", data);
    assert.equal(res.status, 200);
  }
  await waitFor(() => got.length >= 50, "50 events", 10000);
  await sleep(300); // nothing more
  assert.equal(got.length, 50);
  assert.deepEqual(
    got.map((e) => e.data),
    sent,
  );
});

test("a trigger with socket_id leaves that client out", async () => {
  const a = pusherClient(server, app);
  const b = pusherClient(server, app);
  const name = uniq("room-");
  const [chA, chB] = await Promise.all([subscribe(a, name), subscribe(b, name)]);
  const gotA = collect(chA, "note");
  const gotB = collect(chB, "note");
  const socketA = await connected(a);
  await sdk.trigger(name, "note", { to: "everyone but a" }, { socket_id: socketA });
  await sdk.trigger(name, "note", { to: "everyone" });
  await waitFor(() => gotB.length >= 2, "b's two events");
  await waitFor(() => gotA.length >= 1, "a's one event");
  await sleep(300);
  assert.deepEqual(
    gotB.map((e) => e.data.to),
    ["everyone but a", "everyone"],
  );
  assert.deepEqual(
    gotA.map((e) => e.data.to),
    ["everyone"],
  );
});

test("a trigger to 3 channels reaches each channel once", async () => {
  const c = pusherClient(server, app);
  const other = pusherClient(server, app);
  const names = [uniq("multi-a-"), uniq("multi-b-"), uniq("multi-c-")];
  const chans = await Promise.all(names.map((n) => subscribe(c, n)));
  const onOther = await subscribe(other, names[1]); // one of the three only
  const logs = chans.map((ch) => collect(ch, "tick"));
  const otherLog = collect(onOther, "tick");
  const res = await sdk.trigger(names, "tick", { at: 1 });
  assert.equal(res.status, 200);
  await waitFor(() => logs.every((l) => l.length >= 1) && otherLog.length >= 1, "the event on every channel");
  await sleep(300);
  assert.deepEqual(
    logs.map((l) => l.length),
    [1, 1, 1],
  );
  assert.equal(otherLog.length, 1);
  for (const l of logs) assert.deepEqual(l[0].data, { at: 1 });
});
