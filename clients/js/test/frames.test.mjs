// Against a fake relay.v1 server (ws): unreadable frames are reported as
// "error" events and skipped, never thrown; duplicates are dropped by
// offset, holes and epoch changes are gaps; a reconnect resubscribes with
// since = the last offset delivered; close codes decide whether to reconnect.
import assert from "node:assert/strict";
import { test } from "node:test";
import { execFileSync } from "node:child_process";
import { WebSocketServer } from "ws";
import { relay, seed, next, waitFor, trapUncaught } from "./helpers.mjs";

/** A WebSocket server speaking relay.v1 that hands each connection to onConnection(socket, n, req). */
async function fakeServer(onConnection) {
  let n = 0;
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (p) => (p.has("relay.v1") ? "relay.v1" : false) });
  await new Promise((r) => wss.on("listening", r));
  wss.on("connection", (socket, req) => onConnection(socket, n++, req));
  return { url: `ws://127.0.0.1:${wss.address().port}/ws/fake`, close: () => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r); }) };
}

/** Resolves with the next JSON command a socket receives. */
const command = (socket) => new Promise((r) => socket.once("message", (d) => r(JSON.parse(String(d)))));

const GARBAGE = [
  "not json",
  "",
  "[1,2]",
  "null",
  "42",
  '"a string"',
  "[".repeat(100000),
  '{"type":5}',
  '{"no":"type"}',
  '{"type":"wat","topic":"t"}',
  '{"type":"__proto__"}',
  '{"__proto__":{"type":"message"}}',
  '{"type":"message"}',
  '{"type":"message","topic":"t","offset":"7","epoch":"e1","message":"m"}',
  '{"type":"message","topic":"t","offset":7,"epoch":null,"message":"m"}',
  '{"type":"message","topic":"t","offset":3,"epoch":"e1","message":{"x":1}}',
  '{"type":"subscribed","topic":"t"}',
  '{"type":"subscribed","topic":7,"offset":1,"epoch":"e1"}',
  '{"type":"join","topic":"t","user_id":{}}',
  '{"type":"join","topic":"t","user_id":-1}',
  '{"type":"leave","topic":null,"user_id":1}',
];

test("invalid frames: reported as errors, skipped, never thrown; dedupe, gaps, and since on reconnect", { timeout: 20000 }, async (t) => {
  const trap = trapUncaught();
  t.after(() => trap.stop());
  const commands = [];
  const server = await fakeServer(async (socket, n) => {
    const cmd = await command(socket);
    commands.push(cmd);
    const send = (f) => socket.send(typeof f == "string" ? f : JSON.stringify(f));
    const msg = (offset, epoch = "e1") => send({ type: "message", topic: "t", offset, epoch, message: `m${offset}${epoch}` });
    if (n == 0) {
      send({ type: "subscribed", id: cmd.id, topic: "t", offset: 0, epoch: "e1", recovered: false });
      for (const g of GARBAGE) send(g);
      socket.send(Buffer.from([1, 2, 3])); // binary
      send({ type: "error", code: "invalid", message: "not for any command" });
      msg(1); msg(2); msg(2); msg(1); // duplicates
      msg(5); // a hole: 3 and 4 are lost
      msg(1, "e2"); // a new epoch
      send({ type: "message", topic: "other", offset: 1, epoch: "x", message: "not subscribed" });
      send({ type: "message", topic: "t", message: "private" });
      setTimeout(() => socket.close(4003, "idle"), 50);
    } else {
      send({ type: "subscribed", id: cmd.id, topic: "t", offset: 3, epoch: "e2", recovered: true });
      msg(2, "e2"); msg(3, "e2"); msg(3, "e2");
    }
  });
  t.after(() => server.close());
  const client = relay({ url: server.url });
  t.after(() => client.close());
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const sub = client.subscribe("t");
  const log = [];
  sub.on("message", (m) => log.push(m.private ? `private ${m.message}` : `${m.offset}${m.epoch}`));
  sub.on("gap", (g) => log.push(`gap ${g.offset}${g.epoch}`));
  await waitFor(() => log.length >= 9, `the frames (${log})`);
  assert.deepEqual(log, ["1e1", "2e1", "gap 4e1", "5e1", "gap 0e2", "1e2", "private private", "2e2", "3e2"]);
  const frameErrors = errors.filter((e) => e.code == "frame");
  assert.equal(frameErrors.length, GARBAGE.length + 1, frameErrors.map((e) => e.message).join("\n"));
  assert.ok(frameErrors.every((e) => e instanceof Error && e.name == "RelayError"));
  assert.deepEqual(errors.filter((e) => e.code == "server").map((e) => e.serverCode), ["invalid"]);
  assert.deepEqual(commands, [
    { type: "subscribe", id: "1", topics: ["t"] },
    { type: "subscribe", id: "2", topics: ["t"], since: { t: { offset: 1, epoch: "e2" } } },
  ]);
  assert.deepEqual(sub.position, { offset: 3, epoch: "e2" });
  await new Promise((r) => setTimeout(r, 20)); // let any deferred throw surface
  assert.deepEqual(trap.seen, []);
});

