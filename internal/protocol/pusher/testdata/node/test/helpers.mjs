// Test helpers: a real Relay server per test file with Pusher apps, the
// pusher-js client (its Node build), the `pusher` server SDK, raw `ws`
// sockets, and bounded waits. Everything started here is registered and
// closed by closeClients() (afterEach) and stopServers() (after).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import readline from "node:readline";

import Pusher from "pusher";
import PusherJS from "pusher-js";
import { WebSocket } from "ws";

export { Pusher, PusherJS };

// pusher-js's Node build closes its (faye-websocket) socket again after the
// server closed it (e.g. 4009, 4200); faye then arms a 30 s close timer that
// nothing clears, which would keep each test process alive for 30 s. It
// changes nothing a test observes, so the timer is unref'd.
const createWebSocket = PusherJS.Runtime.createWebSocket;
PusherJS.Runtime.createWebSocket = function (url) {
  const socket = createWebSocket.call(this, url);
  const close = socket.close;
  socket.close = function (...args) {
    const r = close.apply(this, args);
    this._closeTimer?.unref?.();
    return r;
  };
  return socket;
};

export const BIN = process.env.RELAY_BIN;
if (!BIN) throw new Error("RELAY_BIN is not set: run the tests with npm test");

const rand = (n = 6) => randomBytes(n).toString("hex");

/** A Pusher app with a fresh id, key and secret (so runs never meet on a shared Redis). */
export function newApp(options = {}) {
  const id = "app-" + rand();
  return { id, key: "key-" + rand(), secret: rand(20), client_events: true, ...options };
}

/** A channel name unique to this run. */
export const uniq = (prefix) => `${prefix}${rand(4)}`;

const clients = new Set(); // () => void, closing a client or socket
const servers = new Set(); // servers still running

/** Closes every client and socket opened since the last call (afterEach). */
export async function closeClients() {
  for (const close of clients) {
    try {
      close();
    } catch {}
  }
  clients.clear();
}

/** Kills every server still running (after). */
export async function stopServers() {
  await closeClients();
  await Promise.all([...servers].map((s) => s.kill()));
}

/**
 * Starts the server on 127.0.0.1:0 (or addr) serving the Pusher app `app`
 * (from RELAY_PUSHER_* variables) or the apps `apps` (from an apps file),
 * and resolves once it listens and /readyz answers 200.
 */
