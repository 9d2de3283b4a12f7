import { Emitter } from "./emitter.js";
import { RelayError } from "./errors.js";

/** The part of the WHATWG WebSocket API the client uses (browsers' WebSocket, Node ≥ 22's global one, or the `ws` package's). */
export interface WebSocketLike {
  readonly protocol: string;
  binaryType: any;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor, e.g. `globalThis.WebSocket` or `import { WebSocket } from "ws"`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Timers and time, injectable for tests. Defaults to Date.now, setTimeout and clearTimeout. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** What getUrl and getToken are told. */
export interface ConnectInfo {
  /** 0 for the first connection, then how many attempts were made before this one. */
  attempt: number;
  /** Aborted when the client is closed: pass it to fetch. */
  signal: AbortSignal;
}

/** How a client connects and stays connected. */
export interface ConnectionOptions {
  /**
   * A registration URL (`ws://host/ws/<id>`, from your backend's
   * `POST /register`), or, with `token`/`getToken`, the server's base URL
   * (`wss://host` or with its path prefix; `http(s)://` is accepted too),
   * to which `/ws?token=...` is appended.
   */
  url?: string;
  /** A connect token (a JWT minted by your backend) for `GET /ws?token=`. */
  token?: string;
  /**
   * Returns the URL to connect to. Called before every reconnect attempt
   * (and before the first connection when `url` is not given), so it can
   * register again through your backend: a registration URL only outlives
   * its socket for the server's reconnect grace (30 s by default).
   */
  getUrl?: (info: ConnectInfo) => string | Promise<string>;
  /** Returns a fresh connect token; called like getUrl. */
  getToken?: (info: ConnectInfo) => string | Promise<string>;
  /** The WebSocket implementation; default `globalThis.WebSocket` (Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /**
   * Reconnect backoff, in ms: the wait before attempt n (n ≥ 1) is drawn
   * uniformly from [0, min(max, base·2^(n-1))) ("full jitter"). The count
   * restarts once a connection opens, unless the server closes that
   * connection with 4002 (slow consumer) or 4004 (rate limit).
   */
  backoff?: { base?: number; max?: number };
  /**
   * Keepalive, in ms: after `idle` ms without any frame from the server
   * the client sends a ping; if nothing arrives within `timeout` ms the
   * connection is declared dead and replaced. A timer firing much later
   * than scheduled (the machine slept) triggers the same check at once.
   * `false` turns it off.
   */
  keepalive?: { idle?: number; timeout?: number } | false;
  /** How long a connection attempt may take before it is abandoned, in ms. Default 15000. */
  connectTimeout?: number;
  /** Aborting it closes the client, like close(). */
  signal?: AbortSignal;
  /** For tests: time and timers. */
  clock?: Clock;
  /** For tests: a random number in [0, 1), default Math.random. */
  random?: () => number;
}

/** Events of every client. */
export interface ConnectionEvents {
  /** A connection opened (the first one or a reconnect). */
  open: { url: string };
  /** An open connection ended; `reconnect` says whether the client will try again. */
  disconnect: { code: number; reason: string; reconnect: boolean };
  /** The client waits `delay` ms before connection attempt `attempt`. */
  reconnect: { attempt: number; delay: number };
  /** Something went wrong; the client carries on unless an "end" event follows. */
  error: RelayError;
  /** The client stopped for good: close() was called (no error), or a final error. */
  end: { error?: RelayError };
}

/** The client's state: connecting, open, waiting to reconnect, or closed for good. */
export type ConnectionState = "connecting" | "open" | "waiting" | "closed";

/**
 * Close codes after which the client does not reconnect:
 * 4000 the registration was deleted, 4001 a newer connection replaced this
 * one, and the codes by which the server says the client broke the
 * protocol (1002, 1003, 1007, 1008, 1009): repeating the same thing would
 * fail the same way.
 */
export const FINAL_CLOSE_CODES: readonly number[] = [4000, 4001, 1002, 1003, 1007, 1008, 1009];

const noop = () => {};
const defaultClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as any),
};

/** The connection core both clients share: connect, keepalive, reconnect. */
export abstract class Connection<E extends ConnectionEvents> extends Emitter<E> {
  #state: ConnectionState = "connecting";
  #o: ConnectionOptions;
  #clock: Clock;
  #abort = new AbortController();
  #ws?: WebSocketLike;
  #url?: string;
  #token?: string;
  #attempt = 0; // failures since the last open
  #tries = 0; // attempts ever made
  #timer: unknown; // backoff or connect timeout
  #tick: unknown; // keepalive
  #due = 0;
  #lastRx = 0;
  #pingAt?: number;

