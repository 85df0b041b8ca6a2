/**
 * Errors that deno_bpf throws. Each message is one line that says what went
 * wrong and, where there is something to do, what to do next.
 *
 * @module
 */

import { errnoDescription, errnoName } from "./errno.ts";

/** A libbpf or kernel call failed with an errno. */
export class BpfError extends Error {
  /** The positive errno, e.g. `1`. */
  readonly errno: number;
  /** The errno's name, e.g. `"EPERM"`. */
  readonly code: string;
  /** What was being done, e.g. `load "fentry_unlink"`. */
  readonly operation: string;
  /** The tail of libbpf's log (including any verifier log) for this failure. */
  readonly log: string;

  constructor(
    operation: string,
    errno: number,
    options: { hint?: string; log?: string; cause?: unknown } = {},
  ) {
    const code = errnoName(errno);
    const hint = options.hint ? `; ${options.hint}` : "";
    super(
      `Cannot ${operation}: ${code} (${errnoDescription(errno)})${hint}`,
      { cause: options.cause },
    );
    this.name = "BpfError";
    this.errno = errno;
    this.code = code;
    this.operation = operation;
    this.log = options.log ?? "";
  }
}

/** The kernel (or libbpf) lacks a feature; names the version that has it. */
export class NotSupportedError extends Error {
  /** The missing feature, e.g. `"BPF ring buffer"`. */
  readonly feature: string;
  /** What provides it, e.g. `"Linux 5.8"`. */
  readonly requires: string;

  constructor(feature: string, requires: string) {
    super(`This kernel lacks ${feature}: deno_bpf needs ${requires}`);
    this.name = "NotSupportedError";
    this.feature = feature;
    this.requires = requires;
  }
}

/** The process lacks the privileges to load BPF programs. */
export class PermissionError extends Error {
  constructor(detail = "") {
    super(
      `deno_bpf needs root (or CAP_BPF and CAP_PERFMON)${
        detail ? `: ${detail}` : ""
      }; run it with sudo`,
    );
    this.name = "PermissionError";
  }
}

/** libbpf could not be found or is too old. */
export class LibbpfNotFoundError extends Error {
  /** Every path tried, with why it was rejected. */
  readonly tried: string[];

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

/** A record layout declared in TypeScript does not match the object's BTF. */
export class LayoutMismatchError extends Error {
  constructor(struct: string, problem: string) {
    super(
      `Record layout "struct ${struct}" does not match the BPF object's BTF: ${problem}; ` +
        `update the layout to match the C header`,
    );
    this.name = "LayoutMismatchError";
  }
}

/**
 * Turns libbpf's `-errno` convention into an exception: returns `ret` when it
 * is >= 0, and throws a {@linkcode BpfError} otherwise.
 */
export function check(
  ret: number,
  operation: string,
  options?: { hint?: string; log?: string },
): number {
  if (ret >= 0) return ret;
  throw new BpfError(operation, -ret, options);
}

/** No attach method worked (or the one forced did not). */
export class AttachError extends Error {
  /** Every method tried, with the reason it failed. */
  readonly attempts: { method: string; reason: string }[];
  /** The tail of libbpf's log for the last attempt. */
  readonly log: string;

  constructor(attempts: { method: string; reason: string }[], log = "") {
    const tried = attempts.map((a) => `${a.method}: ${a.reason}`).join("; ");
    super(
      attempts.length === 1
        ? `Cannot trace with ${tried}; try --mode auto, or --verbose for libbpf's log`
        : `No attach method works on this kernel (${tried}); run with --verbose for libbpf's log`,
    );
    this.name = "AttachError";
    this.attempts = attempts;
    this.log = log;
  }
}
