/**
 * The skeleton generator on a small tool written the way a user would
 * (tests/fixtures/sample.bpf.c): compiled with clang at test time, generated
 * with scripts/gen.ts under its documented permissions, type-checked, opened.
 */

import assert from "node:assert/strict";
import { ROOT } from "./_helpers.ts";
import { kernelTest } from "./_helpers.ts";
import { BpfObject, LayoutMismatchError, RingBuffer } from "../mod.ts";
import { type AnyLayout, defineLayout, layoutFromBtf } from "../lib/layout.ts";
import { describeObject, openSkeleton, type Skeleton } from "../lib/skeleton.ts";
import { defaultImport } from "../scripts/gen.ts";

const hasClang = (() => {
  try {
    return new Deno.Command("clang", { args: ["--version"], stdout: "null" }).outputSync().success;
  } catch {
    return false;
  }
})();
const CI = Deno.env.get("CI") === "true";
const ignore = !hasClang && !CI;
if (ignore) console.log("skipping the skeleton tests: they need clang");

const text = new TextDecoder();
const SKELETON_URL = new URL("../lib/skeleton.ts", import.meta.url).href;

async function run(cmd: string, args: string[], cwd?: string) {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const [stdout, stderr] = [text.decode(out.stdout), text.decode(out.stderr)];
  return { ok: out.success, code: out.code, stdout, stderr };
}

/** Compiles the sample once per test run; returns its directory and object path. */
const sample = (() => {
  let built: Promise<{ dir: string; obj: string }> | undefined;
  return () =>
    built ??= (async () => {
      const dir = await Deno.makeTempDir({ prefix: "deno_bpf_skeleton_" });
      globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
      const obj = `${dir}/sample.bpf.o`;
      const r = await run("clang", [
        "-O2",
        "-g",
        "-target",
        "bpf",
        `-I/usr/include/${Deno.build.arch}-linux-gnu`,
        `-I${ROOT}bpf`,
        "-c",
        `${ROOT}tests/fixtures/sample.bpf.c`,
        "-o",
        obj,
      ]);
      assert.ok(r.ok, r.stderr);
      return { dir, obj };
    })();
})();

/** Runs scripts/gen.ts with exactly the permissions it documents. */
async function gen(obj: string, out: string, ...flags: string[]) {
  return await run(Deno.execPath(), [
    "run",
    "--allow-read",
    "--allow-write",
    `${ROOT}scripts/gen.ts`,
    ...flags,
    obj,
    out,
  ]);
}

/** What the tests use of a generated module, which they import at run time. */
interface SampleModule {
  open(): Skeleton<
    { targ_pid: number; verbose: boolean; prefix: string },
    "on_getpid" | "on_getppid",
    "counter" | "events"
  >;
  sampleEvent: AnyLayout;
  pathEvent: AnyLayout;
  SAMPLE_BPF_O: Uint8Array;
}

const generated = (() => {
  let made: Promise<{ dir: string; module: string }> | undefined;
  return () =>
    made ??= (async () => {
      const { dir, obj } = await sample();
      const module = `${dir}/sample_bpf.ts`;
      const r = await gen(obj, module, "--import", SKELETON_URL);
      assert.ok(r.ok, r.stderr);
      assert.match(r.stderr, /wrote .*sample_bpf\.ts/);
      return { dir, module };
    })();
})();

function test(name: string, fn: () => Promise<void> | void) {
  Deno.test({ name, ignore, fn });
}

test("describeObject reads a sample's programs, maps, settings and records with no libbpf", async () => {
  const info = describeObject(await Deno.readFile((await sample()).obj));
  assert.deepEqual(info.programs, [
    { name: "on_getpid", section: "tracepoint/syscalls/sys_enter_getpid" },
    { name: "on_getppid", section: "tracepoint/syscalls/sys_enter_getppid" },
  ]);
  assert.deepEqual(info.maps, ["counter", "events"]);
  assert.deepEqual(
    info.settings.map((s) => [s.name, s.tsType]),
    [
      ["targ_pid", "number"],
      ["verbose", "boolean"],
      ["min_ns", "number | bigint"],
      ["offset_s", "number"],
      ["prefix", "string"],
    ],
  );
  assert.deepEqual(info.records, ["sample_event", "path_event"]);
  // Variable offsets come from the ELF symbols, as libbpf places them.
  assert.deepEqual(
    info.btf.datasec(".rodata")?.map((v) => [v.name, v.offset, v.size]),
    [["targ_pid", 0, 4], ["verbose", 4, 1], ["min_ns", 8, 8], ["offset_s", 16, 4], [
      "prefix",
      20,
      8,
    ]],
  );
});

