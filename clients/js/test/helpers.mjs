// Test helpers: a real Relay server per test, HTTP calls, connect tokens,
// a TCP proxy that can cut every connection, and bounded waits.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import net from "node:net";
import readline from "node:readline";

import { WebSocket } from "ws";
import { RelayClient, SeedClient } from "../dist/index.js";

export const BIN = process.env.RELAY_BIN;
if (!BIN) throw new Error("RELAY_BIN is not set: run the tests with npm test");

export const SECRET = "test-secret-0123456789-abcdefghijklmnop";
export const API_KEY = "test-api-key-0123456789";

/**
 * Starts the server on 127.0.0.1:0 (or addr) with extra flags and resolves
 * once its startup line names the address. stop() kills it.
 */
export async function startServer(flags = [], { addr = "127.0.0.1:0", timeout = 15000 } = {}) {
  const proc = spawn(BIN, ["serve", "-addr", addr, "-log-format", "json", ...flags], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const lines = [];
  const rl = readline.createInterface({ input: proc.stderr });
  const listening = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("server did not start:\n" + lines.join("\n"))), timeout);
    rl.on("line", (line) => {
      lines.push(line);
      const m = /"msg":"relay listening".*"addr":"([^"]+)"/.exec(line);
      if (m) {
        clearTimeout(t);
        resolve(m[1]);
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(t);
      reject(new Error(`server exited with ${code}:\n` + lines.join("\n")));
    });
  });
  const address = await listening;
  const exited = new Promise((r) => proc.on("exit", r));
  return {
    addr: address,
    port: +address.split(":")[1],
    http: `http://${address}`,
    ws: `ws://${address}`,
    lines,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}

/** Calls the server's HTTP API; resolves with the parsed JSON answer. */
export async function call(server, method, path, body, { key } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  const res = await fetch(server.http + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : {};
}

export const publish = (server, topic, message, extra = {}, opts) => call(server, "POST", "/publish", { topic, message, ...extra }, opts);
export const register = async (server, userId, opts) => (await call(server, "POST", "/register", { user_id: userId }, opts)).url;

/** Mints an HS256 connect token. */
export function mintToken(claims, secret = SECRET) {
  const b64 = (v) => Buffer.from(typeof v == "string" ? v : JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 300, ...claims })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/**
 * A TCP proxy in front of a port. cut() destroys every connection it
 * carries (the server keeps its state; the client sees its socket die).
 * With refuse set it accepts and drops new connections at once.
 */
export async function startProxy(targetPort) {
  const conns = new Set();
  const proxy = {
    target: targetPort,
    refuse: false,
    accepted: 0,
    cut() {
      for (const s of conns) s.destroy();
      conns.clear();
    },
    /** Stops carrying data on the current connections, keeping them open (a dead link). */
    freeze() {
      for (const s of conns) {
        s.unpipe();
        s.removeAllListeners("data");
        s.on("data", () => {});
      }
    },
  };
  const server = net.createServer((client) => {
    proxy.accepted++;
    if (proxy.refuse) return client.destroy();
    const upstream = net.connect(proxy.target, "127.0.0.1");
    conns.add(client);
    conns.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(client);
      conns.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.port = server.address().port;
  proxy.ws = `ws://127.0.0.1:${proxy.port}`;
  proxy.close = () => {
    proxy.cut();
    return new Promise((r) => server.close(r));
  };
  return proxy;
}

/** Polls cond until it returns a truthy value; rejects after timeout ms. */
export async function waitFor(cond, what, timeout = 10000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves with the next event of type from an Emitter; rejects after timeout ms. */
export function next(emitter, type, timeout = 10000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeout} ms waiting for a ${type} event`));
    }, timeout);
    const off = emitter.on(type, (ev) => {
      if (!filter(ev)) return;
      clearTimeout(t);
      off();
      resolve(ev);
    });
  });
}

/**
 * Records uncaught exceptions and unhandled rejections while a test runs;
 * check() fails if any fired.
 */
export function trapUncaught() {
  const seen = [];
  const onErr = (e) => seen.push(e);
  process.on("uncaughtException", onErr);
  process.on("unhandledRejection", onErr);
  return {
    seen,
    stop() {
      process.off("uncaughtException", onErr);
      process.off("unhandledRejection", onErr);
    },
  };
}

/** A RelayClient on Node 20 (ws as the WebSocket) with short backoff; closed by the returned cleanup list. */
export function relay(options) {
  return new RelayClient({ WebSocket, backoff: { base: 20, max: 200 }, ...options });
}

export function seed(options) {
  return new SeedClient({ WebSocket, backoff: { base: 20, max: 200 }, ...options });
}

/** Replaces the host:port of a ws:// URL (to go through a proxy). */
export const via = (url, proxy) => url.replace(/^ws:\/\/[^/]+/, proxy.ws);

/** Collects a client's or subscription's events of the given types. */
export function record(emitter, types) {
  const log = [];
  for (const t of types) emitter.on(t, (ev) => log.push({ type: t, ...ev }));
  return log;
}
