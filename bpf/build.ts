/**
 * Builds the BPF objects and their TypeScript modules, with the same
 * generator as `deno task gen` (lib/skeleton.ts): each module embeds its
 * object and exports typed `open()`, record layouts and settings. It builds
 * the unlink tool's objects in bpf/ and the examples' in examples/.
 *
 *   deno task build:bpf            # rebuild bpf/ and examples/ *.bpf.o and *_bpf.ts
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

const root = new URL("..", import.meta.url).pathname;

/**
 * What is built, by folder: the project's own tools import the generator's
 * runtime directly (mod.ts imports them); the examples import the library
 * as any user's tool does.
 */
const SETS = [
  { dir: "bpf", tools: ["unlink", "printk"], import: "../lib/skeleton.ts" },
  {
    dir: "examples",
    tools: ["opensnoop", "opencount", "execsnoop", "readline"],
    import: "../mod.ts",
  },
] as const;

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

/** Compiles every tool into `outDir/<folder>/`; returns the files written, relative to it. */
async function build(outDir: string): Promise<string[]> {
  const written: string[] = [];
  for (const set of SETS) {
    const src = `${root}${set.dir}`;
    await Deno.mkdir(`${outDir}/${set.dir}`, { recursive: true });
    for (const tool of set.tools) {
      const obj = `${outDir}/${set.dir}/${tool}.bpf.o`;
      await run("clang", [
        "-O2",
        "-g",
        "-target",
        "bpf",
        `-fdebug-prefix-map=${src}/=.`,
        `-fdebug-prefix-map=${src}=.`,
        ...archFlags(),
        "-c",
        `${tool}.bpf.c`,
        "-o",
        obj,
      ], src);
      await run("llvm-strip", ["-g", obj], src);
      const module = generateSkeleton(await Deno.readFile(obj), {
        name: tool,
        import: set.import,
        source: `${set.dir}/${tool}.bpf.c`,
        command: "deno task build:bpf",
      });
      await Deno.writeTextFile(`${outDir}/${set.dir}/${tool}_bpf.ts`, module);
      written.push(`${set.dir}/${tool}.bpf.o`, `${set.dir}/${tool}_bpf.ts`);
    }
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
    for (const f of await build(root)) console.log(`wrote ${f}`);
    return 0;
  }
  const tmp = await Deno.makeTempDir({ prefix: "deno_bpf_build_" });
  try {
    const stale: string[] = [];
    for (const name of await build(tmp)) {
      const fresh = await Deno.readFile(`${tmp}/${name}`);
      const committed = await Deno.readFile(`${root}${name}`).catch(() => undefined);
      if (
        !committed || fresh.length !== committed.length || fresh.some((b, i) => b !== committed[i])
      ) {
        stale.push(name);
      }
    }
    if (stale.length) {
      console.error(
        `Stale generated files: ${stale.join(", ")}; run \`deno task build:bpf\` and commit them`,
      );
      return 1;
    }
    const tools = SETS.flatMap((set) => set.tools.map((tool) => `${set.dir}/${tool}`));
    console.log(`committed objects match a fresh build (${tools.join(", ")})`);
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
