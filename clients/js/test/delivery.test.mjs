// Delivery against the real server: every message exactly once, in
// order, with its offset; private messages; the seed protocol; refused
// subscriptions.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startServer, register, publish, relay, seed, next, waitFor, mintToken, SECRET, API_KEY } from "./helpers.mjs";

test("relay.v1: every published message arrives once, in offset order, per topic", { timeout: 30000 }, async (t) => {
  const server = await startServer(["-api-keys", API_KEY]);
  t.after(() => server.stop());
  const key = { key: API_KEY };
  const url = await register(server, 7, key);
  const client = relay({ url });
  t.after(() => client.close());
  const a = client.subscribe("orders");
  const b = client.subscribe("chat", { presence: true });
  const got = { orders: [], chat: [] };
  const priv = [];
  const all = [];
  for (const sub of [a, b]) {
    sub.on("message", (m) => (m.private ? priv : got[m.topic]).push(m));
    sub.on("gap", (g) => assert.fail(`unexpected gap ${JSON.stringify(g)}`));
  }
  client.on("message", (m) => all.push(m));
  assert.deepEqual(await a.ready, { offset: 0, epoch: a.position.epoch });
  await b.ready;
  const N = 120, M = 45;
  const pubs = [];
  for (let i = 1; i <= N; i++) pubs.push(publish(server, "orders", `o${i}`, {}, key));
  for (let i = 1; i <= M; i++) pubs.push(publish(server, "chat", `c${i}`, {}, key));
  await Promise.all(pubs);
  await publish(server, "chat", "just for 7", { user_id: 7 }, key);
  await publish(server, "chat", "just for 8", { user_id: 8 }, key);
  await waitFor(() => got.orders.length >= N && got.chat.length >= M && priv.length >= 1, "all messages");
  // One more: nothing else (no duplicate) was on its way before it.
  await publish(server, "orders", "last", {}, key);
  await waitFor(() => got.orders.length == N + 1, "the last message");
  assert.deepEqual(got.orders.map((m) => m.offset), Array.from({ length: N + 1 }, (_, i) => i + 1));
  assert.deepEqual(got.chat.map((m) => m.offset), Array.from({ length: M }, (_, i) => i + 1));
  assert.deepEqual(new Set(got.orders.slice(0, N).map((m) => m.message)).size, N);
  assert.deepEqual(priv.map((m) => [m.message, m.private, m.offset]), [["just for 7", true, undefined]]);
  assert.equal(all.length, N + 1 + M + 1);
  assert.deepEqual(client.position("orders"), { offset: N + 1, epoch: got.orders[0].epoch });
  assert.deepEqual(b.position, { offset: M, epoch: got.chat[0].epoch });
  assert.equal(client.state, "open");
  assert.deepEqual([...client.subscriptions.keys()].sort(), ["chat", "orders"]);
});

test("relay.v1: unsubscribe stops delivery; an AbortSignal unsubscribes too", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const client = relay({ url: await register(server, 1) });
  t.after(() => client.close());
  const ac = new AbortController();
  const a = client.subscribe("a");
  const b = client.subscribe("b", { signal: ac.signal });
  await Promise.all([a.ready, b.ready]);
  assert.equal((await publish(server, "a", "x")).delivered, 1);
  assert.equal((await publish(server, "b", "x")).delivered, 1);
  a.unsubscribe();
  ac.abort();
  assert.equal(a.active, false);
  assert.equal(b.active, false);
  // The server answers commands in order: c's confirmation proves the unsubscribes took effect.
  const c = client.subscribe("c");
  await c.ready;
  assert.equal((await publish(server, "a", "y")).delivered, 0);
  assert.equal((await publish(server, "b", "y")).delivered, 0);
  assert.equal((await publish(server, "c", "y")).delivered, 1);
});

test("relay.v1: a refused topic fails alone, with a typed error; the others of the same batch work", { timeout: 20000 }, async (t) => {
  const server = await startServer(["-token-secret", SECRET]);
  t.after(() => server.stop());
  const client = relay({ url: server.ws, token: mintToken({ sub: "5", topics: ["public.*"] }) });
  t.after(() => client.close());
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const ok = client.subscribe("public.news");
  const bad = client.subscribe("private.admin"); // same task: one subscribe command
  const subErr = next(bad, "error");
  await ok.ready;
  await assert.rejects(bad.ready, (e) => e.name == "RelayError" && e.code == "server" && e.serverCode == "forbidden" && e.topic == "private.admin");
  assert.equal((await subErr).serverCode, "forbidden");
  assert.equal(bad.active, false);
  assert.equal(client.subscriptions.has("private.admin"), false);
  assert.deepEqual(errors.map((e) => e.serverCode), ["forbidden"]);
  const m = next(ok, "message");
  assert.equal((await publish(server, "public.news", "hi")).delivered, 1);
  assert.equal((await m).message, "hi");
});

test("seed protocol: raw text frames on the topics set, on every connection", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const url = await register(server, 3);
  const client = seed({ url, topics: ["dogs"] });
  t.after(() => client.close());
  const got = [];
  client.on("message", (m) => got.push(m.message));
  await next(client, "open");
  await waitFor(async () => (await publish(server, "dogs", "probe")).delivered == 1, "the topics command to take effect");
  await waitFor(() => got.includes("probe"), "the probe");
  got.length = 0;
  for (let i = 0; i < 30; i++) await publish(server, "dogs", `woof ${i} "quoted" é`);
  assert.equal((await publish(server, "cats", "meow")).delivered, 0); // the default topic was replaced
  await waitFor(() => got.length >= 30, "30 messages");
  assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => `woof ${i} "quoted" é`));
  client.setTopics(["cats"]);
  await waitFor(async () => (await publish(server, "cats", "meow")).delivered == 1, "setTopics to take effect");
  assert.equal((await publish(server, "dogs", "woof")).delivered, 0);
  assert.deepEqual(client.topics, ["cats"]);
});

test("seed protocol: with no topics given, the server's default (cats) applies", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const client = seed({ url: await register(server, 3) });
  t.after(() => client.close());
  await next(client, "open");
  const got = next(client, "message");
  await waitFor(async () => (await publish(server, "cats", "are awesome")).delivered == 1, "the socket to be registered");
  assert.equal((await got).message, "are awesome");
});
