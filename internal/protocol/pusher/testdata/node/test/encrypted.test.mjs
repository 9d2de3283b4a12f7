// Scenario 5: private-encrypted channels: the SDK encrypts with its master
// key, pusher-js decrypts with the shared_secret authorizeChannel returns,
// and the server only ever carries ciphertext.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, afterEach, before, test } from "node:test";

import { closeClients, collect, newApp, pusherClient, rawSocket, serverSdk, sleep, startServer, stopServers, subscribe, uniq, waitFor } from "./helpers.mjs";

const app = newApp();
const encryptionMasterKeyBase64 = randomBytes(32).toString("base64");
let server, sdk;
before(async () => {
  server = await startServer({ app });
  sdk = serverSdk(server, app, { encryptionMasterKeyBase64 });
});
afterEach(closeClients);
after(stopServers);

test("pusher-js decrypts what the SDK encrypted, in order", async () => {
  const name = uniq("private-encrypted-x-");
  const c = pusherClient(server, app, { sdk });
  const ch = await subscribe(c, name);
  const got = collect(ch, "secret");
  const sent = [];
  for (let i = 0; i < 5; i++) {
    const data = { n: i, text: "top secret ✓", list: [1, 2, i] };
    sent.push(data);
    await sdk.trigger(name, "secret", data);
  }
  await waitFor(() => got.length >= 5, "5 decrypted events");
  await sleep(300);
  assert.deepEqual(
    got.map((e) => e.data),
    sent,
  );
  assert.deepEqual(c.errors, []);
});

test("the frame on the wire is the SDK's nonce and ciphertext", async () => {
  const name = uniq("private-encrypted-raw-");
  const s = await rawSocket(server, app.key);
  const est = await s.next("pusher:connection_established");
  const socketId = JSON.parse(est.data).socket_id;
  const auth = sdk.authorizeChannel(socketId, name);
  assert.ok(auth.shared_secret, "authorizeChannel returns shared_secret");
  s.send("pusher:subscribe", { channel: name, auth: auth.auth });
  const ok = await s.next();
  assert.equal(ok.event, "pusher_internal:subscription_succeeded", JSON.stringify(ok));
  await sdk.trigger(name, "secret", { plain: "do-not-show" });
  const f = await s.next("secret");
  assert.equal(f.channel, name);
  assert.equal(typeof f.data, "string");
  const box = JSON.parse(f.data);
  assert.deepEqual(Object.keys(box).sort(), ["ciphertext", "nonce"]);
  assert.ok(!s.raw.some((t) => t.includes("do-not-show")));
});

// pusher-js itself refuses client events on encrypted channels
// (UnsupportedFeature) and Pusher documents them as unsupported there; a raw
// client's are refused by the server too.
test("client events on an encrypted channel are refused, and not delivered", async () => {
  const name = uniq("private-encrypted-ce-");
  const join = async () => {
    const s = await rawSocket(server, app.key);
    const est = await s.next("pusher:connection_established");
    const socketId = JSON.parse(est.data).socket_id;
    s.send("pusher:subscribe", { channel: name, auth: sdk.authorizeChannel(socketId, name).auth });
    await s.next("pusher_internal:subscription_succeeded");
    return s;
  };
  const a = await join();
  const b = await join();
  a.send("client-x", { a: 1 }, { channel: name });
  await sleep(500);
  const atB = b.frames.filter((f) => f.event === "client-x");
  const errs = a.frames.filter((f) => f.event === "pusher:error");
  assert.equal(atB.length, 0, `the other subscriber got ${JSON.stringify(atB)}`);
  assert.equal(errs.length, 1, `the sender got ${JSON.stringify(a.frames)}`);
  assert.match(JSON.stringify(errs[0].data), /encrypted/);
});
