/**
 * The unlink tool built on deno_bpf: who deletes which file, and whether it
 * worked. The tracer with its fallback ladder (fentry, kprobe, syscall
 * tracepoints), its record layout, the text and JSON output of
 * `scripts/trace.ts` (string formatters and the byte-level writer), the
 * doctor that says whether it can run here, and the service outputs:
 * Prometheus metrics and RFC 5424 syslog.
 *
 * The front door, `mod.ts`, exports the tracer itself; this module adds what
 * a tool that prints events, as `scripts/trace.ts` does, needs too.
 *
 * @example Print failed unlinks as trace.ts's JSON lines (needs root)
 * ```ts
 * import { EventWriter, UnlinkTracer } from "./mod.ts";
 *
 * export async function printFailures(): Promise<void> {
 *   using tracer = UnlinkTracer.open({ failedOnly: true });
 *   const out = new EventWriter("json");
 *   while (await tracer.wait()) {
 *     tracer.drain((bytes, offset) => out.record(bytes, offset));
 *     out.flush();
 *   }
 * }
 * ```
 *
 * @module
 */

export * from "./tracer.ts";
export * from "./format.ts";
export * from "./event_writer.ts";
export { ArgvRedactor, DEFAULT_REDACT_PATTERNS, REDACTED } from "./redact.ts";
export * from "./probe.ts";
export { type AttachAttempt, AttachError } from "./errors.ts";
export * from "./doctor.ts";
export {
  cgroupIdOf,
  CgroupNames,
  type CgroupNamesOptions,
  containerOf,
  type NameCacheOptions,
} from "./_cgroup.ts";
export * from "./metrics.ts";
export * from "./syslog.ts";
export * from "./service.ts";
