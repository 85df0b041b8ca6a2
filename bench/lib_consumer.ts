/**
 * The deno_bpf library as a bench/run.ts tracer: opens the unlink tracer,
 * counts the events of a `for await` loop, and formats nothing.
 *
 *   sudo deno run -A bench/lib_consumer.ts [--mode tracepoint] [--comm NAME] [--stamp]
 *     [--ring-size BYTES]
 *
 * stderr: `attached via MODE (module ready at A ms with R MiB RSS; open took
 * B ms, RSS now S MiB)` once attached (times from process start), then
 * `N events, M lost` after SIGINT or SIGTERM. SIGUSR1 prints
 * `progress: events=N lost=M` at any time (tests/soak_test.ts marks its phases
 * with it). Events are the records delivered from the ring; lost is the
 * kernel's count of drops. With `--stamp`, stdout gets
 * `<epoch ms when received> <filename>` per event, for the delay measurement.
 *
 * @module
 */

import { parseArgs } from "node:util";
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
  },
});
const encoder = new TextEncoder();
const say = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));

try {
  const opened = performance.now();
  using tracer = UnlinkTracer.open({
    mode: values.mode as UnlinkTracerOptions["mode"],
    comm: values.comm,
    ringBufferSize: values["ring-size"] === undefined ? undefined : Number(values["ring-size"]),
  });
  let events = 0;
  const stop = () => tracer.stop();
  const progress = () => say(`progress: events=${events} lost=${tracer.lost}`);
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
