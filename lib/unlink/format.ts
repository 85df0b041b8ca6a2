/**
 * How unlink events look: aligned text lines for people, and one JSON object
 * per line, in a stable envelope, for programs.
 *
 * JSON envelope (one object per line):
 * - `{"type":"attach","data":{"method":"tracepoint","skipped":[{"method":"fentry","reason":"..."}]}}`
 * - `{"type":"event","data":{"time":"2026-11-25T16:01:02.345Z","pid":1,"tid":1,"uid":0,"comm":"rm","filename":"/tmp/x","ret":0,"error":null,"latency_ns":1234}}`
 * - `{"type":"lost","data":{"count":3}}`: that many more events were lost since the last such line
 * - `{"type":"summary","data":{"events":10,"lost":3}}`
 *
 * File names, as the caller passed them, are kept to their first 255 bytes.
 * Two `event` fields, right after `filename`, appear only when needed:
 * - `"filename_truncated":true` when the name was longer and was cut;
 * - `"filename_b64":"..."` when the name is not valid UTF-8: its exact bytes
 *   (the 255 kept, if cut), base64-encoded. `filename` then has U+FFFD in place
 *   of each invalid sequence, so only `filename_b64` gives the real name.
 *
 * Text lines escape control characters and each byte that is not part of
 * valid UTF-8 as `\xNN`, and end a cut name with {@linkcode TRUNCATED_MARK}.
 *
 * @module
 */

import { monotonicToEpochMs } from "../clock.ts";
import { errnoName } from "../errno.ts";
import { type SkippedMethod, UNLINK_F_NAME_TRUNCATED, type UnlinkEvent } from "./tracer.ts";

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

/** Replaces control characters so a hostile filename cannot drive the terminal. */
export function escapeControl(s: string): string {
  return s.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x1f\x7f]/g,
    (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
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

/** The length of the valid UTF-8 sequence at `b[i]`, or 0 if none starts there. */
function sequenceLength(b: Uint8Array, i: number): number {
  const lead = b[i];
  if (lead < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => b[i + k] >= lo && b[i + k] <= hi;
  if (lead >= 0xc2 && lead <= 0xdf) return cont(1) ? 2 : 0;
  if (lead >= 0xe0 && lead <= 0xef) {
    // No overlong forms (E0 80-9F) and no UTF-16 surrogates (ED A0-BF).
    const ok = cont(1, lead === 0xe0 ? 0xa0 : 0x80, lead === 0xed ? 0x9f : 0xbf) && cont(2);
    return ok ? 3 : 0;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    // No overlong forms (F0 80-8F) and nothing past U+10FFFF (F4 90-BF).
    const ok = cont(1, lead === 0xf0 ? 0x90 : 0x80, lead === 0xf4 ? 0x8f : 0xbf) &&
      cont(2) && cont(3);
    return ok ? 4 : 0;
  }
  return 0;
}

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

/** The FILENAME column: escaped, and marked if cut. */
function filenameText(e: UnlinkEvent): string {
  const name = e.filename_bytes ? escapeBytes(e.filename_bytes) : escapeControl(e.filename);
  return filenameTruncated(e) ? name + TRUNCATED_MARK : name;
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
 */
export function formatText(e: UnlinkEvent, paintFailure?: (ret: string) => string): string {
  const ret = retText(e.ret).padEnd(12);
  return `${clockText(e.ts_ns)} ${String(e.tgid).padStart(7)} ${escapeControl(e.comm).padEnd(16)} ${
    paintFailure && e.ret < 0 ? paintFailure(ret) : ret
  } ${(e.latency_ns / 1000).toFixed(1).padStart(9)} ${filenameText(e)}`;
}

/** The `data` of a JSON `event` line. */
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
  /** The name, cut to 255 bytes; U+FFFD in place of invalid UTF-8. */
  filename: string;
  /** Present, and true, only when the name was longer than the 255 bytes kept. */
  filename_truncated?: true;
  /** Present only when the name is not valid UTF-8: its exact bytes, base64-encoded. */
  filename_b64?: string;
  /** 0 or -errno. */
  ret: number;
  /** The errno name for a failure, else null. */
  error: string | null;
  /** How long do_unlinkat took, in ns. */
  latency_ns: number;
}

/** The `data` of a JSON `event` line. */
export function eventData(e: UnlinkEvent): EventJson {
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
  };
}

/** One JSON `event` line (no newline). */
export function formatJson(e: UnlinkEvent): string {
  // Same output as JSON.stringify({type, data: eventData(e)}), without the
  // intermediate object: this runs once per event.
  return `{"type":"event","data":{"time":"${
    new Date(monotonicToEpochMs(e.ts_ns)).toISOString()
  }","pid":${e.tgid},"tid":${e.tid},"uid":${e.uid},"comm":${JSON.stringify(e.comm)},"filename":${
    JSON.stringify(e.filename)
  }${filenameTruncated(e) ? ',"filename_truncated":true' : ""}${
    e.filename_bytes ? `,"filename_b64":"${e.filename_bytes.toBase64()}"` : ""
  },"ret":${e.ret},"error":${
    e.ret < 0 ? `"${errnoName(-e.ret)}"` : "null"
  },"latency_ns":${e.latency_ns}}}`;
}

/** The `attach` line (no newline): the method in use, and the better ones that failed. */
export function envelope(
  type: "attach",
  data: { method: string; skipped: SkippedMethod[]; probes: string[] },
): string;
/** A `lost` line: this many more events were lost since the last one. */
export function envelope(type: "lost", data: { count: number }): string;
/** The `summary` line, last on a clean exit. */
export function envelope(type: "summary", data: { events: number; lost: number }): string;
/** A JSON envelope line of any type (no newline). */
export function envelope(type: string, data: unknown): string {
  return JSON.stringify({ type, data });
}

/** `attached via tracepoint (fentry: load refused (EPERM); kprobe: ...)` */
export function attachText(
  method: string,
  skipped: SkippedMethod[],
  probes: string[] = [],
): string {
  const why = skipped.map((s) => `${s.method}: ${s.reason}`).join("; ");
  // Where a syscall's tracepoints are missing (arm64 has no unlink(2)), say which are used.
  const syscalls = probes.filter((p) => p.startsWith("tracepoint/syscalls/sys_enter_"))
    .map((p) => p.slice("tracepoint/syscalls/sys_enter_".length));
  const only = syscalls.length === 1 ? ` on ${syscalls[0]} only` : "";
  return `attached via ${method}${only}${why ? ` (${why})` : ""}`;
}
