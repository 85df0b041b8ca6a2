/**
 * deno_bpf: eBPF from TypeScript. Binds the system's libbpf with
 * `Deno.dlopen` (no compiler, no helper binary) and traces who deletes which
 * file, and whether it worked.
 *
 * Needs Linux >= 5.8 with BTF, libbpf >= 1.0, root (or CAP_BPF and
 * CAP_PERFMON), and `--allow-ffi` (unscoped: scoped FFI grants break pointer
 * views) plus `--allow-read`/`--allow-write` for /proc, /sys and tracefs.
 *
 * @example Trace unlinks with the library (needs root)
 * ```ts ignore
 * import { UnlinkTracer } from "./mod.ts";
 *
 * using tracer = UnlinkTracer.open({ failedOnly: true });
 * Deno.addSignalListener("SIGINT", () => tracer.stop());
 * for await (const e of tracer) {
 *   console.log(`${e.comm}[${e.tgid}] ${e.filename} -> ${e.ret}`);
 * }
 * console.log(`lost ${tracer.lost}`);
 * ```
 *
 * @module
 */

export { libbpfVersionString } from "./lib/_ffi.ts";
export {
  AttachError,
  BpfError,
  check,
  checkErrno,
  checkPtr,
  type ErrorOptions,
  failure,
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
  type UpdateMode,
} from "./lib/map.ts";
export {
  type AttachProbe,
  type AttachStage,
  hasHelper,
  hasMapType,
  hasProgramType,
  type Helper,
  HELPERS,
  PROGRAM_TYPES,
  type ProgramType,
  tryAttach,
} from "./lib/features.ts";
export {
  type Check,
  doctor,
  type DoctorOptions,
  type DoctorReport,
  type PermissionKind,
} from "./lib/doctor.ts";
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
  ATTACH_METHODS,
  type AttachMethod,
  DEFAULT_RING_SIZE,
  type SkippedMethod,
  UNLINK_F_NAME_TRUNCATED,
  type UnlinkEvent,
  unlinkEvent,
  UnlinkTracer,
  type UnlinkTracerOptions,
} from "./lib/unlink.ts";
export { type EventFormat, EventWriter } from "./lib/event_writer.ts";
export {
  attachText,
  envelope,
  errorOf,
  escapeBytes,
  eventData,
  type EventJson,
  filenameTruncated,
  formatJson,
  formatText,
  retText,
  TEXT_HEADER,
  TRUNCATED_MARK,
} from "./lib/format.ts";
