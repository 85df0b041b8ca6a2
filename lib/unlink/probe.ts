/**
 * Whether the unlink tracer really works here with a given attach method:
 * a trial load, attach and detach, because for attach methods only a real
 * attach is an honest answer (a kernel can load a kprobe program and still
 * have no kprobes).
 *
 * @module
 */

import { BpfError, LibbpfNotFoundError, NotSupportedError } from "../errors.ts";
import { type AttachAttempt, AttachError } from "./errors.ts";
import { type AttachMethod, UnlinkTracer } from "./tracer.ts";

/**
 * Where a trial attach stopped: the tracer's own checks before loading
 * (`preflight`: privileges, BTF, ring buffers, libbpf), the kernel's
 * refusal to load (`load`), the verifier (`verifier`), or attaching (`attach`).
 */
export type AttachStage = "preflight" | AttachAttempt["stage"];

/** The outcome of {@linkcode tryAttach}. */
export type AttachProbe =
  | {
    /** The method tried. */
    method: AttachMethod;
    /** It loaded, attached and detached. */
    ok: true;
    /** How long the whole trial took, in milliseconds. */
    ms: number;
  }
  | {
    /** The method tried. */
    method: AttachMethod;
    /** It did not work. */
    ok: false;
    /** Where it stopped. */
    stage: AttachStage;
    /** The errno's name, e.g. `"EPERM"`, when the kernel or libc gave one. */
    code?: string;
    /** In a few words, e.g. `load refused (EPERM)`. */
    reason: string;
    /** How long the trial took, in milliseconds. */
    ms: number;
  };

/**
 * Whether the unlink tracer really works with `method` here: opens it with a
 * 4 KiB ring buffer (a real load and attach), then closes it (detach and
 * unload). Like the tracer, the tracepoint trial mounts tracefs at
 * `/sys/kernel/tracing` if no tracefs is mounted.
 *
 * @param method `"fentry"`, `"kprobe"` or `"tracepoint"`.
 * @returns `{ ok: true }`, or where it stopped and the errno, e.g.
 * `{ ok: false, stage: "load", code: "EPERM", reason: "load refused (EPERM)" }`.
 * @throws {Deno.errors.NotCapable} when the process lacks `--allow-ffi` or
 * `--allow-env`: that is the caller's to fix, not the kernel's answer.
 *
 * @example (needs root)
 * ```ts
 * import { tryAttach } from "./probe.ts";
 *
 * export function printMethods(): void {
 *   for (const m of ["fentry", "kprobe", "tracepoint"] as const) {
 *     const r = tryAttach(m);
 *     console.log(m, r.ok ? "works" : r.reason);
 *   }
 * }
 * ```
 */
export function tryAttach(method: AttachMethod): AttachProbe {
  const start = performance.now();
  const ms = () => Math.round((performance.now() - start) * 10) / 10;
  try {
    UnlinkTracer.open({ mode: method, ringBufferSize: 4096 }).close();
    return { method, ok: true, ms: ms() };
  } catch (error) {
    if (error instanceof AttachError && error.attempts.length > 0) {
      const { stage, code, reason } = error.attempts[0];
      return { method, ok: false, stage, ...code ? { code } : {}, reason, ms: ms() };
    }
    // The tracer's checks before any load: privileges, BTF, ring buffers, libbpf.
    if (error instanceof BpfError) {
      return {
        method,
        ok: false,
        stage: "preflight",
        code: error.code,
        reason: error.message,
        ms: ms(),
      };
    }
    if (error instanceof NotSupportedError || error instanceof LibbpfNotFoundError) {
      return { method, ok: false, stage: "preflight", reason: error.message, ms: ms() };
    }
    throw error;
  }
}
