/**
 * Micro-benchmarks of the per-event work in user space: decoding one
 * `struct unlink_event` (schema 2: a 640-byte head and the path as a tail)
 * and formatting it as a text line or a JSON line.
 * No root needed; `--allow-ffi` because formatting reads the clocks through libc.
 *
 *   deno bench --allow-ffi --allow-env --allow-read bench/decode_bench.ts
 *
 * @module
 */

import {
  EventWriter,
  formatJson,
  formatText,
  UNLINK_F_PATH_JOINED,
  type UnlinkEvent,
  unlinkEvent,
  UnlinkMetrics,
} from "../lib/unlink/mod.ts";

/**
 * One record as the kernel writes it for the storm, at a ring-like offset
 * (after an 8-byte header): the 640-byte head with every schema-2 field set,
 * then the path as its variable tail.
 */
function record(): { bytes: Uint8Array; offset: number } {
  const offset = 8;
  const text = new TextEncoder();
  const path = text.encode("/dev/shm/dbpf_storm.4242");
  const argv = text.encode("./bench/out/storm\0full\x001\x00200000");
  const bytes = new Uint8Array(offset + unlinkEvent.size + path.length);
  const view = new DataView(bytes.buffer, offset);
  const F = unlinkEvent.fields;
  view.setBigUint64(F.ts_ns[1], 123_456_789_012_345n, true);
  view.setBigUint64(F.latency_ns[1], 4_321n, true);
  view.setUint32(F.tgid[1], 4242, true);
  view.setUint32(F.tid[1], 4243, true);
  view.setUint32(F.uid[1], 0, true);
  view.setInt32(F.ret[1], 0, true);
  view.setUint32(F.flags[1], UNLINK_F_PATH_JOINED, true); // the tracepoint method's path
  view.setBigUint64(F.cgroup_id[1], 7_331n, true);
  view.setUint32(F.ppid[1], 4200, true);
  view.setUint32(F.auid[1], 0xffff_ffff, true);
  view.setUint32(F.mntns[1], 4_026_531_841, true);
  view.setInt32(F.dfd[1], -100, true); // AT_FDCWD
  view.setUint16(F.argv_len[1], argv.length, true);
  view.setUint16(F.path_len[1], path.length, true);
  bytes.set(text.encode("dbpf_storm"), offset + F.comm[1]);
  bytes.set(text.encode("/dev/shm/dbpf_storm.4242"), offset + F.filename[1]);
  bytes.set(text.encode("deno"), offset + F.pcomm[1]);
  bytes.set(argv, offset + F.argv[1]);
  bytes.set(path, offset + unlinkEvent.size);
  return { bytes, offset };
}

const { bytes, offset } = record();
const event: UnlinkEvent = unlinkEvent.decode(bytes, offset);
const sink: unknown[] = [undefined];

Deno.bench("decode one unlink_event", { group: "per event", baseline: true }, () => {
  sink[0] = unlinkEvent.decode(bytes, offset);
});

Deno.bench("format one event as text", { group: "per event" }, () => {
  sink[0] = formatText(event);
});

Deno.bench("format one event as JSON", { group: "per event" }, () => {
  sink[0] = formatJson(event);
});

Deno.bench("decode + format as JSON (the string path)", { group: "per event" }, () => {
  sink[0] = formatJson(unlinkEvent.decode(bytes, offset));
});

// What trace.ts does per event: bytes from the ring straight into its buffer.
const discard = { writeSync: (p: Uint8Array) => p.length };
const jsonWriter = new EventWriter("json", discard);
const textWriter = new EventWriter("text", discard);

Deno.bench("write one event as JSON bytes (trace.ts --json)", { group: "per event" }, () => {
  jsonWriter.record(bytes, offset);
});

Deno.bench("write one event as text bytes (trace.ts)", { group: "per event" }, () => {
  textWriter.record(bytes, offset);
});

// What trace.ts --metrics adds per event: counting from the record's bytes.
const metrics = new UnlinkMetrics();
const otherBytes = new Uint8Array(bytes);
new TextEncoder().encodeInto(
  "not_seen_yet",
  otherBytes.subarray(offset + unlinkEvent.fields.comm[1]),
);
const bounded = new UnlinkMetrics({ maxComms: 1 });
bounded.record(bytes, offset);

Deno.bench("count one event for Prometheus (trace.ts --metrics)", { group: "per event" }, () => {
  metrics.record(bytes, offset);
});

Deno.bench("count one event past the comm bound (as other)", { group: "per event" }, () => {
  bounded.record(otherBytes, offset);
});

/** 1000 decoded records handed out one by one, as `for await` over a tracer does. */
async function* batch(): AsyncGenerator<UnlinkEvent> {
  const records: UnlinkEvent[] = [];
  for (let i = 0; i < 1000; i++) records.push(unlinkEvent.decode(bytes, offset));
  for (const e of records) yield e;
}

Deno.bench(
  "decode 1000 and iterate them with for await",
  { group: "per 1000 events" },
  async () => {
    let n = 0;
    for await (const _ of batch()) n++;
    sink[0] = n;
  },
);

Deno.bench("decode 1000 and iterate them with for...of", {
  group: "per 1000 events",
  baseline: true,
}, () => {
  const records: UnlinkEvent[] = [];
  for (let i = 0; i < 1000; i++) records.push(unlinkEvent.decode(bytes, offset));
  let n = 0;
  for (const _ of records) n++;
  sink[0] = n;
});
