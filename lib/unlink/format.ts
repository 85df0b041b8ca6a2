/**
 * How unlink events look: aligned text lines for people, and one JSON object
 * per line, in a stable envelope, for programs.
 *
 * JSON envelope (one object per line):
 * - `{"type":"attach","data":{"schema":2,"method":"tracepoint","skipped":[{"method":"fentry","reason":"..."}],"probes":[...]}}`
 * - `{"type":"event","data":{...}}`: the fields of {@linkcode EventJson}, in that order
 * - `{"type":"lost","data":{"count":3}}`: that many more events were lost since the last such line
 * - `{"type":"summary","data":{"events":10,"lost":3}}`
 *
 * File names, as the caller passed them, are kept to their first 255 bytes;
 * `filename_truncated` and `filename_b64` (and the same for `argv`, and
 * `path_b64` for the absolute path) appear only when a name was cut or is not
 * valid UTF-8. The absolute `path` comes with a `path_status` that says how
 * far to trust it ({@linkcode pathStatus}).
 *
 * Text lines show the absolute path (or the name as passed), escape control
 * characters (C0, DEL and C1), bidirectional overrides and each byte that is
 * not part of valid UTF-8 as `\xNN` (an escaped character as its UTF-8
 * bytes), start a path whose beginning was lost with `…`, and end a cut name
 * with {@linkcode TRUNCATED_MARK}. JSON lines carry the same characters as
 * `\uXXXX` escapes.
 *
 * @module
 */

import { monotonicToEpochMs } from "../clock.ts";
import { errnoName } from "../errno.ts";
import { containerOf } from "./_cgroup.ts";
import { normalizePath } from "./_path.ts";
import { sequenceLength } from "./_utf8.ts";
import {
  type Op,
  OPS,
  type SkippedMethod,
  UNLINK_F_ARGV_REDACTED,
  UNLINK_F_ARGV_TRUNCATED,
  UNLINK_F_INODE,
  UNLINK_F_NAME_TRUNCATED,
  UNLINK_F_PATH_HEAD,
  UNLINK_F_PATH_JOINED,
  UNLINK_F_PATH_PARTIAL,
  UNLINK_F_PATH_TRUNCATED,
  UNLINK_F_PATH_UNRESOLVED,
  type UnlinkEvent,
} from "./tracer.ts";

const AT_FDCWD = -100;

/** The errno name of a negative return value, or `null` for success. */
export function errorOf(ret: number): string | null {
  return ret < 0 ? errnoName(-ret) : null;
}

/** The RET column: `0`, or the errno name such as `ENOENT`. */
export function retText(ret: number): string {
  return ret < 0 ? errnoName(-ret) : String(ret);
}

/** The text header, aligned with {@linkcode formatText}. */
export const TEXT_HEADER = `${"TIME".padEnd(12)} ${"PID".padStart(7)} ${"COMM".padEnd(16)} ${
  "RET".padEnd(12)
} ${"LAT(us)".padStart(9)} FILENAME`;

/**
 * The characters that no output shows as themselves, one table for text and
 * JSON: the C0 controls and DEL; the C1 controls U+0080–U+009F (U+009B is a
 * CSI that starts a terminal command, U+0085 a newline to some terminals);
 * the bidirectional marks, embeddings, overrides and isolates (U+061C,
 * U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), which reorder what a
 * terminal or an editor shows; and the line and paragraph separators U+2028
 * and U+2029. Text shows each as the `\xNN` of its UTF-8 bytes
 * ({@linkcode escapeControl}), JSON as `\uXXXX` ({@linkcode escapeJson}).
 */
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const hex2 = (b: number) => `\\x${b.toString(16).padStart(2, "0")}`;
const utf8Bytes = new TextEncoder();

/**
 * Shows each character a hostile name could drive a terminal with (the
 * table above) as the `\xNN` of its UTF-8 bytes: a newline as `\x0a`, U+009B
 * (CSI) as `\xc2\x9b`, U+202E (right-to-left override) as `\xe2\x80\xae`.
 */
export function escapeControl(s: string): string {
  return s.replace(UNSAFE, (ch) => [...utf8Bytes.encode(ch)].map(hex2).join(""));
}

/**
 * JSON text with the characters of the same table that JSON.stringify leaves
 * raw (DEL, C1 controls, bidi marks and overrides, U+2028 and U+2029) as
 * `\uXXXX` escapes: the same values to a parser, nothing for a terminal that
 * shows the line. The C0 controls are already escaped by JSON.stringify.
 */