  constructor(options: ConnectionOptions) {
    super();
    this.#o = options;
    this.#clock = options.clock ?? defaultClock;
    this.#url = options.url;
    this.#token = options.token;
    const signal = options.signal;
    if (signal?.aborted) {
      this.#state = "closed";
      return;
    }
    const onAbort = () => this.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#abort.signal.addEventListener("abort", () => signal?.removeEventListener("abort", onAbort));
    // Start once the caller has added listeners and subscriptions.
    queueMicrotask(() => this.#start());
  }

  /** connecting, open, waiting (to reconnect) or closed. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** Stops the client: closes the connection normally (1000), cancels reconnects and pending getUrl/getToken calls. */
  close(): void {
    this.#stop();
  }

  /** @internal The subprotocol to ask for, if any. */
  protected abstract proto(): string | undefined;
  /** @internal A connection opened. */
  protected abstract opened(): void;
  /** @internal A text frame arrived. */
  protected abstract text(data: string): void;
  /** @internal The connection ended (or the client stopped). */
  protected abstract closed(): void;
  /** @internal Sends a keepalive ping; returns whether the server answers it. */
  protected abstract ping(): boolean;

  /** @internal Sends a frame if a connection is open; returns whether it was sent. */
  protected send(data: string): boolean {
    if (this.#state != "open") return false;
    try {
      this.#ws!.send(data);
      return true;
    } catch {
      return false;
    }
  }

  /** @internal Replaces the connection (the keepalive found it dead, or the server asked to retry). */
  protected drop(error: RelayError): void {
    const ws = this.#ws;
    if (ws && this.#state == "open") {
      this.emit("error", error);
      this.#lost(ws, 1006, error.message, true, "");
    }
  }

  #start(): void {
    this.#connect().catch((e) => this.#stop(new RelayError("connect", msg(e), { cause: e })));
  }

  #ended(): boolean {
    return this.#state == "closed";
  }

