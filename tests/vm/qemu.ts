// Copyright the deno_bpf authors. MIT license.
/**
 * Boots one of the pinned kernels under qemu's software emulation and runs a
 * command in the guest's root (the host's `/`, or the cached arm64 tree, shared
 * read-only over 9p) with the checkout shared writable at the same path as cwd.
 * The command's output and exit status come back on the serial console.
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { type KernelImage, prepareKernel } from "./fetch.ts";
import { P9 } from "./initramfs.ts";

/** What {@linkcode runInVm} brings back. */
export interface RunResult {
  /** The command's exit status. */
  code: number;
  /** The command's output (stdout and stderr), and any kernel message printed meanwhile. */
  output: string;
  /** The whole serial console. */
  console: string;
  /** Milliseconds until the guest was ready to run the command, and until qemu exited. */
  bootMs: number;
  totalMs: number;
  /** `uname -r` inside. */
  release: string;
}

/** Options for {@linkcode runInVm}. */
export interface RunOptions {
  /** qemu is killed past this (default 10 min). */
  timeoutMs?: number;
  /** Extra environment for the command. */
  env?: Record<string, string>;
  /** The command's output as it arrives. */
  onOutput?: (text: string) => void;
  /** Every console line (boot messages included) as it arrives. */
  onConsole?: (text: string) => void;
}

/** A VM that did not report the command's exit status; `console` holds what it printed. */
export class VmError extends Error {
  /**
   * @param summary What went wrong, one line.
   * @param console The serial console so far; its last lines are appended to the message.
   */
  constructor(summary: string, readonly console: string) {
    super(
      `${summary}\n--- last console lines ---\n${
        console.trimEnd().split("\n").slice(-40).join("\n")
      }`,
    );
    this.name = "VmError";
  }
}

const QEMU = {
  amd64: { bin: "qemu-system-x86_64", args: ["-cpu", "max"], tty: "ttyS0" },
  arm64: {
    bin: "qemu-system-aarch64",
    args: ["-M", "virt", "-cpu", "neoverse-n1"],
    tty: "ttyAMA0",
  },
};

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BASE_ENV = "HOME=/root TMPDIR=/tmp LANG=C.UTF-8 NO_COLOR=1 DENO_DIR=/tmp/deno_dir " +
  "DENO_NO_UPDATE_CHECK=1";
const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

/** Where the guest mounts a fresh tmpfs, hiding what the shared root has there. */
const TMPFS = { "/tmp": "mode=1777", "/run": "mode=0755", "/root": "mode=0700" };

/** Whether `path` is in one of the {@linkcode TMPFS} folders, which hide it in the guest. */
export function hiddenByTmpfs(path: string): boolean {
  return Object.keys(TMPFS).some((dir) => path === dir || path.startsWith(`${dir}/`));
}

/**
 * The script /init runs from the run share: mount, chroot, run, report, power
 * off. The checkout's 9p share is mounted once the tmpfs folders are, on a
 * mount point made inside them if it is there (a clone under /tmp or /root).
 * Each folder of `keep` (the host's Deno, when it lives under /root) is
 * bind-mounted aside before the tmpfs hides it, and back in place after.
 */
export function runScript(
  checkout: string,
  command: string[],
  env: Record<string, string>,
  nonce: string,
  timeoutMs: number,
  keep: string[] = [],
): string {
  const words = Object.entries(env).map(([k, v]) => quote(`${k}=${v}`)).join(" ");
  const tmpfs = Object.entries(TMPFS).map(([dir, mode]) => `mnt tmpfs ${dir} ${mode}`).join("; ");
  const kept = keep.filter(hiddenByTmpfs).map(quote);
  const each = (fn: string) => kept.map((dir) => `${fn} ${dir}\n`).join("");
  return `(sleep ${Math.ceil(timeoutMs / 1000) + 30}; echo "deno_bpf_vm: watchdog"; poweroff -f) &
mkdir -p /host
mount -t 9p -o ${P9},ro hostroot /host || echo "deno_bpf_vm: cannot mount the root over 9p"
mnt() { mkdir -p /host$2 2>/dev/null; mount -t $1 \${3:+-o $3} $1 /host$2 || echo "deno_bpf_vm: cannot mount $2"; }
aside() { mkdir -p "/kept$1" && mount -o bind "/host$1" "/kept$1" || echo "deno_bpf_vm: cannot keep $1"; }
back() { mkdir -p "/host$1" && mount -o bind "/kept$1" "/host$1" || echo "deno_bpf_vm: cannot put back $1"; }
${
    each("aside")
  }mnt proc /proc; mnt sysfs /sys; mnt devtmpfs /dev; mnt devpts /dev/pts; mnt tmpfs /dev/shm mode=1777
${tmpfs}
mnt tracefs /sys/kernel/tracing; mnt debugfs /sys/kernel/debug; mnt bpf /sys/fs/bpf
mnt securityfs /sys/kernel/security; mnt cgroup2 /sys/fs/cgroup
${each("back")}mkdir -p /host${quote(checkout)} 2>/dev/null
mount -t 9p -o ${P9} checkout /host${
    quote(checkout)
  } || echo "deno_bpf_vm: cannot mount the checkout"
ip link set lo up 2>/dev/null
echo "DENO_BPF_VM_READY ${nonce}"
{ env -i ${words} chroot /host /bin/sh -c 'cd "$1" && shift && exec "$@"' sh ${quote(checkout)} ${
    command.map(quote).join(" ")
  } </dev/null 2>&1; echo $? > /tmp/rc; } | cat
echo "DENO_BPF_VM_EXIT ${nonce} $(cat /tmp/rc)"
`;
}