export function escapeJson(json: string): string {
  return json.replace(UNSAFE, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * Ends a cut name in a text line, after the 255 bytes kept: `…` shows at a
 * glance that the name goes on, `[truncated]` says why in a word a reader can
 * grep for. FILENAME is the last column, so nothing after it shifts. A real
 * name could end in these characters too; JSON's `filename_truncated` is the
 * exact signal.
 */
export const TRUNCATED_MARK = "…[truncated]";

/** Whether the event's name was cut to the 255 bytes kept. */
export function filenameTruncated(e: UnlinkEvent): boolean {
  return (e.flags & UNLINK_F_NAME_TRUNCATED) !== 0;
}

// ignoreBOM: a name may start with U+FEFF, and it must not vanish.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Bytes as text for a terminal: valid UTF-8 as itself, with control characters
 * escaped as {@linkcode escapeControl} does, and each byte that is not part of
 * valid UTF-8 as `\xNN`, so no U+FFFD hides what the bytes were.
 */
export function escapeBytes(bytes: Uint8Array): string {
  let out = "";
  let run = 0; // where the current stretch of valid UTF-8 began
  for (let i = 0; i < bytes.length;) {
    const n = sequenceLength(bytes, i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += `${escapeControl(utf8.decode(bytes.subarray(run, i)))}\\x${
      bytes[i].toString(16).padStart(2, "0")
    }`;
    run = ++i;
  }
  return out + escapeControl(utf8.decode(bytes.subarray(run)));
}

/** The name as passed, escaped, and marked if cut. */
function filenameText(e: UnlinkEvent): string {
  const name = e.filename_bytes ? escapeBytes(e.filename_bytes) : escapeControl(e.filename);
  return filenameTruncated(e) ? name + TRUNCATED_MARK : name;
}

/** How far `path` can be trusted: see the README's schema table. */
export type PathStatus = "ok" | "truncated" | "partial" | "lexical" | "unresolved";

/** Whether a path has a `..` component, so that folding it lexically can be wrong. */
function hasDotDot(path: string): boolean {
  return /(^|\/)\.\.(\/|$)/.test(path);
}

/** The status of an event's path. */
export function pathStatus(e: UnlinkEvent): PathStatus {
  if (e.flags & UNLINK_F_PATH_UNRESOLVED) return "unresolved";
  if (e.flags & UNLINK_F_PATH_TRUNCATED) return "truncated";
  if (e.flags & UNLINK_F_PATH_PARTIAL) return "partial";
  return e.flags & UNLINK_F_PATH_JOINED && hasDotDot(e.filename) ? "lexical" : "ok";
}

/**
 * The event's absolute path: folded lexically where it was joined from the
 * name as passed, as the kernel walked it where the file was looked up, and
 * `null` where it could not be resolved. A cut path is its kept end.
 */
export function pathOf(e: UnlinkEvent): string | null {
  if (e.flags & UNLINK_F_PATH_UNRESOLVED) return null;
  const whole = !(e.flags & (UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_PARTIAL));
  return whole && e.flags & UNLINK_F_PATH_JOINED ? normalizePath(e.path) : e.path;
}

const TYPES: Record<number, FileType> = {
  0o100000: "file",
  0o040000: "dir",
  0o120000: "symlink",
  0o140000: "socket",
  0o010000: "fifo",
  0o020000: "char",
  0o060000: "block",
};

/** A file's type, as the event reports it. */
export type FileType = "file" | "dir" | "symlink" | "socket" | "fifo" | "char" | "block";

/** The type of an `i_mode`, or `null` for none. */
export function fileType(mode: number): FileType | null {
  return TYPES[mode & 0o170000] ?? null;
}

/** The kernel's dev_t (`major << 20 | minor`) as `stat` prints it: `"major:minor"`. */
export function devText(dev: number): string {
  return `${dev >>> 20}:${dev & 0xfffff}`;
}

/**
 * The command line: `argv_len` bytes of NUL-separated arguments. A cut
 * command line ends with the cut argument. Invalid UTF-8 decodes as U+FFFD.
 */
export function argvOf(e: UnlinkEvent): string[] {
  const bytes = Uint8Array.from(e.argv.slice(0, e.argv_len));
  if (bytes.length === 0) return [];
  const end = bytes[bytes.length - 1] === 0 ? bytes.length - 1 : bytes.length;
  return utf8.decode(bytes.subarray(0, end)).split("\0");
}

/** The command line's exact bytes, when they are not valid UTF-8. */
function argvBytes(e: UnlinkEvent): Uint8Array | undefined {
  const bytes = Uint8Array.from(e.argv.slice(0, e.argv_len));
  try {
    strictUtf8.decode(bytes);
    return undefined;
  } catch {
    return bytes;
  }
}

/** The FILENAME column: the path (or the name as passed), escaped, and marked if cut. */
function nameText(e: UnlinkEvent, rawNames: boolean): string {
  const path = rawNames ? null : pathOf(e);
  const op = e.op === 0 ? "" : `[${OPS[e.op] ?? e.op}] `;
  if (path === null) return op + filenameText(e);
  const text = e.path_bytes ? escapeBytes(e.path_bytes) : escapeControl(path);
  if (e.flags & UNLINK_F_PATH_HEAD) return op + text + TRUNCATED_MARK;
  const cut = e.flags & (UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_PARTIAL);
  return op + (cut ? `…${text}` : text);
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `HH:MM:SS.mmm` in local time for a CLOCK_MONOTONIC timestamp. */
export function clockText(tsNs: number): string {
  const d = new Date(monotonicToEpochMs(tsNs));
  const ms = d.getMilliseconds();
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${
    ms < 10 ? "00" : ms < 100 ? "0" : ""
  }${ms}`;
}

/**
 * One aligned text line (no newline). `paintFailure`, if given, styles the
 * RET column of a failed unlink (scripts/trace.ts colours it red on a TTY).
 * The FILENAME column shows the absolute path, or with `rawNames` the name as
 * the caller passed it; a path whose beginning was lost starts with `…`.
 */
export function formatText(
  e: UnlinkEvent,
  paintFailure?: (ret: string) => string,
  rawNames = false,
): string {
  const ret = retText(e.ret).padEnd(12);
  return `${clockText(e.ts_ns)} ${String(e.tgid).padStart(7)} ${escapeControl(e.comm).padEnd(16)} ${
    paintFailure && e.ret < 0 ? paintFailure(ret) : ret
  } ${(e.latency_ns / 1000).toFixed(1).padStart(9)} ${nameText(e, rawNames)}`;
}

/** The `data` of a JSON `event` line. See the README's schema table. */
export interface EventJson {
  /** ISO-8601 wall-clock time at return. */
  time: string;
  /** The process id (tgid). */
  pid: number;
  /** The thread id. */
  tid: number;
  /** The user id. */
  uid: number;
  /** The task's command name (at most 15 bytes). */
  comm: string;
  /** The name as passed, cut to 255 bytes; U+FFFD in place of invalid UTF-8. */
  filename: string;
  /** Present, and true, only when the name was longer than the 255 bytes kept. */
  filename_truncated?: true;
  /** Present only when the name is not valid UTF-8: its exact bytes, base64-encoded. */
  filename_b64?: string;
  /** 0 or -errno. */
  ret: number;
  /** The errno name for a failure, else null. */
  error: string | null;
  /** How long the call took, in ns. */
  latency_ns: number;
  /** What deleted the name. */
  op: Op;
  /** The absolute path, or null when {@linkcode path_status} is `unresolved`. */
  path: string | null;
  /** Present only when the path is not valid UTF-8: its exact bytes, base64-encoded. */
  path_b64?: string;
  /** How far `path` can be trusted. */
  path_status: PathStatus;
  /** The directory fd passed, or `"AT_FDCWD"`. */
  dfd: number | "AT_FDCWD";
  /** The inode number; null where the file was not looked up. */
  ino: number | null;
  /** The file system's device, `"major:minor"`; null where the file was not looked up. */
  dev: string | null;
  /** The file's type; null where the file was not looked up. */
  type: FileType | null;
  /** The file's size in bytes before the call; null where the file was not looked up. */
  size: number | null;
  /** Links left after the call (0: the last name is gone); null where not looked up. */
  nlink_after: number | null;
  /** The parent's process id. */
  ppid: number;
  /** The parent's command name. */
  pcomm: string;
  /** The login uid (4294967295 when unset), as auditd reports it. */
  auid: number;
  /** The cgroup v2 id. */
  cgroup_id: number;
  /** The cgroup v2 path, when it could be resolved. */
  cgroup: string | null;
  /** The container id, when the cgroup path is a known runtime's. */
  container: string | null;
  /** The mount namespace's inode number. */
  mntns: number;
  /**
   * The command line, its first 256 bytes: with the `argv` option `"argv0"`
   * only its first argument, with `"none"` `[]`.
   */
  argv: string[];
  /** Present, and true, only when the command line was longer than the 256 bytes kept. */
  argv_truncated?: true;
  /** Present only when the command line is not valid UTF-8: its bytes, NUL-separated, base64. */
  argv_b64?: string;
  /** Present, and true, only when a `redact` pattern replaced parts of `argv` with `*****`. */
  argv_redacted?: true;
}

/** The `data` of a JSON `event` line. */
export function eventData(e: UnlinkEvent): EventJson {
  const inode = (e.flags & UNLINK_F_INODE) !== 0;
  const argvRaw = argvBytes(e);
  const cgroup = e.cgroup ?? null;
  return {
    time: new Date(monotonicToEpochMs(e.ts_ns)).toISOString(),
    pid: e.tgid,
    tid: e.tid,
    uid: e.uid,
    comm: e.comm,
    filename: e.filename,
    ...(filenameTruncated(e) ? { filename_truncated: true } : {}),
    ...(e.filename_bytes ? { filename_b64: e.filename_bytes.toBase64() } : {}),
    ret: e.ret,
    error: errorOf(e.ret),
    latency_ns: e.latency_ns,
    op: OPS[e.op] ?? "unlink",
    path: pathOf(e),
    ...(e.path_bytes ? { path_b64: e.path_bytes.toBase64() } : {}),
    path_status: pathStatus(e),
    dfd: e.dfd === AT_FDCWD ? "AT_FDCWD" : e.dfd,
    ino: inode ? e.ino : null,
    dev: inode ? devText(e.dev) : null,
    type: inode ? fileType(e.mode) : null,
    size: inode ? e.size : null,
    nlink_after: inode ? e.nlink_after : null,
    ppid: e.ppid,
    pcomm: e.pcomm,
    auid: e.auid,
    cgroup_id: e.cgroup_id,
    cgroup,
    container: cgroup === null ? null : containerOf(cgroup),
    mntns: e.mntns,
    argv: argvOf(e),
    ...(e.flags & UNLINK_F_ARGV_TRUNCATED ? { argv_truncated: true } : {}),
    ...(argvRaw ? { argv_b64: argvRaw.toBase64() } : {}),
    ...(e.flags & UNLINK_F_ARGV_REDACTED ? { argv_redacted: true } : {}),
  };
}

/** One JSON `event` line (no newline). */
export function formatJson(e: UnlinkEvent): string {
  return escapeJson(JSON.stringify({ type: "event", data: eventData(e) }));
}

/**
 * The `attach` line (no newline): the method in use, and the better ones
 * that failed, each as its method and reason (pass just those: every field
 * given is written).
 */
export function envelope(
  type: "attach",
  data: {
    schema: 2;
    method: string;
    skipped: Pick<SkippedMethod, "method" | "reason">[];
    probes: string[];
  },
): string;
/** A `lost` line: this many more events were lost since the last one. */
export function envelope(type: "lost", data: { count: number }): string;
/** The `summary` line, last on a clean exit. */
export function envelope(type: "summary", data: { events: number; lost: number }): string;
/** A JSON envelope line of any type (no newline). */
export function envelope(type: string, data: unknown): string {
  return escapeJson(JSON.stringify({ type, data }));
}

/** `attached via tracepoint (fentry: load refused (EPERM); kprobe: ...)` */
export function attachText(
  method: string,
  skipped: Pick<SkippedMethod, "method" | "reason">[],
  probes: string[] = [],
): string {
  const why = skipped.map((s) => `${s.method}: ${s.reason}`).join("; ");
  // Where a syscall's tracepoints are missing (arm64 has no unlink(2)), say which are used.
  const syscalls = probes.filter((p) => p.startsWith("tracepoint/syscalls/sys_enter_"))
    .map((p) => p.slice("tracepoint/syscalls/sys_enter_".length));
  const only = syscalls.length === 1 ? ` on ${syscalls[0]} only` : "";
  return `attached via ${method}${only}${why ? ` (${why})` : ""}`;
}
