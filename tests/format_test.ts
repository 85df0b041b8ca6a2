/** Text and JSON formatting of unlink events, and errno names. */

import assert from "node:assert/strict";
import { errnoName } from "../mod.ts";
import {
  attachText,
  envelope,
  eventData,
  formatJson,
  formatText,
  retText,
  TEXT_HEADER,
  type UnlinkEvent,
  unlinkEvent,
} from "../lib/unlink/mod.ts";
import { escapeBytes, TRUNCATED_MARK } from "../lib/unlink/mod.ts";
import { UNLINK_F_NAME_TRUNCATED } from "../lib/unlink/mod.ts";
import { type RecordFields, unlinkRecord } from "./_helpers.ts";

const encoder = new TextEncoder();
const event: UnlinkEvent = {
  ...unlinkEvent.decode(unlinkRecord()),
  ts_ns: 5_000_000_000,
  latency_ns: 12_345,
  tgid: 4242,
  tid: 4243,
  uid: 1000,
  ret: -2,
  comm: "rm",
  filename: '/tmp/a "quoted"\nname',
};

/** A path of exactly `n` bytes. */
const pathOf = (n: number) => "/tmp/" + "f".repeat(n - 5);
/** An event decoded from kernel-like bytes, as the tracer yields it. */
const decoded = (fields: RecordFields) => unlinkEvent.decode(unlinkRecord(fields));
/** The FILENAME column of a text line (the last column, after LAT). */
const nameColumn = (line: string) => line.slice(TEXT_HEADER.indexOf("FILENAME"));

Deno.test("errno names cover the common unlink failures", () => {
  assert.deepEqual([1, 2, 13, 16, 20, 21, 30, 36].map(errnoName), [
    "EPERM",
    "ENOENT",
    "EACCES",
    "EBUSY",
    "ENOTDIR",
    "EISDIR",
    "EROFS",
    "ENAMETOOLONG",
  ]);
  assert.equal(errnoName(9999), "E9999");
  assert.equal(retText(0), "0");
  assert.equal(retText(-13), "EACCES");
});

Deno.test("a text line aligns under the header and escapes control characters", () => {
  const line = formatText(event);
  assert.match(line, /^\d\d:\d\d:\d\d\.\d{3} /);
  assert.equal(line.indexOf("4242") + 4, TEXT_HEADER.indexOf("PID") + 3);
  assert.equal(line.indexOf("rm "), TEXT_HEADER.indexOf("COMM"));
  assert.equal(line.indexOf("ENOENT"), TEXT_HEADER.indexOf("RET"));
  assert.equal(line.indexOf("12.3") + 4, TEXT_HEADER.indexOf("LAT(us)") + 7);
  assert.ok(line.endsWith(' /tmp/a "quoted"\\x0aname'), line);
  assert.ok(!line.includes("\n"));
  assert.ok(!line.includes("\x1b["));
  assert.ok(formatText(event, (ret) => `<${ret}>`).includes("<ENOENT      > "));
  assert.ok(!formatText({ ...event, ret: 0 }, (ret) => `<${ret}>`).includes("<"));
});