function qemuArgs(image: KernelImage, checkout: string, runDir: string): string[] {
  const q = QEMU[image.pin.arch];
  const share = (path: string, tag: string, ro: boolean) => [
    "-virtfs",
    `local,path=${path.replaceAll(",", ",,")},mount_tag=${tag},security_model=none,multidevs=remap${
      ro ? ",readonly=on" : ""
    }`,
  ];
  return [
    ...["-kernel", image.vmlinuz, "-initrd", image.initramfs, ...q.args],
    ...["-append", `console=${q.tty} quiet panic=-1`, "-m", "2048", "-smp", "2"],
    // One host thread runs both vCPUs: with multi-threaded TCG a vCPU could run
    // kernel text while the other patched it (kprobes, static keys), and guests crashed.
    ...["-accel", "tcg,thread=single", "-nographic", "-no-reboot", "-nic", "none"],
    ...["-device", "virtio-rng-pci"],
    ...share(image.root, "hostroot", true),
    ...share(checkout, "checkout", false),
    ...share(runDir, "vmrun", true),
  ];
}

/**
 * Boots `kernel` (a key of `KERNELS` in fetch.ts) and runs `command` without a
 * shell from the checkout. A non-zero exit is returned in `code`; a VM that does
 * not report one (a panic, the time limit) throws a {@linkcode VmError}.
 *
 * @example Print the guest's kernel release (needs root)
 * ```ts ignore
 * const { code, output } = await runInVm("5.10", ["uname", "-r"]);
 * ```
 */
export async function runInVm(
  kernel: string,
  command: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const image = await prepareKernel(kernel);
  const timeoutMs = options.timeoutMs ?? 10 * 60_000;
  const checkout = resolve(import.meta.dirname ?? ".", "..", "..");
  const nonce = crypto.randomUUID();
  const env: Record<string, string> = {
    ...Object.fromEntries(BASE_ENV.split(" ").map((pair) => pair.split("="))),
    PATH: image.root === "/" ? `${dirname(Deno.execPath())}:${PATH}` : PATH,
    ...(Deno.env.has("CI") ? { CI: Deno.env.get("CI")! } : {}),
    ...options.env,
    DENO_BPF_VM_KERNEL: kernel,
    DENO_BPF_VM_KERNEL_RELEASE: image.release,
  };
  // The guest makes a mount point inside its tmpfs folders; elsewhere the
  // read-only root must already have one, which the cached arm64 tree lacks.
  if (image.root !== "/" && !hiddenByTmpfs(checkout)) {
    await Deno.mkdir(join(image.root, checkout), { recursive: true });
  }
  const runDir = await Deno.makeTempDir({ prefix: "deno_bpf_vm_" });
  const keep = image.root === "/" ? [dirname(Deno.execPath())] : [];
  await Deno.writeTextFile(
    join(runDir, "run.sh"),
    runScript(checkout, command, env, nonce, timeoutMs, keep),
  );
  const bin = QEMU[image.pin.arch].bin;
  const started = performance.now();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(bin, {
      args: qemuArgs(image, checkout, runDir),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    await Deno.remove(runDir, { recursive: true });
    throw new VmError(`Cannot start ${bin}: ${(error as Error).message} (is qemu installed?)`, "");
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const ready = `DENO_BPF_VM_READY ${nonce}`, exit = new RegExp(`DENO_BPF_VM_EXIT ${nonce} (\\d+)`);
  let consoleText = "", output = "", pending = "", bootMs = -1, code: number | undefined;
  const decoder = new TextDecoder();
  const stderr = new Response(child.stderr).text();
  for await (const chunk of child.stdout) {
    pending += decoder.decode(chunk, { stream: true }).replaceAll("\r", "");
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      consoleText += line + "\n";
      options.onConsole?.(line + "\n");
      const done = exit.exec(line);
      if (done) code = Number(done[1]);
      else if (line.endsWith(ready)) bootMs = performance.now() - started;
      else if (bootMs >= 0 && code === undefined) {
        output += line + "\n";
        options.onOutput?.(line + "\n");
      }
    }
  }
  await child.status;
  clearTimeout(timer);
  await Deno.remove(runDir, { recursive: true });
  const totalMs = performance.now() - started;
  const fullConsole = consoleText + pending + (await stderr);
  const label = `VM ${kernel} (${image.release})`;
  const s = timeoutMs / 1000;
  if (timedOut) {
    throw new VmError(`${label} did not finish within ${s} s: qemu was killed`, fullConsole);
  }
  if (code === undefined) {
    throw new VmError(`${label} stopped without reporting the command's exit status`, fullConsole);
  }
  return {
    code,
    output,
    console: fullConsole,
    bootMs: Math.round(bootMs),
    totalMs: Math.round(totalMs),
    release: image.release,
  };
}
