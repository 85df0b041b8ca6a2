/**
 * deno_bpf: eBPF from TypeScript. It binds the system's libbpf with
 * `Deno.dlopen`, so it needs no compiler and no helper binary, and it comes
 * in two layers:
 *
 * - **A general libbpf binding**: open, configure, load and attach BPF
 *   objects ({@linkcode BpfObject}, {@linkcode Program}, {@linkcode Link}),
 *   attach at run time (tracepoints, raw tracepoints, kprobes, uprobes,
 *   fentry targets), read and write maps ({@linkcode BpfMap},
 *   {@linkcode PinnedMap}), read ring buffers and perf buffers
 *   ({@linkcode RingBuffer}, {@linkcode PerfBuffer}) into typed records
 *   ({@linkcode defineLayout}, {@linkcode layoutFromBtf}, checked against
 *   the object's BTF), generate typed skeletons ({@linkcode generateSkeleton},
 *   `deno task gen`), and probe what the kernel offers
 *   ({@linkcode hasMapType}, {@linkcode hasProgramType}).
 * - **The unlink tracer built on it**: who deletes which file, and whether it
 *   worked ({@linkcode UnlinkTracer}). Its output formats and doctor are in
 *   `./lib/unlink/mod.ts` (the `./unlink` export).
 *
 * Needs Linux >= 5.8 with BTF, libbpf >= 1.0, root (or CAP_BPF and
 * CAP_PERFMON), and the Deno permissions `--allow-ffi` (unscoped: scoped FFI
 * grants break pointer views) and `--allow-env`. /proc and /sys are read
 * through libc, so `--allow-read` is not needed. Importing this module needs
 * no permission: libbpf is opened on first use.
 *
 * @example Trace failed unlinks with the library (needs root)
 * ```ts
 * import { UnlinkTracer } from "./mod.ts";
 *
 * export async function traceFailures(): Promise<void> {
 *   using tracer = UnlinkTracer.open({ failedOnly: true });
 *   Deno.addSignalListener("SIGINT", () => tracer.stop());
 *   for await (const e of tracer) {
 *     console.log(`${e.comm}[${e.tgid}] ${e.filename} -> ${e.ret}`);
 *   }
 *   console.log(`lost ${tracer.lost}`);
 * }
 * ```
 *
 * @example Count calls per command in a hash map of your own program (needs root)
 * ```ts
 * import { BpfObject } from "./mod.ts";
 *
 * export async function countOpens(): Promise<void> {
 *   using obj = BpfObject.openFile("count.bpf.o");
 *   obj.load();
 *   using _link = obj.program("count").attachTracepoint("syscalls", "sys_enter_openat");
 *   await new Promise((r) => setTimeout(r, 1000));
 *   for (const [key, value] of obj.map("counts").entries()) {
 *     console.log(new TextDecoder().decode(key), new DataView(value.buffer).getBigUint64(0, true));
 *   }
 * }
 * ```
 *
 * @module
 */

export { checkErrno, checkPtr, failure, libbpfVersionString } from "./lib/_ffi.ts";
export { type AttachAttempt, AttachError } from "./lib/unlink/errors.ts";
export {
  BpfError,
  check,
  type ErrorOptions,
  LayoutMismatchError,
  LibbpfNotFoundError,
  NotSupportedError,
  PermissionError,
  VerifierError,
  verifierLog,
} from "./lib/errors.ts";
export { errnoDescription, errnoName } from "./lib/errno.ts";
export {
  Btf,
  BtfData,
  type BtfMember,
  BtfReader,
  type BtfShape,
  type BtfSlot,
  type BtfStruct,
  type BtfVar,
} from "./lib/btf.ts";
export {
  type AnyLayout,
  type BigIntType,
  type BtfStructSource,
  checkLayout,
  decodeCString,
  type Decoded,
  defineLayout,
  type Fields,
  fieldSize,
  type FieldSpec,
  type FieldType,
  type FieldValue,
  type IntType,
  type Layout,
  layoutFromBtf,
  type LayoutFromBtfOptions,
  type LayoutOptions,
  type LayoutRecord,
  type RecordOf,
  type ScalarType,
  type Tail,
  type TailValue,
} from "./lib/layout.ts";
export {
  describeObject,
  type GenerateOptions,
  generateSkeleton,
  type ObjectDescription,
  type ObjectProgram,
  type ObjectSetting,
  openSkeleton,
  Skeleton,
  type SkeletonSpec,
} from "./lib/skeleton.ts";
export { type LogHandler, type LogLevel, logToStderr, setLogHandler, takeLog } from "./lib/log.ts";
export { BpfObject, Link, Program, releaseFreedMemory, type UprobeOptions } from "./lib/object.ts";
export {
  BpfMap,
  MAP_TYPES,
  MapHandle,
  type MapInfo,
  type MapType,
  PinnedMap,
  possibleCpus,
  TypedMap,
  type UpdateMode,
} from "./lib/map.ts";
export {
  hasHelper,
  hasMapType,
  hasProgramType,
  type Helper,
  HELPERS,
  PROGRAM_TYPES,
  type ProgramType,
} from "./lib/features.ts";
export {
  checkRingSize,
  MAX_RING_SIZE,
  type RecordHandler,
  RingBuffer,
  type RingBufferOptions,
  type RingRecordHandler,
} from "./lib/ring_buffer.ts";
export { RingParser } from "./lib/ring.ts";
export { PerfBuffer, type PerfBufferOptions, type PerfRecordHandler } from "./lib/perf_buffer.ts";
export { ensureTracefs, findTracefs, TRACEFS, TracePipe } from "./lib/tracefs.ts";
export { monotonicToEpochMs } from "./lib/clock.ts";
export {
  ARGV_MODES,
  type ArgvMode,
  ATTACH_METHODS,
  type AttachMethod,
  DEFAULT_RING_SIZE,
  type Op,
  OPS,
  type SkippedMethod,
  UNLINK_EVENT_FIELDS,
  UNLINK_EVENT_TAIL,
  UNLINK_F_ARGV_TRUNCATED,
  UNLINK_F_INODE,
  UNLINK_F_NAME_TRUNCATED,
  UNLINK_F_PATH_HEAD,
  UNLINK_F_PATH_JOINED,
  UNLINK_F_PATH_PARTIAL,
  UNLINK_F_PATH_TRUNCATED,
  UNLINK_F_PATH_UNRESOLVED,
  type UnlinkEvent,
  unlinkEvent,
  UnlinkTracer,
  type UnlinkTracerOptions,
} from "./lib/unlink/tracer.ts";
