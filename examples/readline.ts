#!/usr/bin/env -S deno run --allow-ffi --allow-env
/**
 * readline: the command lines typed into every interactive bash, from a
 * uretprobe on bash's `readline()` (bcc's bashreadline, in TypeScript).
 *
 *   sudo deno run --allow-ffi --allow-env examples/readline.ts [--binary /bin/bash]
 *
 * Deno permissions: `--allow-ffi` (libbpf, which also reads the binary's
 * symbols) and `--allow-env` (`LIBBPF_PATH`). Ctrl-C or SIGTERM stops.
 * The BPF program is examples/readline.bpf.c, with its record in
 * examples/readline.h; `deno task build:bpf` rebuilds it and its generated
 * skeleton, examples/readline_bpf.ts.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { RingBuffer } from "../mod.ts";
import { open, readlineEvent } from "./readline_bpf.ts";

const USAGE = `Usage: sudo deno run --allow-ffi --allow-env examples/readline.ts [options]

Prints each line that an interactive bash reads, with the shell's pid. Ctrl-C stops.

Options:
  -b, --binary PATH   the program whose readline() to probe (default /bin/bash)
  -h, --help          show this help`;

const encoder = new TextEncoder();
/** Writes a line to stdout; unlike console.log, throws BrokenPipe once the reader is gone. */
const print = (line: string) => Deno.stdout.writeSync(encoder.encode(line + "\n"));

let binary = "/bin/bash";
try {
  const { values } = parseArgs({
    args: Deno.args,
    options: { binary: { type: "string", short: "b" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  binary = values.binary ?? binary;
} catch (error) {
  // parseArgs explains a dash-led value over three lines; its first says what is wrong.
  console.error(`readline: ${(error as Error).message.split("\n")[0]}; see --help`);
  Deno.exit(2);
}

try {
  using skel = open(); // checks readlineEvent against the object's BTF
  // One program per architecture reads the return register; load only this machine's.
  const arm64 = Deno.build.arch === "aarch64";
  skel.programs.on_readline_return.autoload = !arm64;
  skel.programs.on_readline_return_arm64.autoload = arm64;
  skel.load();
  const program = arm64 ? skel.programs.on_readline_return_arm64 : skel.programs.on_readline_return;
  // The section is a bare SEC("uretprobe"): the target is chosen here, at run time.
  using _link = program.attachUprobe(binary, { symbol: "readline", retprobe: true });
  using ring = new RingBuffer(skel.maps.events);
  for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, () => ring.stop());

  print(`${"PID".padEnd(7)} LINE`);
  for await (const e of ring.records(readlineEvent)) print(`${String(e.pid).padEnd(7)} ${e.line}`);
} catch (error) {
  if (!(error instanceof Deno.errors.BrokenPipe)) { // `| head` ends the output: not an error
    console.error(`readline: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
Deno.exit(0);
