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
 * @module
 */

import { monotonicToEpochMs } from "./clock.ts";
import { errnoName } from "./errno.ts";
import type { SkippedMethod, UnlinkEvent } from "./unlink.ts";

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
  } ${(e.latency_ns / 1000).toFixed(1).padStart(9)} ${escapeControl(e.filename)}`;
}

/** The `data` of a JSON `event` line. */
export interface EventJson {
  /** ISO-8601 wall-clock time at return. */
  time: string;
  pid: number;
  tid: number;
  uid: number;
  comm: string;
  filename: string;
  /** 0 or -errno. */
  ret: number;
  /** The errno name for a failure, else null. */
  error: string | null;
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
  },"ret":${e.ret},"error":${
    e.ret < 0 ? `"${errnoName(-e.ret)}"` : "null"
  },"latency_ns":${e.latency_ns}}}`;
}

/** A JSON envelope line of any type (no newline). */
export function envelope(
  type: "attach",
  data: { method: string; skipped: SkippedMethod[] },
): string;
export function envelope(type: "lost", data: { count: number }): string;
export function envelope(type: "summary", data: { events: number; lost: number }): string;
export function envelope(type: string, data: unknown): string {
  return JSON.stringify({ type, data });
}

/** `attached via tracepoint (fentry: load refused (EPERM); kprobe: ...)` */
export function attachText(method: string, skipped: SkippedMethod[]): string {
  const why = skipped.map((s) => `${s.method}: ${s.reason}`).join("; ");
  return `attached via ${method}${why ? ` (${why})` : ""}`;
}
