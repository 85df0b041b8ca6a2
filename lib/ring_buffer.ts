/**
 * A BPF ring buffer reader that reads the kernel's mapped ring straight from
 * TypeScript, the way cilium/ebpf does from Go: one wakeup drains a whole
 * burst, with no FFI call and no native callback per record.
 *
 * This file is the thin native shell: it maps the ring (consumer page, then
 * the producer page and the data pages mapped twice). The record walk itself
 * is the pure {@linkcode RingParser} in `ring.ts`, and waiting, stopping and
 * closing are the {@linkcode Poller} that PerfBuffer shares. A reader dropped
 * without `close()` is released by the handles' finalizers, as a safety net
 * only.
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
import { EPOLLET, EPOLLIN, Poller, PROT_READ, PROT_WRITE } from "./_poller.ts";
import type { AnyLayout, RecordOf } from "./layout.ts";
import type { BpfMap } from "./map.ts";
import { checkRingSize, RingParser } from "./ring.ts";

export { checkRingSize, MAX_RING_SIZE, type RecordHandler } from "./ring.ts";

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
  #poller: Poller<RingParser>;

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
    for (const m of maps) {
      if (m.fd < 0) throw new TypeError(`Map "${m.name}" is not loaded yet`);
      checkRingSize(m.maxEntries, page);
    }
    this.#sizes = maps.map((m) => m.maxEntries);
    const tailWaitMs = options.tailWaitMs ?? 25;
    const batchBytes = Math.max(1, options.batchBytes ?? 0);
    const poller = this.#poller = new Poller<RingParser>({
      name: "RingBuffer",
      noun: "ring buffer",
      plan: (found, _deadline, pending, rings) => {
        const blocked = rings.some((ring) => ring.blocked);
        if (!blocked && pending >= batchBytes) return null; // a batch is waiting already
        // Wait forever only when the ring is empty and the last look found
        // nothing: then the producer's next record comes with a wakeup.
        return blocked ? 1 : pending > 0 || found ? tailWaitMs : -1;
      },
    });
    try {
      for (const [i, m] of maps.entries()) {
        const size = this.#sizes[i];
        const what = (part: string) => `the ring buffer's ${part}`;
        const hint = "is the map a BPF_MAP_TYPE_RINGBUF, and is there address space left?";
        // Consumer page: read-write, holds consumer_pos. Producer page +
        // data: read-only, the data mapped twice so a record never wraps.
        const consumer = poller.map(
          m.fd,
          page,
          PROT_READ | PROT_WRITE,
          0,
          what("consumer page"),
          hint,
        );
        const producer = poller.map(
          m.fd,
          page + 2 * size,
          PROT_READ,
          page,
          what("data pages"),
          hint,
        );
        const ring = new RingParser(
          new Uint8Array(producer, page, 2 * size),
          new BigUint64Array(consumer, 0, 1),
          new BigUint64Array(producer, 0, 1),
        );
        // Edge-triggered: only the producer's wakeups end a wait. Level-
        // triggered, any unread byte would end every wait at once, and a
        // reader that leaves a partial batch for later would spin.
        poller.add(m.fd, ring, EPOLLIN | EPOLLET);
      }
    } catch (error) {
      poller.abandon();
      throw error;
    }
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
    return this.#poller.pending;
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
    return this.#poller.drain(fn, limit);
  }

  /**
   * Waits until records may be ready. Resolves `true` when it is worth calling
   * {@linkcode drain} (which may still find nothing after a timed wait), and
   * `false` once the reader is stopped, or closed while waiting.
   *
   * @throws {TypeError} if the reader is closed.
   */
  wait(): Promise<boolean> {
    return this.#poller.wait();
  }

  /**
   * Ends waiting: a pending {@linkcode wait} resolves `false` at once, and so
   * does every later one. Records still in the ring can be drained until close.
   */
  stop(): void {
    this.#poller.stop();
  }

  /**
   * Yields every record decoded with `layout`, until {@linkcode stop} (after
   * which what is left in the ring is still delivered) or close.
   *
   * @throws {TypeError} if the reader is closed.
   */
  records<L extends AnyLayout>(layout: L): AsyncGenerator<RecordOf<L>> {
    return this.#poller.records((bytes, offset, length) =>
      layout.decode(bytes, offset, length) as RecordOf<L>
    );
  }

  /** Stops waiting and unmaps the ring. Idempotent. */
  close(): void {
    this.#poller.close();
  }

  /** Calls {@linkcode close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
