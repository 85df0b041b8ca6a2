/** The byte-level event writer must print exactly what the string formatters print. */

import assert from "node:assert/strict";
import { EventWriter, formatJson, formatText, unlinkEvent } from "../lib/unlink/mod.ts";
import { TRUNCATED_MARK } from "../lib/unlink/mod.ts";
import {
  UNLINK_F_ARGV_REDACTED,
  UNLINK_F_ARGV_TRUNCATED,
  UNLINK_F_INODE,
  UNLINK_F_NAME_TRUNCATED,
  UNLINK_F_PATH_HEAD,
  UNLINK_F_PATH_JOINED,
  UNLINK_F_PATH_PARTIAL,
  UNLINK_F_PATH_TRUNCATED,
} from "../lib/unlink/mod.ts";
import { ROOT, runSnippet, unlinkRecord } from "./_helpers.ts";

const encoder = new TextEncoder();
const record = unlinkRecord;
/** Room for each case in the ring: the head and the longest path below. */
const SIZE = unlinkEvent.size + 4096;
const F = unlinkEvent.fields;

/** A record with a path and what fentry learns of the file: ino, dev, mode, size, links. */
function withInode(fields: Parameters<typeof unlinkRecord>[0], mode = 0o100644): Uint8Array {
  const bytes = unlinkRecord({ path: encoder.encode("/srv/data/x.log"), ...fields });
  const v = new DataView(bytes.buffer);
  v.setUint32(F.flags[1], v.getUint32(F.flags[1], true) | UNLINK_F_INODE, true);
  v.setUint16(F.mode[1], mode, true);
  v.setUint32(F.ino[1], 123456, true);
  v.setUint32(F.size[1], 4096, true);
  v.setUint32(F.dev[1], (8 << 20) | 3, true);
  v.setUint32(F.nlink_after[1], 1, true);
  return bytes;
}
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
  [
    "C1 controls, DEL and bidi overrides",
    record({
      comm: encoder.encode("x\u009by"),
      filename: encoder.encode("/tmp/a\u009b2Jb\u0085\u202e\u2066\x7f"),
      path: encoder.encode("/tmp/a\u009b2Jb\u0085\u202e\u2066\x7f"),
    }),
  ],
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
  ["a path", record({ path: encoder.encode("/tmp/x") })],
  [
    "the same process again, another argv",
    record({ path: encoder.encode("/tmp/y"), argv: encoder.encode("rm\0-f\0y") }),
  ],
  [
    "a path joined from a name with ..",
    record({ path: encoder.encode("/tmp/a/../b"), flags: UNLINK_F_PATH_JOINED }),
  ],
  [
    "a joined path with //",
    record({ path: encoder.encode("/tmp//b"), flags: UNLINK_F_PATH_JOINED }),
  ],
  [
    "a joined path, plain",
    record({ path: encoder.encode("/tmp/b.txt"), flags: UNLINK_F_PATH_JOINED }),
  ],
  ["a truncated path", record({ path: pathOf(4095), flags: UNLINK_F_PATH_TRUNCATED })],
  ["a partial path", record({ path: encoder.encode("/d/d/f"), flags: UNLINK_F_PATH_PARTIAL })],
  [
    "cut name, with the path joined from it",
    record({
      path: pathOf(300),
      flags: TRUNCATED | UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_HEAD | UNLINK_F_PATH_JOINED,
    }),
  ],
  ["a path that is not UTF-8", record({ path: new Uint8Array([0x2f, 0x74, 0xff, 0x41]) })],
  ["a path with a quote and a newline", record({ path: encoder.encode('/tmp/a"\nb') })],
  ["inode facts of a file", withInode({})],
  ["inode facts of a directory removed", withInode({ op: 1 }, 0o40755)],
  ["inode facts of a fifo, failed", withInode({ ret: -1 }, 0o10644)],
  ["a rename that replaced a symlink", withInode({ op: 2 }, 0o120777)],
  [
    "a cut argv",
    record({
      path: encoder.encode("/tmp/x"),
      argv: new Uint8Array(256).fill(0x61),
      flags: UNLINK_F_ARGV_TRUNCATED,
    }),
  ],
  [
    "an argv that is not UTF-8",
    record({ path: encoder.encode("/tmp/x"), argv: new Uint8Array([0x72, 0x6d, 0, 0xff, 0]) }),
  ],
  [
    "an argv with a quote",
    record({ path: encoder.encode("/tmp/x"), argv: encoder.encode('sh\0-c\0rm "x"') }),
  ],
  [
    "a redacted argv, then the same bytes unredacted",
    record({
      path: encoder.encode("/tmp/x"),
      argv: encoder.encode("mysql\0-p*****\0"),
      flags: UNLINK_F_ARGV_REDACTED,
    }),
  ],
  [
    "the same bytes unredacted",
    record({ path: encoder.encode("/tmp/x"), argv: encoder.encode("mysql\0-p*****\0") }),
  ],
  [
    "redacted again, after the unredacted line was kept for reuse",
    record({
      path: encoder.encode("/tmp/x"),
      argv: encoder.encode("mysql\0-p*****\0"),
      flags: UNLINK_F_ARGV_REDACTED,
    }),
  ],
  ["no argv", record({ path: encoder.encode("/tmp/x"), argv: new Uint8Array(0) })],
  [
    "every C0 control, a quote and a backslash, in each string field",
    (() => {
      const odd = [...Array.from({ length: 31 }, (_, i) => i + 1), 0x22, 0x5c];
      return record({
        comm: new Uint8Array(odd.slice(0, 15)),
        filename: new Uint8Array(odd),
        path: new Uint8Array([0x2f, ...Array.from({ length: 100 }, () => odd).flat()]),
        argv: new Uint8Array([...odd, 0, ...odd, 0]),
      });
    })(),
  ],
  ["the first process again", record({ path: encoder.encode("/tmp/z") })],
  ["empty filename", record({ filename: new Uint8Array(0) })],
  ["latency rounding", record({ latency: 12_350 })],
  ["large timestamp", record({ ts: 2 ** 52 + 12_345_678 })],
];

