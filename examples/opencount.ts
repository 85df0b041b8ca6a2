#!/usr/bin/env -S deno run --allow-ffi --allow-env
// opencount: openat(2) calls per command name; every interval, the top N, then the map is cleared.
//   sudo deno run --allow-ffi --allow-env examples/opencount.ts [--interval 1] [--top 10] [--count N]
import { parseArgs } from "node:util";
import { ensureTracefs } from "../mod.ts";
import { commKey, open, openCount } from "./opencount_bpf.ts";

const USAGE = "Usage: opencount.ts [--interval SECONDS] [--top N] [--count TABLES]";
const num = { type: "string" } as const; // a number, parsed below
let [interval, top, count] = [1, 10, Infinity];
try {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: { interval: num, top: num, count: num, help: { type: "boolean" } },
  });
  if (v.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  [interval, top, count] = [v.interval ?? interval, v.top ?? top, v.count ?? count].map(Number);
  if (!(interval > 0 && top > 0 && count > 0)) {
    throw new Error("--interval, --top and --count take numbers > 0");
  }
} catch (error) {
  // parseArgs explains a dash-led value over three lines; its first says what is wrong.
  console.error(`opencount: ${(error as Error).message.split("\n")[0]}; see --help`);
  Deno.exit(2);
}
const stop = Promise.withResolvers<boolean>();
for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, () => stop.resolve(true));

try {
  using skel = open();
  skel.load();
  ensureTracefs(); // attaching to a tracepoint reads its id there; mounts it if missing
  skel.attach();
  const counts = skel.maps.counts.typed(commKey, openCount); // struct comm_key -> struct open_count
  console.log("Counting openat() per command... Ctrl-C to end.");
  for (let n = 0; n < count; n++) {
    const tick = new Promise<boolean>((done) => setTimeout(done, interval * 1000, false));
    const stopped = await Promise.race([tick, stop.promise]);
    const rows = [...counts.entries()].sort(([, a], [, b]) => b.opens - a.opens);
    counts.clear();
    console.log(`\n${new Date().toTimeString().slice(0, 8)}\n${"COMM".padEnd(16)} OPENS`);
    for (const [k, v] of rows.slice(0, top)) console.log(`${k.comm.padEnd(16)} ${v.opens}`);
    if (stopped) break;
  }
} catch (error) {
  console.error(`opencount: ${(error as Error).message}`);
  Deno.exit(1);
}
Deno.exit(0);
