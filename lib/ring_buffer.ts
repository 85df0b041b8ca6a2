/**
 * A BPF ring buffer reader that reads the kernel's mapped ring straight from
 * TypeScript, the way cilium/ebpf does from Go: one wakeup drains a whole
 * burst, with no FFI call and no callback per record.
 *
 * Waiting is a nonblocking `epoll_wait` on the map's fd (off the main thread);
 * consuming is synchronous on the main thread. A stop eventfd in the same
 * epoll set ends a pending wait at once.
 *
 * @example Count records until stopped (needs root and a loaded object)
 * ```ts ignore
 * import { RingBuffer } from "./ring_buffer.ts";
 * import type { BpfMap } from "./map.ts";
 *
 * declare const events: BpfMap;
 * using ring = new RingBuffer(events);
 * let n = 0;
 * while (await ring.wait()) n += ring.drain(() => {});
 * ```
 *
 * @module
 */

import { c } from "./_ffi.ts";
import { BpfError } from "./errors.ts";
import type { Decoded, Fields, Layout } from "./layout.ts";
import type { BpfMap } from "./map.ts";

const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_SHARED = 0x1;
const EPOLL_CLOEXEC = 0x80000;
const EPOLL_CTL_ADD = 1;
const EPOLLIN = 0x1;
const EPOLLET = 1 << 31;
const EFD_CLOEXEC = 0x80000;
const EFD_NONBLOCK = 0x800;
// Record header flags (kernel/bpf/ringbuf.c)
const BUSY_BIT = 0x80000000;
const DISCARD_BIT = 0x40000000;
const HEADER_SIZE = 8;
const STOP_TOKEN = 1;
/** How many records {@linkcode RingBuffer.records} decodes at a time. */
const RECORDS_CHUNK = 256;

// struct epoll_event is packed on x86_64 (12 bytes), naturally aligned elsewhere.
const EPOLL_EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;

/** Called once per record with the ring's bytes, the record's offset and length. */
export type RecordHandler = (
  bytes: Uint8Array,
  offset: number,
  length: number,
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

function mmap(fd: number, length: number, prot: number, offset: number) {
  const ptr = c().mmap(null, BigInt(length), prot, MAP_SHARED, fd, BigInt(offset));
  if (!ptr || Deno.UnsafePointer.value(ptr) === 0xffff_ffff_ffff_ffffn) {
    throw new BpfError(`map the ring buffer (fd ${fd})`, 12);
  }
  return ptr;
}

function epollAdd(epfd: number, fd: number, token: number, events: number) {
  const ev = new Uint8Array(EPOLL_EVENT_SIZE);
  const view = new DataView(ev.buffer);
  view.setUint32(0, events >>> 0, true);
  view.setUint32(EPOLL_EVENT_SIZE - 8, token, true);
  if (c().epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ev) < 0) {
    throw new BpfError(`watch fd ${fd} with epoll`, 22);
  }
}

/** Reads a `BPF_MAP_TYPE_RINGBUF` map. Create it after the object is loaded. */
export class RingBuffer implements Disposable {
  #size: number;
  #page: number;
  #consumerPtr: Deno.PointerObject | null;
  #producerPtr: Deno.PointerObject | null;
  #consumerPos: BigInt64Array;
  #producerPos: BigInt64Array;
  #data: Uint8Array;
  #headers: Int32Array;
  #epfd: number;
  #stopfd: number;
  #events = new Uint8Array(EPOLL_EVENT_SIZE * 2);
  #tailWaitMs: number;
  #batchBytes: number;
  #pending: Promise<number> | undefined;
  #found = false;
  #blocked = false;
  #stopped = false;
  #closing = false;
  #released = false;

