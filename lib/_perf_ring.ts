/**
 * The perf ring format, parsed in plain TypeScript with no FFI: one CPU's
 * `mmap` of a perf event, a `struct perf_event_mmap_page` followed by a
 * power-of-two data area. {@linkcode PerfBuffer} maps the kernel's rings and
 * hands them to {@linkcode PerfRing}; the tests hand it synthetic bytes.
 *
 * Unlike a BPF ring buffer, the data area is mapped once: a record that runs
 * past its end continues at its start, and is copied whole into a scratch
 * buffer before it is handed over.
 *
 * @module
 */

/** Byte offset of `data_head` in `struct perf_event_mmap_page` (`data_tail` follows it). */
export const DATA_HEAD_OFFSET = 1024;
/** `struct perf_event_header`: `u32 type; u16 misc; u16 size`. */
export const HEADER_SIZE = 8;
/** `PERF_RECORD_LOST`: `header; u64 id; u64 lost`. */
export const PERF_RECORD_LOST = 2;
/** `PERF_RECORD_SAMPLE`; with `PERF_SAMPLE_RAW` alone: `header; u32 size; u8 data[size]`. */
export const PERF_RECORD_SAMPLE = 9;

/**
 * Called once per sample with the bytes that hold it, the offset of its raw
 * data and the raw size. The kernel pads the raw data so the record stays
 * 8-byte aligned: `length` counts that padding (up to 7 bytes past what the
 * BPF program sent). The bytes are only valid during the call.
 */
export type SampleHandler = (bytes: Uint8Array, offset: number, length: number) => void;

/**
 * One CPU's perf ring: a reader over its control page and data area.
 *
 * @example Read one sample from a synthetic ring
 * ```ts
 * import { DATA_HEAD_OFFSET, PERF_RECORD_SAMPLE, PerfRing } from "./_perf_ring.ts";
 *
 * const page = 4096;
 * const buffer = new ArrayBuffer(2 * page); // the control page, then 4 KiB of data
 * const data = new DataView(buffer, page);
 * data.setUint32(0, PERF_RECORD_SAMPLE, true); // header: type
 * data.setUint16(6, 16, true); // header: size (8) + raw size (4) + 4 raw bytes
 * data.setUint32(8, 4, true); // raw size
 * new BigUint64Array(buffer, DATA_HEAD_OFFSET, 1)[0] = 16n; // data_head
 * const ring = new PerfRing(buffer, page, page);
 * const n = ring.read((b, at, length) => console.log(b.subarray(at, at + length)));
 * console.assert(n === 1 && ring.pending === 0 && ring.lost === 0);
 * ```
 */
export class PerfRing {
  /** `data_head` (written by the kernel) and `data_tail` (written by us). */
  #positions: BigUint64Array;
  #data: Uint8Array;
  #view: DataView;
  #mask: number;
  #scratch: Uint8Array | undefined;
  #lost = 0;
  #interrupted = false;

  /**
   * Reads the ring in `buffer`: the control page (`pageSize` bytes) then
   * `dataSize` bytes of data, a power of two.
   */
  constructor(buffer: ArrayBuffer, pageSize: number, dataSize: number) {
    if (dataSize < HEADER_SIZE || (dataSize & (dataSize - 1)) !== 0) {
      throw new RangeError(`A perf ring's data size must be a power of two, got ${dataSize}`);
    }
    if (buffer.byteLength < pageSize + dataSize) {
      throw new RangeError(
        `A perf ring of ${dataSize} bytes needs ${
          pageSize + dataSize
        } bytes, got ${buffer.byteLength}`,
      );
    }
    this.#positions = new BigUint64Array(buffer, DATA_HEAD_OFFSET, 2);
    this.#data = new Uint8Array(buffer, pageSize, dataSize);
    this.#view = new DataView(buffer, pageSize, dataSize);
    this.#mask = dataSize - 1;
  }

  /** Samples the kernel reported lost (in `PERF_RECORD_LOST` records) so far. */
  get lost(): number {
    return this.#lost;
  }

  /** Bytes written by the kernel and not yet consumed. */
  get pending(): number {
    return Number(Atomics.load(this.#positions, 0) - Atomics.load(this.#positions, 1));
  }

  /**
   * Ends the {@linkcode read} in progress after the sample being handled:
   * for a handler that closed the reader. The records after it stay in the
   * ring. Does nothing outside a read.
   */
  interrupt(): void {
    this.#interrupted = true;
  }

  /**
   * Consumes the records written so far, calling `fn` for each sample, at
   * most `limit` of them; lost records add to {@linkcode lost}, other record
   * types are skipped. `data_tail` moves past each record once `fn` has
   * returned (or thrown). Returns the number of samples handed to `fn`.
   */
  read(fn: SampleHandler, limit: number = Infinity): number {
    this.#interrupted = false;
    const data = this.#data;
    const view = this.#view;
    const mask = this.#mask;
    // The acquire load: every record below head is fully written.
    const head = Number(Atomics.load(this.#positions, 0));
    let tail = Number(Atomics.load(this.#positions, 1));
    let count = 0;
    try {
      while (tail < head && count < limit && !this.#interrupted) {
        // Records are 8-byte aligned, so a header never straddles the end.
        const at = tail & mask;
        const type = view.getUint32(at, true);
        const size = view.getUint16(at + 6, true);
        if (size < HEADER_SIZE || tail + size > head) {
          throw new Error(
            `Corrupt perf ring: a record of ${size} bytes at position ${tail} ` +
              `(${head - tail} bytes written); close and reopen the reader`,
          );
        }
        let bytes = data;
        let start = at;
        if (at + size > data.length) {
          // The record runs past the end of the data area: make it whole.
          const scratch = this.#scratch ??= new Uint8Array(0x10000);
          const first = data.length - at;
          scratch.set(data.subarray(at), 0);
          scratch.set(data.subarray(0, size - first), first);
          bytes = scratch;
          start = 0;
        }
        tail += size;
        if (type === PERF_RECORD_SAMPLE) {
          const length = readU32(bytes, start + HEADER_SIZE);
          if (HEADER_SIZE + 4 + length > size) {
            throw new Error(
              `Corrupt perf ring: a sample of ${length} raw bytes in a record of ${size}; ` +
                `close and reopen the reader`,
            );
          }
          count++;
          fn(bytes, start + HEADER_SIZE + 4, length);
        } else if (type === PERF_RECORD_LOST) {
          // u64 id at +8, u64 lost at +16; a count above 2^53 is not a real one.
          this.#lost += readU32(bytes, start + 16) + readU32(bytes, start + 20) * 2 ** 32;
        }
      }
    } finally {
      // The release store: the kernel may reuse everything below tail.
      Atomics.store(this.#positions, 1, BigInt(tail));
    }
    return count;
  }
}

function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at] | bytes[at + 1] << 8 | bytes[at + 2] << 16 | bytes[at + 3] << 24) >>> 0;
}