Deno.test("a JSON event line is exactly the documented envelope", () => {
  const parsed = JSON.parse(formatJson(event));
  assert.deepEqual(parsed, { type: "event", data: eventData(event) });
  assert.deepEqual(Object.keys(parsed.data), [
    "time",
    "pid",
    "tid",
    "uid",
    "comm",
    "filename",
    "ret",
    "error",
    "latency_ns",
    "op",
    "path",
    "path_status",
    "dfd",
    "ino",
    "dev",
    "type",
    "size",
    "nlink_after",
    "ppid",
    "pcomm",
    "auid",
    "cgroup_id",
    "cgroup",
    "container",
    "mntns",
    "argv",
  ]);
  assert.equal(parsed.data.pid, 4242);
  assert.equal(parsed.data.tid, 4243);
  assert.equal(parsed.data.error, "ENOENT");
  assert.equal(parsed.data.filename, '/tmp/a "quoted"\nname');
  assert.match(parsed.data.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(JSON.parse(formatJson({ ...event, ret: 0 })).data.error, null);
});

Deno.test("attach, lost and summary lines follow the envelope", () => {
  const skipped = [{ method: "fentry" as const, reason: "load refused (EPERM)" }];
  assert.equal(
    envelope("attach", { schema: 2, method: "tracepoint", skipped, probes: ["tracepoint/a"] }),
    '{"type":"attach","data":{"schema":2,"method":"tracepoint","skipped":[{"method":"fentry","reason":"load refused (EPERM)"}],"probes":["tracepoint/a"]}}',
  );
  assert.equal(envelope("lost", { count: 3 }), '{"type":"lost","data":{"count":3}}');
  assert.equal(
    envelope("summary", { events: 1, lost: 0 }),
    '{"type":"summary","data":{"events":1,"lost":0}}',
  );
  assert.equal(
    attachText("tracepoint", skipped),
    "attached via tracepoint (fentry: load refused (EPERM))",
  );
  assert.equal(attachText("fentry", []), "attached via fentry");
  // Where only one syscall's tracepoints exist (arm64: no unlink(2)), the line says so.
  const at = (
    s: string,
  ) => [`tracepoint/syscalls/sys_enter_${s}`, `tracepoint/syscalls/sys_exit_${s}`];
  assert.equal(
    attachText("tracepoint", [], [...at("unlinkat"), ...at("unlink")]),
    "attached via tracepoint",
  );
  assert.equal(
    attachText("tracepoint", skipped, at("unlinkat")),
    "attached via tracepoint on unlinkat only (fentry: load refused (EPERM))",
  );
});

Deno.test("a 255-byte name is whole and unmarked, a cut one is marked in text and JSON", () => {
  const whole = decoded({ filename: encoder.encode(pathOf(255)) });
  assert.equal(whole.filename, pathOf(255));
  assert.equal(nameColumn(formatText(whole)), pathOf(255));
  const json = JSON.parse(formatJson(whole)).data;
  assert.equal(json.filename, pathOf(255));
  assert.ok(!("filename_truncated" in json) && !("filename_b64" in json));
  assert.ok(!("filename_truncated" in eventData(whole)));

  const cut = decoded({ filename: encoder.encode(pathOf(300)), flags: UNLINK_F_NAME_TRUNCATED });
  assert.equal(nameColumn(formatText(cut)), pathOf(255) + TRUNCATED_MARK);
  const parsed = JSON.parse(formatJson(cut));
  assert.deepEqual(parsed, { type: "event", data: eventData(cut) });
  assert.equal(parsed.data.filename, pathOf(255));
  assert.equal(parsed.data.filename_truncated, true);
  assert.ok(!("filename_b64" in parsed.data));
  assert.deepEqual(Object.keys(parsed.data).slice(5, 8), [
    "filename",
    "filename_truncated",
    "ret",
  ]);
});

Deno.test("a name that is not UTF-8 keeps its exact bytes: base64 in JSON, \\xNN in text", () => {
  const bytes = new Uint8Array([...encoder.encode("/tmp/bad"), 0xff, 0xfe, 0x2e, 0x41]);
  const e = decoded({ filename: bytes });
  assert.deepEqual(e.filename_bytes, bytes);
  assert.equal(e.filename, "/tmp/bad\ufffd\ufffd.A");
  assert.equal(nameColumn(formatText(e)), "/tmp/bad\\xff\\xfe.A");
  const parsed = JSON.parse(formatJson(e));
  assert.deepEqual(parsed, { type: "event", data: eventData(e) });
  assert.equal(parsed.data.filename, "/tmp/bad\ufffd\ufffd.A");
  assert.deepEqual(Uint8Array.fromBase64(parsed.data.filename_b64!), bytes);
  assert.ok(!("filename_truncated" in parsed.data));
  assert.deepEqual(Object.keys(parsed.data).slice(5, 8), ["filename", "filename_b64", "ret"]);
});

Deno.test("a cut name ending in half a character is marked cut and keeps its 255 bytes", () => {
  const bytes = encoder.encode(pathOf(254) + "\u00e9").subarray(0, 255);
  const e = decoded({ filename: bytes, flags: UNLINK_F_NAME_TRUNCATED });
  assert.equal(nameColumn(formatText(e)), `${pathOf(254)}\\xc3${TRUNCATED_MARK}`);
  const data = JSON.parse(formatJson(e)).data;
  assert.equal(data.filename_truncated, true);
  assert.deepEqual(Uint8Array.fromBase64(data.filename_b64), bytes);
  assert.equal(data.filename, pathOf(254) + "\ufffd");
});

Deno.test("valid non-ASCII UTF-8, even a literal U+FFFD, is shown as itself with no base64", () => {
  for (const name of ["/tmp/caf\u00e9", "/tmp/\u{1f600}.txt", "/tmp/\u65e5\u672c", "/tmp/\ufffd"]) {
    const e = decoded({ filename: encoder.encode(name) });
    assert.equal(e.filename_bytes, undefined, name);
    assert.equal(nameColumn(formatText(e)), name);
    const data = JSON.parse(formatJson(e)).data;
    assert.equal(data.filename, name);
    assert.ok(!("filename_b64" in data), name);
  }
});

Deno.test("control characters, quotes and backslashes survive JSON and are escaped in text", () => {
  const name = '/tmp/a\nb\x1b[31mc\x7f"q"\\d\te';
  const e = decoded({ filename: encoder.encode(name) });
  assert.equal(nameColumn(formatText(e)), '/tmp/a\\x0ab\\x1b[31mc\\x7f"q"\\d\\x09e');
  const data = JSON.parse(formatJson(e)).data;
  assert.equal(data.filename, name);
  assert.ok(!("filename_b64" in data) && !("filename_truncated" in data));
});

Deno.test("escapeBytes shows each byte outside valid UTF-8 as \\xNN and the rest as text", () => {
  const show = (...b: number[]) => escapeBytes(new Uint8Array(b));
  assert.equal(show(0x61, 0xc3, 0xa9, 0x0a), "a\u00e9\\x0a");
  assert.equal(show(0xf0, 0x9f, 0x98, 0x80), "\u{1f600}");
  assert.equal(show(0xc0, 0xaf), "\\xc0\\xaf", "overlong /");
  assert.equal(show(0xe0, 0x80, 0xaf), "\\xe0\\x80\\xaf", "overlong, 3 bytes");
  assert.equal(show(0xed, 0xa0, 0x80), "\\xed\\xa0\\x80", "a UTF-16 surrogate");
  assert.equal(show(0xf4, 0x90, 0x80, 0x80), "\\xf4\\x90\\x80\\x80", "past U+10FFFF");
  assert.equal(show(0xe2, 0x82), "\\xe2\\x82", "a sequence cut short");
  assert.equal(show(0xe2, 0x82, 0x41), "\\xe2\\x82A");
  assert.equal(show(0x80, 0x62), "\\x80b", "a lone continuation byte");
  assert.equal(show(), "");
});

Deno.test("a name that starts with U+FEFF keeps it, whole or after a bad byte", () => {
  const e = decoded({ filename: encoder.encode("\ufeffx") });
  assert.equal(e.filename, "\ufeffx");
  assert.equal(JSON.parse(formatJson(e)).data.filename, "\ufeffx");
  assert.equal(nameColumn(formatText(e)), "\ufeffx");
  assert.equal(escapeBytes(new Uint8Array([0xff, 0xef, 0xbb, 0xbf, 0x78])), "\\xff\ufeffx");
});

Deno.test("C1 controls and bidi overrides print as the \\xNN of their bytes in text, \\uXXXX in JSON", () => {
  const name = "/tmp/a\u009b31mb\u0085c\u202ed\u2066e\u200ff\u061cg\u2028h\u00a0i";
  const e = decoded({ filename: encoder.encode(name), comm: encoder.encode("r\u009bm") });
  const line = formatText(e);
  assert.equal(
    nameColumn(line),
    "/tmp/a\\xc2\\x9b31mb\\xc2\\x85c\\xe2\\x80\\xaed\\xe2\\x81\\xa6e\\xe2\\x80\\x8ff" +
      "\\xd8\\x9cg\\xe2\\x80\\xa8h\u00a0i",
    "U+00A0, past the C1 range, is shown as itself",
  );
  assert.ok(line.includes(" r\\xc2\\x9bm "), line);
  const json = formatJson(e);
  assert.ok(!/[\u0080-\u009f\u202a-\u202e\u2066-\u2069]/.test(json), json);
  assert.ok(json.includes('"filename":"/tmp/a\\u009b31mb\\u0085c\\u202ed\\u2066e'), json);
  assert.equal(JSON.parse(json).data.filename, name, "the same value to a JSON parser");
  assert.equal(JSON.parse(json).data.comm, "r\u009bm");
});

Deno.test("an escaped byte that is not UTF-8 and an escaped C1 character look different", () => {
  const lone = decoded({ filename: new Uint8Array([0x2f, 0x9b]) }); // 0x9b alone: not UTF-8
  const c1 = decoded({ filename: new Uint8Array([0x2f, 0xc2, 0x9b]) }); // U+009B
  assert.equal(nameColumn(formatText(lone)), "/\\x9b");
  assert.equal(nameColumn(formatText(c1)), "/\\xc2\\x9b");
  assert.equal(escapeBytes(new Uint8Array([0xff, 0xe2, 0x80, 0xae])), "\\xff\\xe2\\x80\\xae");
});
