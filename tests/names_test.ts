/**
 * Hostile file names through the whole path: real files unlinked by a child,
 * traced by scripts/trace.ts in the attach mode under test, read back from its
 * JSON and text output. Names longer than the 255 bytes kept must be marked
 * (and their absolute paths whole), names that are not UTF-8 recoverable to
 * the byte, in `filename` and `path`, control characters harmless.
 */

import assert from "node:assert/strict";
import { EXPECTED_METHOD, kernelTest, scratch, spawnUnlinker } from "./_helpers.ts";
import { type Run, traceWhile } from "./_trace.ts";

const encoder = new TextEncoder();
const utf8 = new TextDecoder();
const KEPT = 255;

/** One file the child deletes, and what the tracer must report for it. */
interface Case {
  what: string;
  /** The child's ops: make the file if the test cannot, then unlink it. */
  ops: string[];
  /** The `filename`, `filename_truncated` and `filename_b64` of its JSON event. */
  json: { filename: string; filename_truncated?: true; filename_b64?: string };
  /** Its `path`, and `path_b64` if it must be there (the same bytes as `bytes`). */
  path: string;
  /** Its FILENAME column in text mode: the absolute path, escaped. */
  text: string;
  /** The bytes `filename_b64` must decode to, if it must be there. */
  bytes?: Uint8Array;
}

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

/**
 * A path of exactly `n` bytes under `dir`, ending in `end`: directories of
 * `fill` repeated 150 times are made until the last component fits.
 */
function pathOfLength(dir: string, n: number, fill: string, end: string): string {
  let path = dir;
  const rest = () => n - encoder.encode(path).length - 1 - encoder.encode(end).length;
  while (rest() > 200) {
    path += `/${fill.repeat(150)}`;
    Deno.mkdirSync(path);
  }
  path += `/${fill.repeat(rest())}${end}`;
  Deno.writeTextFileSync(path, "");
  assert.equal(encoder.encode(path).length, n);
  return path;
}

/** Makes the hostile files in a fresh scratch dir. */
function hostileFiles(): { dir: string; cases: Case[] } {
  const dir = scratch([]);
  const exact = pathOfLength(dir, KEPT, "a", ".txt");
  const justOver = pathOfLength(dir, KEPT + 1, "b", ".txt");
  const long = pathOfLength(dir, 300, "c", ".txt");
  // "é" is c3 a9: its first byte is the last one kept.
  const split = pathOfLength(dir, KEPT - 1 + 6, "d", "\u00e9.txt");
  const splitKept = encoder.encode(split).subarray(0, KEPT);
  const bad = new Uint8Array([
    ...encoder.encode(`${dir}/bad`),
    0xff,
    0xfe,
    ...encoder.encode(".txt"),
  ]);
  const control = `${dir}/new\nline\x1b[31mred\x7f`;
  Deno.writeTextFileSync(control, "");
  return {
    dir,
    cases: [
      {
        what: "exactly 255 bytes",
        ops: [`unlink:${exact}`],
        json: { filename: exact },
        path: exact,
        text: exact,
      },
      {
        what: "256 bytes",
        ops: [`unlinkat:${justOver}`],
        json: { filename: justOver.slice(0, KEPT), filename_truncated: true },
        path: justOver,
        text: justOver,
      },
      {
        what: "300 bytes in nested directories",
        ops: [`unlink:${long}`],
        json: { filename: long.slice(0, KEPT), filename_truncated: true },
        path: long,
        text: long,
      },
      {
        what: "cut in the middle of a character",
        ops: [`unlinkat:${split}`],
        json: {
          filename: utf8.decode(splitKept),
          filename_truncated: true,
          filename_b64: splitKept.toBase64(),
        },
        path: split,
        text: split,
        bytes: splitKept,
      },
      {
        what: "not UTF-8",
        ops: [`touchhex:${hex(bad)}`, `unlinkhex:${hex(bad)}`],
        json: { filename: `${dir}/bad\ufffd\ufffd.txt`, filename_b64: bad.toBase64() },
        path: `${dir}/bad\ufffd\ufffd.txt`,
        text: `${dir}/bad\\xff\\xfe.txt`,
        bytes: bad,
      },
      {
        what: "newline, escape and DEL",
        ops: [`unlinkat:${control}`],
        json: { filename: control },
        path: control,
        text: `${dir}/new\\x0aline\\x1b[31mred\\x7f`,
      },
    ],
  };
}

