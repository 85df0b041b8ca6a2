/**
 * Whether the unlink tracer can run here, and if not, what to do: the
 * kernel, BTF, lockdown, privileges, libbpf, ring buffers, a real trial
 * attach of each method, tracefs and the Deno permissions. {@linkcode doctor}
 * returns the checks as data; `scripts/doctor.ts` prints them.
 *
 * Needs only `--allow-ffi --allow-env`: /proc and /sys are read through libc
 * (see `_sys.ts`). A check whose Deno permission is missing is reported as
 * failing, naming the flag, without asking for it.
 *
 * @example Print what fails (needs root for the trial attaches)
 * ```ts
 * import { doctor } from "./doctor.ts";
 *
 * export function printFailures(): void {
 *   const report = doctor();
 *   for (const c of report.checks) if (c.ok === false) console.log(c.name, c.detail, c.fix);
 *   console.log(report.auto ? `auto picks ${report.auto}` : "no method works");
 * }
 * ```
 *
 * @module
 */

import { BpfError } from "../errors.ts";
import { kernelRelease } from "../_sys.ts";
import { type AttachProbe, tryAttach } from "./probe.ts";
import { libbpfLocation, REQUIREMENTS } from "./requirements.ts";
import { findTracefs, TRACEFS } from "../tracefs.ts";
import { ATTACH_METHODS, type AttachMethod } from "./tracer.ts";

/**
 * One check: `ok` is `true` (✓), `false` (✗) or `null` when it cannot be
 * told and does not stop the tracer (e.g. lockdown with securityfs unmounted).
 */
export interface Check {
  /** Short and stable, e.g. `"kernel"`, `"fentry"`, `"tracefs"`. */
  name: string;
  /** Passed, failed, or `null` for unknown. */
  ok: boolean | null;
  /** What was found, e.g. `"load refused (EPERM)"`. */
  detail: string;
  /** What to do about a failure, or `null`. */
  fix: string | null;
}

/** The Deno permissions doctor reports; only `ffi` and `env` are needed. */
export const PERMISSIONS = ["ffi", "env", "read", "write", "run", "sys"] as const;
/** One of {@linkcode PERMISSIONS}. */
export type PermissionKind = typeof PERMISSIONS[number];

/** Everything {@linkcode doctor} found. */
export interface DoctorReport {
  /** Whether the tracer can run: some attach method works. */
  ok: boolean;
  /** The method `trace.ts --mode auto` would pick, or `null` if none works. */
  auto: AttachMethod | null;
  /** `uname -r`, if it could be read. */
  kernel: string | null;
  /** The loaded libbpf, if it could be loaded. */
  libbpf: { version: string; path: string | null } | null;
  /** The trial attach of each method tried, best first. */
  methods: AttachProbe[];
  /** Which Deno permissions this process has. */
  permissions: Record<PermissionKind, boolean>;
  /** Every check, in the order printed. */
  checks: Check[];
}

/** Options for {@linkcode doctor}. */
export interface DoctorOptions {
  /**
   * The attach methods to try, default all of `fentry`, `kprobe`,
   * `tracepoint`; {@linkcode DoctorReport.auto} is the first that works.
   */
  methods?: readonly AttachMethod[];
}

const LEAST = "--allow-ffi --allow-env";
const SUDO = "run it as root (sudo), or give deno CAP_BPF and CAP_PERFMON";
const LIBBPF_FIX =
  "install libbpf >= 1.0 (Debian/Ubuntu: libbpf1; Fedora: libbpf) or set LIBBPF_PATH";
const UNPRIVILEGED = { ok: false, detail: "not tried: needs root (see capabilities)", fix: SUDO };

/** The only environment variables deno_bpf reads: `--allow-env` may be scoped to them. */
const ENV_READ = ["LIBBPF_PATH", "NO_COLOR"];

/**
 * Which of {@linkcode PERMISSIONS} are granted, asked without prompting. `env`
 * counts as granted when the variables deno_bpf reads are, as with
 * `--allow-env=LIBBPF_PATH,NO_COLOR`.
 */
