/** The pure ring parser on synthetic rings: no kernel, no FFI. */

import assert from "node:assert/strict";
import { checkRingSize, MAX_RING_SIZE, RingParser } from "../lib/ring.ts";

const BUSY = 0x80000000;
const DISCARD = 0x40000000;

/**
 * A ring laid out as the kernel maps it: the data area twice in a row, so
 * every byte written lands in both copies, as through the double mapping.
 */
class FakeRing {
  readonly size: number;
  readonly data: Uint8Array;
  readonly consumer: BigUint64Array;
  readonly producer: BigUint64Array;
  readonly parser: RingParser;
  #view: DataView;

  constructor(size: number, start = 0n) {
    this.size = size;
    this.data = new Uint8Array(2 * size);
    this.#view = new DataView(this.data.buffer);
    this.consumer = new BigUint64Array([start]);
    this.producer = new BigUint64Array([start]);
    this.parser = new RingParser(this.data, this.consumer, this.producer);
  }

  /** Reserves and writes one record at the producer position; returns its position. */
  write(payload: number[], flags = 0): bigint {
    const pos = this.producer[0];
    const at = Number(pos % BigInt(this.size));
    this.#u32(at, (payload.length | flags) >>> 0);
    this.#u32(at + 4, 0);
    payload.forEach((b, i) => this.#u8(at + 8 + i, b));
    this.producer[0] = BigInt.asUintN(64, pos + BigInt((payload.length + 8 + 7) & ~7));
    return pos;
  }

  /** Commits the record at `pos` that was written busy. */
  commit(pos: bigint) {
    const at = Number(pos % BigInt(this.size));
    const header = this.#view.getUint32(at, true);
    this.#u32(at, (header & ~BUSY) >>> 0);
  }

  /** Reads every record the parser hands out, as arrays of bytes. */
  read(limit?: number): number[][] {
    const got: number[][] = [];
    const n = this.parser.read((bytes, offset, length) => {
      got.push([...bytes.subarray(offset, offset + length)]);
    }, limit);
    assert.equal(n, got.length);
    return got;
  }

  #u8(offset: number, value: number) {
    // The ring's byte `offset` (mod size), in both copies.
    const at = offset % this.size;
    this.data[at] = value;
    this.data[at + this.size] = value;
  }

  #u32(offset: number, value: number) {
    for (let i = 0; i < 4; i++) this.#u8(offset + i, (value >>> (8 * i)) & 0xff);
  }
}

Deno.test("the parser hands out committed records in order and consumes them exactly", () => {
  const ring = new FakeRing(4096);
  ring.write([1, 2, 3]);
  ring.write([4]);
  ring.write([5, 6, 7, 8, 9, 10, 11, 12]);
  assert.equal(ring.parser.pending, 16 + 16 + 16);
  assert.deepEqual(ring.read(), [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11, 12]]);
  assert.equal(ring.consumer[0], 48n);
  assert.equal(ring.parser.pending, 0);
  assert.deepEqual(ring.read(), [], "an empty ring yields nothing");
  assert.equal(ring.consumer[0], 48n);
});

Deno.test("records are padded to 8 bytes after their 8-byte header", () => {
  for (const [length, step] of [[0, 8], [1, 16], [7, 16], [8, 16], [9, 24], [16, 24]]) {
    const ring = new FakeRing(4096);
    ring.write(Array.from({ length }, (_, i) => i));
    assert.equal(ring.read().length, 1);
    assert.equal(ring.consumer[0], BigInt(step), `a ${length}-byte record takes ${step} bytes`);
  }
});

Deno.test("a record that crosses the end of the ring reads whole, through the second mapping", () => {
  const size = 4096;
  const ring = new FakeRing(size, BigInt(size - 8));
  const payload = Array.from({ length: 20 }, (_, i) => 100 + i);
  ring.write(payload); // header in the last 8 bytes, payload in the first 24
  const offsets: number[] = [];
  ring.parser.read((bytes, offset, length) => {
    offsets.push(offset);
    assert.deepEqual([...bytes.subarray(offset, offset + length)], payload);
  });
  assert.deepEqual(offsets, [size], "the payload is read from the second copy");
  assert.equal(ring.consumer[0], BigInt(size - 8 + 32));
  // The next header sits at the ring's start again.
  ring.write([9]);
  assert.deepEqual(ring.read(), [[9]]);
  assert.equal(ring.consumer[0], BigInt(size - 8 + 32 + 16));
});

Deno.test("a record still being written stops the read until it is committed", () => {
  const ring = new FakeRing(4096);
  ring.write([1]);
  const busy = ring.write([2], BUSY);
  ring.write([3]);
  assert.deepEqual(ring.read(), [[1]]);
  assert.equal(ring.parser.blocked, true);
  assert.equal(ring.consumer[0], 16n, "consumed up to the busy record, not past it");
  assert.deepEqual(ring.read(), [], "still busy");
  ring.commit(busy);
  assert.deepEqual(ring.read(), [[2], [3]]);
  assert.equal(ring.parser.blocked, false);
  assert.equal(ring.consumer[0], 48n);
});

Deno.test("discarded records are skipped but consumed", () => {
  const ring = new FakeRing(4096);
  ring.write([1]);
  ring.write([2, 2, 2, 2, 2, 2, 2, 2, 2], DISCARD);
  ring.write([3]);
  assert.deepEqual(ring.read(), [[1], [3]]);
  assert.equal(ring.consumer[0], 16n + 24n + 16n);
  ring.write([4], DISCARD);
  assert.deepEqual(ring.read(), [], "only a discarded record: nothing handed out");
  assert.equal(ring.consumer[0], 72n, "but it is consumed");
});

