import { Connection, type ConnectionEvents, type ConnectionOptions } from "./connection.js";

/** Options of a SeedClient. */
export interface SeedOptions extends ConnectionOptions {
  /** The topics to listen to, sent on every connection. Default: the server's (`["cats"]`, or what a token allows). */
  topics?: string[];
}

/** Events of a SeedClient. */
export interface SeedClientEvents extends ConnectionEvents {
  /** A published message: the exact text of the server's frame. */
  message: { message: string };
}

/**
 * A client for the seed (tutorial) protocol: raw text frames, topics set
 * with `{"topics": [...]}`, no offsets and no recovery. It reconnects like
 * RelayClient and sends the topics again on each connection; messages
 * published while it was disconnected are lost.
 *
 * Keepalive: the seed protocol has no reply to a client's ping, so the
 * client only sends "ping" after `keepalive.idle` ms of silence (to keep
 * proxies from closing the socket) and, when it finds the machine slept,
 * reconnects at once.
 */
export class SeedClient extends Connection<SeedClientEvents> {
  #topics?: string[];

  constructor(options: SeedOptions) {
    super(options);
    this.#topics = options.topics && [...options.topics];
  }

  /** The topics last set, if any. */
  get topics(): readonly string[] | undefined {
    return this.#topics;
  }

  /** Replaces the topics (on this connection and every later one). `[]` listens to nothing. */
  setTopics(topics: string[]): void {
    this.#topics = [...topics];
    this.send(JSON.stringify({ topics }));
  }

  /** @internal */
  protected proto(): undefined {
    return undefined;
  }

  /** @internal */
  protected opened(): void {
    if (this.#topics) this.send(JSON.stringify({ topics: this.#topics }));
  }

  /** @internal */
  protected text(message: string): void {
    this.emit("message", { message });
  }

  /** @internal */
  protected closed(): void {}

  /** @internal */
  protected ping(): boolean {
    this.send("ping");
    return false;
  }
}
