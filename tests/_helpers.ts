/**
 * Shared test plumbing: kernel tests that skip with a reason outside CI and
 * fail inside it, a child process that unlinks on cue, scripts/trace.ts run
 * around it, and synthetic `struct unlink_event` records.
 *
 * @module
 */

import assert from "node:assert/strict";
import { unlinkEvent } from "../mod.ts";
import { cgroupIdOf, UNLINK_F_PATH_UNRESOLVED } from "../lib/unlink/mod.ts";

const CI = Deno.env.get("CI") === "true";
const root = decodeURIComponent(new URL("..", import.meta.url).pathname);

/** The repository root, with a trailing slash. */
export const ROOT = root;

/**
 * The attach mode kernel tests use: `DENO_BPF_TEST_MODE` (the VM suite runs
 * them once per rung of the fallback ladder), else `"auto"`.
 */
export const TEST_MODE = (Deno.env.get("DENO_BPF_TEST_MODE") ?? "auto") as
  | "auto"
  | "fentry"
  | "kprobe"
  | "tracepoint";

/** The method `auto` must pick on this kernel, where the caller knows it (the VM suite). */
export const AUTO_METHOD: string | undefined = Deno.env.get("DENO_BPF_EXPECT_METHOD");

/**
 * The method the tests must see: the forced mode, or in auto mode
 * `DENO_BPF_EXPECT_METHOD` where the caller knows the kernel (the VM suite
 * sets `fentry`). Undefined when any working method is acceptable.
 */
export const EXPECTED_METHOD: string | undefined = TEST_MODE === "auto" ? AUTO_METHOD : TEST_MODE;

/** Why kernel tests cannot run here, or undefined if they can. */
export function kernelSkipReason(): string | undefined {
  if (Deno.uid() !== 0) return "needs root";
  try {
    Deno.dlopen(Deno.env.get("LIBBPF_PATH") ?? "libbpf.so.1", {}).close();
  } catch {
    return "needs libbpf (apt-get install libbpf1)";
  }
  return undefined;
}

/**
 * A test that needs root and a BPF-capable kernel. Outside CI it is skipped
 * with the reason printed; with CI=true a would-be skip fails.
 */
export function kernelTest(
  name: string,
  fn: (t: Deno.TestContext) => Promise<void> | void,
): void {
  const reason = kernelSkipReason();
  if (reason && !CI) {
    console.log(`skipping "${name}": ${reason}`);
    Deno.test({ name, ignore: true, fn });
    return;
  }
  Deno.test({
    name,
    fn: reason ? () => Promise.reject(new Error(`cannot run in CI: ${reason}`)) : fn,
    sanitizeResources: false,
  });
}

/** What the child reports for each operation. */
export interface UnlinkResult {
  op: string;
  path: string;
  ret: number;
  errno: number;
}

/** A child that has started and waits for {@linkcode Unlinker.go}. */
export interface Unlinker {
  pid: number;
  /** Lets the child run its operations; resolves with their results. */
  go(): Promise<UnlinkResult[]>;
}

/** Where and how {@linkcode spawnUnlinker} starts the child. */
export interface UnlinkerOptions {
  /** The child's working directory. */
  cwd?: string;
  /**
   * A command that execs its trailing arguments (the child's command line)
   * in the same process, so the pid stays the child's: e.g.
   * `["unshare", "-m", "sh", "-c", 'mount ... && exec "$@"', "sh"]`.
   */
  wrap?: string[];
}

