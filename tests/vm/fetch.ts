// Copyright the deno_bpf authors. MIT license.
/**
 * The pinned Debian kernels (and, for arm64, a small Debian userland), fetched
 * with `apt-get download` through a private sources list, never installed,
 * and cached under `$DENO_BPF_VM_CACHE` or `${XDG_CACHE_HOME:-~/.cache}/deno_bpf/vm`.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { buildInitramfs, run } from "./initramfs.ts";

/**
 * The kernels the harness boots, by the name `--kernel` and `DENO_BPF_VM_KERNELS`
 * use: the method `auto` must pick there, the Debian suite, package, exact
 * version and the .deb's SHA-256 (from the suite's Packages index), so a new
 * Debian upload cannot change what CI boots.
 */
const TABLE = `
5.10       amd64 fentry bullseye linux-image-5.10.0-32-amd64      5.10.223-1 86a6792f3a03ab15a643f385830cdaa921f15e3e9c8bf63aa55a9243c62fc797
6.1        amd64 fentry bookworm linux-image-6.1.0-50-amd64       6.1.176-1  7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3
6.12       amd64 fentry trixie   linux-image-6.12.117+deb13-amd64 6.12.117-1 ca712d36790184f6ac125ce2b20ea4e2202ae6bb7817b7de268f1f0115ccda73
arm64-5.10 arm64 kprobe bullseye linux-image-5.10.0-32-arm64      5.10.223-1 53850b52e93158e3055c1d18a5527f9f95250f44b16ee48fb5ab0b42bed44665
arm64-6.1  arm64 kprobe bookworm linux-image-6.1.0-50-arm64       6.1.176-1  914f75b57a8e165d85fb910c3e2dcc7000a05a9fea3f42f90b26e8dd590d5f06
arm64-6.12 arm64 fentry trixie   linux-image-6.12.117+deb13-arm64 6.12.117-1 73805585385c78e048e63fdfba66da36bab724c2cdebd96a3055a8a4f1ae287a
`;

/** One row of the table. */
export type KernelPin = Record<"auto" | "suite" | "pkg" | "version" | "sha256", string> & {
  arch: "amd64" | "arm64";
};

/** The pinned kernels by name, in the table's order. */
export const KERNELS: Readonly<Record<string, KernelPin>> = Object.fromEntries(
  TABLE.trim().split("\n").map((row) => row.split(/\s+/)).map((
    [name, arch, auto, suite, pkg, version, sha256],
  ) => [name, { arch: arch as KernelPin["arch"], auto, suite, pkg, version, sha256 }]),
);

/** The arm64 guest's userland (bookworm), unpacked into its root with `dpkg-deb -x`. */
const ARM64_USERLAND = `libc6=2.36-9+deb12u14 libgcc-s1=12.2.0-14+deb12u1
  gcc-12-base=12.2.0-14+deb12u1 libbpf1=1:1.1.2-0+deb12u1 libelf1=0.188-2.1
  zlib1g=1:1.2.13.dfsg-1 libzstd1=1.5.4+dfsg2-5 busybox-static=1:1.35.0-4+deb12u1+b1`;
/** busybox applets linked into the arm64 root's /bin. */
const APPLETS = "sh rm unlink cat ls mkdir rmdir touch mv ln sleep env true false uname id kill";

const MIRROR = Deno.env.get("DENO_BPF_DEBIAN_MIRROR") ?? "http://deb.debian.org/debian";
const KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";

/** A kernel ready to boot. */
export interface KernelImage {
  name: string;
  pin: KernelPin;
  /** What `uname -r` prints inside. */
  release: string;
  vmlinuz: string;
  initramfs: string;
  /** The folder the guest chroots into: `/` for amd64, a cached Debian arm64 tree for arm64. */
  root: string;
}

/** The cache root; it may not exist yet. */
export function cacheRoot(): string {
  const explicit = Deno.env.get("DENO_BPF_VM_CACHE");
  if (explicit) return resolve(explicit);
  const base = Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/root", ".cache");
  return resolve(base, "deno_bpf", "vm");
}

