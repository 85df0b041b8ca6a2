#!/usr/bin/env -S deno run --allow-ffi --allow-env
/**
 * execsnoop: every successful exec: pid, parent pid, the new command name
 * and the file it runs, from the `sched/sched_process_exec` tracepoint.
 *
 *   sudo deno run --allow-ffi --allow-env examples/execsnoop.ts
 *
 * Deno permissions: `--allow-ffi` (libbpf) and `--allow-env` (`LIBBPF_PATH`).
 * Ctrl-C or SIGTERM stops. The BPF program is examples/execsnoop.bpf.c, with
 * its record in examples/execsnoop.h; `deno task build:bpf` rebuilds it and its
 * generated skeleton, examples/execsnoop_bpf.ts.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ensureTracefs, RingBuffer } from "../mod.ts";
import { execEvent, open } from "./execsnoop_bpf.ts";

const USAGE = `Usage: sudo deno run --allow-ffi --allow-env examples/execsnoop.ts

Prints each successful exec as it happens. Ctrl-C stops.

Options:
  -h, --help   show this help`;

const encoder = new TextEncoder();
/** Writes a line to stdout; unlike console.log, throws BrokenPipe once the reader is gone. */
const print = (line: string) => Deno.stdout.writeSync(encoder.encode(line + "\n"));

try {
  const { values } = parseArgs({
    args: Deno.args,
    options: { help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
} catch (error) {
  // parseArgs explains a dash-led value over three lines; its first says what is wrong.
  console.error(`execsnoop: ${(error as Error).message.split("\n")[0]}; see --help`);
  Deno.exit(2);
}

try {
  using skel = open(); // checks execEvent against the object's BTF
  skel.load();
  ensureTracefs(); // attaching to a tracepoint reads its id there; mounts it if missing
  skel.attach();
  using ring = new RingBuffer(skel.maps.events);
  for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, () => ring.stop());

  print(`${"PID".padEnd(7)} ${"PPID".padEnd(7)} ${"COMM".padEnd(16)} FILENAME`);
  for await (const e of ring.records(execEvent)) {
    print(
      `${String(e.pid).padEnd(7)} ${String(e.ppid).padEnd(7)} ${e.comm.padEnd(16)} ${e.filename}`,
    );
  }
} catch (error) {
  if (!(error instanceof Deno.errors.BrokenPipe)) { // `| head` ends the output: not an error
    console.error(`execsnoop: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
Deno.exit(0);
