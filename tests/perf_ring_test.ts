/**
 * The perf ring parser on synthetic rings: no kernel, no FFI. Each ring is a
 * control page plus a small data area, laid out as the kernel lays them out.
 */

import assert from "node:assert/strict";
import {
  DATA_HEAD_OFFSET,
  PERF_RECORD_LOST,
  PERF_RECORD_SAMPLE,
  PerfRing,
} from "../lib/_perf_ring.ts";

const PAGE = 4096;

/** A perf ring the test writes as the kernel would. */
class FakeRing {
  readonly buffer: ArrayBuffer;
  readonly ring: PerfRing;
  readonly size: number;
  #positions: BigUint64Array;
  #data: Uint8Array;

  constructor(size: number, start = 0) {
    this.size = size;
    this.buffer = new ArrayBuffer(PAGE + size);
    this.#positions = new BigUint64Array(this.buffer, DATA_HEAD_OFFSET, 2);
    this.#positions[0] = this.#positions[1] = BigInt(start);
    this.#data = new Uint8Array(this.buffer, PAGE, size);
    this.ring = new PerfRing(this.buffer, PAGE, size);
  }

  get head(): number {
    return Number(this.#positions[0]);
  }

  get tail(): number {
    return Number(this.#positions[1]);
  }

  /** Writes `record` at data_head, wrapping around the end, and publishes it. */
  put(record: Uint8Array): void {
    for (let i = 0; i < record.length; i++) this.#data[(this.head + i) % this.size] = record[i];
    this.#positions[0] += BigInt(record.length);
  }
}

function header(type: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  view.setUint16(6, size, true);
  return bytes;
}

/** A PERF_RECORD_SAMPLE carrying `raw`, padded as the kernel pads it. */
function sample(raw: number[]): Uint8Array {
  const padded = ((4 + raw.length + 7) & ~7) - 4;
  const record = header(PERF_RECORD_SAMPLE, 8 + 4 + padded);
  new DataView(record.buffer).setUint32(8, padded, true);
  record.set(raw, 12);
  return record;
}

function lostRecord(lost: bigint): Uint8Array {
  const record = header(PERF_RECORD_LOST, 24);
  const view = new DataView(record.buffer);
  view.setBigUint64(8, 42n, true); // the event's id
  view.setBigUint64(16, lost, true);
  return record;
}

/** Reads every sample, returning each one's raw bytes (padding included). */
function readAll(ring: PerfRing, limit?: number): number[][] {
  const out: number[][] = [];
  ring.read(
    (bytes, offset, length) => out.push([...bytes.subarray(offset, offset + length)]),
    limit,
  );
  return out;
}

Deno.test("PerfRing hands over one sample's raw bytes and moves data_tail past it", () => {
  const fake = new FakeRing(256);
  fake.put(sample([1, 2, 3, 4]));
  assert.equal(fake.ring.pending, 16);
  assert.deepEqual(readAll(fake.ring), [[1, 2, 3, 4]]);
  assert.equal(fake.tail, 16);
  assert.equal(fake.ring.pending, 0);
  assert.deepEqual(readAll(fake.ring), [], "nothing is delivered twice");
});

Deno.test("PerfRing delivers several samples in order, padding included in their length", () => {
  const fake = new FakeRing(256);
  fake.put(sample([1]));
  fake.put(sample([2, 2, 2, 2, 2, 2]));
  fake.put(sample([3, 3, 3, 3]));
  assert.deepEqual(readAll(fake.ring), [
    [1, 0, 0, 0],
    [2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0],
    [3, 3, 3, 3],
  ]);
  assert.equal(fake.tail, 16 + 24 + 16);
});

Deno.test("PerfRing copies a sample that wraps around the end of the data area whole", () => {
  // 64-byte ring, start 8 bytes short of the end: the header fits, the data wraps.
  const fake = new FakeRing(64, 56);
  const raw = Array.from({ length: 20 }, (_, i) => i + 1);
  fake.put(sample(raw));
  const seen: { same: boolean; bytes: number[] }[] = [];
  fake.ring.read((bytes, offset, length) => {
    seen.push({ same: bytes.length === 64, bytes: [...bytes.subarray(offset, offset + length)] });
  });
  assert.equal(seen.length, 1);
  assert.equal(seen[0].same, false, "handed a scratch copy, not the ring");
  assert.deepEqual(seen[0].bytes, raw);
  assert.equal(fake.tail, 56 + 32);
});

Deno.test("PerfRing reads a record that ends exactly at the end of the data area in place", () => {
  const fake = new FakeRing(64, 48);
  fake.put(sample([7, 7, 7, 7]));
  fake.put(sample([8, 8, 8, 8]));
  assert.deepEqual(readAll(fake.ring), [[7, 7, 7, 7], [8, 8, 8, 8]]);
  assert.equal(fake.tail, 80);
});

Deno.test("PerfRing adds a LOST record's count to lost and hands nothing over for it", () => {
  const fake = new FakeRing(256);
  fake.put(sample([1, 1, 1, 1]));
  fake.put(lostRecord(17n));
  fake.put(sample([2, 2, 2, 2]));
  fake.put(lostRecord(3n));
  assert.deepEqual(readAll(fake.ring), [[1, 1, 1, 1], [2, 2, 2, 2]]);
  assert.equal(fake.ring.lost, 20);
  assert.equal(fake.tail, 16 + 24 + 16 + 24);
});

Deno.test("PerfRing reads a LOST record that wraps around the end", () => {
  const fake = new FakeRing(64, 48);
  fake.put(lostRecord(2n ** 33n + 5n));
  assert.deepEqual(readAll(fake.ring), []);
  assert.equal(fake.ring.lost, 2 ** 33 + 5);
  assert.equal(fake.tail, 72);
});

Deno.test("PerfRing stops at the limit and leaves data_tail at the next record exactly", () => {
  const fake = new FakeRing(256);
  for (let i = 0; i < 5; i++) fake.put(sample([i, i, i, i]));
  assert.deepEqual(readAll(fake.ring, 2), [[0, 0, 0, 0], [1, 1, 1, 1]]);
  assert.equal(fake.tail, 32);
  assert.deepEqual(readAll(fake.ring), [[2, 2, 2, 2], [3, 3, 3, 3], [4, 4, 4, 4]]);
  assert.equal(fake.tail, 80);
});

Deno.test("PerfRing skips record types it does not read", () => {
  const fake = new FakeRing(256);
  fake.put(header(5, 16)); // PERF_RECORD_THROTTLE-sized stranger
  fake.put(sample([9, 9, 9, 9]));
  assert.deepEqual(readAll(fake.ring), [[9, 9, 9, 9]]);
  assert.equal(fake.tail, 32);
});

Deno.test("PerfRing keeps reading when positions pass 2^32", () => {
  const start = 2 ** 32 - 16;
  const fake = new FakeRing(64, start);
  for (let i = 0; i < 4; i++) fake.put(sample([i, i, i, i]));
  assert.equal(readAll(fake.ring).length, 4);
  assert.equal(fake.tail, start + 64);
});

Deno.test("PerfRing moves data_tail past a sample whose handler throws, and not further", () => {
  const fake = new FakeRing(256);
  fake.put(sample([1, 1, 1, 1]));
  fake.put(sample([2, 2, 2, 2]));
  assert.throws(() =>
    fake.ring.read(() => {
      throw new Error("handler failed");
    }), /handler failed/);
  assert.equal(fake.tail, 16);
  assert.deepEqual(readAll(fake.ring), [[2, 2, 2, 2]]);
});

Deno.test("a corrupt record size is an error that says what to do, not an endless loop", () => {
  const fake = new FakeRing(256);
  fake.put(header(PERF_RECORD_SAMPLE, 8).fill(0, 6)); // size 0
  assert.throws(
    () => readAll(fake.ring),
    /^Error: Corrupt perf ring: .*close and reopen the reader$/,
  );
  assert.equal(fake.tail, 0);
});

Deno.test("a PerfRing's data size must be a power of two", () => {
  assert.throws(() => new PerfRing(new ArrayBuffer(PAGE + 96), PAGE, 96), RangeError);
});