test("layoutFromBtf reads nested structs, arrays and a tail alike from the file and from libbpf", async () => {
  const bytes = await Deno.readFile((await sample()).obj);
  using obj = BpfObject.openMem(bytes, "sample");
  const file = describeObject(bytes).btf;
  for (const name of ["sample_event", "path_event"]) {
    const a = layoutFromBtf(file, name);
    const b = layoutFromBtf(obj.btf, name);
    // Nested layouts hold their own decoders: compare what they declare.
    assert.equal(JSON.stringify(b.fields), JSON.stringify(a.fields));
    assert.deepEqual(b.tail, a.tail);
  }
  const ev = layoutFromBtf(obj.btf, "struct sample_event");
  assert.equal(ev.size, 72);
  const { span, ...rest } = ev.fields;
  assert.deepEqual(rest, {
    ts_ns: ["u64", 0],
    value: ["i64", 8],
    counts: ["u32[4]", 32],
    cpu: ["u16", 48],
    kind: ["u8", 50],
    addr: ["u8[5]", 51],
    comm: ["char[16]", 56],
  });
  assert.equal(span[1], 16);
  assert.ok(typeof span[0] === "object");
  assert.deepEqual(span[0].fields, {
    start_ns: ["u64", 0],
    delta: ["i32", 8],
    flags: ["u32", 12],
  });
  const path = layoutFromBtf(obj.btf, "path_event");
  assert.deepEqual(path.tail, { length: "path_len", as: "path" });
  const record = { ts_ns: 1, value: -2, span: { start_ns: 3, delta: -4, flags: 5 } };
  const full = {
    ...record,
    counts: [1, 2, 3, 4],
    cpu: 1,
    kind: 2,
    addr: new Uint8Array([1, 2, 3, 4, 5]),
    comm: "x",
  };
  assert.deepEqual(ev.decode(ev.encode(full)), full);
});

test("layoutFromBtf refuses bitfields and unions, naming the field", async () => {
  const btf = describeObject(await Deno.readFile((await sample()).obj)).btf;
  assert.throws(
    () => layoutFromBtf(btf, "refused_bits"),
    /struct refused_bits: field "flag" is a bitfield, which layouts cannot express/,
  );
  assert.throws(
    () => layoutFromBtf(btf, "refused_union"),
    /struct refused_union: field "v" is a union \(union \(anonymous\)\), which layouts cannot express/,
  );
});

