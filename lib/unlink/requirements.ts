/**
 * What the unlink tracer needs of this machine, as one table. The tracer's
 * preflight runs it before any load, to the first requirement that fails,
 * and throws that requirement's error; the doctor runs every row and prints
 * what each found, with the fix. The trial attaches of each method are not
 * rows: only a real load and attach answers them (see `probe.ts`).
 *
 * The parsers are pure and tested on text; the checks read /proc and /sys
 * through libc (`--allow-ffi`), and libbpf.
 *
 * @module
 */

import { bpf, libbpfVersionString } from "../_ffi.ts";
import { LibbpfNotFoundError, NotSupportedError, PermissionError } from "../errors.ts";
import { EOPNOTSUPP } from "../errno.ts";
import { canTrace, kernelRelease, parseCapEff, pathExists, readSmallFile } from "../_sys.ts";

/** What one check found. `ok` is `null` when it cannot be told, which never stops the tracer. */
export interface Finding {
  /** Passed, failed, or `null` for unknown. */
  ok: boolean | null;
  /** What was found, e.g. `"/sys/kernel/btf/vmlinux present"`. */
  detail: string;
  /** What to do about a failure, or `null`. */
  fix: string | null;
  /** The error a failed check caught, which says more than {@linkcode detail}. */
  cause?: Error;
}

/** One row of {@linkcode REQUIREMENTS}. */
export interface Requirement {
  /** Short and stable: the doctor's name for the row, e.g. `"btf"`. */
  name: string;
  /** The Deno permissions the check uses. */
  needs: ("ffi" | "env")[];
  /** What to do when the check itself throws. */
  fix: string;
  /** Looks. A throw (a missing permission, say) is the caller's to report. */
  check(): Finding;
  /**
   * The error the tracer throws when the check fails; a row without one
   * only informs: the doctor shows it, the tracer does not run it.
   */
  error?: (finding: Finding) => Error;
}

/** The architectures whose kprobe registers bpf/unlink.bpf.c reads. */
const ARCHES = ["x86_64", "aarch64"];
/** The oldest kernel the tracer supports: BPF ring buffers came in 5.8. */
const MIN_KERNEL = [5, 8] as const;
const BPF_MAP_TYPE_RINGBUF = 27;
const BTF = "/sys/kernel/btf/vmlinux";
const SUDO = "run it as root (sudo), or give deno CAP_BPF and CAP_PERFMON";
const LIBBPF_FIX =
  "install libbpf >= 1.0 (Debian/Ubuntu: libbpf1; Fedora: libbpf) or set LIBBPF_PATH";

/** Whether a `uname -r` string is at least 5.8; `undefined` if it does not start with a version. */
export function kernelSupported(release: string): boolean | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return undefined;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor >= MIN_KERNEL[1]);
}

/**
 * The active mode in `/sys/kernel/security/lockdown` text, the one in
 * brackets: `"none [integrity] confidentiality"` gives `"integrity"`.
 */
export function parseLockdown(text: string): string | undefined {
  return /\[(\w+)\]/.exec(text)?.[1];
}

/** The effective uid from `/proc/<pid>/status` text (the second field of `Uid:`). */
export function parseEffectiveUid(status: string): number | undefined {
  const m = /^Uid:\s+\d+\s+(\d+)/m.exec(status);
  return m ? Number(m[1]) : undefined;
}

const TRACING_CAPS = [["CAP_SYS_ADMIN", 21], ["CAP_BPF", 39], ["CAP_PERFMON", 38]] as const;

/** The capabilities that matter for tracing among `caps`, by name. */
export function tracingCapabilities(caps: bigint): string[] {
  return TRACING_CAPS.filter(([, bit]) => (caps >> BigInt(bit) & 1n) === 1n).map(([n]) => n);
}

/**
 * The path libbpf was mapped from, found in `/proc/<pid>/maps` text: the
 * first mapping whose file name starts with `libbpf` and contains `.so`.
 */
export function libbpfPathFromMaps(maps: string): string | undefined {
  for (const line of maps.split("\n")) {
    const path = /\s(\/\S.*)$/.exec(line)?.[1];
    if (!path) continue;
    const base = path.slice(path.lastIndexOf("/") + 1);
    if (base.startsWith("libbpf") && base.includes(".so")) return path;
  }
  return undefined;
}

/** The libbpf this process loaded, and the file it was mapped from (`null` if not found). */
export function libbpfLocation(): { version: string; path: string | null } {
  const version = libbpfVersionString();
  const maps = readSmallFile("/proc/self/maps", 4 * 1024 * 1024) ?? "";
  return { version, path: libbpfPathFromMaps(maps) ?? null };
}

const pass = (detail: string): Finding => ({ ok: true, detail, fix: null });

/**
 * Every requirement, in the order the doctor prints them; the tracer's
 * preflight stops at the first one with an error that fails.
 */
