/**
 * Skeletons: one generated TypeScript module per BPF object, in the spirit of
 * libbpf's `bpftool gen skeleton` and cilium/ebpf's `bpf2go`. The module
 * embeds the object's bytes, declares a typed layout for each record struct
 * marked with `DENO_BPF_RECORD(...)` (`bpf/deno_bpf.h`), and exports an
 * `open()` whose programs, maps and `const volatile` settings are typed by
 * name, so that a misspelt setting is a type error, not a run-time one.
 *
 * This module holds both halves: the generator ({@linkcode describeObject},
 * {@linkcode generateSkeleton}, pure: it reads the ELF and its BTF with no
 * native code), and what generated modules call at run time
 * ({@linkcode openSkeleton}, {@linkcode Skeleton}). Generated modules import
 * everything they use from one module, so this one re-exports
 * `defineLayout` and the handle types a skeleton hands out.
 *
 * @example Generate a module for an object (what `deno task gen` does)
 * ```ts
 * import { generateSkeleton } from "./skeleton.ts";
 *
 * export async function generate(name: string): Promise<void> {
 *   const bytes = await Deno.readFile(`bpf/${name}.bpf.o`);
 *   await Deno.writeTextFile(`bpf/${name}_bpf.ts`, generateSkeleton(bytes, { name }));
 * }
 * ```
 *
 * @module
 */

import { BtfData, type BtfShape, type BtfVar } from "./btf.ts";
import { type AnyLayout, checkLayout, defineLayout, type Layout, layoutFromBtf } from "./layout.ts";
import { BpfObject, type Link, type Program } from "./object.ts";
import type { BpfMap } from "./map.ts";

export { type BpfMap, type BpfObject, defineLayout, type Layout, type Link, type Program };

/** What a generated module tells {@linkcode openSkeleton}. */
export interface SkeletonSpec<P extends string, M extends string> {
  /** The programs, by their C function names. */
  programs: readonly P[];
  /** The maps declared in `SEC(".maps")`. */
  maps: readonly M[];
  /** The record layouts, checked against the object's BTF at open. */
  records: readonly AnyLayout[];
}

/** A setting's value: what `BpfObject.setConst` accepts. */
type SettingValue = number | bigint | boolean | string;

/**
 * An opened BPF object with typed handles: `programs` and `maps` by name,
 * and `setConsts` typed by the object's `const volatile` settings `S`. It
 * owns the object and the links {@linkcode attach} makes: `close()` (or
 * `using`) detaches them, then closes the object.
 *
 * @example Open a generated skeleton, configure, load, attach (needs root)
 * ```ts
 * import { open } from "../bpf/unlink_bpf.ts"; // written by `deno task gen`
 *
 * export function traceFailures(): void {
 *   using skel = open(); // a Skeleton<UnlinkSettings, UnlinkProgram, UnlinkMap>
 *   skel.setConsts({ targ_failed: true }); // a misspelt setting does not compile
 *   const others = ["fentry_unlink", "fexit_unlink", "kprobe_unlink", "kretprobe_unlink"] as const;
 *   for (const p of others) skel.programs[p].autoload = false; // syscall tracepoints only
 *   skel.load();
 *   skel.attach(); // closing the skeleton (at the end of this scope) detaches
 *   console.log(`${skel.links.length} links, ring buffer fd ${skel.maps.events.fd}`);
 * }
 * ```
 */
export class Skeleton<S extends object, P extends string, M extends string> implements Disposable {
  #object: BpfObject | null;
  #links: Link[] = [];
  #detach = new DisposableStack();
  /** The programs, by name: borrowed views, valid while the skeleton is open. */
  readonly programs: Readonly<Record<P, Program>>;
  /** The maps, by name: borrowed views, valid while the skeleton is open. */
  readonly maps: Readonly<Record<M, BpfMap>>;

  /** @internal Use a generated module's `open()`, or {@linkcode openSkeleton}. */
  constructor(object: BpfObject, spec: SkeletonSpec<P, M>) {
    this.#object = object;
    const programs = spec.programs.map((name) => [name, object.program(name)]);
    this.programs = Object.fromEntries(programs) as Record<P, Program>;
    const maps = spec.maps.map((name) => [name, object.map(name)]);
    this.maps = Object.fromEntries(maps) as Record<M, BpfMap>;
  }

