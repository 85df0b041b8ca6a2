/**
 * A BPF ring buffer reader that reads the kernel's mapped ring straight from
 * TypeScript, the way cilium/ebpf does from Go: one wakeup drains a whole
 * burst, with no FFI call and no native callback per record.
 *
 * This file is the thin native shell: it maps the ring (consumer page, then
 * the producer page and the data pages mapped twice), and owns the epoll set
 * and the stop eventfd. The record walk itself is the pure
 * {@linkcode RingParser} in `ring.ts`. A reader dropped without `close()` is
 * released by a finalizer, as a safety net only.
 *
 * Waiting is a nonblocking `epoll_wait` on the map's fd (off the main thread);
 * consuming is synchronous on the main thread. A stop eventfd in the same
 * epoll set ends a pending wait at once.
 *
 * @example Count records until stopped (needs root and a loaded object)
 * ```ts
 * import { RingBuffer } from "./ring_buffer.ts";
 * import type { BpfMap } from "./map.ts";
 *
 * export async function countRecords(events: BpfMap): Promise<number> {
 *   using ring = new RingBuffer(events);
 *   Deno.addSignalListener("SIGINT", () => ring.stop());
 *   let n = 0;
 *   while (await ring.wait()) n += ring.drain(() => {});
 *   return n;
 * }
 * ```
 *
 * @module
 */

import { c } from "./_ffi.ts";
import {
  decodedRecords,
  EPOLL_EVENT_SIZE,
  epollAdd,
  epollCreate,
  EPOLLET,
  EPOLLIN,
  mapShared,
  PROT_READ,
  PROT_WRITE,
  signalStop,
  stopEventfd,
} from "./_wait.ts";
import type { AnyLayout, RecordOf } from "./layout.ts";
import type { BpfMap } from "./map.ts";
import { checkRingSize, RingParser } from "./ring.ts";

export { checkRingSize, MAX_RING_SIZE, type RecordHandler } from "./ring.ts";

const STOP_TOKEN = 1;

/**
 * Called by {@linkcode RingBuffer.drain} once per record: the ring's bytes,
 * the record's offset and length, and which of the reader's rings it came
 * from (its index in the maps given to the constructor).
 */
export type RingRecordHandler = (
  bytes: Uint8Array,
  offset: number,
  length: number,
  ring: number,
) => void;

/** Options for {@linkcode RingBuffer}. */
export interface RingBufferOptions {
  /**
   * After a wakeup that found records, how long to wait for the next one
   * before checking the ring anyway, in ms. Producers that submit with
   * `BPF_RB_NO_WAKEUP` rely on this to deliver the tail of a burst; it must be
   * at least their wakeup interval. Default 25.
   */
  tailWaitMs?: number;
  /**
   * {@linkcode RingBuffer.wait} returns at once, without a wakeup, when at
   * least this many bytes are waiting; below it, it waits for the producer's
   * next wakeup (or the tail wait). Set it to the producer's wakeup threshold.
   * Default 0: any waiting record ends a wait, as suits producers that submit
   * with the kernel's default wakeups.
   */
  batchBytes?: number;
}

/**
 * The native resources of one reader: two mappings per ring and two fds.
 * Kept apart from the {@linkcode RingBuffer} so that the finalizer's held
 * value does not keep the reader alive. {@linkcode release} is idempotent.
 */
class RingResources {
  mappings: { ptr: Deno.PointerObject; length: number }[] = [];
  /** The views over the mappings, detached on release so none outlives them. */
  views: ArrayBuffer[] = [];
  epfd = -1;
  stopfd = -1;

  /** Maps `length` bytes of the ring's fd at `offset`; throws with the real errno. */
  map(fd: number, length: number, prot: number, offset: number, what: string) {
    const ptr = mapShared(
      fd,
      length,
      prot,
      offset,
      `the ring buffer's ${what}`,
      "is the map a BPF_MAP_TYPE_RINGBUF, and is there address space left?",
    );
    this.mappings.push({ ptr, length });
    const view = Deno.UnsafePointerView.getArrayBuffer(ptr, length);
    this.views.push(view);
    return view;
  }

  release() {
    // Detach first: a view a record handler kept now reads as empty instead
    // of touching unmapped memory.
    for (const view of this.views) view.transfer(0);
    this.views = [];
    if (this.epfd >= 0) c().close(this.epfd);
    if (this.stopfd >= 0) c().close(this.stopfd);
    this.epfd = this.stopfd = -1;
    for (const { ptr, length } of this.mappings) c().munmap(ptr, BigInt(length));
    this.mappings = [];
  }
}

