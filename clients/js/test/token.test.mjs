// Connect tokens and registration URLs fetched afresh on each reconnect;
// a refused token without a way to get another ends the client.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startServer, startProxy, register, publish, relay, seed, next, waitFor, mintToken, SECRET } from "./helpers.mjs";

test("token refresh: each reconnect asks getToken, and the new connection uses the fresh token", { timeout: 30000 }, async (t) => {
  const server = await startServer(["-token-secret", SECRET]);
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const calls = [];
  // Each token names another user, so what reaches the socket shows which token it used.
  const client = relay({
    url: `http://127.0.0.1:${proxy.port}/`,
    getToken: async (info) => {
      calls.push(info.attempt);
      assert.ok(info.signal instanceof AbortSignal);
      return mintToken({ sub: String(calls.length) });
    },
  });
  t.after(() => client.close());
  const sub = client.subscribe("inbox");
  const got = [];
  sub.on("message", (m) => got.push(m.message));
  await sub.ready;
  assert.deepEqual(calls, [0]);
  assert.equal((await publish(server, "inbox", "to 1", { user_id: 1 })).delivered, 1);
  await waitFor(() => got.length == 1, "the message for user 1");
  proxy.cut();
  await waitFor(() => calls.length == 2 && client.state == "open", "a reconnect with a second token");
  await waitFor(async () => (await publish(server, "inbox", "to 2", { user_id: 2 })).delivered == 1, "the resubscribe");
  assert.equal((await publish(server, "inbox", "to 1 again", { user_id: 1 })).delivered, 0, "the old token's user is gone");
  await waitFor(() => got.includes("to 2"), "the message for user 2");
  assert.equal(got[0], "to 1");
  assert.ok(!got.includes("to 1 again"));
  assert.equal(calls[1], 1);
});

test("registration refresh: getUrl registers again when the old URL is gone (-reconnect-grace 0)", { timeout: 30000 }, async (t) => {
  const server = await startServer(["-reconnect-grace", "0"]);
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const urls = [];
  const client = seed({
    url: (urls.push(await register(server, 9)), urls[0].replace(server.addr, `127.0.0.1:${proxy.port}`)),
    topics: ["news"],
    getUrl: async () => {
      urls.push(await register(server, 9));
      return urls.at(-1).replace(server.addr, `127.0.0.1:${proxy.port}`);
    },
  });
  t.after(() => client.close());
  await next(client, "open");
  await waitFor(async () => (await publish(server, "news", "x")).delivered == 1, "the topics");
  proxy.cut();
  await next(client, "open", 10000);
  assert.ok(urls.length >= 2);
  assert.notEqual(urls[0], urls[1]);
  // The new registration starts on cats: seeing news proves the topics were sent again.
  const got = next(client, "message", 10000, (m) => m.message == "y");
  await waitFor(async () => (await publish(server, "news", "y")).delivered == 1, "the topics on the new connection");
  await got;
});

test("a refused token with no getToken ends the client with an unauthorized error, no retry loop", { timeout: 20000 }, async (t) => {
  const server = await startServer(["-token-secret", SECRET]);
  t.after(() => server.stop());
  const client = relay({ url: server.ws, token: mintToken({ sub: "1", exp: Math.floor(Date.now() / 1000) - 3600 }) });
  t.after(() => client.close());
  const end = await next(client, "end");
  assert.equal(end.error?.code, "unauthorized");
  assert.equal(end.error?.status, 401);
  assert.equal(client.state, "closed");
});

test("a forgotten registration URL with no getUrl ends the client with not_found", { timeout: 20000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const url = await register(server, 1);
  await fetch(server.http + "/register/" + url.split("/").at(-1), { method: "DELETE" });
  const client = relay({ url });
  t.after(() => client.close());
  const end = await next(client, "end");
  assert.equal(end.error?.code, "not_found");
  assert.equal(end.error?.status, 404);
});

test("a getToken that throws is reported and retried, not an unhandled rejection", { timeout: 20000 }, async (t) => {
  const server = await startServer(["-token-secret", SECRET]);
  t.after(() => server.stop());
  let n = 0;
  const client = relay({
    url: server.ws,
    getToken: async () => {
      if (++n < 3) throw new Error(`backend down ${n}`);
      return mintToken({ sub: "1" });
    },
  });
  t.after(() => client.close());
  const errors = [];
  client.on("error", (e) => errors.push(e));
  await next(client, "open");
  assert.deepEqual(errors.map((e) => [e.code, e.cause.message]), [["callback", "backend down 1"], ["callback", "backend down 2"]]);
});