test("gen.ts writes a module that type-checks, where a wrong setting is a type error", async () => {
  const { dir, module } = await generated();
  const source = await Deno.readTextFile(module);
  assert.match(source, /^\/\/ Generated by `deno task gen` from sample\.bpf\.o\. Do not edit\./);
  assert.match(source, /const SAMPLE_EVENT_FIELDS = \{\n {2}ts_ns: \["u64", 0\],/);
  assert.match(source, /export const pathEvent: Layout<[^]*> = defineLayout\(/);
  const usage = `${dir}/usage.ts`;
  await Deno.writeTextFile(
    usage,
    `import { open, type PathEvent, type SampleEvent } from "./sample_bpf.ts";

const skel = open();
skel.setConsts({ targ_pid: 1, verbose: true, prefix: "ab", min_ns: 5n, offset_s: -1 });
// @ts-expect-error: there is no setting "targ_pidd"
skel.setConsts({ targ_pidd: 1 });
// @ts-expect-error: targ_pid is a number
skel.setConsts({ targ_pid: "1" });
// @ts-expect-error: verbose is a boolean
skel.setConsts({ verbose: 1 });
skel.programs.on_getpid.autoload = false;
// @ts-expect-error: there is no program "on_getpidd"
skel.programs.on_getpidd;
skel.maps.events.fd;
// @ts-expect-error: there is no map "event"
skel.maps.event;
export function use(e: SampleEvent, p: PathEvent): [number, number, string, number[], string] {
  return [e.ts_ns, e.span.delta, e.comm, e.counts, p.path];
}
`,
  );
  const ok = await run(Deno.execPath(), ["check", "--quiet", module, usage], dir);
  assert.ok(ok.ok, ok.stderr);
  // Without the expect-error marks, the same misuse fails type checking.
  const wrong = `${dir}/wrong.ts`;
  await Deno.writeTextFile(
    wrong,
    `import { open } from "./sample_bpf.ts";\nopen().setConsts({ targ_pidd: 1 });\n`,
  );
  const bad = await run(Deno.execPath(), ["check", "--quiet", wrong], dir);
  assert.ok(!bad.ok);
  assert.match(bad.stderr, /TS2353|targ_pidd/);
});

test("the generated module opens its object, checks its layouts and decodes a tailed record", async () => {
  const { module } = await generated();
  const mod: SampleModule = await import(new URL(`file://${module}`).href);
  using skel = mod.open();
  assert.deepEqual(Object.keys(skel.programs), ["on_getpid", "on_getppid"]);
  assert.deepEqual(Object.keys(skel.maps), ["counter", "events"]);
  skel.setConsts({ targ_pid: 1234, verbose: true, prefix: "ab" });
  assert.throws(
    () => skel.setConsts({ nope: 1 } as unknown as { targ_pid: number }),
    /no global variable "nope"/,
  );
  // A record as the ring would hold it: 8 fixed bytes, then a tail that the
  // length field says is longer than the record.
  const ring = new Uint8Array(64).fill(0x21);
  const view = new DataView(ring.buffer);
  view.setUint32(32, 77, true);
  view.setUint32(36, 20, true);
  ring.set(new TextEncoder().encode("/tmp/sample-tail"), 40);
  assert.deepEqual(mod.pathEvent.decode(ring, 32, 24), {
    pid: 77,
    path_len: 20,
    path: "/tmp/sample-tail",
  });
  skel.close();
  assert.throws(() => skel.programs.on_getpid.name, /BpfObject is closed/);
  assert.throws(() => skel.setConsts({ targ_pid: 1 }), /Skeleton is closed/);
});

test("a record layout that no longer matches the object is refused at open", async () => {
  const { module } = await generated();
  const mod: SampleModule = await import(new URL(`file://${module}`).href);
  const stale = defineLayout("path_event", 8, { pid: ["u32", 0], path_len: ["u16", 4] }, {
    tail: { length: "path_len", as: "path" },
  });
  assert.throws(
    () => openSkeleton(mod.SAMPLE_BPF_O, "sample", { programs: [], maps: [], records: [stale] }),
    (e: unknown) =>
      e instanceof LayoutMismatchError &&
      /field "path_len" is 4 bytes in BTF, u16 \(2 bytes\) declared/.test(e.message),
  );
  const unmarked = defineLayout("not_marked", 4, { a: ["u32", 0] });
  assert.throws(
    () => openSkeleton(mod.SAMPLE_BPF_O, "sample", { programs: [], maps: [], records: [unmarked] }),
    /add DENO_BPF_RECORD\(struct not_marked\); to the C source/,
  );
});

Deno.test("gen.ts imports deno_bpf from beside itself by default: a relative path or a URL", () => {
  assert.equal(
    defaultImport("/work/tool/probe_bpf.ts", "file:///opt/deno_bpf/scripts/gen.ts"),
    "../../opt/deno_bpf/mod.ts",
  );
  assert.equal(
    defaultImport("/opt/deno_bpf/x_bpf.ts", "file:///opt/deno_bpf/scripts/gen.ts"),
    "./mod.ts",
  );
  assert.equal(
    defaultImport("probe_bpf.ts", "https://example.com/deno_bpf/v1/scripts/gen.ts"),
    "https://example.com/deno_bpf/v1/mod.ts",
  );
});

Deno.test("gen.ts refuses a bad flag or a missing argument in one line, with exit 2", async () => {
  for (
    const [args, message] of [
      [["--bogus", "a.bpf.o", "a.ts"], "gen: Unknown option '--bogus'"],
      [["a.bpf.o"], "gen: needs OBJ.bpf.o and OUT.ts, got 1 arguments; see --help"],
    ] as const
  ) {
    const r = await run(Deno.execPath(), ["run", "--allow-read", `${ROOT}scripts/gen.ts`, ...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^gen: [^\n]+; see --help\n$/);
    assert.ok(r.stderr.startsWith(message), r.stderr);
  }
});

kernelTest(
  "a generated skeleton loads, attaches and delivers tailed records through a ring buffer",
  async () => {
    if (ignore) return;
    const { module } = await generated();
    const mod: SampleModule = await import(new URL(`file://${module}`).href);
    using skel = mod.open();
    skel.setConsts({ targ_pid: Deno.pid });
    skel.programs.on_getppid.autoload = false;
    skel.load();
    skel.attach();
    assert.equal(skel.links.length, 1);
    using ring = new RingBuffer(skel.maps.events);
    const libc = Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } });
    try {
      for (let i = 0; i < 3; i++) libc.symbols.getpid();
    } finally {
      libc.close();
    }
    const seen: unknown[] = [];
    ring.drain((bytes, offset, length) => seen.push(mod.pathEvent.decode(bytes, offset, length)));
    // The runtime may call getpid too: at least our three calls, all alike.
    assert.ok(seen.length >= 3, `${seen.length} records`);
    const expected = { pid: Deno.pid, path_len: 20, path: "/tmp/sample-tail" };
    for (const e of seen) assert.deepEqual(e, expected);
  },
);