/** Safety net only: a reader dropped without close() still gets released. */
const unclosedRings = new FinalizationRegistry<RingResources>((res) => res.release());

/**
 * Reads one `BPF_MAP_TYPE_RINGBUF` map, or several with one wait (as
 * libbpf's `ring_buffer__add` does). Create it after the object is loaded.
 * After {@linkcode close}, {@linkcode drain}, {@linkcode wait},
 * {@linkcode pending} and {@linkcode records} throw a TypeError; `stop` and
 * `close` do nothing.
 *
 * @example Decode typed records until Ctrl-C (needs root and a loaded object)
 * ```ts
 * import { RingBuffer } from "./ring_buffer.ts";
 * import { defineLayout } from "./layout.ts";
 * import type { BpfMap } from "./map.ts";
 *
 * declare const events: BpfMap; // a loaded BPF_MAP_TYPE_RINGBUF
 * const exec = defineLayout("exec_event", 24, { pid: ["u32", 0], comm: ["char[16]", 8] });
 *
 * export async function printExecs(): Promise<void> {
 *   using ring = new RingBuffer(events);
 *   Deno.addSignalListener("SIGINT", () => ring.stop());
 *   for await (const e of ring.records(exec)) console.log(e.pid, e.comm);
 * }
 * ```
 */
export class RingBuffer implements Disposable {
  #sizes: number[];
  #res = new RingResources();
  #rings: RingParser[] = [];
  #next = 0;
  #events: Uint8Array;
  #tailWaitMs: number;
  #batchBytes: number;
  #pending: Promise<number> | undefined;
  #found = false;
  #draining = false;
  #stopped = false;
  #closing = false;
  #released = false;

