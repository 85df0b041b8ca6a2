#!/usr/bin/env -S deno run -A
/**
 * The tutorial variant: fentry/fexit on do_unlinkat that bpf_printk a line
 * each, read back from the kernel's trace_pipe.
 *
 *   sudo deno run -A scripts/printk.ts      # Ctrl-C stops
 *
 * Each unlink shows an `enter` line (pid, filename) and an `exit` line (pid,
 * filename, ret). It needs a kernel where fentry loads (5.5+ with BTF, not
 * locked down); scripts/trace.ts is the tool that falls back when it does not.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { PRINTK_BPF_O } from "../bpf/printk_bpf.ts";
import {
  BpfError,
  BpfObject,
  ensureTracefs,
  type Link,
  logToStderr,
  setLogHandler,
} from "../mod.ts";

/** Marks this tool's lines in trace_pipe; the same string as bpf/printk.h. */
export const MARKER = "deno_bpf-unlink:";

const USAGE = `Usage: sudo deno run -A scripts/printk.ts [options]

Loads fentry/fexit probes on do_unlinkat that write with bpf_printk, and
prints their lines from trace_pipe. Ctrl-C detaches and exits.

Options:
  -v, --verbose   show libbpf's log
  -h, --help      show this help`;

function status(line: string) {
  Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
}

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
    status(`printk: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  setLogHandler(values.verbose ? logToStderr : undefined);
  let probes;
  let pipe: Deno.FsFile;
  try {
    const tracing = ensureTracefs();
    probes = attachPrintk();
    pipe = await Deno.open(`${tracing}/trace_pipe`);
  } catch (error) {
    probes?.close();
    status(
      `printk: ${
        error instanceof Error ? error.message.replace(/; try --mode auto.*$/, "") : error
      }`,
    );
    return 1;
  }
  status(`attached via fentry; reading trace_pipe (Ctrl-C stops)`);

  let lines = 0;
  const stop = () => {
    // Detach first; a read of trace_pipe may block forever, so exit rather
    // than wait for it.
    probes.close();
    status(`${lines} lines`);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);

  let rest = "";
  const encoder = new TextEncoder();
  for await (const chunk of pipe.readable.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop()!;
    const ours = parts.filter((line) => line.includes(MARKER));
    if (ours.length === 0) continue;
    lines += ours.length;
    Deno.stdout.writeSync(encoder.encode(ours.map((l) => l.trim()).join("\n") + "\n"));
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
