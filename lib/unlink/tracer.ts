/**
 * The unlink tracer: who deletes which file, and whether it worked.
 *
 * It loads the embedded `bpf/unlink.bpf.o`, picks the best attach method the
 * kernel allows (fentry/fexit, then kprobes, then syscall tracepoints, each
 * tried with a real load and attach), and yields one {@linkcode UnlinkEvent}
 * per `do_unlinkat` call.
 *
 * @example Print the next ten unlinks (needs root)
 * ```ts
 * import { UnlinkTracer } from "./tracer.ts";
 *
 * export async function printTen(): Promise<void> {
 *   using tracer = UnlinkTracer.open({ failedOnly: false });
 *   console.error(`attached via ${tracer.method}`);
 *   let n = 0;
 *   for await (const e of tracer) {
 *     console.log(e.tgid, e.comm, e.filename, e.ret);
 *     if (++n === 10) break;
 *   }
 * }
 * ```
 *
 * @module
 */

import { ENOENT, EOPNOTSUPP } from "../errno.ts";
import {
  UNLINK_BPF_O,
  UNLINK_EVENT_FIELDS,
  UNLINK_EVENT_TAIL,
  unlinkEvent as generatedLayout,
} from "../../bpf/unlink_bpf.ts";
import { bpf } from "../_ffi.ts";
import { type AttachAttempt, AttachError } from "./errors.ts";
import { BpfError, PermissionError, VerifierError } from "../errors.ts";
import { checkLayout, decodeCString, type Decoded, fieldSize, type Layout } from "../layout.ts";
import { normalizePath } from "./_path.ts";
import { cgroupIdOf, CgroupNames } from "./_cgroup.ts";
import { BpfObject, type Link } from "../object.ts";
import { decodedRecords } from "../_poller.ts";
import { ArgvRedactor } from "./redact.ts";
import type { BpfMap } from "../map.ts";
import { checkRingSize, type RecordHandler, RingBuffer } from "../ring_buffer.ts";
import { pathExists } from "../_sys.ts";
import { preflight } from "./requirements.ts";
import { ensureTracefs, findTracefs, TRACEFS } from "../tracefs.ts";

/**
 * A bit of `UnlinkEvent.flags` (`UNLINK_F_NAME_TRUNCATED` in bpf/unlink.h):
 * the name was longer than the 255 bytes kept, and `filename` holds only its
 * first 255 bytes.
 */
export const UNLINK_F_NAME_TRUNCATED = 1;
/** `argv` holds the first 256 bytes of a longer command line. */
export const UNLINK_F_ARGV_TRUNCATED = 1 << 1;
/** The path was longer than the 4095 bytes kept: `path` holds its end. */
export const UNLINK_F_PATH_TRUNCATED = 1 << 2;
/** The walk met its 64-step limit or a mount it could not cross: `path` is a suffix. */
export const UNLINK_F_PATH_PARTIAL = 1 << 3;
/** No path: `dfd` is not an open directory, or a kernel read failed. */
export const UNLINK_F_PATH_UNRESOLVED = 1 << 4;
/** The path was joined from the name as passed: `.` and `..` remain to fold. */
export const UNLINK_F_PATH_JOINED = 1 << 5;
/** `ino`, `dev`, `mode`, `size` and `nlink_after` describe the file. */
export const UNLINK_F_INODE = 1 << 6;
/**
 * With {@linkcode UNLINK_F_PATH_TRUNCATED}: `path` holds its beginning, not
 * its end (a name over 255 bytes that fentry or kprobe did not find).
 */
export const UNLINK_F_PATH_HEAD = 1 << 7;
/**
 * Set by the tracer, never by the kernel: a `redact` pattern matched, and
 * `argv` holds the command line with each match replaced by `*****`.
 */
export const UNLINK_F_ARGV_REDACTED = 1 << 8;

/**
 * How much of the command line leaves the kernel (`argv` option), by its
 * `UNLINK_ARGV_*` value in bpf/unlink.h: nothing, argv[0], or the first 256
 * bytes.
 */
export const ARGV_MODES = ["none", "argv0", "full"] as const;
/** A value of the `argv` option. */
export type ArgvMode = typeof ARGV_MODES[number];

