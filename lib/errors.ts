/**
 * Errors that deno_bpf throws. Each message is one line that says what went
 * wrong and, where there is something to do, what to do next.
 *
 * @module
 */

import { errnoDescription, errnoName } from "./errno.ts";

/**
 * A libbpf or kernel call failed with an errno. Its subclasses
 * {@linkcode PermissionError} and {@linkcode VerifierError} are more
 * specific: test for them first.
 *
 * @example Say which call failed and why, then rethrow
 * ```ts
 * import { BpfError } from "./errors.ts";
 * import { BpfObject } from "./object.ts";
 *
 * export function loadFile(path: string): BpfObject {
 *   const obj = BpfObject.openFile(path);
 *   try {
 *     obj.load();
 *     return obj;
 *   } catch (e) {
 *     obj.close();
 *     if (e instanceof BpfError) console.error(`${e.operation}: ${e.code} (errno ${e.errno})`);
 *     throw e;
 *   }
 * }
 * ```
 */
export class BpfError extends Error {
  /** The positive errno, e.g. `1`. */
  readonly errno: number;
  /** The errno's name, e.g. `"EPERM"`. */
  readonly code: string;
  /** What was being done, e.g. `load "fentry_unlink"`. */
  readonly operation: string;
  /** The tail of libbpf's log (including any verifier log) for this failure. */
  readonly log: string;

  /**
   * Builds the error; see the class for what it carries.
   *
   * @param operation What was being done, as in `Cannot ${operation}`.
   * @param errno The positive errno the call failed with (0 if it set none).
   * @param options A hint for the user, libbpf's log, the cause.
   */
  constructor(
    operation: string,
    errno: number,
    options: { hint?: string; log?: string; cause?: unknown } = {},
  ) {
    // errno 0: the call failed without saying why (a library bug); say so
    // rather than invent a cause.
    const code = errno === 0 ? "EUNKNOWN" : errnoName(errno);
    const why = errno === 0 ? "failed without an errno" : `${code} (${errnoDescription(errno)})`;
    const hint = options.hint ? `; ${options.hint}` : "";
    super(`Cannot ${operation}: ${why}${hint}`, { cause: options.cause });
    this.name = "BpfError";
    this.errno = errno;
    this.code = code;
    this.operation = operation;
    this.log = options.log ?? "";
  }
}

/**
 * The kernel (or libbpf) lacks a feature; names the version that has it.
 *
 * @example Say what is missing, and what provides it
 * ```ts
 * import { NotSupportedError } from "./errors.ts";
 *
 * export function explain(e: unknown): string {
 *   if (!(e instanceof NotSupportedError)) throw e;
 *   return `no ${e.feature} here; it needs ${e.requires}`;
 * }
 * ```
 */
export class NotSupportedError extends Error {
  /** The missing feature, e.g. `"BPF ring buffer"`. */
  readonly feature: string;
  /** What provides it, e.g. `"Linux 5.8"`. */
  readonly requires: string;

  /**
   * Builds the error; see the class for what it carries.
   *
   * @param feature The missing feature, e.g. `"BPF ring buffers"`.
   * @param requires What provides it, e.g. `"Linux 5.8 or later"`.
   */
  constructor(feature: string, requires: string) {
    super(`This kernel lacks ${feature}: deno_bpf needs ${requires}`);
    this.name = "NotSupportedError";
    this.feature = feature;
    this.requires = requires;
  }
}

/**
 * The process lacks the privileges for a BPF operation: it is not root and
 * has neither CAP_SYS_ADMIN nor CAP_BPF with CAP_PERFMON. A kernel that
 * refuses a privileged process (lockdown, an LSM) raises a plain
 * {@linkcode BpfError} instead, because sudo would not help there.
 *
 * @example Exit with the one-line advice instead of a stack trace
 * ```ts
 * import { PermissionError } from "./errors.ts";
 * import { BpfObject } from "./object.ts";
 *
 * export function loadOrExit(path: string): BpfObject {
 *   const obj = BpfObject.openFile(path);
 *   try {
 *     obj.load();
 *     return obj;
 *   } catch (e) {
 *     obj.close();
 *     if (!(e instanceof PermissionError)) throw e;
 *     console.error(e.message); // "deno_bpf needs root (...); run it with sudo"
 *     Deno.exit(1);
 *   }
 * }
 * ```
 */
export class PermissionError extends BpfError {
  /**
   * Builds the error; see the class for what it carries.
   *
   * @param operation What was refused.
   * @param errno The errno of the refusal (EPERM by default).
   * @param log libbpf's log for the refused call.
   */
  constructor(operation = "use BPF", errno = 1, log = "") {
    super(operation, errno, { log });
    this.message = "deno_bpf needs root (or CAP_BPF and CAP_PERFMON); run it with sudo";
    this.name = "PermissionError";
  }
}