/** Deletes the hostile files under trace.ts with `args`; returns its output and the cases. */
async function traceHostile(args: string[]): Promise<{ run: Run; cases: Case[]; pid: number }> {
  const { dir, cases } = hostileFiles();
  try {
    const child = await spawnUnlinker(cases.flatMap((c) => c.ops));
    let results: { op: string; ret: number }[] = [];
    // --path too: the child's runtime may delete DENO_DIR files of its own,
    // from any of its threads, and those are not what this test is about.
    const run = await traceWhile(
      [...args, "-p", String(child.pid), "-n", "dbpf_unlinker", "--path", dir],
      async () => {
        results = await child.go();
      },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(results.filter((r) => r.ret !== 0), [], "every file existed and went");
    return { run, cases, pid: child.pid };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

kernelTest(
  "trace.ts --json marks cut names and gives the exact bytes of names that are not UTF-8",
  async () => {
    const { run, cases, pid } = await traceHostile(["--json"]);
    const lines = run.stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
    if (EXPECTED_METHOD) assert.equal(lines[0].data.method, EXPECTED_METHOD, "attach method");
    const events = lines.filter((l) => l.type === "event").map((l) => l.data);
    assert.equal(events.length, cases.length, run.stdout);
    cases.forEach((c, i) => {
      const e = events[i];
      assert.deepEqual(
        [e.pid, e.tid, e.comm, e.ret, e.error],
        [pid, pid, "dbpf_unlinker", 0, null],
        c.what,
      );
      const names = Object.fromEntries(Object.entries(e).filter(([k]) => k.startsWith("filename")));
      assert.deepEqual(names, c.json, c.what);
      if (c.bytes) assert.deepEqual(Uint8Array.fromBase64(e.filename_b64), c.bytes, c.what);
      // The absolute path is whole on every method: its name is the caller's, or the file's own.
      assert.deepEqual([e.path, e.path_status], [c.path, "ok"], c.what);
      const pathBytes = e.path_b64 ? Uint8Array.fromBase64(e.path_b64) : undefined;
      assert.deepEqual(pathBytes, c.what === "not UTF-8" ? c.bytes : undefined, c.what);
    });
  },
);

kernelTest(
  "trace.ts text lines show whole absolute paths, and bad bytes and control characters as \\xNN",
  async () => {
    const { run, cases, pid } = await traceHostile([]);
    const [, ...rows] = run.stdout.trimEnd().split("\n");
    assert.equal(rows.length, cases.length, run.stdout);
    assert.ok(!run.stdout.includes("\ufffd"), "no raw invalid UTF-8 and no U+FFFD");
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x09\x0b-\x1f\x7f]/.test(run.stdout), "no control character but newlines");
    cases.forEach((c, i) => {
      const columns = /^(\d\d:\d\d:\d\d\.\d{3}) (.{7}) (.{16}) (.{12}) (.{9}) (.*)$/su.exec(
        rows[i],
      );
      assert.ok(columns, rows[i]);
      const [, , p, comm, ret, latency, name] = columns;
      assert.deepEqual(
        [p, comm, ret],
        [String(pid).padStart(7), "dbpf_unlinker".padEnd(16), "0".padEnd(12)],
        c.what,
      );
      assert.match(latency, /^ *\d+\.\d$/, c.what);
      assert.equal(name, c.text, c.what);
    });
  },
);
