/**
 * Builds the examples' BPF objects and the modules that embed them, so that
 * running an example needs no compiler:
 *
 *   deno run --allow-read --allow-write --allow-run examples/build.ts           # rebuild
 *   deno run --allow-read --allow-write --allow-run examples/build.ts --check   # fail if stale
 *
 * For each tool: clang compiles `examples/<tool>.bpf.c` to
 * `examples/<tool>.bpf.o` (CO-RE, BTF kept, DWARF stripped, paths mapped
 * away, so any checkout gives the same bytes), then `deno task gen` writes
 * its skeleton `examples/<tool>_bpf.ts`: the object embedded, the record
 * layouts, and a typed `open()`. Needs clang and llvm-strip (Debian:
 * apt-get install clang llvm libbpf-dev).
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The examples, by file stem. */
export const TOOLS = ["opensnoop", "opencount", "execsnoop", "readline"] as const;

const here = new URL(".", import.meta.url).pathname;

async function run(cmd: string, args: string[]): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd: here, stderr: "piped" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`${cmd} is not installed: apt-get install clang llvm libbpf-dev`);
    }
    throw error;
  }
  if (!out.success) {
    throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** Builds every example's object and skeleton into `outDir`; returns the names of the files written. */
async function build(outDir: string): Promise<string[]> {
  const written: string[] = [];
  for (const tool of TOOLS) {
    const obj = `${outDir}/${tool}.bpf.o`;
    await run("clang", [
      "-O2",
      "-g",
      "-target",
      "bpf",
      `-fdebug-prefix-map=${here.replace(/\/$/, "")}=.`,
      "-D__TARGET_ARCH_x86", // bpf/kernel.h declares x86 registers: one object for every machine
      `-I/usr/include/${Deno.build.arch}-linux-gnu`,
      "-c",
      `${tool}.bpf.c`,
      "-o",
      obj,
    ]);
    await run("llvm-strip", ["-g", obj]);
    // The skeleton imports deno_bpf as the examples do, wherever it is written.
    await run(Deno.execPath(), [
      "run",
      "--allow-read",
      "--allow-write",
      "../scripts/gen.ts",
      "--import",
      "../mod.ts",
      obj,
      `${outDir}/${tool}_bpf.ts`,
    ]);
    written.push(`${tool}.bpf.o`, `${tool}_bpf.ts`);
  }
  return written;
}

const same = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { check: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(
      "Usage: deno run --allow-read --allow-write --allow-run examples/build.ts [--check]",
    );
    return 0;
  }
  if (!values.check) {
    for (const name of await build(here)) console.log(`wrote examples/${name}`);
    return 0;
  }
  const tmp = await Deno.makeTempDir({ prefix: "deno_bpf_examples_" });
  try {
    const stale: string[] = [];
    for (const name of await build(tmp)) {
      const committed = await Deno.readFile(`${here}${name}`).catch(() => new Uint8Array());
      if (!same(await Deno.readFile(`${tmp}/${name}`), committed)) stale.push(`examples/${name}`);
    }
    if (stale.length) {
      console.error(
        `Stale generated files: ${stale.join(", ")}; run examples/build.ts and commit them`,
      );
      return 1;
    }
    console.log(`examples/: committed objects match a fresh build (${TOOLS.join(", ")})`);
    return 0;
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