/**
 * The kernel's verifier rejected a program. {@linkcode BpfError.log} holds
 * the verifier's whole log; the message shows its last lines.
 *
 * @example Print the whole verifier log of a rejected program
 * ```ts
 * import { VerifierError } from "./errors.ts";
 * import type { BpfObject } from "./object.ts";
 *
 * export function loadVerbose(obj: BpfObject): void {
 *   try {
 *     obj.load();
 *   } catch (e) {
 *     if (e instanceof VerifierError) console.error(`${e.program} was rejected:\n${e.log}`);
 *     throw e;
 *   }
 * }
 * ```
 */
export class VerifierError extends BpfError {
  /** The program the verifier rejected, or `""` if libbpf did not say. */
  readonly program: string;

  /**
   * Builds the error; see the class for what it carries.
   *
   * @param operation What was being done (loading an object).
   * @param errno The errno the load failed with.
   * @param program The rejected program's name, or `""`.
   * @param log libbpf's log, holding the verifier's.
   */
  constructor(operation: string, errno: number, program: string, log: string) {
    super(operation, errno, { log });
    // The last lines say why; the statistics line after them does not.
    const tail = verifierLog(log).trim().split("\n").map((l) => l.trim())
      .filter((l) => l && !/^processed \d+ insns/.test(l)).slice(-2).join(" | ");
    this.message = `The BPF verifier rejected ${program ? `program "${program}"` : "a program"}` +
      ` while trying to ${operation}: ${tail || this.code}; the whole verifier log is in error.log`;
    this.name = "VerifierError";
    this.program = program;
  }
}

/**
 * The verifier's own log inside libbpf's log, which libbpf prints between
 * `-- BEGIN PROG LOAD LOG --` and `-- END PROG LOAD LOG --`; `""` if absent.
 */
export function verifierLog(libbpfLog: string): string {
  const begin = libbpfLog.indexOf("-- BEGIN PROG LOAD LOG --");
  if (begin < 0) return "";
  const start = libbpfLog.indexOf("\n", begin) + 1;
  const end = libbpfLog.indexOf("-- END PROG LOAD LOG --", start);
  const text = libbpfLog.slice(start, end < 0 ? undefined : end);
  // The END marker's line starts with libbpf's "libbpf: prog 'x': " prefix.
  return text.slice(0, text.lastIndexOf("\n") + 1);
}

/**
 * libbpf could not be found or is too old. It is thrown by the first call
 * that needs libbpf, not by an import.
 *
 * @example Report a missing libbpf without failing
 * ```ts
 * import { LibbpfNotFoundError } from "./errors.ts";
 * import { libbpfVersionString } from "./_ffi.ts";
 *
 * export function libbpfVersion(): string | undefined {
 *   try {
 *     return libbpfVersionString();
 *   } catch (e) {
 *     if (!(e instanceof LibbpfNotFoundError)) throw e;
 *     console.error(`no libbpf; tried:\n${e.tried.join("\n")}`);
 *     return undefined;
 *   }
 * }
 * ```
 */
export class LibbpfNotFoundError extends Error {
  /** Every path tried, with why it was rejected. */
  readonly tried: string[];

  /**
   * Builds the error; see the class for what it carries.
   *
   * @param tried Every path tried, each with why it was rejected.
   */
  constructor(tried: string[]) {
    super(
      `Cannot load libbpf >= 1.0; tried ${tried.join(", ")}. ` +
        `Install it (Debian/Ubuntu: apt-get install libbpf1; Fedora: dnf install libbpf) ` +
        `or set LIBBPF_PATH to the library's path`,
    );
    this.name = "LibbpfNotFoundError";
    this.tried = tried;
  }
}

/**
 * A record layout declared in TypeScript does not match the object's BTF.
 *
 * @example Tell a stale generated module from other failures
 * ```ts
 * import { LayoutMismatchError } from "./errors.ts";
 * import { open, type UnlinkSkeleton } from "../bpf/unlink_bpf.ts";
 *
 * export function openChecked(): UnlinkSkeleton {
 *   try {
 *     return open(); // checks every record layout against the object's BTF
 *   } catch (e) {
 *     if (e instanceof LayoutMismatchError) console.error(`${e.message} (run deno task gen)`);
 *     throw e;
 *   }
 * }
 * ```
 */
export class LayoutMismatchError extends Error {
  /**
   * Builds the error; see the class for what it carries.
   *
   * @param struct The struct's tag, e.g. `"unlink_event"`.
   * @param problem The first difference found.
   * @param hint What to do about it.
   */
  constructor(
    struct: string,
    problem: string,
    hint = "update the layout to match the C header",
  ) {
    super(
      `Record layout "struct ${struct}" does not match the BPF object's BTF: ${problem}; ${hint}`,
    );
    this.name = "LayoutMismatchError";
  }
}

/** What {@linkcode check} and friends may add to an error. */
export interface ErrorOptions {
  /** What the user can do about it, appended to the message. */
  hint?: string;
  /** libbpf's log for the failing call. */
  log?: string;
}

/**
 * Turns libbpf's `-errno` convention into an exception: returns `ret` when it
 * is >= 0, and throws a {@linkcode BpfError} otherwise.
 */
export function check(ret: number, operation: string, options?: ErrorOptions): number {
  if (ret >= 0) return ret;
  throw new BpfError(operation, -ret, options);
}