export function grantedPermissions(): Record<PermissionKind, boolean> {
  const out = {} as Record<PermissionKind, boolean>;
  for (const name of PERMISSIONS) {
    out[name] = name === "env"
      ? ENV_READ.every((variable) =>
        Deno.permissions.querySync({ name, variable }).state === "granted"
      )
      : Deno.permissions.querySync({ name }).state === "granted";
  }
  return out;
}

/** The `--allow-*` flag a NotCapable message names, e.g. `--allow-env`. */
function flagOf(error: Error): string | undefined {
  return /--allow-[a-z]+/.exec(error.message)?.[0];
}

/** The one line an error becomes: never a stack trace. */
function lineOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0];
}

/** What to do when a method fails, from where it stopped. */
function methodFix(probe: AttachProbe & { ok: false }): string {
  const fallback = "auto mode falls back to the next method";
  if (probe.stage === "preflight") return "fix the failing checks above";
  switch (probe.method) {
    case "fentry":
      return probe.stage === "load" && probe.code === "EPERM"
        ? `the kernel refuses fentry programs even to root (a lockdown or LSM policy, ` +
          `or no BPF trampolines); ${fallback}`
        : `needs Linux 5.5+ with BTF and BPF trampolines for this architecture; ${fallback}`;
    case "kprobe":
      return probe.stage === "attach" && probe.code === "ENOENT"
        ? `the kernel cannot attach kprobes to do_unlinkat (built without CONFIG_KPROBES?); ` +
          fallback
        : `needs a kernel built with CONFIG_KPROBES=y; ${fallback}`;
    case "tracepoint":
      return `needs syscall tracepoints (CONFIG_FTRACE_SYSCALLS=y) and tracefs ` +
        `(mount -t tracefs tracefs ${TRACEFS})`;
  }
}

/**
 * Runs every check. The trial attaches load, attach and detach the real
 * tracer once per method; like the tracer, the tracepoint trial mounts
 * tracefs if it is not mounted. Never throws for what it finds: each failure
 * is a check with `ok: false` and a fix.
 *
 * @param options Which attach methods to try.
 * @returns The checks, the facts behind them, and the method auto mode would pick.
 */
