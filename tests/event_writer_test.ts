/** The byte-level event writer must print exactly what the string formatters print. */

import assert from "node:assert/strict";
import { EventWriter, formatJson, formatText, unlinkEvent } from "../mod.ts";

const encoder = new TextEncoder();

function record(fields: {
  ts?: number;
  latency?: number;
  pid?: number;
  uid?: number;
  ret?: number;
  comm?: Uint8Array;
  filename?: Uint8Array;
}): Uint8Array {
  const bytes = new Uint8Array(304);
  const v = new DataView(bytes.buffer);
  const ts = fields.ts ?? 1_234_567_890_123;
  v.setUint32(0, ts % 2 ** 32, true);
  v.setUint32(4, Math.floor(ts / 2 ** 32), true);
  v.setUint32(8, fields.latency ?? 12_345, true);
  v.setUint32(16, fields.pid ?? 4242, true);
  v.setUint32(20, (fields.pid ?? 4242) + 1, true);
  v.setUint32(24, fields.uid ?? 0, true);
  v.setInt32(28, fields.ret ?? 0, true);
  bytes.set((fields.comm ?? encoder.encode("rm")).subarray(0, 16), 32);
  bytes.set((fields.filename ?? encoder.encode("/tmp/x")).subarray(0, 256), 48);
  return bytes;
}

const CASES: [string, Uint8Array][] = [
  ["plain", record({})],
  ["failed", record({ ret: -2, latency: 999_999_999 })],
  ["other errno", record({ ret: -13, uid: 4_294_967_294, pid: 4_194_304 })],
  ["quote and backslash", record({ filename: encoder.encode('/tmp/a"b\\c') })],
  [
    "control chars",
    record({ comm: encoder.encode("a\tb"), filename: encoder.encode("/tmp/new\nline\x7f") }),
  ],
  ["utf-8", record({ filename: encoder.encode("/tmp/caf\u00e9 \u{1f600}") })],
  ["invalid utf-8", record({ filename: new Uint8Array([0x2f, 0xff, 0xfe, 0x41]) })],
  [
    "full-length comm and filename",
    record({ comm: encoder.encode("x".repeat(16)), filename: encoder.encode("f".repeat(256)) }),
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
    const ring = new Uint8Array(304 * CASES.length + 8);
    CASES.forEach(([, bytes], i) => ring.set(bytes, 8 + i * 304));
    CASES.forEach((_, i) => {
      writer.record(ring, 8 + i * 304);
      const e = unlinkEvent.decode(ring, 8 + i * 304);
      expected += (format === "json" ? formatJson(e) : formatText(e)) + "\n";
    });
    writer.flush();
    const actual = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    const got = actual.split("\n");
    expected.split("\n").forEach((line, i) => assert.equal(got[i], line, CASES[i]?.[0]));
    if (format === "json") { for (const line of got.slice(0, -1)) JSON.parse(line); }
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