/** The operations, by `UnlinkEvent.op` (`UNLINK_OP_*` in bpf/unlink.h). */
export const OPS = ["unlink", "rmdir", "rename_replace"] as const;
/** An operation that deletes a name. */
export type Op = typeof OPS[number];

/** The record as bpf/unlink.h declares it, through the generated module. */
const layout = generatedLayout;
export { UNLINK_EVENT_FIELDS, UNLINK_EVENT_TAIL };
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

const FILENAME_AT = UNLINK_EVENT_FIELDS.filename[1];
const FILENAME_SIZE = fieldSize(UNLINK_EVENT_FIELDS.filename[0]);
const PATH_AT = layout.size;
const PATH_LEN_AT = UNLINK_EVENT_FIELDS.path_len[1];
const FLAGS_AT = UNLINK_EVENT_FIELDS.flags[1];
const ARGV_AT = UNLINK_EVENT_FIELDS.argv[1];
const ARGV_SIZE = fieldSize(UNLINK_EVENT_FIELDS.argv[0]);
const ARGV_LEN_AT = UNLINK_EVENT_FIELDS.argv_len[1];
/** A record's head and the longest path the kernel sends (PATH_KEEP - 1 bytes). */
const MAX_RECORD = PATH_AT + 4096;
const NON_ASCII = /[\u0080-\uffff]/;

/**
 * The bytes of the name at `start` (NUL-terminated, or `size` long), if they
 * are not valid UTF-8. A plain byte loop, as this runs for every record:
 * asking the decoded string instead (`includes("\ufffd")`) costs twice as much.
 */
export function invalidUtf8(
  bytes: Uint8Array,
  start: number,
  size: number,
): Uint8Array | undefined {
  let end = start;
  let ascii = true;
  for (const limit = start + size; end < limit; end++) {
    const b = bytes[end];
    if (b === 0) break;
    if (b > 0x7f) ascii = false;
  }
  if (ascii) return undefined;
  const raw = bytes.slice(start, end); // a copy: ring memory is reused
  try {
    strictUtf8.decode(raw);
    return undefined;
  } catch {
    return raw;
  }
}

/**
 * `struct unlink_event` from `bpf/unlink.h`, declared once. Its decoder adds
 * `filename_bytes` to a record whose name is not valid UTF-8 (see
 * {@linkcode UnlinkEvent}).
 */
export const unlinkEvent: {
  /**
   * Decodes one record that starts at `offset` in `bytes`; `length` is the
   * record's length as the ring reports it (default: all of its path).
   */
  decode(bytes: Uint8Array, offset?: number, length?: number): UnlinkEvent;
} & Layout<typeof UNLINK_EVENT_FIELDS, typeof UNLINK_EVENT_TAIL> = {
  ...layout,
  decode(bytes: Uint8Array, offset = 0, length?: number): UnlinkEvent {
    const pathLen = bytes[offset + PATH_LEN_AT] | bytes[offset + PATH_LEN_AT + 1] << 8;
    const e: UnlinkEvent = layout.decode(bytes, offset, length ?? PATH_AT + pathLen);
    // Only a name with a byte over 0x7f can be invalid: look at its bytes then.
    if (NON_ASCII.test(e.filename)) {
      const raw = invalidUtf8(bytes, offset + FILENAME_AT, FILENAME_SIZE);
      if (raw) e.filename_bytes = raw;
    }
    if (NON_ASCII.test(e.path)) {
      const raw = invalidUtf8(bytes, offset + PATH_AT, e.path_len);
      if (raw) e.path_bytes = raw;
    }
    return e;
  },
};

/**
 * One `do_unlinkat` call: `tgid` is the process id, `ret` is 0 or -errno,
 * `ts_ns` is CLOCK_MONOTONIC at return, `latency_ns` is return minus entry.
 *
 * `filename` is the name as the caller passed it, cut to its first 255 bytes;
 * `flags` has {@linkcode UNLINK_F_NAME_TRUNCATED} set when it was cut. A name
 * that is not valid UTF-8 decodes with U+FFFD in place of each invalid
 * sequence, and its exact bytes are then in `filename_bytes` (absent for a
 * valid name). `_pad` is always 0.
 */
