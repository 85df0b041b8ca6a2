/**
 * What both record readers ({@linkcode RingBuffer} for BPF ring buffers,
 * {@linkcode PerfBuffer} for perf event arrays) share, written once, as
 * cilium/ebpf's `poller` serves both of its readers: an epoll set with a stop
 * eventfd, the native handles, and the lifecycle of wait, drain, stop and
 * close, including a close called from inside a drain's handler. A reader
 * keeps only what is its own: mapping its rings and parsing their records.
 *
 * Waiting is a nonblocking `epoll_wait` (off the main thread); draining is
 * synchronous on the main thread. Each native call takes errno at the call.
 *
 * @module
 */

import { c, checkErrno, failure } from "./_ffi.ts";
import { type Handle, ownFd, ownMapping } from "./_handle.ts";

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
const MAP_SHARED = 0x1;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
const EPOLL_CLOEXEC = 0x80000;
const EPOLL_CTL_ADD = 1;
export const EPOLLIN = 0x1;
export const EPOLLET = 1 << 31;
const EFD_CLOEXEC = 0x80000;
const EFD_NONBLOCK = 0x800;

/** `struct epoll_event` is packed on x86_64 (12 bytes), naturally aligned elsewhere. */
const EPOLL_EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;

/** One ring that a {@linkcode Poller} reads: a parser over memory the reader mapped. */
export interface PolledRing {
  /** Bytes written by the kernel and not yet consumed. */
  readonly pending: number;
  /** Hands at most `limit` records to `fn`, in order; returns how many. */
  read(fn: (bytes: Uint8Array, offset: number, length: number) => void, limit: number): number;
  /** Ends the read in progress after the record being handled. */
  interrupt(): void;
}

/**
 * How long a wait may block, in ms (-1: until a wakeup), or `null` when
 * records are waiting already and the wait should not block at all. `found`
 * says whether the drains since the last wait found records, `timeoutMs` is
 * the caller's deadline (-1 for none), and `pending` what the rings hold.
 */
export type WaitPlan<R extends PolledRing> = (
  found: boolean,
  timeoutMs: number,
  pending: number,
  rings: readonly R[],
) => number | null;

/** Handed a record's bytes, offset and length, and the index of the ring it came from. */
export type IndexedHandler = (
  bytes: Uint8Array,
  offset: number,
  length: number,
  ring: number,
) => void;

/** What a {@linkcode Poller} is told about its reader. */
export interface PollerOptions<R extends PolledRing> {
  /** The reader's class, for TypeErrors (`RingBuffer is closed`). */
  name: string;
  /** The reader in words, for failed calls (`create the ring buffer's epoll set`). */
  noun: string;
  /** How long each wait may block. */
  plan: WaitPlan<R>;
  /** Runs once, when the reader is closed, before anything is released. */
  onClose?: () => void;
}

/**
 * The lifecycle of a reader over one or more mapped rings. After
 * {@linkcode close}, {@linkcode drain}, {@linkcode wait},
 * {@linkcode pending} and {@linkcode records} throw a TypeError that names
 * the reader; `stop` and `close` do nothing.
 */
export class Poller<R extends PolledRing = PolledRing> implements Disposable {
  /** The rings, in the order they were added. */
  readonly rings: R[] = [];
  #what: string;
  #plan: WaitPlan<R>;
  #beforeRelease: () => void;
  #handles = new DisposableStack();
  #epfd: number;
  #stopfd: number;
  #events = new Uint8Array(0);
  #next = 0;
  #pending: Promise<number> | undefined;
  #found = false;
  #draining = false;
  #stopped = false;
  #closing = false;

