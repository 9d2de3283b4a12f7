import { Connection, type ConnectionEvents, type ConnectionOptions } from "./connection.js";
import { Emitter } from "./emitter.js";
import { RelayError } from "./errors.js";

/** A point in a topic's stream: offsets are only comparable within one epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A published message. */
export interface RelayMessage {
  topic: string;
  message: string;
  /** Its place in the topic's stream; absent for a message published to one user. */
  offset?: number;
  epoch?: string;
  /** Published to this user only (`user_id` set): it has no offset and is not recovered after a disconnect. */
  private: boolean;
}

/** A user started (join) or stopped (leave) being present on a topic. User ids are decimal strings, since they may exceed 2^53. */
export interface PresenceEvent {
  topic: string;
  userId: string;
}

/**
 * The messages of `topic` after the last one delivered and up to `offset`
 * are lost (history no longer reached back, or the stream restarted with
 * a new epoch): reload the topic's state some other way. The subscription
 * now stands at `{offset, epoch}`.
 */
export interface GapEvent {
  topic: string;
  offset: number;
  epoch: string;
}

/** Events of a subscription (and, for every topic, of the client). */
export interface SubscriptionEvents {
  message: RelayMessage;
  join: PresenceEvent;
  leave: PresenceEvent;
  gap: GapEvent;
  /** The server refused the subscription (code `server`, serverCode `forbidden`, `invalid`, ...): it is no longer active. */
  error: RelayError;
}

/** Events of a RelayClient. */
export interface RelayClientEvents extends ConnectionEvents, Omit<SubscriptionEvents, "error"> {}

export interface SubscribeOptions {
  /** Ask for join and leave events. */
  presence?: boolean;
  /** Start after this position (e.g. from a publish's answer or an earlier session): what came after it is replayed first, or a gap is reported. */
  since?: Position;
  /** Aborting it unsubscribes. */
  signal?: AbortSignal;
}

/** One topic of a RelayClient. Create it with RelayClient.subscribe. */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly topic: string;
  /** Whether join and leave events were asked for. */
  presence: boolean;
  /** The position of the last message delivered (or where the subscription started); undefined until the server first confirmed it. */
  position?: Position;
  /** The users present on the topic (with presence), kept up to date by join and leave events. */
  readonly present = new Set<string>();
  /** Resolves with the starting position once the server first confirmed the subscription; rejects if it was refused, unsubscribed or the client ended first. */
  readonly ready: Promise<Position>;
  /** False once unsubscribed or refused. */
  active = true;
  /** @internal */
  settle!: (p?: Position, e?: RelayError) => void;
  #client: RelayClient;

  /** @internal */
  constructor(client: RelayClient, topic: string, options: SubscribeOptions) {
    super();
    this.#client = client;
    this.topic = topic;
    this.presence = !!options.presence;
    this.position = options.since && { offset: options.since.offset, epoch: options.since.epoch };
    this.ready = new Promise((resolve, reject) => {
      this.settle = (p, e) => (p ? resolve(p) : reject(e));
    });
    this.ready.catch(() => {}); // rejections are optional to observe
  }

  /** Stops receiving this topic. */
  unsubscribe(): void {
    this.#client.unsubscribe(this.topic);
  }
}

// User ids may exceed 2^53: read them as strings. (A quote inside a JSON
// string is escaped, so these cannot match inside a message.)
const fixIds = (s: string) =>
  s.replace(/"user_id":(\d+)/g, '"user_id":"$1"').replace(/"users":\[[\d,]*\]/g, (m) => m.replace(/\d+/g, '"$&"'));

const isPos = (f: any) => typeof f.offset == "number" && typeof f.epoch == "string";

/**
 * A relay.v1 client: subscriptions with offsets, recovery across
 * reconnects (no gap, no duplicate, or a "gap" event), presence, and
 * keepalive.
 */
export class RelayClient extends Connection<RelayClientEvents> {
  #subs = new Map<string, Subscription>();
  #acks = new Map<string, string[]>(); // subscribe id → topics not yet confirmed
  #want = new Set<string>(); // topics to subscribe at the end of this task
  #id = 0;

  constructor(options: ConnectionOptions) {
    super(options);
  }

  /**
   * Subscribes to a topic, or returns the existing subscription (updating
   * its presence flag when given). Subscribing works at any time: while
   * disconnected it takes effect on the next connection.
   */
  subscribe(topic: string, options: SubscribeOptions = {}): Subscription {
    let sub = this.#subs.get(topic);
    if (sub) {
      if (options.presence != null && options.presence != sub.presence) {
        sub.presence = options.presence;
        this.#queue(topic);
      }
      return sub;
    }
    sub = new Subscription(this, topic, options);
    if (this.state == "closed") {
      sub.active = false;
      sub.settle(undefined, new RelayError("closed", "the client is closed", { topic }));
      return sub;
    }
    const s = sub;
    this.#subs.set(topic, s);
    options.signal?.addEventListener("abort", () => s.unsubscribe(), { once: true });
    this.#queue(topic);
    return s;
  }

  /** Stops receiving a topic. */
  unsubscribe(topic: string): void {
    const sub = this.#subs.get(topic);
    if (!sub) return;
    this.#subs.delete(topic);
    this.#want.delete(topic);
    sub.active = false;
    sub.settle(undefined, new RelayError("closed", "unsubscribed", { topic }));
    this.send(JSON.stringify({ type: "unsubscribe", topics: [topic] }));
  }