export type UnlinkEvent = Decoded<typeof UNLINK_EVENT_FIELDS> & {
  /** The absolute path, as the kernel resolved it (see `flags`). */
  path: string;
  /** The exact name bytes, present only when they are not valid UTF-8. */
  filename_bytes?: Uint8Array;
  /** The exact path bytes, present only when they are not valid UTF-8. */
  path_bytes?: Uint8Array;
  /** The cgroup v2 path of `cgroup_id`, when the tracer could resolve it. */
  cgroup?: string | null;
};

/** How the tracer hooks `do_unlinkat`, best first. */
export const ATTACH_METHODS = ["fentry", "kprobe", "tracepoint"] as const;
/** An attach method. */
export type AttachMethod = typeof ATTACH_METHODS[number];

/** The syscalls whose tracepoints see deletions; arm64 has neither unlink(2) nor rmdir(2). */
const SYSCALLS = ["unlinkat", "unlink"];

/** The default ring buffer size: 2 MiB, about 3,100 events with short paths. */
export const DEFAULT_RING_SIZE = 2 * 1024 * 1024;
/** BPF wakes the reader at most this often for a trickle (see bpf/unlink.bpf.c). */
const WAKEUP_MS = 20;
const ONE = new Uint8Array([1]);

/** Options for {@linkcode UnlinkTracer.open}. Filters run in the kernel. */
export interface UnlinkTracerOptions {
  /** Only this process (tgid). */
  pid?: number;
  /** Only this user id. */
  uid?: number;
  /** Only tasks whose comm is exactly this (at most 15 bytes). */
  comm?: string;
  /** Only this thread. */
  tid?: number;
  /**
   * Only tasks in this cgroup v2 (exactly, not its descendants): a directory
   * of the cgroup2 mount, or a cgroup path as events report it (`/x.scope`).
   */
  cgroup?: string;
  /**
   * Only files at or under these absolute paths (at most 8, each at most 255
   * bytes): `/tmp/a` matches `/tmp/a` and `/tmp/a/x`, not `/tmp/ab`. `.`,
   * `..` and `//` in them are folded lexically (`/srv/a/../b` is `/srv/b`).
   * Checked in the kernel; a name with `.` or `..` components is checked again
   * in user space once folded, and a path whose beginning was lost passes.
   */
  paths?: string[];
  /** Also report directories removed: rmdir(2), unlinkat(AT_REMOVEDIR). */
  rmdir?: boolean;
  /**
   * How much of the command line the BPF program copies: `"full"` (default,
   * its first 256 bytes), `"argv0"` (the first argument only) or `"none"`
   * (`argv_len` 0). What is not copied never leaves the kernel.
   */
  argv?: ArgvMode;
  /**
   * Patterns of secrets to take out of the command line before any output
   * sees it (JavaScript regular expressions, compiled with the `u` flag;
   * see {@linkcode ArgvRedactor} and `DEFAULT_REDACT_PATTERNS`). Each
   * capture group's match (the whole match without groups) becomes
   * `*****`, in the records {@linkcode UnlinkTracer.drain} hands over and
   * the events the iterator yields, marked {@linkcode UNLINK_F_ARGV_REDACTED}.
   */
  redact?: readonly (string | RegExp)[];
  /** Also report renames that replace an existing file (fentry and kprobe only). */
  rename?: boolean;
  /** Only unlinks that failed. */
  failedOnly?: boolean;
  /** `"auto"` (default) tries fentry, kprobe, tracepoint in turn. */
  mode?: "auto" | AttachMethod;
  /** Ring buffer size in bytes: a power of two from a page to 2 GiB. Default 2 MiB. */
  ringBufferSize?: number;
  /**
   * Whether the tracepoint method may mount tracefs at `/sys/kernel/tracing`
   * when no tracefs is mounted (some hosts do not mount it at boot). The
   * mount stays after the tracer exits, as `mount -t tracefs` would. Default
   * `true`; with `false` the tracepoint method fails instead, saying how to
   * mount it.
   */
  mountTracefs?: boolean;
}

/** An attach method that was tried and did not work: where it stopped, and why. */
export interface SkippedMethod extends AttachAttempt {
  /** The method that did not work. */
  method: AttachMethod;
}

/**
 * A method this machine cannot offer, found before anything is loaded,
 * with the attempt the ladder records for it.
 */
