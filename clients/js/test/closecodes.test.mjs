// The real server's final close codes: 4000 (registration deleted) and
// 4001 (replaced by a newer connection) end the client, no reconnect.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startServer, startProxy, register, publish, relay, next, via } from "./helpers.mjs";

test("4000: a deleted registration ends the client for good", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const url = await register(server, 1);
  const client = relay({ url: via(url, proxy) });
  t.after(() => client.close());
  await client.subscribe("x").ready;
  const ended = Promise.all([next(client, "disconnect"), next(client, "end")]);
  await fetch(server.http + "/register/" + url.split("/").at(-1), { method: "DELETE" });
  const [d, end] = await ended;
  assert.equal(d.code, 4000);
  assert.equal(d.reconnect, false);
  assert.equal(end.error.code, "closed");
  assert.equal(end.error.closeCode, 4000);
  assert.equal(proxy.accepted, 1);
  assert.equal(client.state, "closed");
});

test("4001: the connection a newer one replaced stops; the newer one keeps working", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const url = await register(server, 1);
  const first = relay({ url });
  t.after(() => first.close());
  await first.subscribe("x").ready;
  const ended = next(first, "end");
  const second = relay({ url });
  t.after(() => second.close());
  const sub = second.subscribe("x");
  const end = await ended;
  assert.equal(end.error.closeCode, 4001);
  await sub.ready;
  const got = next(sub, "message");
  assert.equal((await publish(server, "x", "hello")).delivered, 1);
  assert.equal((await got).message, "hello");
  assert.equal(second.state, "open");
});
