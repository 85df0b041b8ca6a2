/**
 * Micro-benchmarks of the per-event work in user space: decoding one
 * `struct unlink_event` and formatting it as a text line or a JSON line.
 * No root needed; `--allow-ffi` because formatting reads the clocks through libc.
 *
 *   deno bench --allow-ffi --allow-env --allow-read bench/decode_bench.ts
 *
 * @module
 */

import { EventWriter, formatJson, formatText, type UnlinkEvent, unlinkEvent } from "../mod.ts";

/** One record as the kernel writes it, at a ring-like offset (after an 8-byte header). */
function record(): { bytes: Uint8Array; offset: number } {
  const offset = 8;
  const bytes = new Uint8Array(offset + unlinkEvent.size);
  const view = new DataView(bytes.buffer, offset);
  const text = new TextEncoder();
  view.setBigUint64(0, 123_456_789_012_345n, true); // ts_ns
  view.setBigUint64(8, 4_321n, true); // latency_ns
  view.setUint32(16, 4242, true); // tgid
  view.setUint32(20, 4243, true); // tid
  view.setUint32(24, 0, true); // uid
  view.setInt32(28, 0, true); // ret
  bytes.set(text.encode("dbpf_storm"), offset + 32);
  bytes.set(text.encode("/dev/shm/dbpf_storm.4242"), offset + 48);
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