class Unavailable extends BpfError {
  readonly attempt: Omit<AttachAttempt, "method">;

  constructor(operation: string, errno: number, reason: string, hint: string, withCode = true) {
    super(operation, errno, { hint });
    this.attempt = { stage: "attach", ...withCode ? { code: this.code } : {}, reason };
  }
}

/** The attempt of `method` that failed with `error` at `stage`, typed once, here. */
function attemptOf(method: AttachMethod, stage: "load" | "attach", error: BpfError): SkippedMethod {
  if (error instanceof Unavailable) return { method, ...error.attempt };
  if (error instanceof VerifierError) {
    return {
      method,
      stage: "verifier",
      code: error.code,
      reason: `rejected by the verifier (${error.code})`,
    };
  }
  const what = stage === "load" ? "load refused" : "attach failed";
  return { method, stage, code: error.code, reason: `${what} (${error.code})` };
}

function validate(options: UnlinkTracerOptions): number {
  const size = options.ringBufferSize ?? DEFAULT_RING_SIZE;
  checkRingSize(size);
  for (const key of ["pid", "uid", "tid"] as const) {
    const v = options[key];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xfffffffe)) {
      throw new RangeError(`${key} must be an integer from 0 to 4294967294, got ${v}`);
    }
  }
  for (const key of ["pid", "tid"] as const) {
    if (options[key] === 0) throw new RangeError(`${key} must be a positive integer, got 0`);
  }
  checkPaths(options.paths ?? []);
  if (options.comm !== undefined) {
    const n = new TextEncoder().encode(options.comm).length;
    if (n === 0 || n > 15) {
      throw new RangeError(`comm must be 1 to 15 bytes (the kernel's limit), got ${n}`);
    }
  }
  if (options.redact !== undefined && !Array.isArray(options.redact)) {
    throw new TypeError("redact must be an array of patterns (strings or RegExps)");
  }
  if (options.argv !== undefined && !ARGV_MODES.includes(options.argv)) {
    throw new TypeError(`Unknown argv "${options.argv}": use ${ARGV_MODES.join(", ")}`);
  }
  const mode = options.mode ?? "auto";
  if (mode !== "auto" && !ATTACH_METHODS.includes(mode)) {
    throw new TypeError(`Unknown mode "${mode}": use auto, ${ATTACH_METHODS.join(", ")}`);
  }
  if (options.rename && mode === "tracepoint") {
    throw new TypeError(
      "Renames that replace a file are seen only by fentry and kprobe: drop rename or the tracepoint mode",
    );
  }
  return size;
}

/**
 * A running unlink tracer: the loaded object, its links and its ring buffer.
 * Iterate it for events; close it (or let `using` do it) to detach.
 *
 * @example Watch one user's failed unlinks until Ctrl-C (needs root)
 * ```ts
 * import { UnlinkTracer } from "./tracer.ts";
 *
 * export async function watchFailures(uid: number): Promise<void> {
 *   using tracer = UnlinkTracer.open({ uid, failedOnly: true });
 *   for (const s of tracer.skipped) console.error(`${s.method} skipped: ${s.reason}`);
 *   Deno.addSignalListener("SIGINT", () => tracer.stop());
 *   for await (const e of tracer) console.log(`${e.comm}[${e.tgid}] ${e.filename}: ${e.ret}`);
 *   console.error(`${tracer.lost} events lost`);
 * }
 * ```
 */
export class UnlinkTracer implements Disposable, AsyncIterable<UnlinkEvent> {
  #obj: BpfObject;
  #links: Link[];
  #ring: RingBuffer;
  #lostMap: BpfMap;
  #lostValue: Uint8Array<ArrayBuffer>;
  #lostKey = new Uint8Array(4);
  #lastLost = 0;
  readonly #method: AttachMethod;
  readonly #skipped: SkippedMethod[];
  readonly #probes: string[];
  readonly #paths: readonly string[];
  readonly #redactor: ArgvRedactor | undefined;
  /** The redacted copy of the record being handed over. */
  #copy = new Uint8Array(MAX_RECORD);
  /** The last command line redacted, and what it became (undefined: nothing matched). */
  #lastArgv = new Uint8Array(0);
  #lastRedacted: Uint8Array | undefined;
  #cgroups: CgroupNames | null | undefined;
  #closed = false;

