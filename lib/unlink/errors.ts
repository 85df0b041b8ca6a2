/**
 * The unlink tool's own errors: what its fallback ladder says when no attach
 * method works. The general binding's errors are in `../errors.ts`.
 *
 * @module
 */

/** One attach method tried and refused: where it stopped, and why. */
export interface AttachAttempt {
  /** The method tried. */
  method: string;
  /**
   * Where it stopped: the kernel refused the load (`load`), the verifier
   * rejected a program (`verifier`), or attaching failed (`attach`).
   */
  stage: "load" | "verifier" | "attach";
  /** The errno's name, e.g. `"EPERM"`, when the kernel or libc gave one. */
  code?: string;
  /** In a few words, e.g. `load refused (EPERM)`. */
  reason: string;
}

/**
 * No attach method worked (or the one forced did not).
 *
 * @example List why each attach method failed
 * ```ts
 * import { AttachError } from "./errors.ts";
 * import { UnlinkTracer } from "./tracer.ts";
 *
 * export function openTracepoints(): UnlinkTracer {
 *   try {
 *     return UnlinkTracer.open({ mode: "tracepoint" });
 *   } catch (e) {
 *     if (e instanceof AttachError) {
 *       for (const { method, reason } of e.attempts) console.error(`${method}: ${reason}`);
 *     }
 *     throw e;
 *   }
 * }
 * ```
 */
export class AttachError extends Error {
  /** Every method tried, with where and why it failed. */
  readonly attempts: AttachAttempt[];
  /** The tail of libbpf's log for the last attempt. */
  readonly log: string;

  /**
   * Builds the error; see the class for what it carries.
   *
   * @param attempts Every method tried, with why it failed.
   * @param log The tail of libbpf's log for the last attempt.
   */
  constructor(attempts: AttachAttempt[], log = "") {
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
