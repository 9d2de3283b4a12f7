// Scenario 10: raw frames with `ws`: the handshake, ping/pong, refusals.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { closeClients, newApp, rawSocket, serverSdk, startServer, stopServers, uniq } from "./helpers.mjs";

const app = newApp();
let server;
before(async () => {
  server = await startServer({ app });
});
afterEach(closeClients);
after(stopServers);

test("connection_established: a socket_id N.M and a whole activity_timeout of at least 1", async () => {
  const s = await rawSocket(server, app.key);
  const f = await s.next();
  assert.equal(f.event, "pusher:connection_established");
  assert.equal(s.frames.indexOf(f), 0, "the first frame");
  assert.equal(typeof f.data, "string", "data is a string holding JSON, as pusher-js expects");
  const d = JSON.parse(f.data);
  assert.match(d.socket_id, /^\d+\.\d+$/);
  assert.ok(Number.isInteger(d.activity_timeout) && d.activity_timeout >= 1, `activity_timeout ${d.activity_timeout}`);
  assert.equal(d.activity_timeout, 120);
  // Two sockets get two ids from one process prefix.
  const t = await rawSocket(server, app.key);
  const d2 = JSON.parse((await t.next("pusher:connection_established")).data);
  assert.notEqual(d2.socket_id, d.socket_id);
  assert.equal(d2.socket_id.split(".")[0], d.socket_id.split(".")[0]);
});

test("pusher:ping is answered with pusher:pong", async () => {
  const s = await rawSocket(server, app.key);
  await s.next("pusher:connection_established");
  for (let i = 0; i < 3; i++) {
    s.send("pusher:ping", {});
    const f = await s.next("pusher:pong");
    assert.equal(f.data, "{}");
  }
  assert.equal(s.frames.filter((f) => f.event === "pusher:pong").length, 3);
});

test("an unknown key: pusher:error 4001, then close 4001", async () => {
  const s = await rawSocket(server, "no-such-key");
  const { code } = await s.closed();
  assert.equal(code, 4001);
  assert.equal(s.frames.length, 1, JSON.stringify(s.frames));
  assert.equal(s.frames[0].event, "pusher:error");
  assert.equal(s.frames[0].data.code, 4001);
});

test("no protocol: 4008; protocol 8: 4007", async () => {
  for (const [query, want] of [
    ["", 4008],
    ["protocol=8", 4007],
  ]) {
    const s = await rawSocket(server, app.key, query);
    const { code } = await s.closed();
    assert.equal(code, want, query);
    assert.equal(s.frames[0]?.event, "pusher:error", query);
    assert.equal(s.frames[0].data.code, want, query);
  }
});

test("an event frame: event, channel and data as the string the SDK sent", async () => {
  const s = await rawSocket(server, app.key);
  await s.next("pusher:connection_established");
  const name = uniq("raw-");
  s.send("pusher:subscribe", { channel: name });
  const ok = await s.next();
  assert.deepEqual(ok, { event: "pusher_internal:subscription_succeeded", channel: name, data: "{}", taken: true });
  await serverSdk(server, app).trigger(name, "hello", { a: [1, "b"] });
  const f = await s.next("hello");
  assert.deepEqual(f, { event: "hello", channel: name, data: JSON.stringify({ a: [1, "b"] }), taken: true });
});