  private constructor(
    obj: BpfObject,
    links: Link[],
    method: AttachMethod,
    skipped: SkippedMethod[],
    paths: readonly string[],
    redactor: ArgvRedactor | undefined,
  ) {
    this.#obj = obj;
    this.#paths = paths;
    this.#redactor = redactor;
    this.#links = links;
    this.#method = method;
    this.#skipped = skipped;
    this.#probes = obj.programs.filter((p) => p.autoload).map((p) => p.section);
    this.#ring = new RingBuffer(obj.map("events"), {
      tailWaitMs: WAKEUP_MS + 5,
      batchBytes: wakeupBytes(obj.map("events").maxEntries),
    });
    this.#lostMap = obj.map("lost");
    this.#lostValue = new Uint8Array(8 * Math.max(1, bpf().libbpf_num_possible_cpus()));
  }

  /**
   * Loads and attaches the tracer. In `"auto"` mode each method is tried with
   * a real load and attach until one works; {@linkcode skipped} says why the
   * others did not. A forced mode that fails throws an {@linkcode AttachError}.
   */
  static open(options: UnlinkTracerOptions = {}): UnlinkTracer {
    const ringSize = validate(options);
    const redactor = options.redact?.length ? new ArgvRedactor(options.redact) : undefined;
    preflight();
    const mode = options.mode ?? "auto";
    const methods = mode === "auto" ? ATTACH_METHODS : [mode];
    const skipped: SkippedMethod[] = [];
    for (const method of methods) {
      const tried = loadAndAttach(options, ringSize, method);
      if ("refused" in tried) {
        skipped.push(tried.refused);
        if (mode !== "auto") throw new AttachError(skipped, tried.log);
        continue;
      }
      using undo = new DisposableStack(); // detaches and unloads if the tracer cannot be made
      undo.use(tried.obj);
      for (const link of tried.links) undo.use(link);
      const tracer = new UnlinkTracer(tried.obj, tried.links, method, skipped, [
        ...options.paths ?? [],
      ], redactor);
      undo.move();
      return tracer;
    }
    throw new AttachError(skipped);
  }

  /** The attach method in use. */
  get method(): AttachMethod {
    return this.#method;
  }

  /** The better methods that were tried first and failed, with reasons. */
  get skipped(): SkippedMethod[] {
    return this.#skipped.map((s) => ({ ...s }));
  }

  /**
   * Where the tracer is attached, as the programs' sections, e.g.
   * `"tracepoint/syscalls/sys_enter_unlinkat"`. With tracepoints, only the
   * syscalls this kernel has are there (arm64 has no unlink(2)).
   */
  get probes(): string[] {
    return [...this.#probes];
  }

  /** The ring buffer's size in bytes. */
  get ringBufferSize(): number {
    return this.#ring.size;
  }

  /**
   * Unlinks that happened but could not be reported (ring buffer full),
   * summed over all CPUs. Reads the kernel's counter on each access.
   */
  get lost(): number {
    this.#lostMap.lookup(this.#lostKey, this.#lostValue);
    const counts = new BigUint64Array(this.#lostValue.buffer);
    let sum = 0n;
    for (const n of counts) sum += n;
    return Number(sum);
  }

  /** How much {@linkcode lost} grew since the last call (0 if it did not). */
  newlyLost(): number {
    const now = this.lost;
    const grew = now - this.#lastLost;
    this.#lastLost = now;
    return grew;
  }

  /** Yields events until {@linkcode stop} or close. */
  async *[Symbol.asyncIterator](): AsyncIterator<UnlinkEvent> {
    // The records drain() hands over: filtered and redacted as there.
    const records = decodedRecords({
      wait: () => this.#ring.wait(),
      drain: (fn, limit) => this.#drain(fn, limit),
      closed: () => this.#closed,
    }, (bytes, offset, length) => unlinkEvent.decode(bytes, offset, length));
    for await (const e of records) {
      e.cgroup = this.cgroupName(e.cgroup_id);
      yield e;
    }
  }

  /**
   * The cgroup v2 path of a `cgroup_id`, relative to the cgroup2 root
   * (`/system.slice/ssh.service`), or `null` if it is gone or there is no
   * cgroup2 mount. Cached.
   */
  cgroupName(id: number): string | null {
    if (this.#cgroups === undefined) {
      try {
        this.#cgroups = CgroupNames.open();
      } catch {
        this.#cgroups = null; // no cgroup2 mount: every name is null
      }
    }
    return this.#cgroups?.name(BigInt(id)) ?? null;
  }

  /**
   * Low level, for consumers that format bytes directly: hands every record
   * in the ring to `fn` (decode with {@linkcode unlinkEvent}). Returns the
   * count handed over.
   *
   * A record is the kernel's, as it sits in the ring, unless a `redact`
   * pattern matched its command line: then it is the tracer's copy, with
   * the matches replaced and {@linkcode UNLINK_F_ARGV_REDACTED} set. Either
   * way its `argv` holds only what the `argv` option lets out of the kernel,
   * and zeros after `argv_len`. The bytes are valid only during the call.
   */
  drain(fn: RecordHandler): number {
    return this.#drain(fn, Infinity);
  }

  #drain(fn: RecordHandler, limit: number): number {
    if (!this.#paths.length && !this.#redactor) return this.#ring.drain(fn, limit);
    let n = 0;
    this.#ring.drain((bytes, offset, length) => {
      if (this.#paths.length && !this.#recordWanted(bytes, offset)) return;
      n++;
      if (this.#redactor && this.#redact(bytes, offset, length)) fn(this.#copy, 0, length);
      else fn(bytes, offset, length);
    }, limit);
    return n;
  }

  /** The `paths` filter on a record's bytes (see {@linkcode #pathWanted}). */
  #recordWanted(bytes: Uint8Array, offset: number): boolean {
    const flags = bytes[offset + FLAGS_AT];
    if (!(flags & UNLINK_F_PATH_JOINED)) return true;
    const len = bytes[offset + PATH_LEN_AT] | bytes[offset + PATH_LEN_AT + 1] << 8;
    return this.#pathWanted(flags, decodeCString(bytes, offset + PATH_AT, len));
  }

  /**
   * Copies the record into #copy with its command line redacted, if a
   * pattern matched it; returns whether it did. A process deletes many
   * files with one command line, so the last one's result is reused.
   */
  #redact(bytes: Uint8Array, offset: number, length: number): boolean {
    const argvLen = bytes[offset + ARGV_LEN_AT] | bytes[offset + ARGV_LEN_AT + 1] << 8;
    const argv = bytes.subarray(offset + ARGV_AT, offset + ARGV_AT + argvLen);
    if (!sameBytes(argv, this.#lastArgv)) {
      this.#lastArgv = argv.slice();
      this.#lastRedacted = argvLen ? this.#redactor!.redact(argv) : undefined;
    }
    const redacted = this.#lastRedacted;
    if (!redacted) return false;
    if (length > this.#copy.length) this.#copy = new Uint8Array(length);
    const copy = this.#copy;
    copy.set(bytes.subarray(offset, offset + length));
    const kept = Math.min(redacted.length, ARGV_SIZE);
    copy.fill(0, ARGV_AT, ARGV_AT + ARGV_SIZE);
    copy.set(redacted.subarray(0, kept), ARGV_AT);
    // Each "*****" can be longer than what it replaced: a line past 256 bytes is cut there.
    const view = new DataView(copy.buffer);
    let flags = view.getUint32(FLAGS_AT, true) | UNLINK_F_ARGV_REDACTED;
    if (redacted.length > ARGV_SIZE) flags |= UNLINK_F_ARGV_TRUNCATED;
    view.setUint32(FLAGS_AT, flags, true);
    view.setUint16(ARGV_LEN_AT, kept, true);
    return true;
  }

  /**
   * The user-space half of the `paths` filter: a name with `.`, `..` or `//`
   * components passed the kernel's check unchecked; fold it and check it here.
   */
  #pathWanted(flags: number, path: string): boolean {
    if (!(flags & UNLINK_F_PATH_JOINED) || !/\/\.|\/\//.test(path)) return true;
    return underAny(normalizePath(path), this.#paths);
  }

  /** Low level: waits for records; `false` once stopped. See {@linkcode RingBuffer.wait}. */
  wait(): Promise<boolean> {
    return this.#ring.wait();
  }

  /**
   * Detaches the probes and ends iteration once the events already in the
   * ring are delivered. Safe to call from a signal handler. Idempotent.
   */
  stop(): void {
    for (const link of this.#links) link.close();
    this.#ring.stop();
  }

  /** Detaches, unmaps the ring and unloads the object. Idempotent. */
  close(): void {
    this.#closed = true;
    this.stop();
    this.#ring.close();
    this.#obj.close();
    this.#cgroups?.close();
  }

  /** Calls {@linkcode close}, for `using` declarations. */

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Whether two byte strings are equal. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** BPF wakes the reader once this much is waiting: 256 KiB, or a quarter of a small ring. */
function wakeupBytes(ringSize: number): number {
  return Math.min(256 * 1024, ringSize / 4);
}

/** A method loaded and attached, or the attempt that says where and why it was refused. */
type Tried = { obj: BpfObject; links: Link[] } | { refused: SkippedMethod; log?: string };

/**
 * Loads the object with `method`'s programs and attaches them; undoes it all
 * on failure. Only the kernel or this machine refusing the method is an
 * attempt, which the ladder records before it tries the next one; anything
 * else, a missing privilege among them, is a real error and propagates.
 */
function loadAndAttach(
  options: UnlinkTracerOptions,
  ringSize: number,
  method: AttachMethod,
): Tried {
  // What programsFor finds missing (tracefs, a syscall's tracepoint) is the attach's.
  let stage: "load" | "attach" = "attach";
  try {
    using undo = new DisposableStack();
    const programs = programsFor(method, options);
    stage = "load";
    const obj = undo.use(openObject(options, ringSize, programs));
    stage = "attach";
    const links = programs.map((name) => undo.use(obj.program(name).attach()));
    undo.move();
    return { obj, links };
  } catch (error) {
    if (!(error instanceof BpfError) || error instanceof PermissionError) throw error;
    return { refused: attemptOf(method, stage, error), log: error.log };
  }
}

/**
 * The programs of `method` for the operations `options` asks for: entry
 * programs first, then the hooks that see the looked-up file, then the
 * returns, so that they are attached in that order and detached in it too.
 * For tracepoints, only those of the syscalls this kernel has (arm64 has no
 * unlink(2) or rmdir(2)).
 */
function programsFor(method: AttachMethod, options: UnlinkTracerOptions): string[] {
  const ops = [
    "unlink",
    ...(options.rmdir ? ["rmdir"] : []),
    ...(options.rename ? ["rename"] : []),
  ];
  const each = (prefix: string) => ops.map((op) => `${prefix}_${op}`);
  if (method === "fentry") return [...each("fentry"), ...each("fentry_lookup"), ...each("fexit")];
  if (method === "kprobe") {
    return [...each("kprobe"), ...each("kprobe_lookup"), ...each("kretprobe")];
  }
  if (options.rename) {
    throw new Unavailable(
      "attach tracepoints: syscall tracepoints cannot see what a rename replaced",
      EOPNOTSUPP,
      "cannot see renames, which --rename asks for",
      "renames that replace a file need fentry or kprobe",
      false,
    );
  }
  const events = `${tracefsFor(options)}/events/syscalls`;
  const syscalls = [...SYSCALLS, ...(options.rmdir ? ["rmdir"] : [])]
    .filter((s) => pathExists(`${events}/sys_enter_${s}`));
  if (!syscalls.includes("unlinkat")) {
    throw new BpfError(`attach tracepoints: ${events}/sys_enter_unlinkat is missing`, ENOENT, {
      hint: "the kernel needs CONFIG_FTRACE_SYSCALLS",
    });
  }
  return [...syscalls.map((s) => `tp_enter_${s}`), ...syscalls.map((s) => `tp_exit_${s}`)];
}

/** The most --path prefixes, and the bytes of path they can match (bpf/unlink.bpf.c). */
export const MAX_PREFIXES = 8;
const PREFIX_LEN = 256;

/**
 * A prefix as the kernel matches it: absolute, folded, ending in one "/".
 * `.`, `..` and `//` are folded lexically, as a joined name is in events,
 * because the kernel compares bytes and the paths it reports never hold them.
 */
function prefixOf(path: string): string {
  if (!path.startsWith("/")) {
    throw new TypeError(`paths must be absolute, got "${path}"`);
  }
  const folded = normalizePath(path);
  const prefix = folded === "/" ? "/" : folded + "/";
  if (new TextEncoder().encode(prefix).length > PREFIX_LEN) {
    throw new RangeError(`paths must be at most ${PREFIX_LEN - 1} bytes, got "${path}"`);
  }
  return prefix;
}

/**
 * Checks the `paths` option as {@linkcode UnlinkTracer.open} does, without
 * loading anything: at most {@linkcode MAX_PREFIXES}, each absolute and at
 * most 255 bytes once `.`, `..` and `//` are folded (`/srv/a/../b/` watches
 * `/srv/b`).
 *
 * @throws {TypeError} for a relative path.
 * @throws {RangeError} for too many paths, or one too long.
 *
 * @example
 * ```ts
 * import { checkPaths } from "./tracer.ts";
 *
 * checkPaths(["/srv/data/../data/demo"]); // fine: it watches /srv/data/demo
 * ```
 */
export function checkPaths(paths: readonly string[]): void {
  if (paths.length > MAX_PREFIXES) {
    throw new RangeError(`at most ${MAX_PREFIXES} paths can be watched, got ${paths.length}`);
  }
  for (const path of paths) prefixOf(path);
}

/** The BPF_LPM_TRIE key of a prefix: its length in bits, then its bytes. */
function prefixKey(path: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(prefixOf(path));
  const key = new Uint8Array(4 + PREFIX_LEN);
  new DataView(key.buffer).setUint32(0, bytes.length * 8, true);
  key.set(bytes, 4);
  return key;
}

/**
 * Whether the absolute path `path` is at or under one of `paths`, as the
 * kernel checks it: component-wise, so `/tmp/a` matches `/tmp/a/x`, not `/tmp/ab`.
 */
export function underAny(path: string, paths: readonly string[]): boolean {
  const withSlash = path.endsWith("/") ? path : path + "/";
  return paths.some((p) => withSlash.startsWith(prefixOf(p)));
}

/** Tracepoint attachment reads event ids from tracefs: find it, or mount it if allowed. */
function tracefsFor(options: UnlinkTracerOptions): string {
  if (options.mountTracefs ?? true) return ensureTracefs();
  const found = findTracefs();
  if (found) return found;
  throw new Unavailable(
    "find a mounted tracefs",
    ENOENT,
    "tracefs is not mounted (ENOENT)",
    `mount it (mount -t tracefs tracefs ${TRACEFS}) or allow mountTracefs`,
  );
}

function openObject(
  options: UnlinkTracerOptions,
  ringSize: number,
  programs: string[],
): BpfObject {
  const obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  try {
    checkLayout(unlinkEvent, obj.btf.struct("unlink_event"));
    if (options.pid !== undefined) obj.setConst("targ_tgid", options.pid);
    if (options.uid !== undefined) obj.setConst("targ_uid", options.uid);
    if (options.comm !== undefined) obj.setConst("targ_comm", options.comm);
    if (options.tid !== undefined) obj.setConst("targ_tid", options.tid);
    if (options.cgroup !== undefined) obj.setConst("targ_cgroup", cgroupIdOf(options.cgroup));
    if (options.failedOnly) obj.setConst("targ_failed", true);
    if (options.rmdir) obj.setConst("targ_rmdir", true);
    if (options.argv !== undefined) obj.setConst("targ_argv", ARGV_MODES.indexOf(options.argv));
    if (options.paths?.length) obj.setConst("targ_paths", true);
    if (Deno.build.arch === "aarch64") obj.setConst("kprobe_arm64", true);
    // Only fentry and kprobe see the looked-up file, and need room for its path.
    if (programs[0].startsWith("tp_")) obj.map("paths").maxEntries = 1;
    obj.setConst("wakeup_bytes", wakeupBytes(ringSize));
    obj.setConst("wakeup_ns", WAKEUP_MS * 1_000_000);
    obj.map("events").maxEntries = ringSize;
    const wanted = new Set(programs);
    for (const prog of obj.programs) prog.autoload = wanted.has(prog.name);
    obj.load();
    for (const path of options.paths ?? []) obj.map("prefixes").update(prefixKey(path), ONE);
    return obj;
  } catch (error) {
    obj.close();
    throw error;
  }
}