test("a listener that throws does not break the client: the others run, its exception is reported asynchronously", { timeout: 20000 }, async () => {
  // node:test fails a test on any uncaught exception, so this runs in a child process.
  const code = `
    import { Emitter } from "./dist/index.js";
    const reported = [];
    process.on("uncaughtException", (e) => reported.push(e.message));
    const em = new Emitter();
    const seen = [];
    em.on("message", (m) => { if (m == 1) throw new Error("app bug"); });
    em.on("message", (m) => seen.push(m));
    for (const m of [1, 2, 3]) em.emit("message", m);
    setTimeout(() => console.log(JSON.stringify({ seen, reported })), 50);
  `;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", code], { cwd: new URL("..", import.meta.url), encoding: "utf8", timeout: 10000 });
  assert.deepEqual(JSON.parse(out), { seen: [1, 2, 3], reported: ["app bug"] });
});

for (const code of [1001, 1011, 4002, 4003, 4004]) {
  test(`close code ${code}: reconnect`, { timeout: 20000 }, async (t) => {
    const server = await fakeServer((socket, n) => n == 0 && setTimeout(() => socket.close(code, "bye"), 10));
    t.after(() => server.close());
    const client = relay({ url: server.url });
    t.after(() => client.close());
    const d = await next(client, "disconnect");
    assert.deepEqual(d, { code, reason: "bye", reconnect: true });
    await next(client, "open");
  });
}

for (const code of [1002, 1003, 1007, 1008, 1009]) {
  test(`close code ${code}: stop, with the code in the error`, { timeout: 20000 }, async (t) => {
    const server = await fakeServer((socket) => setTimeout(() => socket.close(code, "you broke it"), 10));
    t.after(() => server.close());
    const client = seed({ url: server.url.replace("ws://", "http://") });
    t.after(() => client.close());
    const [d, end] = await Promise.all([next(client, "disconnect"), next(client, "end")]);
    assert.deepEqual(d, { code, reason: "you broke it", reconnect: false });
    assert.equal(end.error.code, "closed");
    assert.equal(end.error.closeCode, code);
    assert.equal(client.state, "closed");
  });
}

test("close code 4004 on every connection: the backoff keeps growing instead of restarting", { timeout: 20000 }, async (t) => {
  const server = await fakeServer((socket) => setTimeout(() => socket.close(4004, "slow down"), 5));
  t.after(() => server.close());
  const client = relay({ url: server.url, backoff: { base: 1, max: 8 } });
  t.after(() => client.close());
  const attempts = [];
  client.on("reconnect", (e) => attempts.push(e.attempt));
  await waitFor(() => attempts.length >= 4, "4 reconnects");
  assert.deepEqual(attempts.slice(0, 4), [1, 2, 3, 4]);
});
