/** Text and JSON formatting of unlink events, and errno names. */

import assert from "node:assert/strict";
import {
  attachText,
  envelope,
  errnoName,
  eventData,
  formatJson,
  formatText,
  retText,
  TEXT_HEADER,
  type UnlinkEvent,
} from "../mod.ts";

const event: UnlinkEvent = {
  ts_ns: 5_000_000_000,
  latency_ns: 12_345,
  tgid: 4242,
  tid: 4243,
  uid: 1000,
  ret: -2,
  comm: "rm",
  filename: '/tmp/a "quoted"\nname',
};

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
    envelope("attach", { method: "tracepoint", skipped }),
    '{"type":"attach","data":{"method":"tracepoint","skipped":[{"method":"fentry","reason":"load refused (EPERM)"}]}}',
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
});
