/** A listener for events of type T. */
export type Listener<T> = (event: T) => void;

/**
 * A small typed event emitter. Unlike Node's EventEmitter, an "error"
 * event with no listener is simply dropped, and a listener that throws
 * does not disturb the client: its exception is reported asynchronously
 * (like a DOM event listener's) and the other listeners still run.
 */
export class Emitter<M> {
  #listeners: { [K in keyof M]?: Set<Listener<M[K]>> } = {};

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof M>(type: K, listener: Listener<M[K]>): () => void {
    (this.#listeners[type] ??= new Set()).add(listener);
    return () => this.off(type, listener);
  }

  /** Removes a listener added with on. */
  off<K extends keyof M>(type: K, listener: Listener<M[K]>): void {
    this.#listeners[type]?.delete(listener);
  }

  /** @internal */
  emit<K extends keyof M>(type: K, event: M[K]): void {
    for (const fn of [...(this.#listeners[type] ?? [])]) {
      try {
        fn(event);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