/** Starts `tests/_unlinker.ts` with `ops` (e.g. `"unlink:/tmp/x"`). */
export async function spawnUnlinker(
  ops: string[],
  options: UnlinkerOptions = {},
): Promise<Unlinker> {
  const argv = [Deno.execPath(), "run", "-A", `${root}tests/_unlinker.ts`, ...ops];
  const [program, ...args] = [...(options.wrap ?? []), ...argv];
  const child = new Deno.Command(program, {
    args,
    cwd: options.cwd,
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = await readUntil(lines, "ready\n");
  if (!text.includes("ready\n")) throw new Error("unlinker exited before it was ready");
  return {
    pid: child.pid,
    async go() {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      text = await readUntil(lines, undefined, text);
      await child.status;
      return JSON.parse(text.slice(text.indexOf("\n") + 1));
    },
  };
}

/**
 * Reads from `reader` until the text contains `marker`, or to the end of the
 * stream if there is no marker or it never comes. Returns `sofar` plus all it read.
 */
export async function readUntil(
  reader: ReadableStreamDefaultReader<string>,
  marker?: string,
  sofar = "",
): Promise<string> {
  let text = sofar;
  while (marker === undefined || !text.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  return text;
}

let forOthers: string | undefined;

/**
 * A copy of the checkout that any user can read, with a trailing slash, for
 * tests that run a script as nobody: a clone under /root (0700) is not
 * readable by others, and one under /tmp is. Always a copy, so the tests
 * behave the same from either. Made once per test file (with tar, .git
 * left out) and removed when the process ends.
 */
export function checkoutForOthers(): string {
  if (forOthers) return forOthers;
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_checkout_" });
  Deno.chmodSync(dir, 0o755);
  const copy = new Deno.Command("sh", {
    args: [
      "-c",
      'tar -C "$1" --exclude=./.git --exclude=./.cache -cf - . | tar -C "$2" -xf - && chmod -R a+rX "$2"',
      "sh",
      root,
      dir,
    ],
  }).outputSync();
  if (!copy.success) {
    throw new Error(`copying the checkout: ${new TextDecoder().decode(copy.stderr)}`);
  }
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  forOthers = `${dir}/`;
  return forOthers;
}

/** The resident memory (VmRSS) of process `pid`, in KiB. */
export function rssKiB(pid: number | "self" = "self"): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]);
}

/** A fresh temp dir holding the named empty files (and dirs, names ending in /). */
export function scratch(names: string[]): string {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_test_" });
  for (const name of names) {
    if (name.endsWith("/")) Deno.mkdirSync(`${dir}/${name}`);
    else Deno.writeTextFileSync(`${dir}/${name}`, "");
  }
  return dir;
}

/** A child ready to unlink `n` fresh files in a scratch dir, for loss tests. */
export async function spawnBurst(n: number): Promise<{ dir: string; child: Unlinker }> {
  const names = Array.from({ length: n }, (_, i) => `f${i}`);
  const dir = scratch(names);
  return { dir, child: await spawnUnlinker(names.map((f) => `unlink:${dir}/${f}`)) };
}

/** The BPF objects (links, programs, maps) this process holds fds for. */
export function bpfFds(): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      if (target.startsWith("anon_inode:bpf")) out.push(target);
    } catch { /* closed meanwhile */ }
  }
  return out;
}

