// Copyright the deno_bpf authors. MIT license.
/**
 * The guest's initramfs: a static busybox, the virtio and 9p modules in the
 * order kmod's `modprobe --show-depends` gives, and an /init that mounts the
 * run share and runs its script. Packed by `cpio -o -H newc`.
 *
 * @module
 */

import { basename, join } from "node:path";

/** Runs a host tool; a failure throws one line naming the tool and its complaint. */
export async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdin: "null", env: { LC_ALL: "C" } })
    .output().catch((error) => {
      throw new Error(`Cannot run ${cmd}: ${error.message} (is it installed?)`);
    });
  const text = new TextDecoder().decode(out.stdout);
  if (out.success) return text;
  const err = new TextDecoder().decode(out.stderr).trim().split("\n");
  const detail = err.filter((l) => l.startsWith("E:")).join("; ") || err.at(-1);
  throw new Error(`${cmd} ${args.at(-1)} failed: ${detail}`);
}

/** Modules the guest needs (with their dependencies), and ones loaded when shipped. */
const MODULES = { amd64: ["virtio_pci", "9pnet_virtio", "9p"], arm64: ["virtio_mmio"] };
const OPTIONAL = ["virtio_rng"];

/** 9p mount options shared by the initramfs and the run script. */
export const P9 = "trans=virtio,version=9p2000.L,msize=512000";

/** What {@linkcode buildInitramfs} needs. */
export interface InitramfsPlan {
  /** An unpacked kernel package, with its modules under `lib/modules/<release>`. */
  tree: string;
  release: string;
  /** A static busybox for the guest's architecture. */
  busybox: string;
  arch: "amd64" | "arm64";
  /** Where to write the gzipped archive. */
  out: string;
}

/** The `.ko` files to load, dependencies first; built-in modules are left out. */
async function moduleOrder(plan: InitramfsPlan): Promise<string[]> {
  await run("depmod", ["-b", plan.tree, plan.release]);
  const show = (names: string[]) =>
    run("modprobe", ["-d", plan.tree, "-S", plan.release, "--show-depends", "-a", ...names]);
  const wanted = [...MODULES.amd64, ...(plan.arch === "arm64" ? MODULES.arm64 : [])];
  const lines = (await show(wanted)).split("\n");
  for (const name of OPTIONAL) lines.push(...(await show([name]).catch(() => "")).split("\n"));
  const paths = lines.filter((l) => l.startsWith("insmod ")).map((l) => l.split(" ")[1]);
  return [...new Set(paths)];
}

const init = (modules: string[]) =>
  `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${
    modules.join(" ")
  }; do insmod /lib/modules/$m || echo "deno_bpf_vm: insmod $m failed"; done
if mount -t 9p -o ${P9},ro vmrun /vmrun; then sh /vmrun/run.sh; else echo "deno_bpf_vm: cannot mount the run share"; fi
sync
poweroff -f
`;

/** Writes the gzipped newc initramfs for one kernel to `plan.out`. */
export async function buildInitramfs(plan: InitramfsPlan): Promise<void> {
  // ldd fails on a static binary.
  const dynamic = plan.arch === "amd64" &&
    await run("ldd", [plan.busybox]).then(() => true, () => false);
  if (dynamic) {
    throw new Error(`${plan.busybox} is dynamically linked: install Debian's busybox-static`);
  }
  const stage = join(plan.out, "..", "initramfs");
  for (const dir of ["bin", "dev", "proc", "sys", "tmp", "vmrun", "lib/modules"]) {
    await Deno.mkdir(join(stage, dir), { recursive: true });
  }
  await run("mknod", [join(stage, "dev/console"), "c", "5", "1"]);
  await Deno.copyFile(plan.busybox, join(stage, "bin/busybox"));
  const names = [];
  for (const path of await moduleOrder(plan)) {
    const name = basename(path).replace(/\.(xz|zst|gz)$/, "");
    const target = join(stage, "lib/modules", name);
    if (path.endsWith(".ko")) await Deno.copyFile(path, target);
    else {
      const tool = path.endsWith(".xz") ? "xz" : path.endsWith(".zst") ? "zstd" : "gzip";
      await run("sh", ["-c", `${tool} -dc "$1" > "$2"`, "sh", path, target]);
    }
    names.push(name);
  }
  await Deno.writeTextFile(join(stage, "init"), init(names), { mode: 0o755 });
  const pack = `find . | cpio --quiet -o -H newc -R 0:0 | gzip -9 > "$1"`;
  await run("bash", ["-o", "pipefail", "-c", pack, "sh", plan.out], stage);
  await Deno.remove(stage, { recursive: true });
}
