/**
 * The deno_bpf library as a bench/run.ts tracer: opens the unlink tracer,
 * counts the events of a `for await` loop, and formats nothing.
 *
 *   sudo deno run -A bench/lib_consumer.ts [--mode tracepoint] [--comm NAME] [--stamp]
 *     [--ring-size BYTES] [--leak BYTES] [--gc]
 *
 * stderr: `attached via MODE (module ready at A ms with R MiB RSS; open took
 * B ms, RSS now S MiB)` once attached (times from process start), then
 * `N events, M lost` after SIGINT or SIGTERM. SIGUSR1 prints
 * `progress: events=N lost=M kept=K` at any time (tests/soak_test.ts marks its
 * phases with it), K being the bytes JavaScript holds: V8's heap in use and
 * its array buffers. Events are the records delivered from the ring; lost is the
 * kernel's count of drops. With `--stamp`, stdout gets
 * `<epoch ms when received> <filename>` per event, for the delay measurement.
 * `--leak BYTES` is a deliberate leak for tests/soak_test.ts to show that its
 * memory check catches one: the consumer keeps exactly BYTES bytes per record
 * for good, written so that their pages are resident (in 1 MiB chunks outside
 * the V8 heap, so the leak is those bytes and nothing else). With `--gc` (and
 * V8's `--expose-gc`), each SIGUSR1 runs a full garbage collection and hands
 * malloc's free pages back to the kernel (malloc_trim) before it answers, so
 * the RSS read after the answer is what is kept: neither garbage that a later
 * collection would free nor freed memory that a leak would reuse unseen.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { releaseFreedMemory } from "../mod.ts";
import { UnlinkTracer, type UnlinkTracerOptions } from "../lib/unlink/mod.ts";

const ready = performance.now();
const rssMiB = () =>
  Number(/^VmRSS:\s*(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"))?.[1]) / 1024;
const readyRss = rssMiB();
const { values } = parseArgs({
  args: Deno.args,
  options: {
    mode: { type: "string", default: "tracepoint" },
    comm: { type: "string" },
    stamp: { type: "boolean", default: false },
    "ring-size": { type: "string" },
    leak: { type: "string", default: "0" },
    gc: { type: "boolean", default: false },
  },
});
const encoder = new TextEncoder();
const say = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));

/** Keeps `bytes` bytes (nonzero, so written) for each record number `n`, for good: see `--leak`. */
function leaker(bytes: number): (n: number) => void {
  const kept: Uint8Array[] = [];
  let chunk = new Uint8Array(0);
  let used = 0;
  return (n) => {
    if (bytes === 0) return;
    if (used + bytes > chunk.length) {
      chunk = new Uint8Array(Math.max(1 << 20, bytes));
      kept.push(chunk);
      used = 0;
    }
    chunk.fill(n & 0xff || 1, used, used + bytes);
    used += bytes;
  };
}

try {
  const opened = performance.now();
  using tracer = UnlinkTracer.open({
    mode: values.mode as UnlinkTracerOptions["mode"],
    comm: values.comm,
    ringBufferSize: values["ring-size"] === undefined ? undefined : Number(values["ring-size"]),
  });
  let events = 0;
  const leak = leaker(Number(values.leak));
  const stop = () => tracer.stop();
  const collect = values.gc ? (globalThis as { gc?: () => void }).gc : undefined;
  if (values.gc && !collect) throw new Error("--gc needs --v8-flags=--expose-gc");
  const progress = () => {
    if (collect) {
      collect();
      releaseFreedMemory();
    }
    // What JavaScript keeps (heap and array buffers); after --gc, only what is live.
    const { heapUsed, external } = Deno.memoryUsage();
    say(`progress: events=${events} lost=${tracer.lost} kept=${heapUsed + external}`);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGUSR1", progress); // before "attached": a test may signal at once
  const openMs = performance.now() - opened;
  say(
    `attached via ${tracer.method} (module ready at ${ready.toFixed(1)} ms with ${
      readyRss.toFixed(1)
    } MiB RSS; open took ${openMs.toFixed(1)} ms, RSS now ${rssMiB().toFixed(1)} MiB)`,
  );
  for await (const e of tracer) {
    events++;
    leak(events);
    if (values.stamp) {
      const received = performance.timeOrigin + performance.now();
      Deno.stdout.writeSync(encoder.encode(`${received.toFixed(3)} ${e.filename}\n`));
    }
  }
  say(`${events} events, ${tracer.lost} lost`);
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  Deno.removeSignalListener("SIGUSR1", progress);
} catch (error) {
  say(`lib_consumer: ${error instanceof Error ? error.message : String(error)}`);
  Deno.exit(1);
}