/** How many fds this process has open. */
export function fdCount(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/** The fields of a synthetic `struct unlink_event`; any left out get plain values. */
export interface RecordFields {
  ts?: number;
  latency?: number;
  pid?: number;
  uid?: number;
  ret?: number;
  flags?: number;
  comm?: Uint8Array;
  filename?: Uint8Array;
  /** The path tail; without it the record says the path is unresolved. */
  path?: Uint8Array;
  argv?: Uint8Array;
  op?: number;
}

/**
 * One `struct unlink_event` and its path as bpf/unlink.bpf.c writes them, for
 * pure tests of decoding and formatting. As there, names are cut to leave
 * room for a NUL: comm to 15 bytes, filename to 255 (set `flags` to say it
 * was cut), argv to 256.
 */
export function unlinkRecord(fields: RecordFields = {}): Uint8Array {
  const F = unlinkEvent.fields;
  const path = fields.path ?? new Uint8Array(0);
  const bytes = new Uint8Array(unlinkEvent.size + path.length);
  const v = new DataView(bytes.buffer);
  const ts = fields.ts ?? 1_234_567_890_123;
  v.setUint32(F.ts_ns[1], ts % 2 ** 32, true);
  v.setUint32(F.ts_ns[1] + 4, Math.floor(ts / 2 ** 32), true);
  v.setUint32(F.latency_ns[1], fields.latency ?? 12_345, true);
  v.setUint32(F.tgid[1], fields.pid ?? 4242, true);
  v.setUint32(F.tid[1], (fields.pid ?? 4242) + 1, true);
  v.setUint32(F.uid[1], fields.uid ?? 0, true);
  v.setInt32(F.ret[1], fields.ret ?? 0, true);
  const unresolved = fields.path ? 0 : UNLINK_F_PATH_UNRESOLVED;
  v.setUint32(F.flags[1], (fields.flags ?? 0) | unresolved, true);
  v.setUint16(F.op[1], fields.op ?? 0, true);
  v.setInt32(F.dfd[1], -100, true);
  v.setUint32(F.ppid[1], 1, true);
  v.setUint32(F.auid[1], 0xffffffff, true);
  v.setUint32(F.mntns[1], 4026531841, true);
  v.setUint32(F.cgroup_id[1], 1, true);
  const text = new TextEncoder();
  bytes.set((fields.comm ?? text.encode("rm")).subarray(0, 15), F.comm[1]);
  bytes.set(text.encode("bash"), F.pcomm[1]);
  bytes.set((fields.filename ?? text.encode("/tmp/x")).subarray(0, 255), F.filename[1]);
  const argv = (fields.argv ?? text.encode("rm\0/tmp/x\0")).subarray(0, 256);
  bytes.set(argv, F.argv[1]);
  v.setUint16(F.argv_len[1], argv.length, true);
  v.setUint16(F.path_len[1], path.length, true);
  bytes.set(path, unlinkEvent.size);
  return bytes;
}

const compiled = new Map<string, Promise<Uint8Array>>();

/**
 * Compiles `tests/fixtures/<name>.bpf.c` with clang (BTF included, `bpf/`
 * on the include path) and returns the object's bytes, once per name.
 */
export function compileFixture(name: string): Promise<Uint8Array> {
  let bytes = compiled.get(name);
  if (!bytes) {
    bytes = (async () => {
      const out = Deno.makeTempFileSync({ suffix: ".bpf.o" });
      try {
        const cc = await new Deno.Command("clang", {
          args: [
            "-O2",
            "-g",
            "-target",
            "bpf",
            `-I/usr/include/${Deno.build.arch}-linux-gnu`,
            `-I${root}bpf`,
            "-c",
            `${root}tests/fixtures/${name}.bpf.c`,
            "-o",
            out,
          ],
          stderr: "piped",
        }).output();
        if (!cc.success) {
          throw new Error(`clang failed on ${name}.bpf.c:\n${new TextDecoder().decode(cc.stderr)}`);
        }
        return Deno.readFileSync(out);
      } finally {
        Deno.removeSync(out);
      }
    })();
    compiled.set(name, bytes);
  }
  return bytes;
}

/** Where a process runs, as the event's attribution fields report it, read from /proc. */
export interface Whereabouts {
  /** Its comm (its main thread's name). */
  comm: string;
  /** Its login uid (4294967295: unset). */
  auid: number;
  /** Its cgroup v2 path (null with no cgroup2 mount) and id (1, the root's, then). */
  cgroup: string | null;
  cgroupId: number;
  /** Its mount namespace's inode number. */
  mntns: number;
}

/** The attribution fields an event of process `pid` must carry. */
export function whereIs(pid: number): Whereabouts {
  const read = (name: string) => Deno.readTextFileSync(`/proc/${pid}/${name}`).trim();
  const v2 = read("cgroup").split("\n").find((l) => l.startsWith("0::"))?.slice(3);
  const mounted = v2 !== undefined && read("mountinfo").includes(" - cgroup2 ");
  return {
    comm: read("comm"),
    auid: Number(read("loginuid")),
    cgroup: mounted ? v2 : null,
    cgroupId: mounted ? Number(cgroupIdOf(v2)) : 1,
    mntns: Number(/\[(\d+)\]/.exec(Deno.readLinkSync(`/proc/${pid}/ns/mnt`))![1]),
  };
}

/** A file's device as events report it (`"major:minor"`), from its stat. */
export function devOf(st: Deno.FileInfo): string {
  const dev = st.dev;
  return `${(dev >>> 8) & 0xfff}:${(dev & 0xff) | ((dev >>> 12) & 0xfff00)}`;
}

/** What a finished subprocess printed, and how it ended. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno ...args` to completion with its output piped (and NO_COLOR). */
export async function runDeno(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/**
 * Runs TypeScript `source` as a script of its own in a fresh Deno with -A
 * (plus `flags`, such as `--v8-flags=--expose-gc`), with `args`; fails the
 * test if it fails, and returns its stdout parsed as JSON.
 */
export async function runSnippet(
  source: string,
  flags: string[] = [],
  args: string[] = [],
): Promise<unknown> {
  const file = Deno.makeTempFileSync({ suffix: ".ts" });
  Deno.writeTextFileSync(file, source);
  try {
    const out = await runDeno(["run", "-A", "--no-check", ...flags, file, ...args]);
    assert.equal(out.code, 0, out.stderr);
    return JSON.parse(out.stdout);
  } finally {
    Deno.removeSync(file);
  }
}
