// Copyright the deno_bpf authors. MIT license.
/**
 * Runs a command under one of the pinned Debian kernels in qemu (needs root,
 * qemu and busybox-static; see tests/vm/fetch.ts for the kernels):
 *
 * ```sh
 * deno run -A tests/vm/vm.ts --kernel 6.1 -- uname -r
 * deno run -A tests/vm/vm.ts --kernel arm64-6.1 --prepare   # only fetch and cache
 * ```
 *
 * It prints the command's output and exits with its status.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { assertKernel, KERNELS, prepareKernel } from "./fetch.ts";
import { runInVm } from "./qemu.ts";

const USAGE = `Usage: deno run -A tests/vm/vm.ts [--kernel NAME] [--timeout SECONDS]
       [--env KEY=VALUE]... [--verbose] [--prepare] -- COMMAND [ARG...]
Kernels: ${Object.keys(KERNELS).join(", ")} (default 6.1).
Cache: $DENO_BPF_VM_CACHE or \${XDG_CACHE_HOME:-$HOME/.cache}/deno_bpf/vm`;

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      kernel: { type: "string", default: "6.1" },
      timeout: { type: "string", default: "600" },
      env: { type: "string", multiple: true, default: [] },
      prepare: { type: "boolean", default: false },
      verbose: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  try {
    const kernel = assertKernel(values.kernel);
    if (values.help || (!values.prepare && positionals.length === 0)) {
      console.log(USAGE);
      Deno.exit(values.help ? 0 : 2);
    }
    if (values.prepare) {
      console.log(await prepareKernel(kernel));
      Deno.exit(0);
    }
    const env = Object.fromEntries(values.env.map((pair) => {
      const at = pair.indexOf("=");
      if (at <= 0) throw new TypeError(`--env expects KEY=VALUE, got "${pair}"`);
      return [pair.slice(0, at), pair.slice(at + 1)];
    }));
    const encoder = new TextEncoder();
    const write = (stream: typeof Deno.stdout) => (text: string) =>
      stream.writeSync(encoder.encode(text));
    const result = await runInVm(kernel, positionals, {
      timeoutMs: Number(values.timeout) * 1000,
      env,
      onOutput: values.verbose ? undefined : write(Deno.stdout),
      onConsole: values.verbose ? write(Deno.stderr) : undefined,
    });
    if (values.verbose) {
      console.error(`vm: ${result.release}: boot ${result.bootMs} ms, total ${result.totalMs} ms`);
    }
    Deno.exit(result.code);
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
