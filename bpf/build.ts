/**
 * Builds the BPF objects and their TypeScript modules, with the same
 * generator as `deno task gen` (lib/skeleton.ts): each module embeds its
 * object and exports typed `open()`, record layouts and settings.
 *
 *   deno task build:bpf            # rebuild bpf/*.bpf.o and bpf/*_bpf.ts
 *   deno task build:bpf --check    # rebuild in a temp dir; fail if the committed copies differ
 *
 * Needs clang and llvm-strip (Debian: apt-get install clang llvm libbpf-dev).
 * The build is reproducible: paths are mapped away and DWARF is stripped
 * (BTF stays), so the same source gives the same bytes in any checkout.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { generateSkeleton } from "../lib/skeleton.ts";

const TOOLS = ["unlink", "printk"] as const;
const here = new URL(".", import.meta.url).pathname;

async function run(cmd: string, args: string[], cwd: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd, stderr: "piped" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        `${cmd} is not installed: apt-get install clang llvm libbpf-dev`,
      );
    }
    throw error;
  }
  if (!out.success) {
    const msg = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${msg}`);
  }
}

/**
 * One object serves x86_64 and arm64 (unlink.bpf.c carries a kprobe pair for
 * each), so the build names x86 for bpf_tracing.h on every build machine:
 * the same source gives the same bytes wherever it is built.
 */
function archFlags(): string[] {
  const triple = `${Deno.build.arch}-linux-gnu`;
  return ["-D__TARGET_ARCH_x86", `-I/usr/include/${triple}`];
}

/** Compiles every tool into `outDir`; returns the files written. */
async function build(outDir: string): Promise<string[]> {
  const written: string[] = [];
  for (const tool of TOOLS) {
    const obj = `${outDir}/${tool}.bpf.o`;
    await run("clang", [
      "-O2",
      "-g",
      "-target",
      "bpf",
      `-fdebug-prefix-map=${here}=.`,
      `-fdebug-prefix-map=${here.replace(/\/$/, "")}=.`,
      ...archFlags(),
      "-c",
      `${tool}.bpf.c`,
      "-o",
      obj,
    ], here);
    await run("llvm-strip", ["-g", obj], here);
    const ts = `${outDir}/${tool}_bpf.ts`;
    const module = generateSkeleton(await Deno.readFile(obj), {
      name: tool,
      import: "../lib/skeleton.ts",
      source: `bpf/${tool}.bpf.c`,
      command: "deno task build:bpf",
    });
    await Deno.writeTextFile(ts, module);
    written.push(obj, ts);
  }
  return written;
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { check: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log("Usage: deno task build:bpf [--check]");
    return 0;
  }
  if (!values.check) {
    for (const f of await build(here)) console.log(`wrote ${f.replace(here, "bpf/")}`);
    return 0;
  }
  const tmp = await Deno.makeTempDir({ prefix: "deno_bpf_build_" });
  try {
    const stale: string[] = [];
    for (const f of await build(tmp)) {
      const name = f.slice(tmp.length + 1);
      const fresh = await Deno.readFile(f);
      const committed = await Deno.readFile(`${here}${name}`).catch(() => undefined);
      if (
        !committed || fresh.length !== committed.length || fresh.some((b, i) => b !== committed[i])
      ) {
        stale.push(`bpf/${name}`);
      }
    }
    if (stale.length) {
      console.error(
        `Stale generated files: ${stale.join(", ")}; run \`deno task build:bpf\` and commit them`,
      );
      return 1;
    }
    console.log(`bpf/: committed objects match a fresh build (${TOOLS.join(", ")})`);
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