  /** The underlying object, for what the typed handles do not cover. */
  get object(): BpfObject {
    if (this.#object === null) throw new TypeError("Skeleton is closed");
    return this.#object;
  }

  /** The links made by {@linkcode attach}, in attach order. */
  get links(): readonly Link[] {
    return this.#links;
  }

  /**
   * Sets `const volatile` globals before {@linkcode load}: numbers (or
   * bigints for 64-bit ones), booleans, strings for `char` arrays.
   */
  setConsts(values: Partial<S>): void {
    for (const [name, value] of Object.entries(values)) {
      if (value !== undefined) this.object.setConst(name, value as SettingValue);
    }
  }

  /** Loads every program whose autoload is on, and creates the maps. */
  load(): void {
    this.object.load();
  }

  /**
   * Attaches every program whose autoload is on, by its section name, and
   * keeps the links (once: a second call is a TypeError). If one fails, the
   * ones attached by this call are detached again before the error
   * propagates.
   */
  attach(): void {
    if (this.#links.length) {
      throw new TypeError("Skeleton is already attached: close() detaches it");
    }
    using made = new DisposableStack(); // detaches what this call attached if one fails
    const links: Link[] = [];
    for (const program of this.object.programs) {
      if (program.autoload) links.push(made.use(program.attach()));
    }
    this.#detach = made.move();
    this.#links = links;
  }

  /** Detaches every link (last first), then closes the object. Idempotent. */
  close(): void {
    if (this.#object === null) return;
    this.#detach.dispose();
    this.#links = [];
    this.#object.close();
    this.#object = null;
  }

  /** Same as {@linkcode close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens an embedded object as a {@linkcode Skeleton}: checks that every
 * named program and map exists and that every record layout matches the
 * object's BTF (a {@linkcode LayoutMismatchError} otherwise), closing the
 * object again on any failure. Generated modules call it from `open()`.
 *
 * @param bytes the object's ELF bytes
 * @param name the name libbpf gives the object (and its `.rodata` map)
 * @param spec the programs, maps and record layouts
 * @returns the open, not yet loaded skeleton
 *
 * @example
 * ```ts
 * import { openSkeleton } from "./skeleton.ts";
 * import { unlinkEvent } from "./unlink/tracer.ts";
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 *
 * using skel = openSkeleton<{ targ_tgid: number }, "tp_exit_unlink", "events">(
 *   UNLINK_BPF_O,
 *   "unlink",
 *   { programs: ["tp_exit_unlink"], maps: ["events"], records: [unlinkEvent] },
 * );
 * skel.setConsts({ targ_tgid: 1 });
 * ```
 */
export function openSkeleton<S extends object, P extends string, M extends string>(
  bytes: Uint8Array,
  name: string,
  spec: SkeletonSpec<P, M>,
): Skeleton<S, P, M> {
  const object = BpfObject.openMem(bytes, name);
  try {
    const btf = object.btf;
    for (const layout of spec.records) checkLayout(layout, btf.struct(layout.name));
    return new Skeleton<S, P, M>(object, spec);
  } catch (error) {
    object.close();
    throw error;
  }
}

// ---------------------------------------------------------------------------
// The generator: pure functions of the object's bytes.

/** A program of an object: its C function name and ELF section. */
export interface ObjectProgram {
  /** The C function name. */
  name: string;
  /** The ELF section, e.g. `"tracepoint/syscalls/sys_enter_getpid"`. */
  section: string;
}

/** A `const volatile` global of `.rodata`, and the TypeScript type it is set with. */
export interface ObjectSetting {
  /** The global's name. */
  name: string;
  /** Its C type. */
  shape: BtfShape;
  /** `"number"`, `"number | bigint"`, `"boolean"`, `"string"`, or undefined if `setConst` cannot set it. */
  tsType: string | undefined;
}

/** What the generator reads out of an object. */
export interface ObjectDescription {
  /** The object's BTF. */
  btf: BtfData;
  /** Its programs, in ELF order. */
  programs: ObjectProgram[];
  /** Its `SEC(".maps")` maps, in BTF order. */
  maps: string[];
  /** Its `const volatile` settings, in `.rodata` order. */
  settings: ObjectSetting[];
  /** The struct tags marked with `DENO_BPF_RECORD`, in marker order. */
  records: string[];
}

const SHT_SYMTAB = 2;
const SHF_EXECINSTR = 0x4;
const STT_OBJECT = 1;
const STT_FUNC = 2;
const STB_LOCAL = 0;
const STB_GLOBAL = 1;
const MARKER = "__deno_bpf_record_";

interface Section {
  name: string;
  type: number;
  flags: number;
  offset: number;
  size: number;
  link: number;
}

/** The sections of a little-endian ELF64 file (all BPF objects on x86_64 and arm64). */
function sections(bytes: Uint8Array): Section[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const elf = bytes.length >= 64 && v.getUint32(0) === 0x7f454c46;
  if (!elf || bytes[4] !== 2 || bytes[5] !== 1) {
    throw new TypeError("Not a little-endian 64-bit ELF file: is this a .bpf.o from clang?");
  }
  const shoff = Number(v.getBigUint64(0x28, true));
  const shentsize = v.getUint16(0x3a, true);
  const shnum = v.getUint16(0x3c, true);
  const shstrndx = v.getUint16(0x3e, true);
  if (shoff + shnum * shentsize > bytes.length) {
    throw new RangeError("Truncated ELF file: its section headers point past its end");
  }
  const raw = Array.from({ length: shnum }, (_, i) => {
    const at = shoff + i * shentsize;
    return {
      nameOff: v.getUint32(at, true),
      type: v.getUint32(at + 4, true),
      flags: Number(v.getBigUint64(at + 8, true)),
      offset: Number(v.getBigUint64(at + 24, true)),
      size: Number(v.getBigUint64(at + 32, true)),
      link: v.getUint32(at + 40, true),
    };
  });
  const names = raw[shstrndx];
  return raw.map((s) => ({ ...s, name: cString(bytes, names.offset + s.nameOff) }));
}

function cString(bytes: Uint8Array, at: number): string {
  const end = bytes.indexOf(0, at);
  return new TextDecoder().decode(bytes.subarray(at, end < 0 ? undefined : end));
}

interface ElfSymbol {
  name: string;
  type: number;
  bind: number;
  section: number;
  value: number;
}

function symbols(bytes: Uint8Array, all: Section[]): ElfSymbol[] {
  const symtab = all.find((s) => s.type === SHT_SYMTAB);
  if (!symtab) return [];
  const strtab = all[symtab.link];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ElfSymbol[] = [];
  for (let at = symtab.offset; at + 24 <= symtab.offset + symtab.size; at += 24) {
    const info = v.getUint8(at + 4);
    out.push({
      name: cString(bytes, strtab.offset + v.getUint32(at, true)),
      type: info & 0xf,
      bind: info >> 4,
      section: v.getUint16(at + 6, true),
      value: Number(v.getBigUint64(at + 8, true)),
    });
  }
  return out;
}

/** The TypeScript type `setConst` takes for a setting of this shape, if any. */
function settingType(shape: BtfShape): string | undefined {
  if (shape.kind === "int") {
    if (shape.bool) return "boolean";
    return shape.size === 8 ? "number | bigint" : "number";
  }
  if (shape.kind === "array" && shape.element.kind === "int" && shape.element.size === 1) {
    return "string";
  }
  return undefined;
}

/**
 * Reads what a skeleton needs out of a compiled BPF object, with no native
 * code: its programs (global functions outside `.text`), its `.maps`, its
 * `const volatile` settings and its `DENO_BPF_RECORD` record structs.
 *
 * @param bytes the `.bpf.o` file's bytes
 * @returns the object's description
 *
 * @example
 * ```ts
 * import { describeObject } from "./skeleton.ts";
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 *
 * const unlink = describeObject(UNLINK_BPF_O);
 * console.log(unlink.maps); // ["events", "starts", "lost"]
 * ```
 */
export function describeObject(bytes: Uint8Array): ObjectDescription {
  const all = sections(bytes);
  const btfSection = all.find((s) => s.name === ".BTF");
  if (!btfSection) {
    throw new TypeError("The object has no .BTF section: compile it with clang -g");
  }
  const syms = symbols(bytes, all);
  const offsets = new Map(
    syms.filter((s) => s.type === STT_OBJECT).map((s) => [s.name, s.value] as const),
  );
  const btf = new BtfData(
    bytes.subarray(btfSection.offset, btfSection.offset + btfSection.size),
    offsets,
  );
  const programs = syms
    .filter((s) =>
      s.type === STT_FUNC && (s.bind === STB_GLOBAL || s.bind === STB_LOCAL) &&
      all[s.section] && (all[s.section].flags & SHF_EXECINSTR) !== 0 &&
      all[s.section].name !== ".text"
    )
    .map((s) => ({ name: s.name, section: all[s.section].name }));
  const maps = (btf.datasec(".maps") ?? []).map((v) => v.name);
  const settings = (btf.datasec(".rodata") ?? [])
    .filter((v) => v.volatile)
    .map((v) => ({ name: v.name, shape: v.shape, tsType: settingType(v.shape) }));
  const markers: BtfVar[] = [".bss", ".data", ".rodata"]
    .flatMap((sec) => btf.datasec(sec) ?? [])
    .filter((v) => v.name.startsWith(MARKER));
  const records = markers.map((v) => {
    const to = v.shape.kind === "pointer" ? v.shape.to : "";
    const tag = /^struct (\w+)$/.exec(to)?.[1];
    if (!tag) {
      throw new TypeError(
        `DENO_BPF_RECORD(${to || "?"}) does not name a struct with a tag: ` +
          `mark a named struct, e.g. DENO_BPF_RECORD(struct event)`,
      );
    }
    return tag;
  });
  return { btf, programs, maps, settings, records: [...new Set(records)] };
}

/** Options for {@linkcode generateSkeleton}. */
export interface GenerateOptions {
  /** The object's name, e.g. `"probe"` for `probe.bpf.o`: names the exports. */
  name: string;
  /**
   * The module the generated code imports deno_bpf from: a path relative to
   * the generated file, or a URL. Default `"../mod.ts"`.
   */
  import?: string;
  /** What the first line says the module was generated from. Default `<name>.bpf.o`. */
  source?: string;
  /** The command that regenerates it, for the first line. Default `deno task gen`. */
  command?: string;
  /** Decode 64-bit record fields as `bigint`. Default false. */
  bigint?: boolean;
}

/** `sample_event` → `SampleEvent`. */
function pascal(name: string): string {
  return name.split(/[^A-Za-z0-9]+/).filter(Boolean)
    .map((w) => w[0].toUpperCase() + w.slice(1)).join("");
}

/** `sample_event` → `sampleEvent`. */
function camel(name: string): string {
  const p = pascal(name);
  return p[0].toLowerCase() + p.slice(1);
}

/**
 * Emits the nested struct layouts of `layout`, innermost first, each as a
 * const named after its tag (`struct span` → `spanLayout`), made unique.
 */
function nestedSource(layout: AnyLayout, names: Map<AnyLayout, string>, out: string[]): void {
  for (const [type] of Object.values(layout.fields)) {
    if (typeof type !== "object" || names.has(type)) continue;
    nestedSource(type, names, out);
    const name = `${camel(type.name || "anonymous")}Layout`;
    const taken = new Set(names.values());
    let unique = name;
    for (let i = 2; taken.has(unique); i++) unique = `${name}${i}`;
    names.set(type, unique);
    out.push(`/** \`struct ${type.name}\`, nested in \`struct ${layout.name}\`. */
const ${unique} = defineLayout(${JSON.stringify(type.name)}, ${type.size}, ${
      fieldsSource(type, names)
    });
`);
  }
}

function fieldsSource(layout: AnyLayout, names: Map<AnyLayout, string>): string {
  const lines = Object.entries(layout.fields).map(([field, [type, offset]]) =>
    `  ${field}: [${typeof type === "string" ? JSON.stringify(type) : names.get(type)}, ${offset}],`
  );
  return `{\n${lines.join("\n")}\n}`;
}

function tailSource(layout: AnyLayout): string {
  const t = layout.tail!;
  const parts = [`length: ${JSON.stringify(t.length)}`, `as: ${JSON.stringify(t.as)}`];
  if (t.type) parts.push(`type: ${JSON.stringify(t.type)}`);
  if (t.offset !== undefined) parts.push(`offset: ${t.offset}`);
  return `{ ${parts.join(", ")} }`;
}

function shapeComment(shape: BtfShape): string {
  switch (shape.kind) {
    case "int":
      return shape.name;
    case "array":
      return `${shapeComment(shape.element)}[${shape.count}]`;
    case "struct":
      return `struct ${shape.name}`;
    default:
      return shape.kind;
  }
}

/** `"a" | "b"`, one per line when that is long. */
function union(names: string[], indent: string): string {
  if (!names.length) return " never";
  const quoted = names.map((n) => JSON.stringify(n));
  const line = quoted.join(" | ");
  return line.length <= 60 ? ` ${line}` : quoted.map((q) => `\n${indent}  | ${q}`).join("");
}

/** `["a", "b"]`, one per line when that is long. */
function list(names: string[], indent: string): string {
  const quoted = names.map((n) => JSON.stringify(n));
  const line = `[${quoted.join(", ")}]`;
  if (line.length <= 70) return line;
  return `[\n${quoted.map((q) => `${indent}  ${q},\n`).join("")}${indent}]`;
}

/**
 * Writes the TypeScript module for a compiled BPF object: the object's bytes
 * (base64), a `defineLayout` per record struct, the types of its programs,
 * maps and settings, and `open()`. Pure: the same bytes and options give the
 * same text.
 *
 * @param bytes the `.bpf.o` file's bytes
 * @param options the name, the import path of deno_bpf, and how to say where it came from
 * @returns the module's source text
 *
 * @example
 * ```ts
 * import { generateSkeleton } from "./skeleton.ts";
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 *
 * const source = generateSkeleton(UNLINK_BPF_O, { name: "unlink", import: "../lib/skeleton.ts" });
 * console.log(source.includes("export function open(): UnlinkSkeleton")); // true
 * ```
 */
export function generateSkeleton(bytes: Uint8Array, options: GenerateOptions): string {
  const info = describeObject(bytes);
  const name = options.name;
  const type = pascal(name);
  const constant = `${name.replace(/[^A-Za-z0-9]+/g, "_").toUpperCase()}_BPF_O`;
  const source = options.source ?? `${name}.bpf.o`;
  const command = options.command ?? "deno task gen";
  const from = options.import ?? "../mod.ts";
  const out: string[] = [];
  const emit = (text: string) => out.push(text);

  // What the module uses, laid out as `deno fmt` would: on one line if it fits.
  const names = [
    ...(info.records.length ? ["defineLayout", "type Layout"] : []),
    "openSkeleton",
    "type Skeleton",
  ];
  const oneLine = `import { ${names.join(", ")} } from ${JSON.stringify(from)};`;
  emit(`// Generated by \`${command}\` from ${source}. Do not edit.

${
    oneLine.length <= 100
      ? oneLine
      : `import {\n${names.map((n) => `  ${n},`).join("\n")}\n} from ${JSON.stringify(from)};`
  }

/**
 * The compiled \`${name}.bpf.o\` (CO-RE, with BTF), embedded so that this
 * module needs no other file.
 */
export const ${constant}: Uint8Array<ArrayBuffer> = Uint8Array.fromBase64(
  \`
${bytes.toBase64().match(/.{1,76}/g)!.join("\n")}
\`.replaceAll("\\n", ""),
);
`);

  const layouts: string[] = [];
  const nested = new Map<AnyLayout, string>();
  for (const tag of info.records) {
    const layout = layoutFromBtf(info.btf, tag, { bigint: options.bigint });
    const value = camel(tag);
    const fields = `${tag.toUpperCase()}_FIELDS`;
    const tail = `${tag.toUpperCase()}_TAIL`;
    layouts.push(value);
    const inner: string[] = [];
    nestedSource(layout, nested, inner);
    inner.forEach(emit);
    emit(`/** The fields of \`struct ${tag}\`: C type and byte offset. */
export const ${fields} = ${fieldsSource(layout, nested)} as const;
`);
    if (layout.tail) {
      emit(`/** The variable-length tail after \`struct ${tag}\`. */
export const ${tail} = ${tailSource(layout)} as const;
`);
    }
    emit(
      `/** \`struct ${tag}\` (${layout.size} bytes), checked against the object's BTF by \`open()\`. */
export const ${value}: Layout<${
        layout.tail ? `\n  typeof ${fields},\n  typeof ${tail}\n` : `typeof ${fields}`
      }> = defineLayout(
  ${JSON.stringify(tag)},
  ${layout.size},
  ${fields},${layout.tail ? `\n  { tail: ${tail} },` : ""}
);

/** One decoded \`struct ${tag}\`. */
export type ${pascal(tag)} = ReturnType<typeof ${value}.decode>;
`,
    );
  }

  const settings = info.settings.map((s) =>
    s.tsType
      ? `  /** \`${shapeComment(s.shape)}\` */\n  ${s.name}: ${s.tsType};`
      : `  // ${s.name} (${shapeComment(s.shape)}): not settable with setConsts`
  );
  emit(`/** The \`const volatile\` settings of ${source}, set before \`load()\`. */
export ${
    settings.length
      ? `interface ${type}Settings {\n${settings.join("\n")}\n}`
      : `type ${type}Settings = Record<never, never>;`
  }

/** The programs of ${source}, by C function name. */
export type ${type}Program =${union(info.programs.map((p) => p.name), "")};

/** The maps of ${source}. */
export type ${type}Map =${union(info.maps, "")};

/** ${source}, opened: typed programs, maps and settings. */
export type ${type}Skeleton = Skeleton<${type}Settings, ${type}Program, ${type}Map>;

/**
 * Opens the embedded object (nothing is loaded yet) and checks its record
 * layouts against its BTF. Then: \`setConsts\`, \`load()\`, \`attach()\`.
 */
export function open(): ${type}Skeleton {
  return openSkeleton<${type}Settings, ${type}Program, ${type}Map>(
    ${constant},
    ${JSON.stringify(name)},
    {
      programs: ${list(info.programs.map((p) => p.name), "      ")},
      maps: ${list(info.maps, "      ")},
      records: [${layouts.join(", ")}],
    },
  );
}
`);
  return out.join("\n");
}
