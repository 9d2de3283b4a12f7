// The built package in headless Chromium (driven by playwright-core):
// a page served over HTTP loads dist/index.js as an ES module, registers
// through a small backend endpoint (as in the README's browser example),
// and connects to a real Relay server through a TCP proxy the test
// controls. 200 messages published before, during and after cut sockets
// arrive exactly once and in order; a server restart on the same port (a
// new epoch, history gone) is a gap event with the new epoch, and messages
// published after it arrive. No page error, no unhandled rejection.
//
// Chromium: RELAY_CHROMIUM or /usr/bin/chromium (Debian's package). When
// it is absent the test is skipped, unless RELAY_REQUIRE_BROWSER=1.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { startServer, startProxy, register, publish, waitFor, via } from "./helpers.mjs";

const CHROMIUM = process.env.RELAY_CHROMIUM || "/usr/bin/chromium";
const REQUIRE = process.env.RELAY_REQUIRE_BROWSER == "1";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const DIST = fileURLToPath(new URL("../dist/", import.meta.url));
const TOPIC = "feed";
const HISTORY = ["-history", "1000/5m"];

const missing = !existsSync(CHROMIUM);
const skip = missing && !REQUIRE ? `no Chromium at ${CHROMIUM} (set RELAY_CHROMIUM, or RELAY_REQUIRE_BROWSER=1 to fail instead)` : false;

// The page: loads the built client, asks the backend for a registration
// URL before every (re)connect, and records everything on window.relayLog.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>relay browser test</title>
<link rel="icon" href="data:,">
<script>
  window.relayLog = { messages: [], gaps: [], opens: 0, disconnects: 0, errors: [], rejections: [], ready: null, state: "" };
  addEventListener("unhandledrejection", (e) => relayLog.rejections.push(String(e.reason && (e.reason.stack || e.reason))));
</script>
<script type="module">
  import { RelayClient } from "/dist/index.js";
  const log = window.relayLog;
  const relay = new RelayClient({
    getUrl: async ({ signal }) => {
      const r = await fetch("/api/relay-url", { method: "POST", signal });
      if (!r.ok) throw new Error("relay-url answered " + r.status + ": " + (await r.text()));
      return (await r.json()).url;
    },
    backoff: { base: 50, max: 400 },
  });
  window.relay = relay;
  relay.on("open", () => log.opens++);
  relay.on("disconnect", () => log.disconnects++);
  relay.on("error", (e) => log.errors.push(e.code + ": " + e.message));
  const sub = relay.subscribe(${JSON.stringify(TOPIC)});
  sub.on("message", (m) => log.messages.push([m.offset, m.epoch, m.message]));
  sub.on("gap", (g) => log.gaps.push({ topic: g.topic, offset: g.offset, epoch: g.epoch, after: log.messages.length }));
  sub.ready.then((p) => (log.ready = p));
  addEventListener("pagehide", () => relay.close());
</script>`;

/**
 * The page's backend: GET / is the page, GET /dist/<name>.js the built
 * package, POST /api/relay-url registers user 1 with the current server
 * and answers the socket URL through the proxy.
 */
async function startSite(backend) {
  const site = http.createServer(async (req, res) => {
    const send = (status, type, body) => {
      res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store" });
      res.end(body);
    };
    try {
      const path = new URL(req.url, "http://x").pathname;
      if (req.method == "GET" && path == "/") return send(200, "text/html; charset=utf-8", PAGE);
      const m = /^\/dist\/([A-Za-z0-9_-]+\.js)$/.exec(path);
      if (req.method == "GET" && m) return send(200, "text/javascript; charset=utf-8", await readFile(DIST + m[1]));
      if (req.method == "POST" && path == "/api/relay-url") {
        backend.registrations++;
        return send(200, "application/json", JSON.stringify({ url: via(await register(backend.server, 1), backend.proxy) }));
      }
      send(404, "text/plain", "not found");
    } catch (e) {
      send(e.code == "ENOENT" ? 404 : 500, "text/plain", String(e.message));
    }
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  return {
    origin: `http://127.0.0.1:${site.address().port}`,
    close: () => new Promise((r) => {
      site.closeAllConnections();
      site.close(r);
    }),
  };
}