Deno.test("a limit stops after that many records and leaves the rest in the ring", () => {
  const ring = new FakeRing(4096);
  for (let i = 0; i < 5; i++) ring.write([i]);
  assert.deepEqual(ring.read(2), [[0], [1]]);
  assert.equal(ring.consumer[0], 32n);
  assert.equal(ring.parser.blocked, false);
  assert.deepEqual(ring.read(0), []);
  assert.equal(ring.consumer[0], 32n);
  assert.deepEqual(ring.read(), [[2], [3], [4]]);
  assert.equal(ring.consumer[0], 80n);
});

Deno.test("interrupt() ends a read after the record being handled", () => {
  const ring = new FakeRing(4096);
  for (let i = 0; i < 3; i++) ring.write([i]);
  const got: number[] = [];
  const n = ring.parser.read((bytes, offset) => {
    got.push(bytes[offset]);
    ring.parser.interrupt();
  });
  assert.equal(n, 1);
  assert.deepEqual(got, [0]);
  assert.equal(ring.consumer[0], 16n, "the records after it stay in the ring");
  assert.deepEqual(ring.read(), [[1], [2]], "the next read is not interrupted");
});

Deno.test("positions near 2^53 and across 2^64 are advanced exactly", () => {
  for (const start of [2n ** 53n - 8n, 2n ** 53n + 8n, 2n ** 63n - 8n, 2n ** 64n - 16n]) {
    const ring = new FakeRing(4096, start);
    ring.write([1, 2, 3]);
    ring.write([4], DISCARD);
    ring.write([5, 6, 7, 8, 9, 10, 11, 12, 13]);
    assert.equal(ring.parser.pending, 56);
    assert.deepEqual(ring.read(), [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11, 12, 13]]);
    assert.equal(ring.consumer[0], BigInt.asUintN(64, start + 56n), `from ${start}`);
    assert.equal(ring.parser.pending, 0);
  }
});

Deno.test("a record at the very end of the largest ring reads through the second copy", () => {
  // 4 GiB of zeroed, untouched memory: the system only commits the pages written.
  const ring = new FakeRing(MAX_RING_SIZE, 2n ** 40n + BigInt(MAX_RING_SIZE) - 8n);
  assert.equal(ring.parser.size, MAX_RING_SIZE);
  const offsets: number[] = [];
  ring.write([7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
  ring.write([8]);
  ring.parser.read((bytes, offset, length) => {
    offsets.push(offset);
    assert.ok(bytes.subarray(offset, offset + length).every((b) => b === 7 || b === 8));
  });
  assert.deepEqual(offsets, [MAX_RING_SIZE, 16 + 8], "the second header is at byte 16");
  assert.equal(ring.consumer[0], 2n ** 40n + BigInt(MAX_RING_SIZE) - 8n + 24n + 16n);
});

Deno.test("a record whose handler throws is consumed, and the error propagates", () => {
  const ring = new FakeRing(4096);
  ring.write([1]);
  ring.write([2]);
  assert.throws(() =>
    ring.parser.read(() => {
      throw new Error("handler failed");
    }), {
    message: "handler failed",
  });
  assert.equal(ring.consumer[0], 16n);
  assert.deepEqual(ring.read(), [[2]]);
});

Deno.test("a ring whose header or positions cannot be right is refused with a RangeError", () => {
  const ring = new FakeRing(4096);
  ring.write([1]);
  ring.producer[0] = 8n; // the 16-byte record claims more than is written
  assert.throws(() => ring.read(), /record at position 0 is 16 bytes, but only 8 are written/);
  assert.equal(ring.consumer[0], 0n);
  ring.producer[0] = 4096n * 2n;
  assert.throws(() => ring.read(), /8192 bytes pending in a 4096-byte ring/);
  ring.consumer[0] = 16n;
  ring.producer[0] = 8n; // the consumer ahead of the producer
  assert.throws(() => ring.read(), RangeError);
});

Deno.test("checkRingSize accepts every power of two from a page to 2 GiB and nothing else", () => {
  for (let size = 4096; size <= MAX_RING_SIZE; size *= 2) checkRingSize(size);
  assert.equal(MAX_RING_SIZE, 2 ** 31);
  checkRingSize(65536, 65536);
  for (
    const bad of [
      0,
      -4096,
      1,
      2048,
      4095,
      4097,
      12288,
      2 ** 31 - 4096,
      2 ** 31 + 4096,
      2 ** 32,
      3 * 2 ** 32,
      2 ** 53,
      1.5 * 4096,
      NaN,
      Infinity,
    ]
  ) {
    assert.throws(() => checkRingSize(bad), RangeError, String(bad));
  }
  assert.throws(() => checkRingSize(32768, 65536), RangeError, "smaller than a 64 KiB page");
  assert.throws(
    () => checkRingSize(3 * 2 ** 32),
    {
      message: "Ring buffer size must be a power of two from 4096 to 2147483648 bytes (2 GiB), " +
        "got 12884901888",
    },
  );
});

Deno.test("the parser refuses a data area that is not twice a ring size", () => {
  const pos = () => new BigUint64Array(1);
  assert.throws(() => new RingParser(new Uint8Array(4096), pos(), pos()), RangeError);
  assert.throws(() => new RingParser(new Uint8Array(3 * 4096), pos(), pos()), RangeError);
  const unaligned = new Uint8Array(new ArrayBuffer(8192 + 4), 2, 8192);
  assert.throws(() => new RingParser(unaligned, pos(), pos()), /4-byte boundary/);
});