export const REQUIREMENTS: readonly Requirement[] = [
  {
    name: "arch",
    needs: [],
    fix: "run it on x86_64 or aarch64 (arm64)",
    check: () =>
      ARCHES.includes(Deno.build.arch) ? pass(`${Deno.build.arch} (x86_64 or aarch64 needed)`) : {
        ok: false,
        detail: `${Deno.build.arch} is not supported`,
        fix: "run it on x86_64 or aarch64 (arm64)",
      },
    error: () =>
      new NotSupportedError(`this architecture (${Deno.build.arch})`, "x86_64 or aarch64 (arm64)"),
  },
  {
    // Informs only: a vendor kernel older than 5.8 may carry ring buffers
    // (the ring buffer row is the one that stops the tracer).
    name: "kernel",
    needs: ["ffi"],
    fix: "upgrade to Linux 5.8 or later",
    check: () => {
      const kernel = kernelRelease();
      const ok = kernelSupported(kernel);
      return ok === false
        ? { ok, detail: `${kernel} is older than 5.8`, fix: "upgrade to Linux 5.8 or later" }
        : { ok: ok ?? null, detail: `${kernel} (5.8 or later needed)`, fix: null };
    },
  },
  {
    name: "btf",
    needs: ["ffi"],
    fix: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.5 or later)",
    check: () =>
      pathExists(BTF) ? pass(`${BTF} present`) : {
        ok: false,
        detail: `${BTF} missing`,
        fix: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.5 or later)",
      },
    error: () =>
      new NotSupportedError(
        `BTF (${BTF})`,
        "Linux 5.5 or later built with CONFIG_DEBUG_INFO_BTF=y",
      ),
  },
  {
    // Informs only: under confidentiality lockdown the kernel refuses the load itself.
    name: "lockdown",
    needs: ["ffi"],
    fix: "check /sys/kernel/security/lockdown",
    check: () => {
      const text = readSmallFile("/sys/kernel/security/lockdown");
      if (text === undefined) {
        // securityfs mounted without the file: the lockdown LSM is not active.
        return pathExists("/sys/kernel/security/lsm")
          ? pass("none (the lockdown LSM is not active)")
          : {
            ok: null,
            detail: "unknown: securityfs not mounted " +
              "(mount -t securityfs securityfs /sys/kernel/security to see it)",
            fix: null,
          };
      }
      const mode = parseLockdown(text) ?? text.trim();
      return mode === "confidentiality"
        ? {
          ok: false,
          detail: "confidentiality: BPF may not read kernel memory",
          fix: "boot with lockdown=integrity (or none)",
        }
        : pass(mode);
    },
  },
  {
    name: "capabilities",
    needs: ["ffi"],
    fix: SUDO,
    check: () => {
      const status = readSmallFile("/proc/self/status") ?? "";
      const caps = parseCapEff(status);
      const uid = parseEffectiveUid(status);
      const who = uid === 0 ? "root" : uid === undefined ? "unknown user" : `uid ${uid}`;
      // No /proc: let the kernel answer instead.
      if (caps === undefined) {
        return { ok: null, detail: `${who}; /proc/self/status has no CapEff`, fix: null };
      }
      const names = tracingCapabilities(caps);
      const held = names.length ? names.join(", ") : "none of CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON";
      const detail = `${who} with ${held}`;
      return canTrace(caps) ? pass(detail) : { ok: false, detail, fix: SUDO };
    },
    error: () => new PermissionError(),
  },
  {
    name: "libbpf",
    needs: ["ffi", "env"],
    fix: LIBBPF_FIX,
    check: () => {
      let found: { version: string; path: string | null };
      try {
        found = libbpfLocation();
      } catch (error) {
        if (!(error instanceof LibbpfNotFoundError)) throw error;
        // Its message lists every path tried: the tracer throws it as it is.
        return { ok: false, detail: error.message.split("\n")[0], fix: LIBBPF_FIX, cause: error };
      }
      return pass(`${found.version} from ${found.path ?? "(path not found in /proc/self/maps)"}`);
    },
    error: (finding) => finding.cause!,
  },
  {
    name: "ring buffer",
    needs: ["ffi", "env"],
    fix: "BPF ring buffers need Linux 5.8 or later",
    check: () => {
      const ret = bpf().libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, null);
      if (ret === 1) return pass("BPF_MAP_TYPE_RINGBUF available");
      if (ret === 0 || ret === -EOPNOTSUPP) {
        return {
          ok: false,
          detail: "BPF_MAP_TYPE_RINGBUF refused",
          fix: "BPF ring buffers need Linux 5.8 or later",
        };
      }
      // The probe itself failed: let the kernel answer at load instead.
      return { ok: null, detail: `unknown: the probe failed (errno ${-ret})`, fix: null };
    },
    error: () => new NotSupportedError("BPF ring buffers", "Linux 5.8 or later"),
  },
];

/**
 * The tracer's checks before any load: every requirement in turn, stopping
 * at the first that fails with its error.
 *
 * @throws {NotSupportedError} for an architecture, BTF or ring buffers this machine lacks.
 * @throws {PermissionError} without root or CAP_BPF and CAP_PERFMON.
 * @throws {LibbpfNotFoundError} when no libbpf >= 1.0 loads.
 */
export function preflight(): void {
  for (const requirement of REQUIREMENTS) {
    if (!requirement.error) continue;
    const finding = requirement.check();
    if (finding.ok === false && requirement.error) throw requirement.error(finding);
  }
}