export function doctor(options: DoctorOptions = {}): DoctorReport {
  const permissions = grantedPermissions();
  const missing = (needs: PermissionKind[]) => needs.filter((p) => !permissions[p]);
  const checks: Check[] = [];

  /** Runs one check; a missing permission or a throw becomes a failed check. */
  const run = (
    name: string,
    needs: PermissionKind[],
    fix: string,
    body: () => Omit<Check, "name">,
  ): Check => {
    const lacking = missing(needs);
    let check: Check;
    if (lacking.length > 0) {
      const flags = lacking.map((p) => `--allow-${p}`).join(" ");
      check = { name, ok: false, detail: `not checked: needs ${flags}`, fix: `run with ${LEAST}` };
    } else {
      try {
        check = { name, ...body() };
      } catch (error) {
        const flag = error instanceof Deno.errors.NotCapable ? flagOf(error) : undefined;
        check = flag
          ? { name, ok: false, detail: `not checked: needs ${flag}`, fix: `run with ${LEAST}` }
          : { name, ok: false, detail: lineOf(error), fix };
      }
    }
    checks.push(check);
    return check;
  };

  // The tracer's requirements, every row; the ring buffer's probe needs
  // libbpf and privileges, so without them it is not tried.
  const found = new Map<string, Check>();
  for (const requirement of REQUIREMENTS) {
    found.set(
      requirement.name,
      run(requirement.name, requirement.needs, requirement.fix, () => {
        if (requirement.name === "ring buffer") {
          if (found.get("libbpf")?.ok === false) {
            return { ok: false, detail: "not checked: libbpf did not load", fix: LIBBPF_FIX };
          }
          if (found.get("capabilities")?.ok === false) return UNPRIVILEGED;
        }
        const { ok, detail, fix } = requirement.check();
        return { ok, detail, fix };
      }),
    );
  }
  const lib = found.get("libbpf")!;
  const fact = <T>(read: () => T): T | null => {
    try {
      return read();
    } catch {
      return null; // its row says why
    }
  };
  const kernel = missing(["ffi"]).length === 0 ? fact(kernelRelease) : null;
  const libbpf = lib.ok ? fact(libbpfLocation) : null;
  // Without privileges the kernel refuses every trial: say why once.
  const unprivileged = found.get("capabilities")?.ok === false ? UNPRIVILEGED : undefined;

  // Seen before the trials: the tracepoint trial mounts tracefs if it is missing.
  let tracefsBefore: string | undefined | Error;
  if (missing(["ffi"]).length === 0) {
    try {
      tracefsBefore = findTracefs();
    } catch (error) {
      tracefsBefore = error instanceof Error ? error : new Error(String(error));
    }
  }

  const methods: AttachProbe[] = [];
  // In auto mode's order, so that the first that works is the one auto picks.
  const tried = ATTACH_METHODS.filter((m) => options.methods?.includes(m) ?? true);
  for (const method of tried) {
    run(method, ["ffi", "env"], "see the error above", () => {
      if (!lib.ok) return { ok: false, detail: "not tried: libbpf did not load", fix: LIBBPF_FIX };
      if (unprivileged) return unprivileged;
      const probe = tryAttach(method);
      methods.push(probe);
      return probe.ok
        ? { ok: true, detail: `loads and attaches (trial took ${probe.ms} ms)`, fix: null }
        : { ok: false, detail: probe.reason, fix: methodFix(probe) };
    });
  }

  const mountHint = `mount -t tracefs tracefs ${TRACEFS} (the tracer mounts it itself as root)`;
  run("tracefs", ["ffi"], mountHint, () => {
    if (tracefsBefore instanceof BpfError && tracefsBefore.code === "EACCES") {
      return { ok: null, detail: `unknown: ${TRACEFS} is readable by root only`, fix: null };
    }
    if (tracefsBefore instanceof Error) throw tracefsBefore;
    if (tracefsBefore) return { ok: true, detail: `mounted at ${tracefsBefore}`, fix: null };
    const now = findTracefs();
    return now
      ? {
        ok: true,
        detail: `was not mounted; the tracepoint trial mounted it at ${now}, where it stays`,
        fix: null,
      }
      : { ok: false, detail: "not mounted", fix: mountHint };
  });

  const granted = PERMISSIONS.filter((p) => permissions[p]);
  const notGranted = PERMISSIONS.filter((p) => !permissions[p]);
  const needed = missing(["ffi", "env"]);
  checks.push({
    name: "deno permissions",
    ok: needed.length === 0,
    detail: `granted: ${granted.join(", ") || "none"}` +
      (notGranted.length ? `; not granted: ${notGranted.join(", ")}` : "") +
      " (only ffi and env are needed)",
    fix: needed.length ? `run with ${LEAST}` : null,
  });

  const auto = methods.find((m) => m.ok)?.method ?? null;
  return { ok: auto !== null, auto, kernel, libbpf, methods, permissions, checks };
}

/**
 * The summary line: which method `trace.ts --mode auto` would pick, and why
 * the better ones were passed over; or that none works, and why.
 */
export function summaryLine(report: DoctorReport): string {
  const failed = report.methods.filter((m) => !m.ok);
  const why = (list: AttachProbe[]) =>
    list.length
      ? ` (${list.map((m) => `${m.method}: ${m.ok ? "works" : m.reason}`).join("; ")})`
      : "";
  if (report.methods.length === 0) {
    return "trace.ts: cannot tell which method auto mode would pick: no trial attach ran (see above)";
  }
  if (report.auto === null) return `trace.ts cannot run here: no attach method works${why(failed)}`;
  const rank = (m: AttachMethod) => ATTACH_METHODS.indexOf(m);
  const better = failed.filter((m) => rank(m.method) < rank(report.auto!));
  return `trace.ts --mode auto would pick ${report.auto}${why(better)}`;
}
