// Copyright the deno_bpf authors. MIT license.
/**
 * Kernel-in-a-VM harness: runs a command under one of Debian's kernels inside
 * qemu (software emulation, no KVM needed), with the host's root shared
 * read-only and the checkout shared writable at the same absolute path.
 *
 * The kernel is fetched with `apt-get download` (never installed) and cached,
 * together with a busybox initramfs, under
 * `${XDG_CACHE_HOME:-$HOME/.cache}/deno_bpf/vm/<kernel>` (or
 * `$DENO_BPF_VM_CACHE/<kernel>`), so fresh clones reuse it.
 *
 * As a command-line tool (needs root, qemu-system-x86 and busybox-static):
 *
 * ```sh
 * deno run -A tests/vm/vm.ts --kernel 6.1 -- uname -r
 * ```
 *
 * @example Run `uname -r` under Debian's 5.10 kernel (needs root)
 * ```ts ignore
 * import { runInVm } from "./vm.ts";
 *
 * const { code, output } = await runInVm("5.10", ["uname", "-r"]);
 * console.log(code, output); // 0 "5.10.0-…-amd64\n"
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { basename, dirname, join, resolve } from "node:path";

/** The Debian kernels the harness can boot, oldest first. */
export const KERNELS = ["5.10", "6.1", "6.12"] as const;

/** One of {@linkcode KERNELS}. */
export type Kernel = typeof KERNELS[number];

/** The Debian suite whose `linux-image-amd64` provides each kernel. */
export const KERNEL_SUITES: Readonly<Record<Kernel, string>> = {
  "5.10": "bullseye",
  "6.1": "bookworm",
  "6.12": "trixie",
};

/** Bumped whenever the cached files change shape; older caches are rebuilt. */
const CACHE_FORMAT = 1;

/** Modules the guest needs, beyond what they depend on. */
const REQUIRED_MODULES = ["virtio_pci", "9pnet_virtio", "9p"];
/** Modules loaded when the kernel ships them (entropy for early getrandom). */
const OPTIONAL_MODULES = ["virtio_rng"];