export async function startServer({ app, apps, flags = [], addr = "127.0.0.1:0", timeout = 15000 } = {}) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("RELAY_")));
  let dir;
  if (apps) {
    dir = mkdtempSync(join(tmpdir(), "relay-pusher-apps-"));
    const file = join(dir, "apps.json"); // JSON is YAML
    writeFileSync(file, JSON.stringify({ apps }, null, 2));
    env.RELAY_PUSHER_APPS_FILE = file;
  } else {
    Object.assign(env, {
      RELAY_PUSHER_APP_ID: app.id,
      RELAY_PUSHER_APP_KEY: app.key,
      RELAY_PUSHER_APP_SECRET: app.secret,
      RELAY_PUSHER_CLIENT_EVENTS: String(app.client_events ?? false),
      RELAY_PUSHER_SUBSCRIPTION_COUNT: String(app.subscription_count ?? false),
    });
  }
  const proc = spawn(BIN, ["serve", "-addr", addr, "-log-format", "json", ...flags], {
    stdio: ["ignore", "ignore", "pipe"],
    env,
  });
  const lines = [];
  const exited = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
  const rl = readline.createInterface({ input: proc.stderr });
  rl.on("line", (line) => lines.push(line));
  const address = await new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error("server did not start:\n" + lines.join("\n")));
    }, timeout);
    rl.on("line", (line) => {
      const m = /"msg":"relay listening".*"addr":"([^"]+)"/.exec(line);
      if (m) {
        clearTimeout(t);
        resolve(m[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(t);
      reject(new Error(`server exited with ${code ?? signal}:\n` + lines.join("\n")));
    });
  });
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const server = {
    addr: address,
    port: +address.split(":")[1],
    http: `http://${address}`,
    ws: `ws://${address}`,
    lines,
    exited,
    alive,
    /** SIGKILL, and waits for the exit. */
    async kill() {
      servers.delete(server);
      if (alive()) proc.kill("SIGKILL");
      await exited;
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
    /** SIGTERM (a graceful stop), and waits up to timeout ms for the exit. */
    async terminate(timeout = 15000) {
      servers.delete(server);
      if (alive()) proc.kill("SIGTERM");
      const t = setTimeout(() => alive() && proc.kill("SIGKILL"), timeout);
      const r = await exited;
      clearTimeout(t);
      if (dir) rmSync(dir, { recursive: true, force: true });
      return r;
    },
  };
  servers.add(server);
  await waitFor(
    async () => {
      try {
        const res = await fetch(server.http + "/readyz", { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        return res.status === 200;
      } catch {
        return false;
      }
    },
    "/readyz to answer 200",
    timeout,
  );
  return server;
}

/** The `pusher` server SDK for app on server (requests time out after 10 s). */
export function serverSdk(server, app, extra = {}) {
  return new Pusher({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: "127.0.0.1",
    port: String(server.port),
    useTLS: false,
    timeout: 10000,
    ...extra,
  });
}

/**
 * A pusher-js client of app on server, authorized by the server SDK
 * (sdk, default serverSdk(server, app)) through customHandlers: on presence
 * channels as { user_id: user, user_info: info }, and signing in as
 * { id: user, ...userInfo }. c.states and c.errors record its state changes
 * and connection errors.
 */
export function pusherClient(server, app, { user, info, sdk, port, ...options } = {}) {
  sdk ??= serverSdk(server, app);
  const c = new PusherJS(app.key, {
    cluster: "mt1",
    wsHost: "127.0.0.1",
    wsPort: port ?? server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          const data = channelName.startsWith("presence-") ? { user_id: user, user_info: info } : undefined;
          cb(null, sdk.authorizeChannel(socketId, channelName, data));
        } catch (e) {
          cb(e, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => {
        try {
          cb(null, sdk.authenticateUser(socketId, { id: user, ...(info ?? {}) }));
        } catch (e) {
          cb(e, null);
        }
      },
    },
    ...options,
  });
  c.states = [];
  c.errors = [];
  c.connection.bind("state_change", (s) => c.states.push(s.current));
  c.connection.bind("error", (e) => c.errors.push(e));
  clients.add(() => c.disconnect());
  return c;
}

/** Resolves with the socket id once c is connected. */
export async function connected(c, timeout = 10000) {
  await waitFor(() => c.connection.state === "connected", "pusher-js to connect", timeout);
  return c.connection.socket_id;
}

/**
 * Subscribes c to name and resolves with the channel once
 * subscription_succeeded arrives; rejects on pusher:subscription_error.
 */
export function subscribe(c, name, timeout = 10000) {
  const ch = c.subscribe(name);
  return subscribed(ch, timeout);
}

/** Resolves with ch once its (next) subscription_succeeded arrives. */
export function subscribed(ch, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeout} ms subscribing to ${ch.name}`));
    }, timeout);
    const ok = () => {
      off();
      resolve(ch);
    };
    const fail = (e) => {
      off();
      reject(Object.assign(new Error(`subscription_error on ${ch.name}: ${JSON.stringify(e)}`), { data: e }));
    };
    const off = () => {
      clearTimeout(t);
      ch.unbind("pusher:subscription_succeeded", ok);
      ch.unbind("pusher:subscription_error", fail);
    };
    ch.bind("pusher:subscription_succeeded", ok);
    ch.bind("pusher:subscription_error", fail);
  });
}

/** Records every `event` of a channel (or anything with bind) as { data, meta }. */
export function collect(bindable, event) {
  const log = [];
  bindable.bind(event, (data, meta) => log.push({ data, meta }));
  return log;
}

/** Polls cond until it returns a truthy value; rejects after timeout ms. */
export async function waitFor(cond, what, timeout = 10000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A raw WebSocket to /app/{key}?{query}: frames holds every frame parsed
 * (data left as sent), closed() resolves with { code, reason }.
 */
export async function rawSocket(server, key, query = "protocol=7&client=js&version=8.6.0", { port } = {}) {
  const url = `ws://127.0.0.1:${port ?? server.port}/app/${key}${query ? "?" + query : ""}`;
  const ws = new WebSocket(url);
  clients.add(() => ws.terminate());
  const s = {
    ws,
    frames: [],
    raw: [],
    closedEvent: new Promise((r) => ws.on("close", (code, reason) => r({ code, reason: reason.toString() }))),
    /** Resolves with { code, reason } once the socket closed; rejects after timeout ms. */
    closed(timeout = 5000) {
      let t;
      return Promise.race([
        s.closedEvent.finally(() => clearTimeout(t)),
        new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`${url}: not closed within ${timeout} ms`)), timeout))),
      ]);
    },
    send(event, data, extra = {}) {
      ws.send(JSON.stringify({ event, data, ...extra }));
    },
    /** The next frame of event not yet taken (pings skipped unless asked for). */
    async next(event, timeout = 5000) {
      const f = await waitFor(() => s.frames.find((f) => !f.taken && (event === undefined ? f.event !== "pusher:ping" : f.event === event)), `a ${event ?? "frame"} frame`, timeout);
      f.taken = true;
      return f;
    },
  };
  ws.on("message", (buf) => {
    const text = buf.toString();
    s.raw.push(text);
    try {
      s.frames.push(JSON.parse(text));
    } catch {
      s.frames.push({ event: "!invalid", text });
    }
  });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${url}: no open within 5 s`)), 5000);
    ws.once("open", () => {
      clearTimeout(t);
      resolve();
    });
    ws.once("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
  return s;
}

/** Whether something accepts TCP connections at host:port within timeout ms. */
export function reachable(port, host = "127.0.0.1", timeout = 1000) {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeout, () => done(false));
    s.on("connect", () => done(true));
    s.on("error", () => done(false));
  });
}

/** The members of a pusher-js presence channel: { count, ids (sorted), me }. */
export function members(ch) {
  const ids = [];
  ch.members.each((m) => ids.push(m.id));
  return { count: ch.members.count, ids: ids.sort(), me: ch.members.me };
}
