/** Prometheus counting and exposition of unlink events, on synthetic records. */

import assert from "node:assert/strict";
import { escapeLabel, LATENCY_BUCKETS_NS, UnlinkMetrics } from "../lib/unlink/metrics.ts";
import { parseListenAddress } from "../lib/unlink/service.ts";
import { unlinkRecord } from "./_helpers.ts";

const text = new TextEncoder();

/** The sample lines of `name` (no comments), as `{labels} value` strings. */
function samples(exposition: string, name: string): string[] {
  return exposition.split("\n").filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .map((l) => l.slice(name.length));
}

Deno.test("counters by op, result and comm render in the text exposition format", () => {
  const m = new UnlinkMetrics({ method: "tracepoint", ringBufferSize: 4096 });
  m.count({ ret: 0, comm: "rm", latency_ns: 3_000 });
  m.count({ ret: 0, comm: "rm", latency_ns: 3_000 });
  m.count({ ret: -2, comm: "rm", latency_ns: 900 });
  m.count({ ret: -13, comm: "make", latency_ns: 2_000_000_000 });
  m.lost(3);
  const out = m.expose();
  assert.deepEqual(samples(out, "deno_bpf_unlinks_total"), [
    '{op="unlink",result="ok",comm="rm"} 2',
    '{op="unlink",result="ENOENT",comm="rm"} 1',
    '{op="unlink",result="EACCES",comm="make"} 1',
  ]);
  assert.deepEqual(samples(out, "deno_bpf_lost_events_total"), [" 3"]);
  assert.deepEqual(samples(out, "deno_bpf_attach_info"), ['{method="tracepoint"} 1']);
  assert.deepEqual(samples(out, "deno_bpf_ring_buffer_size_bytes"), [" 4096"]);
  assert.match(out, /^# TYPE deno_bpf_unlinks_total counter$/m);
  assert.match(out, /^# TYPE deno_bpf_unlink_latency_seconds histogram$/m);
  assert.ok(out.endsWith("\n"));
  assert.doesNotMatch(out, /deno_bpf_syslog_dropped_total/, "only with a syslog output");
});

Deno.test("the latency histogram is cumulative, with +Inf, sum and count", () => {
  const m = new UnlinkMetrics();
  for (const ns of [500, 1_000, 1_001, 7_000, 2_000_000_000]) {
    m.count({ ret: 0, comm: "rm", latency_ns: ns });
  }
  const out = m.expose();
  const buckets = samples(out, "deno_bpf_unlink_latency_seconds_bucket");
  assert.equal(buckets.length, LATENCY_BUCKETS_NS.length + 1);
  assert.deepEqual(buckets.slice(0, 4), [
    '{op="unlink",le="0.000001"} 2',
    '{op="unlink",le="0.0000025"} 3',
    '{op="unlink",le="0.000005"} 3',
    '{op="unlink",le="0.00001"} 4',
  ]);
  assert.equal(buckets.at(-2), '{op="unlink",le="1"} 4');
  assert.equal(buckets.at(-1), '{op="unlink",le="+Inf"} 5');
  assert.deepEqual(samples(out, "deno_bpf_unlink_latency_seconds_count"), ['{op="unlink"} 5']);
  assert.deepEqual(samples(out, "deno_bpf_unlink_latency_seconds_sum"), [
    `{op="unlink"} ${(500 + 1_000 + 1_001 + 7_000 + 2_000_000_000) / 1e9}`,
  ]);
});

Deno.test("past maxComms distinct names, every new comm is counted as other", () => {
  const m = new UnlinkMetrics({ maxComms: 3 });
  for (let i = 0; i < 10_000; i++) {
    m.record(unlinkRecord({ ret: -2, comm: text.encode(`c${i}`) }), 0);
  }
  m.record(unlinkRecord({ ret: 0, comm: text.encode("c1") }), 0);
  m.count({ ret: 0, comm: "c2", latency_ns: 1 });
  m.count({ ret: 0, comm: "c9999", latency_ns: 1 });
  assert.equal(m.commLabels, 4);
  assert.deepEqual(samples(m.expose(), "deno_bpf_unlinks_total").sort(), [
    '{op="unlink",result="ENOENT",comm="c0"} 1',
    '{op="unlink",result="ENOENT",comm="c1"} 1',
    '{op="unlink",result="ENOENT",comm="c2"} 1',
    '{op="unlink",result="ENOENT",comm="other"} 9997',
    '{op="unlink",result="ok",comm="c1"} 1',
    '{op="unlink",result="ok",comm="c2"} 1',
    '{op="unlink",result="ok",comm="other"} 1',
  ]);
  const out = m.expose();
  assert.match(out, /^deno_bpf_unlinks_total\{op="unlink",result="ENOENT",comm="other"\} 9997$/m);
  assert.match(out, /^deno_bpf_unlinks_total\{op="unlink",result="ok",comm="other"\} 1$/m);
  assert.match(out, /^deno_bpf_comm_labels 4$/m);
  assert.match(out, /^deno_bpf_comm_labels_max 3$/m);
  assert.throws(() => new UnlinkMetrics({ maxComms: 0 }), RangeError);
});

Deno.test("counting raw records gives what counting their decoded events gives", () => {
  const raw = new UnlinkMetrics();
  const decoded = new UnlinkMetrics();
  const records = [
    { ret: 0, comm: text.encode("rm"), latency: 1_200 },
    { ret: -2, comm: text.encode("rm"), latency: 800 },
    { ret: 0, comm: text.encode("fifteen_bytes_x"), latency: 60_000 },
    { ret: -21, comm: new Uint8Array([0x63, 0xff, 0x22]), latency: 5 },
  ];
  // Several records in one buffer, at offsets, as the ring hands them over.
  const stride = unlinkRecord().length;
  const buf = new Uint8Array(records.length * stride + 16);
  records.forEach((r, i) => buf.set(unlinkRecord(r), 16 + i * stride));
  records.forEach((_, i) => raw.record(buf, 16 + i * stride));
  for (const r of records) {
    const comm = new TextDecoder().decode(r.comm);
    decoded.count({ ret: r.ret, comm, latency_ns: r.latency });
  }
  assert.equal(raw.expose(), decoded.expose());
  assert.match(raw.expose(), /comm="c\uFFFD\\""/, "invalid UTF-8 and quotes are escaped");
});

Deno.test("a record's op becomes the op label", () => {
  const m = new UnlinkMetrics();
  m.record(unlinkRecord({ op: 1, ret: 0, comm: text.encode("rm"), latency: 1 }), 0);
  m.count({ ret: 0, comm: "rm", latency_ns: 1 });
  const out = m.expose();
  assert.match(out, /^deno_bpf_unlinks_total\{op="rmdir",result="ok",comm="rm"\} 1$/m);
  assert.match(out, /^deno_bpf_unlinks_total\{op="unlink",result="ok",comm="rm"\} 1$/m);
  assert.match(out, /^deno_bpf_unlink_latency_seconds_count\{op="rmdir"\} 1$/m);
});

Deno.test("label values escape backslash, double quote and newline", () => {
  assert.equal(escapeLabel('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
});

Deno.test("ring fill and syslog drops are gauges and a counter", () => {
  const m = new UnlinkMetrics();
  const path = (n: number) => ({ path: new Uint8Array(n).fill(0x61) });
  // Each record takes 8 header bytes, its 640-byte head and its path, 8-aligned.
  m.record(unlinkRecord(path(10)), 0);
  m.record(unlinkRecord(path(1)), 0);
  m.drained();
  m.record(unlinkRecord(path(0)), 0);
  m.drained();
  m.syslogDropped(7);
  const out = m.expose();
  assert.match(out, /^deno_bpf_ring_buffer_fill_bytes 648$/m);
  assert.match(out, /^deno_bpf_ring_buffer_fill_max_bytes 1320$/m);
  assert.match(out, /^deno_bpf_syslog_dropped_total 7$/m);
});

Deno.test("--metrics addresses parse as HOST:PORT, [IPv6]:PORT and :PORT", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:9469"), { hostname: "127.0.0.1", port: 9469 });
  assert.deepEqual(parseListenAddress("[::1]:9469"), { hostname: "::1", port: 9469 });
  assert.deepEqual(parseListenAddress(":9469"), { hostname: "0.0.0.0", port: 9469 });
  for (const bad of ["9469", "host", "h:99999", "h:", "::1:80"]) {
    assert.throws(() => parseListenAddress(bad), TypeError, bad);
  }
});