/** Checks a kernel name. @throws {RangeError} for an unknown one. */
export function assertKernel(name: string): string {
  if (Object.hasOwn(KERNELS, name)) return name;
  throw new RangeError(`Unknown kernel "${name}": expected one of ${Object.keys(KERNELS)}`);
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/**
 * Builds `dir` once: `make` fills a temporary sibling, which is renamed into
 * place, so an interrupted build is never used.
 */
async function cached(dir: string, make: (temp: string) => Promise<void>): Promise<string> {
  if (await exists(dir)) return dir;
  await Deno.mkdir(resolve(dir, ".."), { recursive: true });
  const temp = `${dir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(temp);
  try {
    await make(temp);
    await Deno.rename(temp, dir).catch(async (error) => {
      if (!await exists(dir)) throw error; // else another run won the race
    });
  } finally {
    await Deno.remove(temp, { recursive: true }).catch(() => {});
  }
  return dir;
}

/** `apt-get download` of exact `name=version` pairs from one suite, into `dir`. */
async function aptDownload(
  arch: string,
  suite: string,
  pins: string[],
  dir: string,
): Promise<void> {
  const state = join(dir, ".apt");
  await Deno.mkdir(join(state, "lists", "partial"), { recursive: true });
  await Deno.writeTextFile(
    join(state, "sources.list"),
    `deb [arch=${arch} signed-by=${KEYRING}] ${MIRROR} ${suite} main\n`,
  );
  const apt = [
    ...["-q", "-o", `Dir::Etc::SourceList=${state}/sources.list`],
    ...["-o", "Dir::Etc::SourceParts=/dev/null", "-o", `Dir::State::Lists=${state}/lists`],
    ...["-o", `Dir::Cache=${state}`, "-o", `APT::Architectures::=${arch}`],
    ...["-o", `APT::Architecture=${arch}`, "-o", "APT::Sandbox::User=root"],
  ];
  await run("apt-get", [...apt, "update"], dir);
  const specs = pins.map((pin) => pin.replace("=", `:${arch}=`));
  await run("apt-get", [...apt, "download", ...specs], dir).catch((error) => {
    throw new Error(
      `${error.message}. A pinned version may have left Debian's ${suite}: ` +
        `update tests/vm/fetch.ts from \`apt-cache madison\``,
    );
  });
  await Deno.remove(state, { recursive: true });
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const debs = async (dir: string) =>
  (await Array.fromAsync(Deno.readDir(dir))).map((e) => join(dir, e.name))
    .filter((path) => path.endsWith(".deb")).sort();

/** The arm64 root: pinned bookworm libraries, busybox and the host's Deno version for arm64. */
export function prepareArm64Root(): Promise<string> {
  const deno = Deno.version.deno;
  return cached(join(cacheRoot(), `arm64-root_deno-${deno}`), async (root) => {
    const work = join(root, ".work");
    await Deno.mkdir(work);
    await aptDownload("arm64", "bookworm", ARM64_USERLAND.split(/\s+/), work);
    for (const deb of await debs(work)) await run("dpkg-deb", ["-x", deb, root]);
    await run("npm", ["pack", "-q", `@deno/linux-arm64-glibc@${deno}`], work);
    const tgz = (await Array.fromAsync(Deno.readDir(work))).find((e) => e.name.endsWith(".tgz"));
    if (!tgz) throw new Error(`npm pack @deno/linux-arm64-glibc@${deno} left no tarball`);
    await run("tar", ["-xzf", join(work, tgz.name), "-C", work]);
    await Deno.mkdir(join(root, "usr/local/bin"), { recursive: true });
    await Deno.rename(join(work, "package", "deno"), join(root, "usr/local/bin/deno"));
    await Deno.chmod(join(root, "usr/local/bin/deno"), 0o755);
    for (const dir of "proc sys dev tmp run root".split(" ")) {
      await Deno.mkdir(join(root, dir), { recursive: true });
    }
    for (const applet of APPLETS.split(" ")) {
      await Deno.symlink("busybox", join(root, "bin", applet));
    }
    await Deno.remove(work, { recursive: true });
  });
}

/**
 * Downloads the pinned kernel, checks its SHA-256 and builds its initramfs,
 * unless the cache already holds them.
 */
export async function prepareKernel(name: string): Promise<KernelImage> {
  const kernel = assertKernel(name);
  const pin = KERNELS[kernel];
  const root = pin.arch === "arm64" ? await prepareArm64Root() : "/";
  const busybox = join(root, "bin/busybox");
  const dir = await cached(join(cacheRoot(), `${pin.pkg}_${pin.version}`), async (temp) => {
    await aptDownload(pin.arch, pin.suite, [`${pin.pkg}=${pin.version}`], temp);
    const [deb] = await debs(temp);
    const sum = await sha256(deb);
    if (sum !== pin.sha256) {
      throw new Error(`${deb} has SHA-256 ${sum}, not the pinned ${pin.sha256}`);
    }
    const tree = join(temp, "tree");
    await run("dpkg-deb", ["-x", deb, tree]);
    await Deno.remove(deb);
    // trixie keeps modules under usr/lib (merged /usr); depmod -b wants lib/modules.
    if (await exists(join(tree, "usr/lib/modules"))) {
      await Deno.mkdir(join(tree, "lib"), { recursive: true });
      await Deno.rename(join(tree, "usr/lib/modules"), join(tree, "lib/modules"));
    }
    const [release] = (await Array.fromAsync(Deno.readDir(join(tree, "lib/modules"))))
      .map((e) => e.name);
    await Deno.rename(join(tree, "boot", `vmlinuz-${release}`), join(temp, "vmlinuz"));
    await buildInitramfs({
      tree,
      release,
      busybox,
      arch: pin.arch,
      out: join(temp, "initramfs.cpio.gz"),
    });
    await Deno.remove(tree, { recursive: true });
    await Deno.writeTextFile(join(temp, "release"), release);
  });
  return {
    name: kernel,
    pin,
    release: (await Deno.readTextFile(join(dir, "release"))).trim(),
    vmlinuz: join(dir, "vmlinuz"),
    initramfs: join(dir, "initramfs.cpio.gz"),
    root,
  };
}