const QEMU = "qemu-system-x86_64";
const BUSYBOX = "/bin/busybox";
const DEFAULT_TIMEOUT_MS = 10 * 60_000;
const APT_TIMEOUT_MS = 5 * 60_000;
const CONSOLE_LIMIT = 4 << 20;
const TAIL_LINES = 40;
/** Carriage returns and the terminal resets SeaBIOS prints on the console. */
// deno-lint-ignore no-control-regex
const TERMINAL_CONTROL = /\r|\x1b(?:\[[0-9;?]*[A-Za-z]|c)/g;
// deno-lint-ignore no-control-regex
const COMPLETE_CONTROL = /^\x1b(?:\[[0-9;?]*[A-Za-z]|c)/;
const P9_OPTIONS = "trans=virtio,version=9p2000.L,msize=512000";

/** What {@linkcode prepareKernel} leaves in the cache. */
export interface KernelImage {
  /** The kernel series, e.g. `"6.1"`. */
  kernel: Kernel;
  /** The Debian suite it came from, e.g. `"bookworm"`. */
  suite: string;
  /** The Debian package, e.g. `"linux-image-6.1.0-56-amd64"`. */
  package: string;
  /** The package version, e.g. `"6.1.192-2"`. */
  version: string;
  /** What `uname -r` prints inside, e.g. `"6.1.0-56-amd64"`. */
  release: string;
  /** The cache folder holding the two files below. */
  dir: string;
  /** Path of the kernel image. */
  vmlinuz: string;
  /** Path of the gzipped newc initramfs. */
  initramfs: string;
  /** Modules the initramfs loads, in load order (built-in ones are absent). */
  modules: string[];
}

/** Options for {@linkcode prepareKernel}. */
export interface PrepareOptions {
  /** Cache root; default `$DENO_BPF_VM_CACHE` or `${XDG_CACHE_HOME:-$HOME/.cache}/deno_bpf/vm`. */
  cacheDir?: string;
  /** Download and rebuild even when a complete cache exists. */
  refresh?: boolean;
  /** Cancels the download; its reason is thrown. */
  signal?: AbortSignal;
}

/** Options for {@linkcode runInVm}. */
export interface RunOptions extends PrepareOptions {
  /**
   * Wall-clock limit for booting and running the command (a download has its
   * own limits); qemu is SIGKILLed past it. Default 10 min.
   */
  timeoutMs?: number;
  /** Extra environment for the command (on top of the harness's own). */
  env?: Record<string, string>;
  /** Host folder shared writable at the same path and used as cwd; default the repository root. */
  checkout?: string;
  /** Called with the command's output as it arrives. */
  onOutput?: (text: string) => void;
  /** Called with the guest's serial console as it arrives (kernel messages, harness markers). */
  onConsole?: (text: string) => void;
}

/** What {@linkcode runInVm} brings back. */
export interface RunResult {
  /** The command's exit status (128 + signal number when a signal ended it). */
  code: number;
  /** The command's stdout and stderr, interleaved as written. */
  output: string;
  /** The guest's serial console (kernel messages and harness markers). */
  console: string;
  /** Milliseconds from starting qemu until the guest was ready to run the command. */
  bootMs: number;
  /** Milliseconds from starting qemu until it exited. */
  totalMs: number;
  /** The kernel that ran, as `uname -r` prints it. */
  release: string;
}

/**
 * A VM that could not run the command, or did not finish it: the message's
 * first line says what happened, the lines after it show the tail of the
 * console and of the command's output.
 */
export class VmError extends Error {
  /** The guest's serial console up to the failure. */
  readonly console: string;
  /** The command's output up to the failure. */
  readonly output: string;

  /**
   * @param summary One line saying what went wrong.
   * @param console The console captured so far.
   * @param output The command's output captured so far.
   */
  constructor(summary: string, console = "", output = "") {
    super(summary + describeTails(console, output));
    this.name = "VmError";
    this.console = console;
    this.output = output;
  }
}

/**
 * The cache root: `$DENO_BPF_VM_CACHE`, else
 * `${XDG_CACHE_HOME:-$HOME/.cache}/deno_bpf/vm`.
 *
 * @returns An absolute path; it may not exist yet.
 */
export function vmCacheDir(): string {
  const explicit = Deno.env.get("DENO_BPF_VM_CACHE");
  if (explicit) return resolve(explicit);
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return resolve(xdg, "deno_bpf", "vm");
  const home = Deno.env.get("HOME");
  if (home) return resolve(home, ".cache", "deno_bpf", "vm");
  throw new Error(
    "Cannot choose a VM cache folder: set DENO_BPF_VM_CACHE, XDG_CACHE_HOME or HOME",
  );
}

/**
 * Checks that `kernel` is one of {@linkcode KERNELS}.
 *
 * @param kernel A kernel series such as `"6.1"`.
 * @returns The same string, typed.
 * @throws {RangeError} For anything else.
 */
export function assertKernel(kernel: string): Kernel {
  if ((KERNELS as readonly string[]).includes(kernel)) return kernel as Kernel;
  throw new RangeError(
    `Unknown kernel "${kernel}": expected one of ${KERNELS.join(", ")}`,
  );
}

/**
 * Downloads Debian's kernel for `kernel` and builds its initramfs, unless a
 * complete cache already exists. The cache is built in a temporary folder and
 * renamed into place, so an interrupted build is never used.
 *
 * @example Warm the cache (needs network access to Debian's mirror)
 * ```ts ignore
 * import { prepareKernel } from "./vm.ts";
 *
 * const image = await prepareKernel("6.12");
 * console.log(image.release, image.vmlinuz);
 * ```
 *
 * @param kernel One of {@linkcode KERNELS}.
 * @param options Cache location, refresh and cancellation.
 * @returns Where the kernel and initramfs are, and what they are.
 */
export async function prepareKernel(
  kernel: string,
  options: PrepareOptions = {},
): Promise<KernelImage> {
  const series = assertKernel(kernel);
  const root = options.cacheDir ? resolve(options.cacheDir) : vmCacheDir();
  const dir = join(root, series);
  if (!options.refresh) {
    const cached = await readCache(dir);
    if (cached) return cached;
  }
  await Deno.mkdir(root, { recursive: true });
  await removeStaleTemps(root);
  const temp = await Deno.makeTempDir({ dir: root, prefix: `.tmp-${series}-` });
  try {
    await buildCache(series, temp, options.signal);
    return await installCache(temp, dir, options.refresh ?? false);
  } finally {
    await Deno.remove(temp, { recursive: true }).catch(() => {});
  }
}

/**
 * Boots Debian's `kernel` in qemu and runs `command` in the host's root
 * (read-only) with the checkout (writable) as cwd. The command sees PATH,
 * `HOME=/root`, `DENO_DIR=/tmp/deno_dir` (tmpfs), `NO_COLOR=1`, `CI` (from the
 * host), `DENO_BPF_VM_KERNEL` and `DENO_BPF_VM_KERNEL_RELEASE`, plus
 * `options.env`.
 *
 * A non-zero exit of the command is returned in `code`, not thrown. A VM that
 * cannot boot, or does not finish within `options.timeoutMs` (qemu is then
 * killed), throws a {@linkcode VmError}.
 *
 * @example Check the kernel version inside (needs root)
 * ```ts ignore
 * import { runInVm } from "./vm.ts";
 *
 * const result = await runInVm("6.12", ["cat", "/proc/version"], {
 *   timeoutMs: 120_000,
 * });
 * if (result.code !== 0) throw new Error(result.output);
 * ```
 *
 * @param kernel One of {@linkcode KERNELS}.
 * @param command The program and its arguments, run without a shell.
 * @param options Time limit, environment, cancellation and live output.
 * @returns The exit status, output, console and timings.
 */
export async function runInVm(
  kernel: string,
  command: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const series = assertKernel(kernel);
  if (command.length === 0) throw new TypeError("The command is empty");
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) {
    throw new RangeError(`timeoutMs must be positive, got ${timeoutMs}`);
  }
  const checkout = resolve(options.checkout ?? repoRoot());
  const info = await Deno.stat(checkout).catch(() => undefined);
  if (!info?.isDirectory) {
    throw new VmError(`Cannot share ${checkout} with the VM: it is not a folder`);
  }
  const image = await prepareKernel(series, options);
  options.signal?.throwIfAborted();

  const env = guestEnv(image, options.env ?? {});
  const runDir = await Deno.makeTempDir({ prefix: "deno_bpf_vm_run_" });
  try {
    const nonce = crypto.randomUUID();
    await Deno.writeTextFile(
      join(runDir, "run.sh"),
      runScript({ checkout, command, env, nonce, timeoutMs }),
    );
    await Deno.writeFile(join(runDir, "output"), new Uint8Array());
    const plan = { checkout, runDir, nonce, timeoutMs, command };
    return await boot(image, plan, options);
  } finally {
    await Deno.remove(runDir, { recursive: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// Booting

interface BootPlan {
  checkout: string;
  runDir: string;
  nonce: string;
  timeoutMs: number;
  command: string[];
}

async function boot(
  image: KernelImage,
  plan: BootPlan,
  options: RunOptions,
): Promise<RunResult> {
  const { signal, onOutput, onConsole } = options;
  const label = `${image.kernel} (${image.release})`;
  const started = performance.now();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(QEMU, {
      args: qemuArgs(image, plan),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new VmError(
        `Cannot start ${QEMU}: not found (install Debian's qemu-system-x86 package)`,
      );
    }
    throw new VmError(`Cannot start ${QEMU}: ${errorText(error)}`);
  }

  let killedFor: "timeout" | "abort" | undefined;
  const kill = (why: "timeout" | "abort") => {
    if (killedFor) return;
    killedFor = why;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  };
  const timer = setTimeout(() => kill("timeout"), plan.timeoutMs);
  const onAbort = () => kill("abort");
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) kill("abort");

  const readyMarker = `DENO_BPF_VM_READY ${plan.nonce}`;
  let consoleText = "";
  let bootMs = -1;
  const consoleDone = (async () => {
    const decoder = new TextDecoder();
    const cleaner = new ConsoleCleaner();
    for await (const chunk of child.stdout) {
      const text = cleaner.clean(decoder.decode(chunk, { stream: true }));
      consoleText = (consoleText + text).slice(-CONSOLE_LIMIT);
      if (bootMs < 0 && consoleText.includes(readyMarker)) {
        bootMs = performance.now() - started;
      }
      onConsole?.(text);
    }
  })();
  const stderrDone = new Response(child.stderr).text();

  const outputPath = join(plan.runDir, "output");
  const tail = onOutput ? new FileTail(outputPath, onOutput) : undefined;
  const poller = tail ? setInterval(() => tail.poll(), 250) : undefined;

  let status: Deno.CommandStatus;
  let qemuStderr: string;
  try {
    status = await child.status;
    await consoleDone;
    qemuStderr = (await stderrDone).trim();
  } finally {
    clearTimeout(timer);
    if (poller !== undefined) clearInterval(poller);
    signal?.removeEventListener("abort", onAbort);
  }
  const totalMs = performance.now() - started;
  await tail?.poll();
  tail?.flush();

  const output = await readText(outputPath) ?? "";
  const fullConsole = qemuStderr
    ? `${consoleText}\n[${QEMU} stderr]\n${qemuStderr}\n`
    : consoleText;
  const seconds = (ms: number) => (ms / 1000).toFixed(1);
  if (killedFor === "abort") {
    throw signal?.reason ?? new DOMException("Aborted", "AbortError");
  }
  if (killedFor === "timeout") {
    throw new VmError(
      `VM ${label} did not finish "${plan.command.join(" ")}" within ${
        seconds(plan.timeoutMs)
      } s: qemu was killed`,
      fullConsole,
      output,
    );
  }
  const setupError = await readText(join(plan.runDir, "setup_error"));
  if (setupError !== undefined) {
    throw new VmError(
      `VM ${label} could not set up the guest: ${setupError.trim()}`,
      fullConsole,
    );
  }
  const code = await readExitCode(plan, consoleText);
  if (code === undefined) {
    throw new VmError(
      `VM ${label} stopped (qemu exit status ${status.code}) without reporting the command's exit status`,
      fullConsole,
      output,
    );
  }
  return {
    code,
    output,
    console: fullConsole,
    bootMs: Math.round(bootMs < 0 ? totalMs : bootMs),
    totalMs: Math.round(totalMs),
    release: image.release,
  };
}

async function readExitCode(
  plan: BootPlan,
  consoleText: string,
): Promise<number | undefined> {
  const fromFile = (await readText(join(plan.runDir, "status")))?.trim();
  if (fromFile && /^\d+$/.test(fromFile)) return Number(fromFile);
  const match = new RegExp(`DENO_BPF_VM_EXIT ${plan.nonce} (\\d+)`).exec(
    consoleText,
  );
  return match ? Number(match[1]) : undefined;
}

function qemuArgs(image: KernelImage, plan: BootPlan): string[] {
  const share = (path: string, tag: string, readonly: boolean) =>
    [
      "local",
      `path=${path.replaceAll(",", ",,")}`,
      `mount_tag=${tag}`,
      "security_model=none",
      "multidevs=remap",
      ...(readonly ? ["readonly=on"] : []),
    ].join(",");
  return [
    "-kernel",
    image.vmlinuz,
    "-initrd",
    image.initramfs,
    "-append",
    "console=ttyS0 quiet panic=-1",
    "-m",
    "2048",
    // One host thread runs both vCPUs. With multi-threaded TCG, a vCPU could
    // execute kernel text while the other patched it (kprobes, tracepoint
    // static keys), and guests crashed or hung right as probes attached.
    "-accel",
    "tcg,thread=single",
    "-smp",
    "2",
    "-cpu",
    "max",
    "-nographic",
    "-no-reboot",
    "-nic",
    "none",
    "-device",
    "virtio-rng-pci",
    "-virtfs",
    share("/", "hostroot", true),
    "-virtfs",
    share(plan.checkout, "checkout", false),
    "-virtfs",
    share(plan.runDir, "vmrun", false),
  ];
}

function guestEnv(
  image: KernelImage,
  extra: Record<string, string>,
): Record<string, string> {
  const standard = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  const denoDir = dirname(Deno.execPath());
  const env: Record<string, string> = {
    PATH: standard.split(":").includes(denoDir) ? standard : `${denoDir}:${standard}`,
    HOME: "/root",
    TMPDIR: "/tmp",
    LANG: "C.UTF-8",
    DENO_DIR: "/tmp/deno_dir",
    DENO_NO_UPDATE_CHECK: "1",
    NO_COLOR: "1",
  };
  const ci = Deno.env.get("CI");
  if (ci !== undefined) env.CI = ci;
  Object.assign(env, extra);
  env.DENO_BPF_VM_KERNEL = image.kernel;
  env.DENO_BPF_VM_KERNEL_RELEASE = image.release;
  for (const key of Object.keys(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new TypeError(`Invalid environment variable name "${key}"`);
    }
  }
  return env;
}

/** Shell-quotes one word for busybox sh. */
function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The per-run script the initramfs executes from the run share: mounts the
 * host root and the checkout, chroots and runs the command, and powers off
 * by itself shortly after the host's time limit.
 */
function runScript(
  { checkout, command, env, nonce, timeoutMs }: {
    checkout: string;
    command: string[];
    env: Record<string, string>;
    nonce: string;
    timeoutMs: number;
  },
): string {
  const host = "/host";
  // A backstop for a host that dies without killing qemu: the host's own
  // limit normally strikes first.
  const watchdog = Math.ceil(timeoutMs / 1000) + 30;
  const at = (path: string) => quote(host + path);
  const envWords = Object.entries(env).map(([k, v]) => quote(`${k}=${v}`));
  return `# Written by tests/vm/vm.ts for one run; executed by the initramfs.
fail() {
  echo "deno_bpf_vm: $*"
  echo "$*" > /vmrun/setup_error
  sync
  poweroff -f
}
warn() { echo "deno_bpf_vm: warning: $*"; }
(sleep ${watchdog}; echo "deno_bpf_vm: watchdog: ${watchdog} s passed, powering off"; poweroff -f) &
mkdir -p ${host}
mount -t 9p -o ${P9_OPTIONS},ro hostroot ${host} || fail "cannot mount the host root over 9p"
mount -t proc proc ${at("/proc")} || fail "cannot mount /proc"
mount -t sysfs sysfs ${at("/sys")} || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs ${at("/dev")} || fail "cannot mount /dev"
mkdir -p ${at("/dev/pts")} ${at("/dev/shm")}
mount -t devpts devpts ${at("/dev/pts")} || warn "cannot mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs ${at("/dev/shm")} || warn "cannot mount /dev/shm"
mount -t tmpfs -o mode=1777 tmpfs ${at("/tmp")} || fail "cannot mount tmpfs on /tmp"
mount -t tmpfs -o mode=0755 tmpfs ${at("/run")} || fail "cannot mount tmpfs on /run"
mount -t tmpfs -o mode=0700 tmpfs ${at("/root")} || fail "cannot mount tmpfs on /root"
mount -t tracefs tracefs ${at("/sys/kernel/tracing")} || warn "cannot mount tracefs"
mount -t debugfs debugfs ${at("/sys/kernel/debug")} || warn "cannot mount debugfs"
mount -t bpf bpf ${at("/sys/fs/bpf")} || warn "cannot mount bpffs"
mkdir -p ${at(checkout)} 2>/dev/null
mount -t 9p -o ${P9_OPTIONS} checkout ${at(checkout)} || fail ${
    quote(`cannot mount the checkout at ${checkout}`)
  }
mkdir -p ${at("/tmp/deno_dir")}
ip link set lo up 2>/dev/null || warn "cannot bring up lo"
printf "\\nDENO_BPF_VM_READY %s\\n" ${nonce}
/bin/busybox env -i ${
    envWords.join(" ")
  } /bin/busybox chroot ${host} /bin/sh -c 'cd "$1" && shift && exec "$@"' sh ${quote(checkout)} ${
    command.map(quote).join(" ")
  } </dev/null >/vmrun/output 2>&1
rc=$?
echo "$rc" > /vmrun/status
sync
echo "DENO_BPF_VM_EXIT ${nonce} $rc"
`;
}

/**
 * Drops carriage returns and terminal control sequences from the console,
 * holding back a sequence split across two chunks.
 */
class ConsoleCleaner {
  #pending = "";

  clean(chunk: string): string {
    let text = this.#pending + chunk;
    this.#pending = "";
    const escape = text.lastIndexOf("\x1b");
    if (
      escape >= 0 && text.length - escape < 16 &&
      !COMPLETE_CONTROL.test(text.slice(escape))
    ) {
      this.#pending = text.slice(escape);
      text = text.slice(0, escape);
    }
    return text.replace(TERMINAL_CONTROL, "");
  }
}

/** Follows a growing file and hands new text to a callback. */
class FileTail {
  #path: string;
  #sink: (text: string) => void;
  #offset = 0;
  #decoder = new TextDecoder();
  #busy = false;

  constructor(path: string, sink: (text: string) => void) {
    this.#path = path;
    this.#sink = sink;
  }

  async poll(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      using file = await Deno.open(this.#path);
      const size = (await file.stat()).size;
      // The guest truncates the file when it opens it for the command.
      if (size < this.#offset) this.#offset = 0;
      if (size === this.#offset) return;
      await file.seek(this.#offset, Deno.SeekMode.Start);
      const buffer = new Uint8Array(size - this.#offset);
      let filled = 0;
      while (filled < buffer.length) {
        const n = await file.read(buffer.subarray(filled));
        if (n === null) break;
        filled += n;
      }
      this.#offset += filled;
      const text = this.#decoder.decode(buffer.subarray(0, filled), {
        stream: true,
      });
      if (text) this.#sink(text);
    } catch {
      // The run folder may already be gone; the final read reports output.
    } finally {
      this.#busy = false;
    }
  }

  flush(): void {
    const rest = this.#decoder.decode();
    if (rest) this.#sink(rest);
  }
}

// ---------------------------------------------------------------------------
// The cache

interface CacheMeta {
  format: number;
  kernel: Kernel;
  suite: string;
  package: string;
  version: string;
  release: string;
  modules: string[];
}

async function readCache(dir: string): Promise<KernelImage | undefined> {
  const text = await readText(join(dir, "meta.json"));
  if (text === undefined) return undefined;
  let meta: CacheMeta;
  try {
    meta = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (meta.format !== CACHE_FORMAT) return undefined;
  const image: KernelImage = {
    kernel: meta.kernel,
    suite: meta.suite,
    package: meta.package,
    version: meta.version,
    release: meta.release,
    modules: meta.modules,
    dir,
    vmlinuz: join(dir, "vmlinuz"),
    initramfs: join(dir, "initramfs.cpio.gz"),
  };
  for (const file of [image.vmlinuz, image.initramfs]) {
    const info = await Deno.stat(file).catch(() => undefined);
    if (!info?.isFile || info.size === 0) return undefined;
  }
  return image;
}

/** Moves a finished build into place; a concurrent winner is kept. */
async function installCache(
  temp: string,
  dir: string,
  refresh: boolean,
): Promise<KernelImage> {
  const built = join(temp, "image");
  try {
    await Deno.rename(built, dir);
  } catch {
    const existing = refresh ? undefined : await readCache(dir);
    if (existing) return existing;
    // A stale or partial cache: move it aside, then put ours in its place.
    const old = `${temp}/old`;
    await Deno.rename(dir, old).catch(() => {});
    await Deno.rename(built, dir);
  }
  const image = await readCache(dir);
  if (!image) throw new Error(`The VM cache at ${dir} is incomplete`);
  return image;
}

/** Removes temporary build folders left behind by killed runs. */
async function removeStaleTemps(root: string): Promise<void> {
  const hourAgo = Date.now() - 60 * 60_000;
  for await (const entry of Deno.readDir(root)) {
    if (!entry.name.startsWith(".tmp-")) continue;
    const path = join(root, entry.name);
    const info = await Deno.stat(path).catch(() => undefined);
    if (info?.mtime && info.mtime.getTime() < hourAgo) {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    }
  }
}

async function buildCache(
  kernel: Kernel,
  temp: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  const suite = KERNEL_SUITES[kernel];
  const work = join(temp, "work");
  const image = join(temp, "image");
  await Deno.mkdir(work);
  await Deno.mkdir(image);
  const fail = (detail: string) =>
    new Error(`Cannot download Debian kernel for ${kernel}: ${detail}`);

  const apt = await privateApt(suite, join(temp, "apt"));
  const update = await runTool("apt-get", [...apt, "update"], {
    cwd: work,
    signal,
  });
  const updateProblems = aptProblems(update.stderr);
  if (update.code !== 0) throw fail(updateProblems || update.stderr.trim());

  const show = await runTool(
    "apt-cache",
    [...apt, "show", "--no-all-versions", "linux-image-amd64"],
    { cwd: work, signal },
  );
  if (show.code !== 0) {
    throw fail(
      [updateProblems, aptProblems(show.stderr) || show.stderr.trim()]
        .filter(Boolean).join("; "),
    );
  }
  const depends = /^Depends:\s*(.+)$/m.exec(show.stdout)?.[1] ?? "";
  const dep = /(linux-image-[^\s,(|]+)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?/.exec(
    depends,
  );
  if (!dep) {
    throw fail(
      `linux-image-amd64 in ${suite} has no linux-image-* dependency (Depends: ${depends})`,
    );
  }
  const pkg = dep[1];
  const version = dep[2] ??
    /^Version:\s*(\S+)/m.exec(show.stdout)?.[1] ?? "";
  const spec = dep[2] ? `${pkg}=${dep[2]}` : pkg;

  const download = await runTool("apt-get", [...apt, "download", spec], {
    cwd: work,
    signal,
  });
  if (download.code !== 0) {
    throw fail(aptProblems(download.stderr) || download.stderr.trim());
  }
  const deb = (await listNames(work)).find((name) => name.endsWith(".deb"));
  if (!deb) throw fail(`apt-get download ${spec} left no .deb file`);

  const tree = join(work, "tree");
  const extract = await runTool("dpkg-deb", ["-x", join(work, deb), tree], {
    signal,
  });
  if (extract.code !== 0) {
    throw fail(`dpkg-deb -x ${deb}: ${extract.stderr.trim()}`);
  }
  const vmlinuz = (await listNames(join(tree, "boot")))
    .find((name) => name.startsWith("vmlinuz-"));
  if (!vmlinuz) throw fail(`${deb} contains no boot/vmlinuz-*`);
  const release = vmlinuz.slice("vmlinuz-".length);
  await Deno.rename(join(tree, "boot", vmlinuz), join(image, "vmlinuz"));

  let moduleDir: string | undefined;
  for (const prefix of ["lib", "usr/lib"]) {
    const candidate = join(tree, prefix, "modules", release);
    if (await Deno.stat(candidate).then(() => true, () => false)) {
      moduleDir = candidate;
    }
  }
  if (!moduleDir) throw fail(`${deb} contains no modules for ${release}`);

  const modules = await collectModules(moduleDir, signal);
  const initramfs = await buildInitramfs(modules);
  await Deno.writeFile(join(image, "initramfs.cpio.gz"), initramfs);
  const meta: CacheMeta = {
    format: CACHE_FORMAT,
    kernel,
    suite,
    package: pkg,
    version,
    release,
    modules: modules.map((m) => m.name),
  };
  // Written last: its presence marks a complete cache.
  await Deno.writeTextFile(
    join(image, "meta.json"),
    JSON.stringify(meta, null, 2) + "\n",
  );
  await Deno.remove(work, { recursive: true });
}

// ---------------------------------------------------------------------------
// apt

/** apt options that use a private sources list and private state under `dir`. */
async function privateApt(suite: string, dir: string): Promise<string[]> {
  const lists = join(dir, "lists");
  const cache = join(dir, "cache");
  await Deno.mkdir(join(lists, "partial"), { recursive: true });
  await Deno.mkdir(join(cache, "archives", "partial"), { recursive: true });
  const sourceList = join(dir, "sources.list");
  const lines = (await debianSources(suite)).map((s) =>
    `deb ${s.signedBy ? `[signed-by=${s.signedBy}] ` : ""}${s.uri} ${s.suite} main`
  );
  await Deno.writeTextFile(sourceList, lines.join("\n") + "\n");
  return [
    "-q",
    "-o",
    `Dir::Etc::SourceList=${sourceList}`,
    "-o",
    "Dir::Etc::SourceParts=/dev/null",
    "-o",
    `Dir::State::Lists=${lists}`,
    "-o",
    `Dir::Cache=${cache}`,
    "-o",
    "APT::Sandbox::User=root",
  ];
}

interface AptSource {
  uri: string;
  suite: string;
  signedBy?: string;
}

/**
 * The machine's own Debian mirrors, re-pointed at `suite`: each enabled
 * `deb` entry for the host's codename (and its -updates/-security) becomes
 * the same entry for `suite`.
 */
async function debianSources(suite: string): Promise<AptSource[]> {
  const osRelease = await readText("/etc/os-release") ?? "";
  const codename = /^VERSION_CODENAME=["']?([a-z]+)/m.exec(osRelease)?.[1];
  const entries: AptSource[] = [];
  const files = ["/etc/apt/sources.list"];
  for (const name of await listNames("/etc/apt/sources.list.d")) {
    files.push(join("/etc/apt/sources.list.d", name));
  }
  for (const file of files) {
    const text = await readText(file);
    if (text === undefined) continue;
    if (file.endsWith(".sources")) entries.push(...parseDeb822(text));
    else if (file.endsWith(".list")) entries.push(...parseOneLine(text));
  }
  const result: AptSource[] = [];
  const seen = new Set<string>();
  for (const entry of entries) {
    if (!codename) break;
    if (entry.suite !== codename && !entry.suite.startsWith(`${codename}-`)) {
      continue;
    }
    const mapped = {
      ...entry,
      suite: suite + entry.suite.slice(codename.length),
    };
    const key = `${mapped.uri} ${mapped.suite}`;
    if (seen.has(key)) continue;
    seen.add(key);
    result.push(mapped);
  }
  if (result.length > 0) return result;
  const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
  const signedBy = await Deno.stat(keyring).then(
    () => keyring,
    () => undefined,
  );
  return [
    { uri: "http://deb.debian.org/debian", suite, signedBy },
    {
      uri: "http://deb.debian.org/debian",
      suite: `${suite}-updates`,
      signedBy,
    },
    {
      uri: "http://deb.debian.org/debian-security",
      suite: `${suite}-security`,
      signedBy,
    },
  ];
}

function parseDeb822(text: string): AptSource[] {
  const sources: AptSource[] = [];
  const stanzas = text.split(/\n\s*\n/);
  for (const stanza of stanzas) {
    const fields = new Map<string, string>();
    let last = "";
    for (const line of stanza.split("\n")) {
      if (line.startsWith("#")) continue;
      if (/^\s/.test(line) && last) {
        fields.set(last, `${fields.get(last)}\n${line.trim()}`);
        continue;
      }
      const match = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (!match) continue;
      last = match[1].toLowerCase();
      fields.set(last, match[2].trim());
    }
    const words = (key: string) => (fields.get(key) ?? "").split(/\s+/).filter(Boolean);
    if (!words("types").includes("deb")) continue;
    if (fields.get("enabled")?.toLowerCase() === "no") continue;
    if (!words("components").includes("main")) continue;
    const signed = fields.get("signed-by");
    const signedBy = signed?.startsWith("/") && !signed.includes("\n") ? signed : undefined;
    for (const uri of words("uris")) {
      for (const suite of words("suites")) {
        sources.push({ uri: uri.replace(/\/+$/, ""), suite, signedBy });
      }
    }
  }
  return sources;
}

function parseOneLine(text: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    const match = /^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line);
    if (!match) continue;
    if (!match[4].split(/\s+/).includes("main")) continue;
    const signedBy = /signed-by=(\S+)/.exec(match[1] ?? "")?.[1];
    sources.push({
      uri: match[2].replace(/\/+$/, ""),
      suite: match[3],
      signedBy,
    });
  }
  return sources;
}

/** apt's own error lines (and failed fetches), joined into one line. */
function aptProblems(stderr: string): string {
  return stderr.split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("E:") || line.startsWith("W: Failed to fetch"))
    .join("; ");
}

// ---------------------------------------------------------------------------
// The initramfs

interface Module {
  name: string;
  bytes: Uint8Array;
}

/**
 * The modules needed for virtio-pci and 9p, with everything they depend on,
 * in load order. Built-in modules are skipped; optional ones may be absent.
 */
async function collectModules(
  moduleDir: string,
  signal: AbortSignal | undefined,
): Promise<Module[]> {
  const files = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) await walk(path);
      const match = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/.exec(entry.name);
      if (entry.isFile && match) files.set(moduleName(match[1]), path);
    }
  };
  await walk(join(moduleDir, "kernel"));
  const builtinText = await readText(join(moduleDir, "modules.builtin")) ?? "";
  const builtin = new Set(
    builtinText.split("\n").filter(Boolean).map((line) =>
      moduleName(basename(line).replace(/\.ko$/, ""))
    ),
  );

  const order: Module[] = [];
  const visited = new Set<string>();
  const visit = async (name: string, required: boolean): Promise<void> => {
    if (visited.has(name)) return;
    visited.add(name);
    if (builtin.has(name)) return;
    const path = files.get(name);
    if (!path) {
      if (required && builtinText) {
        throw new Error(
          `Cannot build the initramfs: module ${name} is neither built into nor shipped with the kernel in ${moduleDir}`,
        );
      }
      return;
    }
    const bytes = await readModule(path, signal);
    for (const dep of moduleDepends(bytes)) await visit(dep, true);
    order.push({ name, bytes });
  };
  for (const name of REQUIRED_MODULES) await visit(name, true);
  for (const name of OPTIONAL_MODULES) await visit(name, false);
  return order;
}

function moduleName(name: string): string {
  return name.replaceAll("-", "_");
}

async function readModule(
  path: string,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  if (path.endsWith(".ko")) return await Deno.readFile(path);
  if (path.endsWith(".gz")) {
    const stream = (await Deno.open(path)).readable
      .pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  const tool = path.endsWith(".xz") ? "xz" : "zstd";
  const { code, stdoutBytes, stderr } = await runTool(tool, ["-dc", path], {
    signal,
  });
  if (code !== 0) {
    throw new Error(`Cannot decompress ${path} with ${tool}: ${stderr.trim()}`);
  }
  return stdoutBytes;
}

/** The `depends=` entry of a module's .modinfo section. */
function moduleDepends(bytes: Uint8Array): string[] {
  const text = new TextDecoder("latin1").decode(bytes);
  const match = /\0depends=([^\0]*)\0/.exec(text);
  return match ? match[1].split(",").filter(Boolean).map(moduleName) : [];
}

/** The initramfs's /init: loads modules, mounts the run share, runs its script. */
function initScript(modules: string[]): string {
  return `#!/bin/busybox sh
# deno_bpf VM init, written by tests/vm/vm.ts.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modules.join(" ")}; do
  insmod /lib/modules/$m.ko || echo "deno_bpf_vm: insmod $m failed"
done
if mount -t 9p -o ${P9_OPTIONS} vmrun /vmrun; then
  sh /vmrun/run.sh
else
  echo "deno_bpf_vm: cannot mount the run share (9p over virtio)"
fi
sync
poweroff -f
`;
}

async function buildInitramfs(modules: Module[]): Promise<Uint8Array> {
  const busybox = await Deno.readFile(BUSYBOX).catch((error) => {
    throw new Error(
      `Cannot read ${BUSYBOX}: ${errorText(error)} (install Debian's busybox-static package)`,
    );
  });
  if (hasInterpreter(busybox)) {
    throw new Error(
      `${BUSYBOX} is dynamically linked: install Debian's busybox-static package`,
    );
  }
  const archive = new CpioWriter();
  for (
    const dir of [
      "bin",
      "dev",
      "proc",
      "sys",
      "tmp",
      "lib",
      "lib/modules",
      "vmrun",
    ]
  ) {
    archive.directory(dir);
  }
  archive.charDevice("dev/console", 5, 1);
  archive.file("bin/busybox", busybox, 0o755);
  archive.file(
    "init",
    new TextEncoder().encode(initScript(modules.map((m) => m.name))),
    0o755,
  );
  for (const module of modules) {
    archive.file(`lib/modules/${module.name}.ko`, module.bytes, 0o644);
  }
  const stream = new Blob([archive.finish()]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Whether an ELF executable names a program interpreter (is dynamic). */
function hasInterpreter(elf: Uint8Array): boolean {
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (view.getUint32(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    if (view.getUint32(phoff + i * phentsize, true) === 3) return true;
  }
  return false;
}

/** Writes a cpio archive in the "newc" format the kernel unpacks. */
class CpioWriter {
  #chunks: Uint8Array[] = [];
  #size = 0;
  #inode = 1;
  #encoder = new TextEncoder();

  directory(name: string): void {
    this.#entry(name, 0o040755, new Uint8Array(), 0, 0);
  }

  charDevice(name: string, major: number, minor: number): void {
    this.#entry(name, 0o020600, new Uint8Array(), major, minor);
  }

  file(name: string, data: Uint8Array, permissions: number): void {
    this.#entry(name, 0o100000 | permissions, data, 0, 0);
  }

  finish(): Uint8Array<ArrayBuffer> {
    this.#entry("TRAILER!!!", 0, new Uint8Array(), 0, 0, 0);
    const out = new Uint8Array(this.#size);
    let offset = 0;
    for (const chunk of this.#chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  #entry(
    name: string,
    mode: number,
    data: Uint8Array,
    rdevMajor: number,
    rdevMinor: number,
    inode = this.#inode++,
  ): void {
    const nameBytes = this.#encoder.encode(name + "\0");
    const hex = (n: number) => n.toString(16).padStart(8, "0");
    const fields = [
      inode,
      mode,
      0, // uid
      0, // gid
      mode & 0o040000 ? 2 : 1, // nlink
      0, // mtime
      data.length,
      0, // devmajor
      0, // devminor
      rdevMajor,
      rdevMinor,
      nameBytes.length,
      0, // check
    ];
    this.#push(this.#encoder.encode("070701" + fields.map(hex).join("")));
    this.#push(nameBytes);
    this.#pad();
    this.#push(data);
    this.#pad();
  }

  #push(bytes: Uint8Array): void {
    this.#chunks.push(bytes);
    this.#size += bytes.length;
  }

  #pad(): void {
    const extra = (4 - (this.#size % 4)) % 4;
    if (extra) this.#push(new Uint8Array(extra));
  }
}

// ---------------------------------------------------------------------------
// Helpers

interface ToolResult {
  code: number;
  stdout: string;
  stdoutBytes: Uint8Array;
  stderr: string;
}

/** Runs a host tool with a time limit; a missing tool is a clear error. */
async function runTool(
  cmd: string,
  args: string[],
  options: { cwd?: string; signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<ToolResult> {
  options.signal?.throwIfAborted();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args,
      cwd: options.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { LC_ALL: "C" },
    }).spawn();
  } catch (error) {
    throw new Error(`Cannot run ${cmd}: ${errorText(error)}`);
  }
  let timedOut = false;
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, options.timeoutMs ?? APT_TIMEOUT_MS);
  options.signal?.addEventListener("abort", kill, { once: true });
  try {
    const { code, stdout, stderr } = await child.output();
    options.signal?.throwIfAborted();
    if (timedOut) {
      throw new Error(
        `${cmd} ${args.at(-1)} did not finish within ${
          (options.timeoutMs ?? APT_TIMEOUT_MS) / 1000
        } s`,
      );
    }
    const decoder = new TextDecoder();
    return {
      code,
      stdout: decoder.decode(stdout),
      stdoutBytes: stdout,
      stderr: decoder.decode(stderr),
    };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", kill);
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

async function listNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  } catch {
    // A missing folder has no entries.
  }
  return names.sort();
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function tailLines(text: string, count: number): string {
  const lines = text.trimEnd().split("\n");
  return lines.slice(-count).join("\n");
}

function describeTails(console: string, output: string): string {
  let text = "";
  if (console.trim()) {
    text += `\n--- last ${TAIL_LINES} console lines ---\n${tailLines(console, TAIL_LINES)}`;
  }
  if (output.trim()) {
    text += `\n--- last ${TAIL_LINES} output lines ---\n${tailLines(output, TAIL_LINES)}`;
  }
  return text;
}

/** The repository root: two folders above this file. */
function repoRoot(): string {
  return resolve(import.meta.dirname ?? ".", "..", "..");
}

// ---------------------------------------------------------------------------
// Command line

const USAGE = `Usage: deno run -A tests/vm/vm.ts [options] -- COMMAND [ARG...]

Boots Debian's kernel in qemu (needs root, qemu-system-x86, busybox-static)
and runs COMMAND in the host's root (read-only) with the checkout (writable)
as cwd. Prints the command's output and exits with its status.

Options:
  --kernel VERSION   one of ${KERNELS.join(", ")} (default 6.1)
  --timeout SECONDS  kill the VM after this long (default ${DEFAULT_TIMEOUT_MS / 1000})
  --env KEY=VALUE    extra environment for COMMAND (repeatable)
  --prepare          only download the kernel and build the initramfs
  --refresh          download and rebuild even if cached
  --checkout DIR     folder shared writable as cwd (default: the repository)
  --verbose          stream the guest console to stderr and print timings
  -h, --help         show this help

Cache: $DENO_BPF_VM_CACHE or \${XDG_CACHE_HOME:-$HOME/.cache}/deno_bpf/vm`;

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      kernel: { type: "string", default: "6.1" },
      timeout: { type: "string" },
      env: { type: "string", multiple: true, default: [] },
      prepare: { type: "boolean", default: false },
      refresh: { type: "boolean", default: false },
      checkout: { type: "string" },
      verbose: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const kernel = assertKernel(values.kernel);
  if (values.prepare) {
    const image = await prepareKernel(kernel, { refresh: values.refresh });
    console.log(JSON.stringify(image, null, 2));
    return 0;
  }
  if (positionals.length === 0) {
    console.error(`No command given.\n\n${USAGE}`);
    return 2;
  }
  const env: Record<string, string> = {};
  for (const pair of values.env) {
    const at = pair.indexOf("=");
    if (at <= 0) throw new TypeError(`--env expects KEY=VALUE, got "${pair}"`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  const timeoutMs = values.timeout === undefined
    ? DEFAULT_TIMEOUT_MS
    : Number(values.timeout) * 1000;
  const encoder = new TextEncoder();
  const result = await runInVm(kernel, positionals, {
    timeoutMs,
    env,
    refresh: values.refresh,
    checkout: values.checkout,
    onOutput: (text) => Deno.stdout.writeSync(encoder.encode(text)),
    onConsole: values.verbose ? (text) => Deno.stderr.writeSync(encoder.encode(text)) : undefined,
  });
  if (values.verbose) {
    console.error(
      `vm: kernel ${result.release}: boot ${result.bootMs} ms, total ${result.totalMs} ms, exit ${result.code}`,
    );
  }
  return result.code;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(errorText(error));
    Deno.exit(
      error instanceof TypeError || error instanceof RangeError ? 2 : 1,
    );
  }
}