  /** Maps `map`'s ring into this process and sets up the wait. */
  constructor(map: BpfMap, options: RingBufferOptions = {}) {
    const fd = map.fd;
    if (fd < 0) throw new TypeError(`Map "${map.name}" is not loaded yet`);
    this.#size = map.maxEntries;
    this.#page = c().getpagesize();
    this.#tailWaitMs = options.tailWaitMs ?? 25;
    this.#batchBytes = Math.max(1, options.batchBytes ?? 0);
    // Consumer page: read-write, holds consumer_pos. Producer page + data:
    // read-only, the data mapped twice so a record never wraps.
    this.#consumerPtr = mmap(fd, this.#page, PROT_READ | PROT_WRITE, 0);
    this.#producerPtr = mmap(fd, this.#page + 2 * this.#size, PROT_READ, this.#page);
    const consumer = Deno.UnsafePointerView.getArrayBuffer(this.#consumerPtr, this.#page);
    const producer = Deno.UnsafePointerView.getArrayBuffer(
      this.#producerPtr,
      this.#page + 2 * this.#size,
    );
    this.#consumerPos = new BigInt64Array(consumer, 0, 1);
    this.#producerPos = new BigInt64Array(producer, 0, 1);
    this.#data = new Uint8Array(producer, this.#page, 2 * this.#size);
    this.#headers = new Int32Array(producer, this.#page, (2 * this.#size) >> 2);

    this.#epfd = c().epoll_create1(EPOLL_CLOEXEC);
    this.#stopfd = c().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      if (this.#epfd < 0 || this.#stopfd < 0) {
        throw new BpfError("create the ring buffer's epoll set", 24);
      }
      // Edge-triggered: only the producer's wakeups end a wait. Level-triggered,
      // any unread byte would end every wait at once, and a reader that
      // leaves a partial batch for later would spin instead of batching.
      epollAdd(this.#epfd, fd, 0, EPOLLIN | EPOLLET);
      epollAdd(this.#epfd, this.#stopfd, STOP_TOKEN, EPOLLIN);
    } catch (error) {
      this.#release();
      throw error;
    }
  }

  /** The ring's size in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Bytes written by the kernel and not yet consumed. */
  get pending(): number {
    this.#assertOpen();
    return Number(Atomics.load(this.#producerPos, 0) - Atomics.load(this.#consumerPos, 0));
  }

  /**
   * Consumes the records committed so far, in order, calling `fn` for each
   * (discarded records are skipped), at most `limit` of them. The bytes are
   * only valid during the call. Returns the number of records handed to `fn`.
   */
  drain(fn: RecordHandler, limit: number = Infinity): number {
    this.#assertOpen();
    const size = this.#size;
    const headers = this.#headers;
    const data = this.#data;
    let cons = Number(Atomics.load(this.#consumerPos, 0));
    const prod = Number(Atomics.load(this.#producerPos, 0));
    let count = 0;
    this.#blocked = false;
    try {
      while (cons < prod && count < limit) {
        // Positions grow without bound; the low bits index the ring. A size
        // is a power of two, so % is exact on doubles below 2^53.
        const at = cons % size;
        const header = Atomics.load(headers, at >> 2);
        if (header & BUSY_BIT) {
          this.#blocked = true; // reserved, not yet committed: stop here
          break;
        }
        const length = header & ~(BUSY_BIT | DISCARD_BIT);
        if (!(header & DISCARD_BIT)) {
          fn(data, at + HEADER_SIZE, length);
          count++;
        }
        cons += (length + HEADER_SIZE + 7) & ~7;
      }
    } finally {
      Atomics.store(this.#consumerPos, 0, BigInt(cons));
    }
    if (count > 0) this.#found = true;
    return count;
  }

  /**
   * Waits until records may be ready. Resolves `true` when it is worth calling
   * {@linkcode drain} (which may still find nothing after a timed wait), and
   * `false` once the reader is stopped or closed.
   */
  async wait(): Promise<boolean> {
    if (this.#stopped || this.#closing) return false;
    if (this.#pending) throw new TypeError("RingBuffer.wait() is already pending");
    const pending = this.pending;
    const found = this.#found; // records drained since the last wait
    this.#found = false;
    if (!this.#blocked && pending >= this.#batchBytes) {
      // A batch is waiting already: skip epoll, but give timers and signal
      // handlers a turn so a storm cannot starve them.
      await new Promise((resolve) => setTimeout(resolve, 0));
      return !(this.#stopped || this.#closing);
    }
    // Wait forever only when the ring is empty and the last look found
    // nothing: then the producer's next record comes with a wakeup.
    const timeout = this.#blocked ? 1 : pending > 0 || found ? this.#tailWaitMs : -1;
    this.#pending = c().epoll_wait(this.#epfd, this.#events, 2, timeout);
    try {
      await this.#pending;
    } finally {
      this.#pending = undefined;
      if (this.#closing) this.#release();
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
    const one = new BigUint64Array([1n]);
    c().write(this.#stopfd, new Uint8Array(one.buffer), 8n);
  }

  /**
   * Yields every record decoded with `layout`, until {@linkcode stop} (after
   * which what is left in the ring is still delivered) or close.
   */
  async *records<F extends Fields>(layout: Layout<F>): AsyncGenerator<Decoded<F>> {
    // Decode in small chunks: a storm's whole backlog decoded at once would
    // keep thousands of records alive across garbage collections.
    const batch: Decoded<F>[] = [];
    const collect: RecordHandler = (bytes, offset) => {
      batch.push(layout.decode(bytes, offset));
    };
    let more = true;
    while (more) {
      more = await this.wait();
      for (;;) {
        if (this.#released) return;
        batch.length = 0;
        if (this.drain(collect, RECORDS_CHUNK) === 0) break;
        for (let i = 0; i < batch.length; i++) yield batch[i];
      }
    }
  }

  /** Stops waiting and unmaps the ring. Idempotent. */
  close(): void {
    if (this.#closing) return;
    this.stop();
    this.#closing = true;
    // A pending epoll_wait still uses the epoll fd: release when it returns.
    if (!this.#pending) this.#release();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #release() {
    if (this.#released) return;
    this.#released = true;
    if (this.#epfd >= 0) c().close(this.#epfd);
    if (this.#stopfd >= 0) c().close(this.#stopfd);
    if (this.#consumerPtr) c().munmap(this.#consumerPtr, BigInt(this.#page));
    if (this.#producerPtr) {
      c().munmap(this.#producerPtr, BigInt(this.#page + 2 * this.#size));
    }
    this.#consumerPtr = this.#producerPtr = null;
  }

  #assertOpen() {
    if (this.#released) throw new TypeError("RingBuffer is closed");
  }
}
