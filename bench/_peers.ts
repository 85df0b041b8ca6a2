/**
 * What the bench needs besides Deno and libbpf: a C compiler for bench/*.c,
 * libbpf's headers for the C references, and bpftrace. Of those that the
 * selected rows need, the missing ones are installed as root with apt-get
 * (unless `DENO_BPF_NO_INSTALL=1`); whatever is still missing is reported in
 * one line each, and its rows are skipped.
 *
 * @module
 */

/** A tool or library the bench runs or builds against, and the Debian packages that bring it. */
export interface Peer {
  name: string;
  packages: string[];
  /** What is lost without it, for the one-line report. */
  without: string;
  /** Without it nothing can run (the storm is C). */
  essential: boolean;
  /** The bench rows (tracer names) that need it. */
  rows: string[];
  present(): boolean;
}

/** Whether `path` exists (any type). */
function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The full path of the executable `name` on PATH, as a shell would find it, or undefined. */
export function which(name: string, path = Deno.env.get("PATH") ?? ""): string | undefined {
  for (const dir of path.split(":")) {
    const full = `${dir || "."}/${name}`;
    try {
      const info = Deno.statSync(full);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return full;
    } catch { /* not in this directory */ }
  }
  return undefined;
}

/** The C compiler on PATH (`cc`, else `gcc`, else `clang`), or undefined. */
export function cCompiler(): string | undefined {
  for (const name of ["cc", "gcc", "clang"]) {
    const found = which(name);
    if (found) return found;
  }
  return undefined;
}

/** The bench's peers; the C references and bpftrace name the rows they feed. */
export const PEERS: readonly Peer[] = [
  {
    name: "C compiler",
    packages: ["gcc", "libc6-dev"],
    without: "the storm and the CPU meter are C, so the bench cannot run",
    essential: true,
    rows: [],
    present: () => cCompiler() !== undefined && exists("/usr/include/stdio.h"),
  },
  {
    name: "libbpf-dev",
    packages: ["libbpf-dev"],
    without: "the C reference rows are skipped",
    essential: false,
    rows: ["C each", "C batched", "C batched b5bb32d"],
    present: () => exists("/usr/include/bpf/libbpf.h"),
  },
  {
    name: "bpftrace",
    packages: ["bpftrace"],
    without: "its rows are skipped",
    essential: false,
    rows: ["bpftrace"],
    present: () => which("bpftrace") !== undefined,
  },
];

/** The one line that reports a missing peer. */
export function missingLine(peer: Peer): string {
  return `bench: ${peer.name} not installed (apt-get install ${
    peer.packages.join(" ")
  }): ${peer.without}`;
}

/**
 * Installs the missing peers' packages with apt-get when that is allowed:
 * root, apt-get on PATH, and `DENO_BPF_NO_INSTALL` not 1. apt-get's own
 * output goes to stderr. Returns the peers still missing afterwards.
 */
export function installMissing(peers: readonly Peer[] = PEERS): Peer[] {
  const missing = peers.filter((p) => !p.present());
  const allowed = Deno.env.get("DENO_BPF_NO_INSTALL") !== "1" && Deno.uid() === 0 &&
    which("apt-get") !== undefined;
  if (missing.length === 0 || !allowed) return missing;
  const packages = missing.flatMap((p) => p.packages);
  console.error(`bench: installing ${packages.join(" ")} (DENO_BPF_NO_INSTALL=1 prevents this)`);
  const apt = (args: string[]) =>
    new Deno.Command("apt-get", {
      args: ["-o", "DPkg::Lock::Timeout=120", ...args],
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).outputSync().success;
  if (!apt(["update", "-qq"]) || !apt(["install", "-y", "-qq", ...packages])) {
    console.error("bench: apt-get failed");
  }
  return missing.filter((p) => !p.present());
}

/**
 * Compiles `bench/<name>.c` to `out` with the C compiler on PATH, warnings as
 * errors. Throws with the compiler's message if it fails.
 */
export async function compile(name: string, out: string, libs: string[] = []): Promise<void> {
  const cc = cCompiler();
  if (!cc) throw new Error(missingLine(PEERS.find((p) => p.name === "C compiler")!));
  const source = decodeURIComponent(new URL(`${name}.c`, import.meta.url).pathname);
  const result = await new Deno.Command(cc, {
    args: ["-O2", "-Wall", "-Wextra", "-Werror", "-o", out, source, ...libs],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!result.success) {
    const message = new TextDecoder().decode(result.stderr).trim().split("\n").at(-1);
    throw new Error(`${cc} could not build ${name}.c: ${message}`);
  }
}
