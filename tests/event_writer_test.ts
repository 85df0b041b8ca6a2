/** The byte-level event writer must print exactly what the string formatters print. */

import assert from "node:assert/strict";
import { EventWriter, formatJson, formatText, unlinkEvent } from "../lib/unlink/mod.ts";
import { TRUNCATED_MARK } from "../lib/unlink/mod.ts";
import { UNLINK_F_NAME_TRUNCATED } from "../lib/unlink/mod.ts";
import { unlinkRecord } from "./_helpers.ts";

const encoder = new TextEncoder();
const record = unlinkRecord;
const SIZE = unlinkEvent.size;
const TRUNCATED = UNLINK_F_NAME_TRUNCATED;
/** A path of exactly `n` bytes. */
const pathOf = (n: number) => encoder.encode("/tmp/" + "f".repeat(n - 5));

/** A record whose comm and filename fill their whole fields, which the kernel never sends. */
function noNul(bytes: Uint8Array): Uint8Array {
  const F = unlinkEvent.fields;
  bytes.fill(0x78, F.comm[1], F.comm[1] + 16);
  bytes.fill(0x66, F.filename[1], F.filename[1] + 256);
  return bytes;
}

const CASES: [string, Uint8Array][] = [
  ["plain", record({})],
  ["failed", record({ ret: -2, latency: 999_999_999 })],
  ["other errno", record({ ret: -13, uid: 4_294_967_294, pid: 4_194_304 })],
  ["quote and backslash", record({ filename: encoder.encode('/tmp/a"b\\c') })],
  [
    "control chars",
    record({ comm: encoder.encode("a\tb"), filename: encoder.encode("/tmp/new\nline\x7f\x1b[2J") }),
  ],
  ["utf-8", record({ filename: encoder.encode("/tmp/caf\u00e9 \u{1f600}") })],
  ["invalid utf-8", record({ filename: new Uint8Array([0x2f, 0xff, 0xfe, 0x41]) })],
  ["invalid utf-8 comm", record({ comm: new Uint8Array([0x72, 0xff, 0x6d]) })],
  ["a literal U+FFFD", record({ filename: encoder.encode("/tmp/\ufffd") })],
  ["255-byte name, not cut", record({ filename: pathOf(255) })],
  ["cut name", record({ filename: pathOf(300), flags: TRUNCATED })],
  [
    "cut name, ending in half a character",
    // The kernel keeps 255 bytes; here the 255th is the first of "é" (c3 a9).
    record({ filename: new Uint8Array([...pathOf(254), 0xc3]), flags: TRUNCATED }),
  ],
  [
    "cut name, invalid utf-8 and a newline",
    record({
      filename: new Uint8Array([...pathOf(250), 0x0a, 0xff, 0x41, 0x42]),
      flags: TRUNCATED,
    }),
  ],
  ["cut name of a failed unlink", record({ ret: -36, filename: pathOf(300), flags: TRUNCATED })],
  [
    "comm and filename filling their fields, with no NUL",
    noNul(record({})),
  ],
  ["empty filename", record({ filename: new Uint8Array(0) })],
  ["latency rounding", record({ latency: 12_350 })],
  ["large timestamp", record({ ts: 2 ** 52 + 12_345_678 })],
];

for (const format of ["json", "text"] as const) {
  Deno.test(`EventWriter writes ${format} lines byte for byte like the string formatter`, () => {
    const chunks: Uint8Array[] = [];
    const writer = new EventWriter(format, {
      writeSync: (p) => (chunks.push(p.slice()), p.length),
    });
    let expected = "";
    // Write each case into a ring-like buffer at an odd offset, as from a ring.
    const ring = new Uint8Array(SIZE * CASES.length + 8);
    CASES.forEach(([, bytes], i) => ring.set(bytes, 8 + i * SIZE));
    CASES.forEach((_, i) => {
      writer.record(ring, 8 + i * SIZE);
      const e = unlinkEvent.decode(ring, 8 + i * SIZE);
      expected += (format === "json" ? formatJson(e) : formatText(e)) + "\n";
    });
    writer.flush();
    // Fatal: raw invalid UTF-8 copied into the output must not pass as U+FFFD.
    const utf8 = new TextDecoder("utf-8", { fatal: true });
    const got = utf8.decode(new Uint8Array(chunks.flatMap((c) => [...c]))).split("\n");
    expected.split("\n").forEach((line, i) => assert.equal(got[i], line, CASES[i]?.[0]));
    CASES.forEach(([what], i) => {
      const cut = what.startsWith("cut ");
      if (format === "text") assert.equal(got[i].endsWith(TRUNCATED_MARK), cut, what);
      else assert.equal(JSON.parse(got[i]).data.filename_truncated, cut ? true : undefined, what);
    });
  });
}

Deno.test("EventWriter writes out every 64 KiB and everything on flush, through partial writes", () => {
  let total = 0;
  let calls = 0;
  // A writer that takes at most 4096 bytes per call, like a pipe.
  const out = {
    writeSync: (
      p: Uint8Array,
    ) => (calls++, total += Math.min(p.length, 4096), Math.min(p.length, 4096)),
  };
  const writer = new EventWriter("json", out);
  const bytes = record({ filename: encoder.encode("/tmp/" + "y".repeat(250)) });
  const line = formatJson(unlinkEvent.decode(bytes)).length + 1;
  for (let i = 0; i < 10_000; i++) writer.record(bytes, 0);
  assert.ok(total > 10_000 * line - 70 * 1024, "most was written before flush");
  writer.line('{"type":"summary","data":{"events":10000,"lost":0}}');
  writer.flush();
  assert.equal(total, 10_000 * line + 52);
  assert.ok(calls > 1);
  const before = calls;
  writer.flush();
  assert.equal(calls, before, "nothing left to write");
});
