/**
 * What went wrong:
 * - `connect`: a connection attempt failed (the client retries).
 * - `unauthorized`: the server refused the connect token (HTTP 401) and
 *   there is no `getToken`/`getUrl` to fetch another; the client stops.
 * - `not_found`: the registration is gone (HTTP 404) and there is no
 *   `getUrl` to register again; the client stops.
 * - `callback`: `getUrl` or `getToken` threw or rejected (the client retries).
 * - `closed`: the server closed the connection with a code that rules out
 *   reconnecting (see `closeCode`); the client stops.
 * - `protocol`: the server did not accept the relay.v1 subprotocol; the client stops.
 * - `timeout`: the keepalive found the connection dead (the client reconnects).
 * - `frame`: the server sent a frame the client cannot read (skipped).
 * - `server`: the server answered a command with an error frame
 *   (see `serverCode`: `forbidden`, `invalid`, `limit_exceeded`, ...).
 */
export type RelayErrorCode =
  | "connect"
  | "unauthorized"
  | "not_found"
  | "callback"
  | "closed"
  | "protocol"
  | "timeout"
  | "frame"
  | "server";

/** Details a RelayError may carry. */
export interface RelayErrorDetail {
  /** The WebSocket close code, for `closed`. */
  closeCode?: number;
  /** The HTTP status of a refused upgrade, when the WebSocket implementation exposes it (Node's `ws` does, browsers do not). */
  status?: number;
  /** The server's error code, for `server`. */
  serverCode?: string;
  /** The topic concerned, if any. */
  topic?: string;
  /** The underlying exception, if any. */
  cause?: unknown;
}

/** Every error the client reports, on "error" events and rejected promises. */
export class RelayError extends Error implements RelayErrorDetail {
  override readonly name = "RelayError";
  readonly code: RelayErrorCode;
  closeCode?: number;
  status?: number;
  serverCode?: string;
  topic?: string;
  override cause?: unknown;

  constructor(code: RelayErrorCode, message: string, detail: RelayErrorDetail = {}) {
    super(message);
    this.code = code;
    Object.assign(this, detail);
  }
}
