#!/usr/bin/env -S deno run --allow-ffi --allow-env
/**
 * opensnoop: every openat(2) as it returns: pid, command, flags, the new fd
 * or the errno, and the path as passed.
 *
 *   sudo deno run --allow-ffi --allow-env examples/opensnoop.ts [-p PID]
 *
 * Deno permissions: `--allow-ffi` (libbpf) and `--allow-env` (`LIBBPF_PATH`).
 * Ctrl-C or SIGTERM stops. The BPF program is examples/opensnoop.bpf.c, with
 * its record in examples/opensnoop.h; `deno task build:bpf` rebuilds it and its
 * generated skeleton, examples/opensnoop_bpf.ts.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ensureTracefs, errnoName, RingBuffer } from "../mod.ts";
import { open, openEvent } from "./opensnoop_bpf.ts";

const USAGE = `Usage: sudo deno run --allow-ffi --allow-env examples/opensnoop.ts [-p PID]

Prints each openat(2) as it returns. Ctrl-C stops.

Options:
  -p, --pid PID   only this process
  -h, --help      show this help`;

const encoder = new TextEncoder();
/** Writes a line to stdout; unlike console.log, throws BrokenPipe once the reader is gone. */
const print = (line: string) => Deno.stdout.writeSync(encoder.encode(line + "\n"));

let pid = 0;
try {
  const { values } = parseArgs({
    args: Deno.args,
    options: { pid: { type: "string", short: "p" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  pid = Number(values.pid ?? 0);
  if (!Number.isSafeInteger(pid) || pid < 0) throw new Error(`-p takes a process id`);
} catch (error) {
  // parseArgs explains a dash-led value over three lines; its first says what is wrong.
  console.error(`opensnoop: ${(error as Error).message.split("\n")[0]}; see --help`);
  Deno.exit(2);
}

try {
  using skel = open(); // checks openEvent against the object's BTF
  skel.setConsts({ targ_pid: pid }); // a const volatile: fixed at load, so the verifier can prune
  skel.load();
  ensureTracefs(); // attaching to a tracepoint reads its id there; mounts it if missing
  skel.attach();
  using ring = new RingBuffer(skel.maps.events);
  for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, () => ring.stop());

  print(`${"PID".padEnd(7)} ${"COMM".padEnd(16)} FLAGS    ${"RESULT".padStart(6)} PATH`);
  for await (const e of ring.records(openEvent)) {
    const result = e.ret >= 0 ? String(e.ret) : errnoName(-e.ret);
    const flags = e.flags.toString(8).padStart(8, "0");
    print(
      `${String(e.pid).padEnd(7)} ${e.comm.padEnd(16)} ${flags} ${result.padStart(6)} ${e.path}`,
    );
  }
} catch (error) {
  if (!(error instanceof Deno.errors.BrokenPipe)) { // `| head` ends the output: not an error
    console.error(`opensnoop: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
Deno.exit(0);