for (const format of ["json", "text"] as const) {
  Deno.test(`EventWriter writes ${format} lines byte for byte like the string formatter`, () => {
    const chunks: Uint8Array[] = [];
    const cgroup = "/system.slice/docker-" + "ab".repeat(32) + ".scope";
    const writer = new EventWriter(format, {
      writeSync: (p) => (chunks.push(p.slice()), p.length),
    }, { cgroupName: () => cgroup });
    let expected = "";
    // Write each case into a ring-like buffer at an odd offset, as from a ring.
    const ring = new Uint8Array(SIZE * CASES.length + 8);
    CASES.forEach(([, bytes], i) => ring.set(bytes, 8 + i * SIZE));
    CASES.forEach((_, i) => {
      writer.record(ring, 8 + i * SIZE);
      const e = unlinkEvent.decode(ring, 8 + i * SIZE);
      e.cgroup = cgroup;
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

Deno.test("EventWriter escapes a cgroup name's C1 and bidi characters as formatJson does", () => {
  const cgroup = "/user.slice/a\u202eb\u009bc.scope";
  let out = "";
  const writer = new EventWriter("json", {
    writeSync: (p) => (out += new TextDecoder().decode(p), p.length),
  }, { cgroupName: () => cgroup });
  const bytes = record({ path: encoder.encode("/tmp/x") });
  writer.record(bytes, 0);
  writer.record(bytes, 0); // the reused attribution JSON too
  writer.flush();
  const e = unlinkEvent.decode(bytes);
  e.cgroup = cgroup;
  const line = formatJson(e);
  assert.ok(line.includes('"cgroup":"/user.slice/a\\u202eb\\u009bc.scope"'), line);
  assert.equal(out, `${line}\n${line}\n`);
});

Deno.test(
  "two EventWriters on one cache of cgroup names keep no names of their own: 200,000 ids add < 4 MiB",
  async () => {
    // As trace.ts runs them: one writer for stdout, one for syslog, both
    // naming cgroups through the tracer's one bounded cache.
    const got = await runSnippet(
      `import { EventWriter, unlinkEvent } from "${ROOT}lib/unlink/mod.ts";
import { NameCache } from "${ROOT}lib/unlink/_cgroup.ts";
import { unlinkRecord } from "${ROOT}tests/_helpers.ts";
const cache = new NameCache((id) => "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r" +
  id.toString(16).padStart(32, "0") + ".scope");
const cgroupName = (id) => cache.get(BigInt(id));
const sink = { writeSync: (p) => p.length };
const writers = [new EventWriter("json", sink, { cgroupName }), new EventWriter("json", sink, { cgroupName })];
const bytes = unlinkRecord({ path: new TextEncoder().encode("/tmp/x") });
const view = new DataView(bytes.buffer);
const run = (from, n) => {
  for (let id = from; id < from + n; id++) {
    view.setUint32(unlinkEvent.fields.cgroup_id[1], id, true);
    for (const w of writers) (w.record(bytes, 0), w.flush());
  }
};
const used = () => (gc(), gc(), Deno.memoryUsage().heapUsed + Deno.memoryUsage().external);
run(1_000_000, 20_000); // fills the cache, warms up
const before = used();
run(2, 200_000);
console.log(JSON.stringify({ grew: used() - before, size: cache.size, bytes: cache.bytes }));
`,
      ["--v8-flags=--expose-gc"],
    ) as { grew: number; size: number; bytes: number };
    assert.ok(got.grew < 4 * 2 ** 20, `grew ${(got.grew / 2 ** 20).toFixed(1)} MiB`);
    assert.equal(got.size, 4096);
    assert.ok(got.bytes <= 2 ** 20);
  },
);