  async #connect(): Promise<void> {
    if (this.#state == "closed") return;
    this.#state = "connecting";
    const o = this.#o;
    const info: ConnectInfo = { attempt: this.#tries, signal: this.#abort.signal };
    const again = this.#tries++ > 0;
    let url: string;
    try {
      if (o.getUrl && (again || !this.#url)) this.#url = await o.getUrl(info);
      if (o.getToken && (again || !this.#token)) this.#token = await o.getToken(info);
      if (!this.#url) throw new Error("no url: give url or getUrl");
      url = this.#url.replace(/^http/, "ws");
      if (this.#token != null) url = url.replace(/\/+$/, "") + "/ws?token=" + encodeURIComponent(this.#token);
    } catch (e) {
      if (this.#ended()) return;
      const err = new RelayError("callback", "getting the connection URL failed: " + msg(e), { cause: e });
      return o.getUrl || o.getToken ? this.#retry(err) : this.#stop(err);
    }
    if (this.#ended()) return;
    let ws: WebSocketLike;
    try {
      const WS = o.WebSocket ?? (globalThis as any).WebSocket;
      if (!WS) throw new Error("no WebSocket implementation: pass options.WebSocket");
      const proto = this.proto();
      ws = proto ? new WS(url, proto) : new WS(url);
    } catch (e) {
      const err = new RelayError("connect", "cannot connect: " + msg(e), { cause: e });
      return o.getUrl || o.getToken ? this.#retry(err) : this.#stop(err);
    }
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    let open = false;
    let why = "";
    this.#timer = this.#clock.setTimeout(() => {
      why = "no answer within the connect timeout";
      this.#lost(ws, 1006, "", false, why);
    }, o.connectTimeout ?? 15000);
    ws.onopen = () => {
      if (ws != this.#ws) return;
      this.#clock.clearTimeout(this.#timer);
      const proto = this.proto();
      if (proto && ws.protocol != proto) {
        this.#detach(ws);
        return this.#stop(new RelayError("protocol", `the server did not accept the ${proto} protocol`));
      }
      open = true;
      this.#state = "open";
      this.#lastRx = this.#clock.now();
      this.#pingAt = undefined;
      this.#keepalive();
      this.emit("open", { url });
      if (ws == this.#ws) this.opened();
    };
    ws.onmessage = (ev) => {
      if (ws != this.#ws) return;
      this.#lastRx = this.#clock.now();
      this.#pingAt = undefined;
      if (typeof ev.data == "string") this.text(ev.data);
      else this.emit("error", new RelayError("frame", "the server sent a binary frame"));
    };
    ws.onerror = (ev) => {
      why = String(ev?.message ?? ev?.error?.message ?? "");
    };
    ws.onclose = (ev) => this.#lost(ws, ev.code, ev.reason, open, why);
  }

  /** A connection ended: reconnect, or stop when that would not help. */
  #lost(ws: WebSocketLike, code: number, reason: string, open: boolean, why: string): void {
    if (ws != this.#ws || this.#state == "closed") return;
    this.#detach(ws);
    const o = this.#o;
    let err: RelayError | undefined;
    let retry: RelayError | undefined;
    if (open) {
      // A connection that opened resets the backoff, unless the server
      // closed it for sending too much (4004) or reading too slowly (4002).
      if (code != 4002 && code != 4004) this.#attempt = 0;
      if (FINAL_CLOSE_CODES.includes(code)) {
        err = new RelayError("closed", `the server closed the connection with ${code}${reason ? ": " + reason : ""}`, { closeCode: code });
      }
    } else {
      // Node's ws names the refused upgrade's status; browsers hide it.
      const status = +(/\b([45]\d\d)\b/.exec(why)?.[1] ?? 0) || undefined;
      const message = `connecting failed${why ? ": " + why : ""}`;
      if (status == 401 && !o.getToken && !o.getUrl) {
        err = new RelayError("unauthorized", message + " (the connect token was refused; give getToken to fetch fresh ones)", { status });
      } else if (status == 404 && !o.getUrl && this.#token == null) {
        err = new RelayError("not_found", message + " (the registration is gone; give getUrl to register again)", { status });
      } else {
        retry = new RelayError("connect", message, { status });
      }
    }
    this.#state = "connecting";
    this.closed();
    if (open) this.emit("disconnect", { code, reason, reconnect: !err });
    if (err) this.#stop(err);
    else this.#retry(retry);
  }

  #retry(err?: RelayError): void {
    if (err) this.emit("error", err);
    if (this.#state == "closed") return;
    const { base = 250, max = 10000 } = this.#o.backoff ?? {};
    const attempt = ++this.#attempt;
    const delay = Math.floor((this.#o.random ?? Math.random)() * Math.min(max, base * 2 ** (attempt - 1)));
    this.#state = "waiting";
    this.emit("reconnect", { attempt, delay });
    if (this.#state != "waiting") return;
    this.#timer = this.#clock.setTimeout(() => this.#start(), delay);
  }

  #stop(err?: RelayError): void {
    if (this.#state == "closed") return;
    this.#state = "closed";
    this.#abort.abort();
    this.#clock.clearTimeout(this.#timer);
    if (this.#ws) this.#detach(this.#ws);
    this.closed();
    if (err) this.emit("error", err);
    this.emit("end", err ? { error: err } : {});
  }

  /** Forgets a socket: its late events are ignored (never unhandled). */
  #detach(ws: WebSocketLike): void {
    ws.onopen = ws.onmessage = ws.onclose = noop;
    ws.onerror = noop;
    if (ws == this.#ws) {
      this.#ws = undefined;
      this.#clock.clearTimeout(this.#timer);
      this.#clock.clearTimeout(this.#tick);
      try {
        ws.close(1000);
      } catch {}
    }
  }

  /** Schedules the next keepalive check. */
  #keepalive(): void {
    const ka = this.#o.keepalive;
    if (ka === false) return;
    const idle = ka?.idle ?? 20000;
    const timeout = ka?.timeout ?? 10000;
    const every = Math.max(Math.min(idle, timeout) / 2, 10);
    this.#due = this.#clock.now() + every;
    this.#tick = this.#clock.setTimeout(() => {
      if (this.#state != "open") return;
      const ws = this.#ws!;
      const now = this.#clock.now();
      if (now - this.#due > every) {
        // The timer fired far too late: the machine slept, and the
        // connection may be gone. Check it now.
        this.#pingAt = undefined;
        this.#lastRx = -Infinity;
      }
      if (this.#pingAt != null && now - this.#pingAt >= timeout) {
        return this.drop(new RelayError("timeout", `no answer from the server within ${timeout} ms of a ping`));
      }
      if (this.#pingAt == null && now - this.#lastRx >= idle) {
        if (this.ping()) this.#pingAt = now;
        else if (this.#lastRx < 0) return this.drop(new RelayError("timeout", "woke from sleep; reconnecting"));
        else this.#lastRx = now;
      }
      if (ws == this.#ws) this.#keepalive();
    }, every);
  }
}

/** @internal */
export function msg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
