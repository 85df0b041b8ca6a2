/**
 * What the attach method costs: the same storm traced by the library with
 * each method forced, against the storm untraced. Meant for a kernel where
 * fentry loads, i.e. the qemu VMs:
 *
 *   sudo deno run -A tests/vm/vm.ts --kernel 6.1 -- deno run -A bench/modes.ts
 *   sudo deno run -A bench/modes.ts [--pairs N] [--modes fentry,kprobe,tracepoint]
 *
 * Needs bench/out/ built (deno task bench builds it). Under qemu's software
 * emulation the absolute figures are slow; the ratios between methods are the point.
 *
 * @module
 */

import { parseArgs } from "node:util";

const BENCH = decodeURIComponent(new URL(".", import.meta.url).pathname);
const OUT = `${BENCH}out/`;
const { values } = parseArgs({
  args: Deno.args,
  options: {
    pairs: { type: "string", default: "20000" },
    modes: { type: "string", default: "fentry,kprobe,tracepoint" },
  },
});
const pairs = Number(values.pairs);
const text = new TextDecoder();

async function storm(): Promise<number> {
  const out = await new Deno.Command(`${OUT}storm`, { args: ["full", "1", String(pairs)] })
    .output();
  if (!out.success) throw new Error(`storm failed: ${text.decode(out.stderr)}`);
  return JSON.parse(text.decode(out.stdout).trim().split("\n").at(-1)!).rate;
}

/** The storm traced by bench/lib_consumer.ts in `mode`; CPU from bench/out/rusage. */
async function traced(mode: string) {
  const usage = await Deno.makeTempFile();
  const proc = new Deno.Command(`${OUT}rusage`, {
    args: [
      usage,
      Deno.execPath(),
      "run",
      "-A",
      `${BENCH}lib_consumer.ts`,
      "--mode",
      mode,
      "--comm",
      "dbpf_storm",
    ],
    stderr: "piped",
  }).spawn();
  const lines = proc.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  while (!err.includes("attached via")) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`${mode}: ${err.trim()}`);
    err += value;
  }
  const rate = await storm();
  proc.kill("SIGINT");
  for (;;) {
    const { value, done } = await lines.read();
    if (done) break;
    err += value;
  }
  await proc.status;
  const cost = JSON.parse(await Deno.readTextFile(usage));
  const [, events, lost] = /(\d+) events, (\d+) lost/.exec(err) ?? [];
  return { rate, events: Number(events), lost: Number(lost), cpuS: cost.user_s + cost.sys_s };
}

const bare = await storm();
console.log(
  `${Deno.osRelease()}: ${pairs} create+unlink pairs, 1 writer; untraced ${
    bare.toFixed(0)
  } pairs/s`,
);
console.log("mode        storm/s  %bare  delivered  lost  tracer cpu µs/ev");
const rows: { mode: string; cpuPerEvent: number; rate: number }[] = [];
for (const mode of values.modes.split(",")) {
  try {
    const r = await traced(mode);
    const cpuPerEvent = (r.cpuS * 1e6) / Math.max(1, r.events);
    rows.push({ mode, cpuPerEvent, rate: r.rate });
    console.log(
      `${mode.padEnd(10)} ${r.rate.toFixed(0).padStart(8)} ${
        (100 * r.rate / bare).toFixed(0).padStart(6)
      } ${String(r.events).padStart(10)} ${String(r.lost).padStart(5)} ${
        cpuPerEvent.toFixed(2).padStart(17)
      }`,
    );
  } catch (error) {
    console.log(`${mode.padEnd(10)} failed: ${error instanceof Error ? error.message : error}`);
  }
}
const base = rows.find((r) => r.mode === "tracepoint");
for (const r of rows) {
  if (!base || r === base) continue;
  console.log(
    `${r.mode} vs tracepoint: storm rate ${(r.rate / base.rate).toFixed(2)}x, ` +
      `tracer CPU/event ${(r.cpuPerEvent / base.cpuPerEvent).toFixed(2)}x`,
  );
}