  /** Creates the epoll set and its stop eventfd. */
  constructor(options: PollerOptions<R>) {
    const { name, noun, plan, onClose = () => {} } = options;
    this.#what = name;
    this.#plan = plan;
    this.#beforeRelease = onClose;
    try {
      this.#epfd = this.own(ownFd(checkErrno(
        c().epoll_create1(EPOLL_CLOEXEC),
        `create the ${noun}'s epoll set`,
      )));
      this.#stopfd = this.own(ownFd(checkErrno(
        c().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK),
        `create the ${noun}'s stop eventfd`,
      )));
      this.#watch(this.#stopfd, 0, EPOLLIN);
    } catch (error) {
      this.#handles.dispose();
      throw error;
    }
  }

  /** Owns `handle` until the reader is released (last added, first released); returns its value. */
  own<T>(handle: Handle<T>): T {
    return this.#handles.use(handle).use(this.#what);
  }

  /**
   * Maps `length` bytes of `fd` at `offset`, shared, and owns the mapping;
   * returns the view over it, detached on release. Throws with the real
   * errno, naming `what` and the `hint`.
   */
  map(fd: number, length: number, prot: number, offset: number, what: string, hint: string) {
    const ptr = c().mmap(null, BigInt(length), prot, MAP_SHARED, fd, BigInt(offset));
    if (ptr === null || Deno.UnsafePointer.value(ptr) === MAP_FAILED) {
      throw failure(`map ${what} (${length} bytes of fd ${fd})`, { hint });
    }
    return this.own(ownMapping(ptr, length));
  }

  /** Adds `ring`, whose producer wakes `fd` (watched for `events`). */
  add(fd: number, ring: R, events: number = EPOLLIN): void {
    this.#watch(fd, this.rings.length + 1, events);
    this.rings.push(ring);
    this.#events = new Uint8Array(EPOLL_EVENT_SIZE * (this.rings.length + 1));
  }

  /** Frees everything at once, for a reader whose constructor failed. */
  abandon(): void {
    this.#closing = true;
    this.#handles.dispose();
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#closing;
  }

  /** Bytes written by the kernel and not yet consumed, over all rings. */
  get pending(): number {
    this.assertOpen();
    let sum = 0;
    for (const ring of this.rings) sum += ring.pending;
    return sum;
  }

  /**
   * Consumes what the rings hold, calling `fn` for each record, at most
   * `limit` of them; each call starts from the next ring, so a busy ring
   * cannot starve the others. A handler that closes the reader ends the
   * drain after its record; the rings stay mapped until the drain returns.
   */
  drain(fn: IndexedHandler, limit: number): number {
    this.assertOpen();
    this.#draining = true;
    try {
      const rings = this.rings;
      let count = 0;
      const first = this.#next++ % rings.length;
      for (let k = 0; k < rings.length && count < limit && !this.#closing; k++) {
        const i = (first + k) % rings.length;
        count += rings[i].read(
          (bytes, offset, length) => fn(bytes, offset, length, i),
          limit - count,
        );
      }
      if (count > 0) this.#found = true;
      return count;
    } finally {
      this.#draining = false;
      if (this.#closing && !this.#pending) this.#release();
    }
  }

  /**
   * Waits until records may be ready, or `timeoutMs` has passed (-1: no
   * deadline). Resolves `true` when a drain is worth trying (it may still
   * find nothing after a timed wait), and `false` once stopped, or closed
   * while waiting.
   */
  async wait(timeoutMs: number = -1): Promise<boolean> {
    this.assertOpen();
    if (this.#stopped) return false;
    if (this.#pending) throw new TypeError(`${this.#what}.wait() is already pending`);
    const found = this.#found;
    this.#found = false;
    const deadline = timeoutMs < 0 ? -1 : Math.ceil(timeoutMs);
    const timeout = this.#plan(found, deadline, this.pending, this.rings);
    if (timeout === null) {
      // Records are waiting already: skip epoll, but give timers and signal
      // handlers a turn so a storm cannot starve them.
      await new Promise((resolve) => setTimeout(resolve, 0));
      return !(this.#stopped || this.#closing);
    }
    this.#pending = c().epoll_wait(this.#epfd, this.#events, this.rings.length + 1, timeout);
    try {
      await this.#pending;
    } finally {
      this.#pending = undefined;
      // A close during the wait left the epoll fd to this wait to release.
      if (this.#closing && !this.#draining) this.#release();
    }
    return !(this.#stopped || this.#closing);
  }

  /**
   * Ends waiting: a pending {@linkcode wait} resolves `false` at once, and so
   * does every later one. What the rings hold can still be drained until close.
   */
  stop(): void {
    if (this.#stopped || this.#closing) return;
    this.#stopped = true;
    c().write(this.#stopfd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
  }

  /**
   * Yields every record decoded with `decode`, until {@linkcode stop} (after
   * which what is left is still delivered) or close.
   */
  records<T>(
    decode: (bytes: Uint8Array, offset: number, length: number) => T,
  ): AsyncGenerator<T> {
    this.assertOpen();
    return decodedRecords({
      wait: () => this.wait(),
      drain: (fn, limit) => this.drain(fn, limit),
      closed: () => this.#closing,
    }, decode);
  }

  /**
   * Stops waiting and releases every handle, last first: at once, or, when
   * a wait or a drain is in progress, as soon as it returns. Idempotent.
   */
  close(): void {
    if (this.#closing) return;
    this.stop();
    this.#closing = true;
    this.#beforeRelease();
    if (this.#draining) { for (const ring of this.rings) ring.interrupt(); }
    if (!this.#pending && !this.#draining) this.#release();
  }

  /** Calls {@linkcode close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** The TypeError every use after close throws. */
  assertOpen(): void {
    if (this.#closing) throw new TypeError(`${this.#what} is closed`);
  }

  #release() {
    this.#handles.dispose(); // a no-op once done
  }

  #watch(fd: number, token: number, events: number) {
    const ev = new Uint8Array(EPOLL_EVENT_SIZE);
    const view = new DataView(ev.buffer);
    view.setUint32(0, events >>> 0, true);
    view.setUint32(EPOLL_EVENT_SIZE - 8, token, true);
    checkErrno(c().epoll_ctl(this.#epfd, EPOLL_CTL_ADD, fd, ev), `watch fd ${fd} with epoll`);
  }
}

/** What {@linkcode decodedRecords} needs of a reader. */
export interface RecordSource {
  /** Resolves when records may be there; false once stopped. */
  wait(): Promise<boolean>;
  /** Hands at most `limit` records to `fn`; returns how many. */
  drain(
    fn: (bytes: Uint8Array, offset: number, length: number) => void,
    limit: number,
  ): number;
  /** Whether the reader was closed (so iteration ends at once). */
  closed(): boolean;
}

/** How many records {@linkcode decodedRecords} decodes at a time. */
const RECORDS_CHUNK = 256;

/**
 * Yields every record of `source` decoded with `decode`, until the source is
 * stopped (what is left is still delivered) or closed. Decodes in small
 * chunks: a storm's whole backlog decoded at once would keep thousands of
 * records alive across garbage collections.
 */
export async function* decodedRecords<R>(
  source: RecordSource,
  decode: (bytes: Uint8Array, offset: number, length: number) => R,
): AsyncGenerator<R> {
  const batch: R[] = [];
  const collect = (bytes: Uint8Array, offset: number, length: number) => {
    batch.push(decode(bytes, offset, length));
  };
  let more = true;
  while (more) {
    if (source.closed()) return;
    more = await source.wait();
    for (;;) {
      if (source.closed()) return;
      batch.length = 0;
      if (source.drain(collect, RECORDS_CHUNK) === 0) break;
      for (let i = 0; i < batch.length; i++) yield batch[i];
    }
  }
}