  /** The active subscriptions, by topic. */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.#subs;
  }

  /** The last position delivered on a topic. */
  position(topic: string): Position | undefined {
    return this.#subs.get(topic)?.position;
  }

  #queue(topic: string): void {
    if (!this.#want.size) {
      queueMicrotask(() => {
        const topics = [...this.#want];
        this.#want.clear();
        this.#subscribe(topics);
      });
    }
    this.#want.add(topic);
  }

  /** Sends subscribes for topics, one per presence flag (or one per topic), each topic from its position. */
  #subscribe(topics: string[], one?: boolean): void {
    for (const presence of [false, true]) {
      const all = topics.filter((t) => this.#subs.get(t)?.presence === presence);
      for (const list of one ? all.map((t) => [t]) : all.length ? [all] : []) this.#send(list, presence);
    }
  }

  #send(list: string[], presence: boolean): void {
    {
      const id = String(this.#id + 1);
      let since: Record<string, Position> | undefined;
      for (const t of list) {
        const p = this.#subs.get(t)!.position;
        if (p) (since ??= {})[t] = { offset: p.offset, epoch: p.epoch };
      }
      if (this.send(JSON.stringify({ type: "subscribe", id, topics: list, since, presence: presence || undefined }))) {
        this.#id++;
        this.#acks.set(id, list);
      }
    }
  }

  /** @internal */
  protected proto(): string {
    return "relay.v1";
  }

  /** @internal */
  protected opened(): void {
    this.#want.clear();
    this.#subscribe([...this.#subs.keys()]);
  }

  /** @internal */
  protected closed(): void {
    this.#acks.clear();
    if (this.state == "closed") {
      for (const sub of this.#subs.values()) sub.settle(undefined, new RelayError("closed", "the client is closed", { topic: sub.topic }));
    }
  }

  /** @internal */
  protected ping(): boolean {
    return this.send('{"type":"ping"}');
  }

  #bad(why: string, data: string): void {
    this.emit("error", new RelayError("frame", `unreadable frame from the server (${why}): ${data.slice(0, 100)}`));
  }

  #both<K extends keyof SubscriptionEvents & keyof RelayClientEvents>(sub: Subscription, type: K, ev: SubscriptionEvents[K]): void {
    sub.emit(type, ev);
    this.emit(type, ev as any);
  }

  /** @internal */
  protected text(data: string): void {
    let f: any;
    try {
      f = JSON.parse(fixIds(data));
    } catch {}
    if (!f || typeof f != "object" || typeof f.type != "string") return this.#bad("not a JSON object with a type", data);
    const topic = f.topic;
    const sub = this.#subs.get(topic);
    const id = String(f.id);
    switch (f.type) {
      case "message": {
        if (typeof topic != "string" || typeof f.message != "string" || (f.offset != null && !isPos(f))) break;
        if (!sub) return;
        if (f.offset == null) return this.#both(sub, "message", { topic, message: f.message, private: true });
        const p = sub.position;
        const { offset, epoch } = f;
        if (p && p.epoch == epoch && offset <= p.offset) return; // a duplicate
        sub.position = { offset, epoch };
        if (p && (p.epoch != epoch || offset != p.offset + 1)) this.#both(sub, "gap", { topic, offset: offset - 1, epoch });
        return this.#both(sub, "message", { topic, message: f.message, offset, epoch, private: false });
      }
      case "join":
      case "leave": {
        if (typeof topic != "string" || typeof f.user_id != "string") break;
        if (sub) this.#presence(sub, f.user_id, f.type == "join");
        return;
      }
      case "subscribed": {
        if (typeof topic != "string" || !isPos(f)) break;
        const ack = this.#acks.get(id);
        if (ack) {
          const rest = ack.filter((t) => t != topic);
          rest.length ? this.#acks.set(id, rest) : this.#acks.delete(id);
        }
        if (!sub) return;
        const { offset, epoch } = f;
        if (Array.isArray(f.users)) {
          const now = new Set<string>(f.users);
          for (const u of [...sub.present]) if (!now.has(u)) this.#presence(sub, u, false);
          for (const u of now) this.#presence(sub, u, true);
        }
        const p = sub.position;
        sub.position = p && f.recovered ? p : { offset, epoch };
        if (p && !f.recovered) this.#both(sub, "gap", { topic, offset, epoch });
        return sub.settle(sub.position);
      }
      case "error": {
        const err = new RelayError("server", `the server refused a command: ${f.code}: ${f.message}`, { serverCode: String(f.code) });
        const ack = this.#acks.get(id);
        if (!ack) return this.emit("error", err);
        this.#acks.delete(id);
        if (f.code == "unavailable") return this.drop(err); // reconnect and resubscribe
        if (ack.length > 1) return this.#subscribe(ack, true); // one by one, to find the culprit
        const s = this.#subs.get(ack[0]);
        if (!s) return;
        err.topic = s.topic;
        this.#subs.delete(s.topic);
        s.active = false;
        s.settle(undefined, err);
        s.emit("error", err);
        return this.emit("error", err);
      }
      case "pong":
      case "unsubscribed":
        return;
    }
    this.#bad(`unexpected ${f.type} frame`, data);
  }

  #presence(sub: Subscription, userId: string, join: boolean): void {
    if (sub.present.has(userId) == join) return;
    join ? sub.present.add(userId) : sub.present.delete(userId);
    this.#both(sub, join ? "join" : "leave", { topic: sub.topic, userId });
  }
}
