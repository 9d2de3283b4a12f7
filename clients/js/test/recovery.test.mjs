// Recovery across cut sockets (a TCP proxy between client and server):
// every offset exactly once; a new epoch or trimmed history is a gap.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startServer, startProxy, register, publish, relay, next, waitFor, via } from "./helpers.mjs";

test("recovery: 200 messages across two cut sockets, each offset delivered exactly once", { timeout: 60000 }, async (t) => {
  const server = await startServer(["-history", "1000/5m"]);
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const client = relay({ url: via(await register(server, 1), proxy) });
  t.after(() => client.close());
  const sub = client.subscribe("feed");
  const offsets = [];
  const gaps = [];
  let opens = 0;
  sub.on("message", (m) => offsets.push(m.offset));
  sub.on("gap", (g) => gaps.push(g));
  client.on("open", () => opens++);
  await sub.ready;
  let n = 0;
  const burst = async (k) => {
    for (let i = 0; i < k; i++) await publish(server, "feed", `m${++n}`);
  };
  await burst(50); // before
  // Cut while messages flow, and keep the client out while more are published.
  const flowing = burst(30);
  await waitFor(() => offsets.length >= 60, "some messages to arrive", 10000);
  proxy.refuse = true;
  proxy.cut();
  await flowing;
  await burst(40); // while disconnected: only history has them
  await waitFor(() => client.state == "waiting" || client.state == "connecting", "the client to notice");
  proxy.refuse = false;
  await waitFor(() => opens == 2, "the reconnect");
  await burst(30); // after
  // A second cut in the middle of a burst, with no pause.
  const again = burst(50);
  await waitFor(() => offsets.length >= 160, "more messages", 10000);
  proxy.cut();
  await again;
  await waitFor(() => opens >= 3, "the second reconnect");
  assert.equal(n, 200);
  await waitFor(() => offsets.length >= 200, `all 200 messages (have ${offsets.length})`, 15000);
  await publish(server, "feed", "after");
  await waitFor(() => offsets.length >= 201, "the last message");
  assert.deepEqual(offsets, Array.from({ length: 201 }, (_, i) => i + 1), "each offset once, in order");
  assert.deepEqual(gaps, []);
  assert.equal(sub.position.offset, 201);
});

test("recovery: trimmed history is a gap with the new position, never a silent loss", { timeout: 30000 }, async (t) => {
  const server = await startServer(["-history", "5/5m"]);
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const client = relay({ url: via(await register(server, 1), proxy) });
  t.after(() => client.close());
  const sub = client.subscribe("feed");
  const log = [];
  sub.on("message", (m) => log.push(["message", m.offset]));
  sub.on("gap", (g) => log.push(["gap", g.offset, g.epoch]));
  await sub.ready;
  for (let i = 1; i <= 3; i++) await publish(server, "feed", `m${i}`);
  await waitFor(() => log.length == 3, "3 messages");
  proxy.refuse = true;
  proxy.cut();
  let epoch;
  for (let i = 4; i <= 20; i++) epoch = (await publish(server, "feed", `m${i}`)).epoch;
  proxy.refuse = false;
  await waitFor(() => log.some((e) => e[0] == "gap"), "a gap");
  await publish(server, "feed", "m21");
  await waitFor(() => log.length == 5, "the message after the gap");
  assert.deepEqual(log, [["message", 1], ["message", 2], ["message", 3], ["gap", 20, epoch], ["message", 21]]);
});

test("recovery: a server restart (new epoch) is a gap with the new epoch and offset", { timeout: 30000 }, async (t) => {
  let server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  let registrations = 0;
  // A new server knows no registration: register again on each reconnect.
  const client = relay({
    getUrl: async () => {
      registrations++;
      return via(await register(server, 1), proxy);
    },
  });
  t.after(() => client.close());
  const sub = client.subscribe("feed");
  const log = [];
  sub.on("message", (m) => log.push(["message", m.offset, m.epoch]));
  sub.on("gap", (g) => log.push(["gap", g.offset, g.epoch]));
  const first = await sub.ready;
  for (let i = 1; i <= 4; i++) await publish(server, "feed", `m${i}`);
  await waitFor(() => log.length == 4, "4 messages");
  proxy.refuse = true;
  await server.stop();
  proxy.cut();
  server = await startServer();
  proxy.target = server.port;
  let second;
  for (let i = 1; i <= 2; i++) second = await publish(server, "feed", `n${i}`);
  assert.notEqual(second.epoch, first.epoch);
  proxy.refuse = false;
  const gap = await next(sub, "gap", 15000);
  assert.deepEqual(gap, { topic: "feed", offset: 2, epoch: second.epoch });
  assert.deepEqual(sub.position, { offset: 2, epoch: second.epoch });
  await publish(server, "feed", "n3");
  await waitFor(() => log.length == 6, "the message after the gap");
  assert.deepEqual(log.slice(4), [
    ["gap", 2, second.epoch],
    ["message", 3, second.epoch],
  ]);
  assert.ok(registrations >= 2, `getUrl called ${registrations} times`);
});