/** startServer on a fixed address, retrying the bind for a bounded time (the old process's port may not be free yet). */
async function startServerOn(addr, flags, timeout = 10000) {
  const end = Date.now() + timeout;
  for (;;) {
    try {
      return await startServer(flags, { addr });
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test("browser: headless Chromium, 200 messages across cut sockets exactly once, then a restart is a gap with the new epoch", { skip, timeout: 120000 }, async (t) => {
  if (missing) assert.fail(`RELAY_REQUIRE_BROWSER=1 but there is no Chromium at ${CHROMIUM}`);
  await readFile(DIST + "index.js").catch(() => assert.fail(`${DIST}index.js is missing: run the tests with npm test (its pretest builds dist)`));
  const started = Date.now();
  // Cleanups run last registered first: the browser closes before the
  // servers it talks to.
  const cleanups = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch((e) => t.diagnostic(`cleanup: ${e.message}`));
  });

  const backend = { server: undefined, proxy: undefined, registrations: 0 };
  const site = await startSite(backend);
  cleanups.push(() => site.close());
  const flags = [...HISTORY, "-allowed-origins", site.origin];
  backend.server = await startServer(flags);
  cleanups.push(() => backend.server.stop());
  backend.proxy = await startProxy(backend.server.port);
  const proxy = backend.proxy;
  cleanups.push(() => proxy.close());

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30000 });
  cleanups.push(() => browser.close());
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  const consoleLines = [];
  page.on("pageerror", (e) => pageErrors.push(e.stack || String(e)));
  page.on("crash", () => pageErrors.push("the page crashed"));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));

  /** The page's record; what to show when a wait times out. */
  const state = () => page.evaluate(() => ({ ...relayLog, state: relay.state, messages: relayLog.messages.length, errors: relayLog.errors.length, lastErrors: relayLog.errors.slice(-3) }));
  const until = async (fn, what, timeout = 15000, arg) => {
    try {
      await page.waitForFunction(fn, arg, { timeout, polling: 20 });
    } catch (e) {
      throw new Error(`${what}: ${e.message.split("\n")[0]}\npage: ${JSON.stringify(await state().catch((e) => e.message))}\nconsole:\n${consoleLines.slice(-20).join("\n")}`);
    }
  };
  const received = () => page.evaluate(() => relayLog.messages.length);

  await page.goto(site.origin + "/", { waitUntil: "load" });
  await until(() => window.relayLog && relayLog.ready, "the subscription to be confirmed");
  const first = await page.evaluate(() => relayLog.ready);
  assert.equal(first.offset, 0);

  let n = 0;
  let epoch;
  const burst = async (k) => {
    for (let i = 0; i < k; i++) epoch = (await publish(backend.server, TOPIC, `m${++n}`)).epoch;
  };

  // m1-m60 before any cut.
  await burst(60);
  await until(() => relayLog.messages.length >= 60, "the first 60 messages");

  // Cut every proxied connection in the middle of a burst (right after m70
  // is published, whatever the page has seen of m61-m70), refuse new
  // connections for 1.5 s, and publish m71-m130 meanwhile: only the
  // server's history has them.
  await burst(10);
  proxy.refuse = true;
  proxy.cut();
  const cutAt = Date.now();
  const acceptedAtCut = proxy.accepted;
  const seenAtCut = await received();
  await burst(60);
  await until(() => relay.state != "open", "the page to notice the cut");
  await new Promise((r) => setTimeout(r, Math.max(0, 1500 - (Date.now() - cutAt))));
  const refused = proxy.accepted - acceptedAtCut;
  proxy.refuse = false;
  await until(() => relayLog.opens >= 2, "the reconnect after the cut");

  // m131-m160 after the reconnect, then a second cut right after m160 with
  // no pause and no refusal, and m161-m200 while the page reconnects.
  await burst(30);
  proxy.cut();
  const seenAtSecondCut = await received();
  await burst(40);
  await until(() => relayLog.opens >= 3, "the reconnect after the second cut");
  assert.equal(n, 200);
  await until(() => relayLog.messages.length >= 200, "all 200 messages", 20000);
  // Nothing more is on its way: a duplicate would show up within this time.
  await new Promise((r) => setTimeout(r, 300));

  const got = await page.evaluate(() => relayLog.messages);
  const offsets = got.map((m) => m[0]);
  assert.equal(got.length, 200, "exactly 200 messages");
  assert.equal(new Set(offsets).size, 200, "200 distinct offsets (no duplicate)");
  assert.deepEqual(offsets, Array.from({ length: 200 }, (_, i) => i + 1), "each offset once, in order, none lost");
  assert.deepEqual(got.map((m) => m[2]), Array.from({ length: 200 }, (_, i) => `m${i + 1}`), "the payloads, in publish order");
  assert.ok(got.every((m) => m[1] == epoch), "one epoch throughout");
  assert.deepEqual(await page.evaluate(() => relayLog.gaps), [], "no gap while history reaches back");
  const recoveredAt = Date.now();

  // Restart the server on the same port (memory engine: a new epoch, no
  // history). The proxy holds the page off while two messages are
  // published to the new server, so the gap must name them.
  const port = backend.server.port;
  proxy.refuse = true;
  await backend.server.stop(); // the server's death closes the page's socket
  await until(() => relay.state != "open", "the page to notice the server's death");
  backend.server = await startServerOn(`127.0.0.1:${port}`, flags);
  assert.equal(backend.server.port, port);
  let restart;
  for (let i = 1; i <= 2; i++) restart = await publish(backend.server, TOPIC, `n${i}`);
  assert.notEqual(restart.epoch, epoch, "the restarted server has a new epoch");
  assert.equal(restart.offset, 2);
  const opensBefore = await page.evaluate(() => relayLog.opens);
  proxy.refuse = false;
  await until(() => relayLog.gaps.length >= 1, "a gap event after the restart", 20000);
  await until((o) => relayLog.opens > o, "the reconnect to the restarted server", 15000, opensBefore);
  const gaps = await page.evaluate(() => relayLog.gaps);
  assert.deepEqual(gaps, [{ topic: TOPIC, offset: 2, epoch: restart.epoch, after: 200 }], "one gap, with the new epoch and offset");
  assert.deepEqual(await page.evaluate((topic) => relay.position(topic), TOPIC), { offset: 2, epoch: restart.epoch });

  // Messages published after the restart arrive, in order, in the new epoch.
  for (let i = 3; i <= 22; i++) await publish(backend.server, TOPIC, `n${i}`);
  await until(() => relayLog.messages.length >= 220, "the messages after the restart");
  await new Promise((r) => setTimeout(r, 200));
  const after = (await page.evaluate(() => relayLog.messages)).slice(200);
  assert.deepEqual(after, Array.from({ length: 20 }, (_, i) => [i + 3, restart.epoch, `n${i + 3}`]));

  const final = await page.evaluate(() => relayLog);
  assert.deepEqual(final.rejections, [], "no unhandled rejection in the page");
  assert.deepEqual(pageErrors, [], "no page error");
  assert.ok(backend.registrations >= final.opens, `registrations ${backend.registrations} >= opens ${final.opens}`);
  t.diagnostic(
    `chromium ${browser.version()}: 200 messages exactly once across 2 cuts in ${recoveredAt - started} ms ` +
      `(the page had ${seenAtCut} at the first cut, ${refused} connection attempts refused in 1.5 s, ${seenAtSecondCut} at the second cut), ` +
      `restart gap ${JSON.stringify(gaps[0])}, 20 more after it; ${final.opens} opens, ${final.disconnects} disconnects, ` +
      `${final.errors.length} connect errors, ${backend.registrations} registrations, ${Date.now() - started} ms in all`,
  );
  await page.close();
});