  /**
   * Maps each map's ring into this process and sets up one wait for them all.
   *
   * @param map A loaded ring buffer map, or several: {@linkcode drain} then
   *   reads them in turn, and hands each record's ring index to its handler.
   * @throws {RangeError} if a map's size is not a ring size (see {@linkcode checkRingSize}).
   * @throws {BpfError} if mapping a ring or creating the epoll set fails.
   */
  constructor(map: BpfMap | readonly BpfMap[], options: RingBufferOptions = {}) {
    const maps = Array.isArray(map) ? map : [map as BpfMap];
    if (maps.length === 0) throw new TypeError("RingBuffer needs at least one map");
    const page = c().getpagesize();
    const fds = maps.map((m) => {
      if (m.fd < 0) throw new TypeError(`Map "${m.name}" is not loaded yet`);
      checkRingSize(m.maxEntries, page);
      return m.fd;
    });
    this.#sizes = maps.map((m) => m.maxEntries);
    this.#events = new Uint8Array(EPOLL_EVENT_SIZE * (maps.length + 1));
    this.#tailWaitMs = options.tailWaitMs ?? 25;
    this.#batchBytes = Math.max(1, options.batchBytes ?? 0);
    const res = this.#res;
    try {
      res.epfd = epollCreate("ring buffer");
      res.stopfd = stopEventfd("ring buffer");
      epollAdd(res.epfd, res.stopfd, STOP_TOKEN, EPOLLIN);
      fds.forEach((fd, i) => {
        const size = this.#sizes[i];
        // Consumer page: read-write, holds consumer_pos. Producer page +
        // data: read-only, the data mapped twice so a record never wraps.
        const consumer = res.map(fd, page, PROT_READ | PROT_WRITE, 0, "consumer page");
        const producer = res.map(fd, page + 2 * size, PROT_READ, page, "data pages");
        this.#rings.push(
          new RingParser(
            new Uint8Array(producer, page, 2 * size),
            new BigUint64Array(consumer, 0, 1),
            new BigUint64Array(producer, 0, 1),
          ),
        );
        // Edge-triggered: only the producer's wakeups end a wait. Level-
        // triggered, any unread byte would end every wait at once, and a
        // reader that leaves a partial batch for later would spin.
        epollAdd(res.epfd, fd, STOP_TOKEN + 1 + i, EPOLLIN | EPOLLET);
      });
    } catch (error) {
      this.#released = true;
      res.release();
      throw error;
    }
    unclosedRings.register(this, res, this);
  }

  /** The (first) ring's size in bytes. Readable after close. */
  get size(): number {
    return this.#sizes[0];
  }

  /** Every ring's size in bytes, in the order the maps were given. */
  get sizes(): number[] {
    return [...this.#sizes];
  }

  /** Bytes written by the kernel and not yet consumed, over all rings. */
  get pending(): number {
    this.#assertOpen();
    let sum = 0;
    for (const ring of this.#rings) sum += ring.pending;
    return sum;
  }

  /** Whether some ring stops at a record still being written. */
  #blocked(): boolean {
    return this.#rings.some((ring) => ring.blocked);
  }

  /**
   * Consumes the records committed so far, in order, calling `fn` for each
   * (discarded records are skipped), at most `limit` of them. The bytes are
   * only valid during the call. A record whose handler throws is consumed.
   * A handler that closes the reader ends the drain's batch early: the
   * records after it stay in the ring, and the ring is unmapped on return.
   * Returns the number of records handed to `fn`.
   */
  drain(fn: RingRecordHandler, limit: number = Infinity): number {
    this.#assertOpen();
    // A handler may close the reader: the ring stays mapped until read() returns.
    this.#draining = true;
    try {
      const rings = this.#rings;
      let count = 0;
      // In turn, from a different ring each call, so one busy ring cannot
      // starve the others.
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
   * Waits until records may be ready. Resolves `true` when it is worth calling
   * {@linkcode drain} (which may still find nothing after a timed wait), and
   * `false` once the reader is stopped, or closed while waiting.
   *
   * @throws {TypeError} if the reader is closed.
   */
  async wait(): Promise<boolean> {
    if (this.#closing) throw new TypeError("RingBuffer is closed");
    if (this.#stopped) return false;
    if (this.#pending) throw new TypeError("RingBuffer.wait() is already pending");
    const pending = this.pending;
    const blocked = this.#blocked();
    const found = this.#found; // records drained since the last wait
    this.#found = false;
    if (!blocked && pending >= this.#batchBytes) {
      // A batch is waiting already: skip epoll, but give timers and signal
      // handlers a turn so a storm cannot starve them.
      await new Promise((resolve) => setTimeout(resolve, 0));
      return !(this.#stopped || this.#closing);
    }
    // Wait forever only when the ring is empty and the last look found
    // nothing: then the producer's next record comes with a wakeup.
    const timeout = blocked ? 1 : pending > 0 || found ? this.#tailWaitMs : -1;
    const slots = this.#rings.length + 1;
    this.#pending = c().epoll_wait(this.#res.epfd, this.#events, slots, timeout);
    try {
      await this.#pending;
    } finally {
      this.#pending = undefined;
      if (this.#closing && !this.#draining) this.#release();
    }
    return !(this.#stopped || this.#closing);
  }

  /**
   * Ends waiting: a pending {@linkcode wait} resolves `false` at once, and so
   * does every later one. Records still in the ring can be drained until close.
   */
  stop(): void {
    if (this.#stopped || this.#released) return;
    this.#stopped = true;
    signalStop(this.#res.stopfd);
  }

  /**
   * Yields every record decoded with `layout`, until {@linkcode stop} (after
   * which what is left in the ring is still delivered) or close.
   *
   * @throws {TypeError} if the reader is closed.
   */
  records<L extends AnyLayout>(layout: L): AsyncGenerator<RecordOf<L>> {
    this.#assertOpen();
    return decodedRecords({
      wait: () => this.wait(),
      drain: (fn, limit) => this.drain(fn, limit),
      closed: () => this.#closing || this.#released,
    }, (bytes, offset, length) => layout.decode(bytes, offset, length) as RecordOf<L>);
  }

  /** Stops waiting and unmaps the ring. Idempotent. */
  close(): void {
    if (this.#closing) return;
    this.stop();
    this.#closing = true;
    if (this.#draining) { for (const ring of this.#rings) ring.interrupt(); }
    // A pending epoll_wait still uses the epoll fd, and a drain the ring:
    // release when they return.
    if (!this.#pending && !this.#draining) this.#release();
  }

  /** Calls {@linkcode close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #release() {
    if (this.#released) return;
    this.#released = true;
    unclosedRings.unregister(this);
    this.#res.release();
  }

  #assertOpen() {
    if (this.#closing) throw new TypeError("RingBuffer is closed");
  }
}
