#!/usr/bin/env -S deno run --allow-ffi --allow-env
/**
 * The tutorial variant: fentry/fexit on do_unlinkat that bpf_printk a line
 * each, read back from the kernel's trace_pipe.
 *
 *   sudo deno run --allow-ffi --allow-env scripts/printk.ts      # Ctrl-C stops
 *
 * Deno permissions: `--allow-ffi` (libbpf, and trace_pipe read through libc)
 * and `--allow-env` (LIBBPF_PATH). `-A` works too.
 *
 * Each unlink shows an `enter` line (pid, filename) and an `exit` line (pid,
 * filename, ret). It needs a kernel where fentry loads (5.5+ with BTF, not
 * locked down); scripts/trace.ts is the tool that falls back when it does not.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { errorLine, status, STOP_SIGNALS } from "./_cli.ts";
import { PRINTK_BPF_O } from "../bpf/printk_bpf.ts";
import {
  BpfError,
  BpfObject,
  ensureTracefs,
  type Link,
  logToStderr,
  setLogHandler,
  TracePipe,
} from "../mod.ts";

/** Marks this tool's lines in trace_pipe; the same string as bpf/printk.h. */
export const MARKER = "deno_bpf-unlink:";

const USAGE = `Usage: sudo deno run --allow-ffi --allow-env scripts/printk.ts [options]

Loads fentry/fexit probes on do_unlinkat that write with bpf_printk, and
prints their lines from trace_pipe. Ctrl-C detaches and exits.

Options:
  -v, --verbose   show libbpf's log
  -h, --help      show this help`;

/** How long one wait on trace_pipe lasts before checking for a stop, in ms. */
const POLL_MS = 200;

/** Loads and attaches the printk probes; the caller disposes the result. */
export function attachPrintk(): { obj: BpfObject; close(): void } {
  const obj = BpfObject.openMem(PRINTK_BPF_O, "printk");
  const links: Link[] = [];
  try {
    obj.load();
    for (const name of ["printk_enter", "printk_exit"]) links.push(obj.program(name).attach());
  } catch (error) {
    for (const link of links) link.close();
    obj.close();
    if (error instanceof BpfError) {
      const stage = error.operation.startsWith("load") ? "load refused" : "attach failed";
      throw new Error(
        `Cannot run the printk probes: fentry ${stage} (${error.code}) on this kernel; ` +
          `scripts/trace.ts falls back to kprobes or tracepoints`,
      );
    }
    throw error;
  }
  return {
    obj,
    close() {
      for (const link of links) link.close();
      obj.close();
    },
  };
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { verbose: { type: "boolean", short: "v" }, help: { type: "boolean", short: "h" } },
    }));
  } catch (error) {
    status(`printk: ${(error as Error).message}; see --help`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let probes;
  let pipe: TracePipe;
  try {
    setLogHandler(values.verbose ? logToStderr : undefined);
    const tracing = ensureTracefs();
    probes = attachPrintk();
    pipe = new TracePipe(tracing);
  } catch (error) {
    probes?.close();
    status(`printk: ${errorLine(error, "scripts/printk.ts").replace(/; try --mode auto.*$/, "")}`);
    return 1;
  }
  status(`attached via fentry; reading trace_pipe (Ctrl-C stops)`);

  let stopped = false;
  const stop = () => stopped = true;
  for (const signal of STOP_SIGNALS) Deno.addSignalListener(signal, stop);
  let lines = 0;
  let rest = "";
  const encoder = new TextEncoder();
  try {
    while (!stopped) {
      const chunk = await pipe.read(POLL_MS);
      if (chunk === null) break;
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      const ours = parts.filter((line) => line.includes(MARKER));
      if (ours.length === 0) continue;
      lines += ours.length;
      Deno.stdout.writeSync(encoder.encode(ours.map((l) => l.trim()).join("\n") + "\n"));
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
  } finally {
    for (const signal of STOP_SIGNALS) Deno.removeSignalListener(signal, stop);
    probes.close();
    pipe.close();
  }
  status(`${lines} lines`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
