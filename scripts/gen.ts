#!/usr/bin/env -S deno run --allow-read --allow-write
/**
 * Generates a typed TypeScript module (a "skeleton") for a compiled BPF
 * object, as `bpftool gen skeleton` does for C and `bpf2go` for Go.
 *
 *   deno run --allow-read --allow-write /opt/deno_bpf/scripts/gen.ts probe.bpf.o probe_bpf.ts
 *   deno run --allow-import=HOST --allow-read --allow-write https://HOST/.../scripts/gen.ts probe.bpf.o probe_bpf.ts
 *   deno task gen probe.bpf.o probe_bpf.ts      # inside the checkout only (it reads deno.json)
 *
 * Deno permissions: `--allow-read` (the object) and `--allow-write` (the
 * module). No FFI: the object's ELF and BTF are read in TypeScript.
 *
 * The module embeds the object, declares a `defineLayout` per struct marked
 * with `DENO_BPF_RECORD(struct name)` (bpf/deno_bpf.h), and exports `open()`
 * with typed programs, maps and `const volatile` settings.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { generateSkeleton } from "../lib/skeleton.ts";

const USAGE =
  `Usage: deno run --allow-read --allow-write PATH/scripts/gen.ts [options] OBJ.bpf.o OUT.ts
       (PATH a deno_bpf checkout or URL; in the checkout, deno task gen works too)

Writes OUT.ts: the object embedded, a typed layout per DENO_BPF_RECORD struct,
and open() with typed programs, maps and settings.

Options:
  --import SPEC   where OUT.ts imports deno_bpf from (a path relative to OUT.ts,
                  or a URL); default: this generator's own mod.ts
  --name NAME     names the exports (NAME_BPF_O, NameSkeleton); default: OBJ's
                  file name without .bpf.o
  --bigint        decode 64-bit record fields as bigint
  -h, --help      show this help`;

/**
 * Where the generated module imports deno_bpf from, by default: the `mod.ts`
 * of the checkout or URL this script was run from, relative to `out`.
 *
 * @example
 * ```ts
 * import { defaultImport } from "./gen.ts";
 *
 * defaultImport("/src/tool/probe_bpf.ts", "file:///opt/deno_bpf/scripts/gen.ts");
 * // "../../opt/deno_bpf/mod.ts"
 * defaultImport("probe_bpf.ts", "https://example.com/deno_bpf/scripts/gen.ts");
 * // "https://example.com/deno_bpf/mod.ts"
 * ```
 */
export function defaultImport(out: string, self: string = import.meta.url): string {
  const mod = new URL("../mod.ts", self);
  if (mod.protocol !== "file:") return mod.href;
  const path = relative(dirname(resolve(out)), fileURLToPath(mod));
  return path.startsWith(".") ? path : `./${path}`;
}

/**
 * The object's name, which names the generated exports.
 *
 * @example
 * ```ts
 * import { objectName } from "./gen.ts";
 *
 * objectName("build/probe.bpf.o"); // "probe"
 * ```
 */
export function objectName(obj: string): string {
  return obj.split("/").at(-1)!.replace(/(\.bpf)?\.o$/, "");
}

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        import: { type: "string" },
        name: { type: "string" },
        bigint: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    console.error(`gen: ${(error as Error).message.split("\n")[0]}; see --help`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 2) {
    console.error(
      `gen: needs OBJ.bpf.o and OUT.ts, got ${positionals.length} arguments; see --help`,
    );
    return 2;
  }
  const [obj, out] = positionals;
  const name = values.name ?? objectName(obj);
  const text = generateSkeleton(await Deno.readFile(obj), {
    name,
    import: values.import ?? defaultImport(out),
    source: obj.split("/").at(-1),
    command: "deno task gen",
    bigint: values.bigint,
  });
  await Deno.writeTextFile(out, text);
  console.error(`wrote ${out}`);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error((error instanceof Error ? error.message : String(error)).split("\n")[0]);
    Deno.exit(1);
  }
}
