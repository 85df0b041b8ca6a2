#!/usr/bin/env -S deno run --allow-ffi --allow-env
// opencount: openat(2) calls per command name; every interval, the top N, then the map is cleared.
//   sudo deno run --allow-ffi --allow-env examples/opencount.ts [--interval 1] [--top 10] [--count N]
import { parseArgs } from "node:util";
import { BpfObject, decodeCString, ensureTracefs } from "../mod.ts";
import { OPENCOUNT_BPF_O } from "./opencount_bpf.ts";

const USAGE = "Usage: opencount.ts [--interval SECONDS] [--top N] [--count TABLES]";
const number = { type: "string" } as const;
let opts;
try {
  const { values } = parseArgs({
    args: Deno.args,
    options: { interval: number, top: number, count: number, help: { type: "boolean" } },
  });
  if (values.help) console.log(USAGE), Deno.exit(0);
  opts = {
    interval: +(values.interval ?? 1),
    top: +(values.top ?? 10),
    count: +(values.count ?? Infinity),
  };
  if (!Object.values(opts).every((n) => n > 0)) {
    throw new Error("--interval, --top and --count take numbers > 0");
  }
} catch (error) {
  console.error(`opencount: ${(error as Error).message}; see --help`);
  Deno.exit(2);
}
const stop = Promise.withResolvers<boolean>();
for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, () => stop.resolve(true));

try {
  ensureTracefs();
  using obj = BpfObject.openMem(OPENCOUNT_BPF_O, "opencount");
  obj.load();
  using _link = obj.program("count_open").attach();
  const counts = obj.map("counts");
  console.log("Counting openat() per command... Ctrl-C to end.");
  for (let n = 0; n < opts.count; n++) {
    const tick = new Promise<boolean>((done) => setTimeout(done, opts.interval * 1000, false));
    const stopped = await Promise.race([tick, stop.promise]);
    const rows = counts.lookupBatch().map(([k, v]) =>
      [decodeCString(k, 0, 16), new BigUint64Array(v.buffer)[0]] as const
    );
    counts.clear();
    console.log(`\n${new Date().toTimeString().slice(0, 8)}\n${"COMM".padEnd(16)} OPENS`);
    rows.sort((a, b) => Number(b[1] - a[1])).slice(0, opts.top).forEach(([comm, opens]) =>
      console.log(`${comm.padEnd(16)} ${opens}`)
    );
    if (stopped) break;
  }
} catch (error) {
  console.error(`opencount: ${(error as Error).message}`);
  Deno.exit(1);
}
Deno.exit(0);
