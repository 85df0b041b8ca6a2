/**
 * The pure core of the BPF ring buffer reader: walks the records of a ring
 * laid out as the kernel maps it, with no FFI. {@linkcode RingBuffer} in
 * `ring_buffer.ts` maps the real ring and hands its memory to a
 * {@linkcode RingParser}; tests hand it synthetic bytes.
 *
 * The kernel's layout (kernel/bpf/ringbuf.c): a consumer position and a
 * producer position, each a u64 that only grows (wrapping at 2^64), and a
 * data area of `size` bytes, a power of two, mapped twice in a row so that a
 * record crossing the end reads as one run of bytes. Each record starts on an
 * 8-byte boundary with an 8-byte header whose first u32 is the record's
 * length, plus the BUSY bit (reserved, not yet committed) and the DISCARD bit
 * (committed, to be skipped).
 *
 * @example Walk a synthetic ring holding one 4-byte record
 * ```ts
 * import { RingParser } from "./ring.ts";
 *
 * const size = 4096;
 * const data = new Uint8Array(2 * size); // the data area, mapped twice
 * new DataView(data.buffer).setUint32(0, 4, true); // header: length 4
 * const consumer = new BigUint64Array([0n]);
 * const producer = new BigUint64Array([16n]); // header + 4 bytes, 8-aligned
 * const ring = new RingParser(data, consumer, producer);
 * const n = ring.read((bytes, offset, length) => console.log(bytes.subarray(offset, offset + length)));
 * console.assert(n === 1 && consumer[0] === 16n);
 * ```
 *
 * @module
 */

/** Called once per record with the ring's bytes, the record's offset and length. */
export type RecordHandler = (
  bytes: Uint8Array,
  offset: number,
  length: number,
) => void;

/**
 * The largest ring the reader supports, 2 GiB: the largest power of two a
 * u32 `max_entries` holds. Its data area is mapped twice, a 4 GiB view,
 * which Deno 2.9 maps and indexes.
 */
export const MAX_RING_SIZE = 2 ** 31;

/** The smallest page size Linux uses, and so the smallest ring anywhere. */
const MIN_PAGE_SIZE = 4096;

// Record header flags (kernel/bpf/ringbuf.c, BPF_RINGBUF_*_BIT)
const BUSY_BIT = 0x80000000;
const DISCARD_BIT = 0x40000000;
const LENGTH_MASK = 0x3fffffff;
const HEADER_SIZE = 8;

/**
 * Throws a RangeError unless `size` is a ring size the kernel accepts and
 * the reader supports: a power of two from the page size to
 * {@linkcode MAX_RING_SIZE}.
 *
 * @param size The ring's size in bytes (the map's `max_entries`).
 * @param pageSize The system's page size; RingBuffer passes the real one.
 *   Default 4096, the smallest Linux has.
 */
export function checkRingSize(size: number, pageSize: number = MIN_PAGE_SIZE): void {
  if (!isPowerOfTwo(size) || size < pageSize || size > MAX_RING_SIZE) {
    throw new RangeError(
      `Ring buffer size must be a power of two from ${pageSize} to ${MAX_RING_SIZE} bytes ` +
        `(2 GiB), got ${size}`,
    );
  }
}

/** Exact on every number: no 32-bit bitwise tricks. */
function isPowerOfTwo(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 1) return false;
  let p = 1;
  while (p < n) p *= 2;
  return p === n;
}

/**
 * Reads the records of one ring: the data area (mapped twice) and the two
 * positions. Not tied to any native resource; the caller keeps the memory
 * valid while it uses the parser.
 *
 * @example Stop at a record the producer has reserved but not committed
 * ```ts
 * import { RingParser } from "./ring.ts";
 *
 * const data = new Uint8Array(2 * 4096); // a 4 KiB ring, mapped twice
 * new DataView(data.buffer).setUint32(0, 0x8000_0000 | 8, true); // BUSY, 8 bytes
 * const consumer = new BigUint64Array([0n]);
 * const producer = new BigUint64Array([16n]);
 * const ring = new RingParser(data, consumer, producer);
 * console.assert(ring.read(() => {}) === 0 && ring.blocked && ring.pending === 16);
 * ```
 */
export class RingParser {
  /** The ring's size in bytes (half the data area). */
  readonly size: number;
  #data: Uint8Array;
  #headers: Int32Array;
  #consumer: BigUint64Array;
  #producer: BigUint64Array;
  #mask: bigint;
  #blocked = false;
  #interrupted = false;

  /**
   * Reads the ring whose memory is given; checks its shape, not its records.
   *
   * @param data The data area: `2 * size` bytes, the ring followed by itself
   *   (the kernel maps it twice), starting on a 4-byte boundary.
   * @param consumer The consumer position, element 0; the parser advances it.
   * @param producer The producer position, element 0; only read.
   */
  constructor(data: Uint8Array, consumer: BigUint64Array, producer: BigUint64Array) {
    const size = data.length / 2;
    checkRingSize(size);
    if (data.byteOffset % 4 !== 0) {
      throw new RangeError(`Ring data must start on a 4-byte boundary, got ${data.byteOffset}`);
    }
    this.size = size;
    this.#data = data;
    this.#headers = new Int32Array(data.buffer, data.byteOffset, data.length / 4);
    this.#consumer = consumer;
    this.#producer = producer;
    this.#mask = BigInt(size - 1);
  }

  /** Bytes written by the producer and not yet consumed. */
  get pending(): number {
    const gap = Atomics.load(this.#producer, 0) - Atomics.load(this.#consumer, 0);
    return Number(BigInt.asUintN(64, gap));
  }

  /** Whether the last {@linkcode read} stopped at a record still being written. */
  get blocked(): boolean {
    return this.#blocked;
  }

  /**
   * Ends the {@linkcode read} in progress after the record being handled:
   * for a handler that must not see more. The records after it stay in the
   * ring. Does nothing outside a read.
   */
  interrupt(): void {
    this.#interrupted = true;
  }

  /**
   * Consumes the records committed so far, in order, calling `fn` for each
   * (discarded records are consumed without a call), at most `limit` of
   * them. Stops at the first record still being written. The bytes are only
   * valid during the call. A record counts as consumed once `fn` is called:
   * if `fn` throws, the consumer position moves past it and the error
   * propagates. Returns the number of records handed to `fn`.
   *
   * Positions are read as u64 once per call; within a call the walk runs on
   * small numbers, with no allocation and no native call per record.
   */
  read(fn: RecordHandler, limit: number = Infinity): number {
    const size = this.size;
    const data = this.#data;
    const headers = this.#headers;
    const cons = Atomics.load(this.#consumer, 0);
    const avail = Number(BigInt.asUintN(64, Atomics.load(this.#producer, 0) - cons));
    this.#blocked = false;
    this.#interrupted = false;
    if (avail > size) {
      throw new RangeError(
        `Ring buffer positions are inconsistent: ${avail} bytes pending in a ${size}-byte ring; ` +
          `reopen the map`,
      );
    }
    let at = Number(cons & this.#mask);
    let done = 0;
    let count = 0;
    try {
      while (done < avail && count < limit && !this.#interrupted) {
        // Acquire-load the header: the kernel commits a record by clearing
        // BUSY in it, after writing the record's bytes.
        const header = Atomics.load(headers, at >>> 2);
        if (header & BUSY_BIT) {
          this.#blocked = true;
          break;
        }
        const length = header & LENGTH_MASK;
        const step = (length + HEADER_SIZE + 7) & ~7;
        if (step > avail - done) {
          throw new RangeError(
            `Ring buffer record at position ${cons + BigInt(done)} is ${step} bytes, ` +
              `but only ${avail - done} are written; reopen the map`,
          );
        }
        const offset = at + HEADER_SIZE;
        done += step;
        at += step;
        if (at >= size) at -= size;
        if (!(header & DISCARD_BIT)) {
          count++;
          fn(data, offset, length);
        }
      }
    } finally {
      // Release-store: the kernel may reuse the space once it sees this.
      if (done > 0) Atomics.store(this.#consumer, 0, BigInt.asUintN(64, cons + BigInt(done)));
    }
    return count;
  }
}
