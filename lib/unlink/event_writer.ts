/**
 * Writes unlink events as output bytes straight from the ring, with no string
 * or object per event: the hot path of `scripts/trace.ts`. Its output is byte
 * for byte what {@linkcode formatJson} and {@linkcode formatText} produce from
 * a decoded event (tests hold it to that). A record with a cut name or
 * command line, a path to fold, another operation than unlink in text, or
 * anything but plain printable ASCII in a string falls back to exactly that
 * string path.
 *
 * @module
 */

import { monotonicToEpochMs } from "../clock.ts";
import { errnoName } from "../errno.ts";
import { containerOf } from "./_cgroup.ts";
import { devText, escapeJson, fileType, formatJson, formatText } from "./format.ts";
import {
  OPS,
  UNLINK_F_ARGV_REDACTED,
  UNLINK_F_ARGV_TRUNCATED,
  UNLINK_F_INODE,
  UNLINK_F_NAME_TRUNCATED,
  UNLINK_F_PATH_HEAD,
  UNLINK_F_PATH_JOINED,
  UNLINK_F_PATH_PARTIAL,
  UNLINK_F_PATH_TRUNCATED,
  UNLINK_F_PATH_UNRESOLVED,
  unlinkEvent,
} from "./tracer.ts";

const encoder = new TextEncoder();
const bytesOf = (s: string) => encoder.encode(s);

const HEX = bytesOf("0123456789abcdef");
/** JSON.stringify's short escapes: \b \t \n \f \r, `"` and `\`. */
const SHORT_ESCAPES: Record<number, number> = {
  0x08: 0x62,
  0x09: 0x74,
  0x0a: 0x6e,
  0x0c: 0x66,
  0x0d: 0x72,
  0x22: 0x22,
  0x5c: 0x5c,
};

/**
 * Writes ASCII byte `b` (a C0 control, `"` or `\`) at `pos` escaped as
 * JSON.stringify escapes it, and returns the position after it.
 */
function jsonEscape(buf: Uint8Array, pos: number, b: number): number {
  buf[pos++] = 0x5c;
  const short = SHORT_ESCAPES[b];
  if (short !== undefined) {
    buf[pos++] = short;
    return pos;
  }
  buf[pos++] = 0x75; // u00XX
  buf[pos++] = 0x30;
  buf[pos++] = 0x30;
  buf[pos++] = HEX[b >> 4];
  buf[pos++] = HEX[b & 15];
  return pos;
}
const F = unlinkEvent.fields;
const [COMM, COMM_LEN] = [F.comm[1], 16];
const [FILENAME, FILENAME_LEN] = [F.filename[1], 256];
const [PCOMM, ARGV, PATH] = [F.pcomm[1], F.argv[1], unlinkEvent.size];
/**
 * Records with these flags take the string path. A redacted command line is
 * one: its line is never the reused attribution JSON of another's.
 */
const SLOW = UNLINK_F_NAME_TRUNCATED | UNLINK_F_ARGV_TRUNCATED | UNLINK_F_ARGV_REDACTED |
  UNLINK_F_PATH_HEAD;
const CUT = UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_PARTIAL;
const AT_FDCWD = -100;
/**
 * Where the attribution fields' bytes are, [offset, length]: cgroup_id;
 * ppid, auid, mntns; pcomm and argv_len. argv's own bytes follow.
 */
const WHO: [number, number][] = [
  [F.cgroup_id[1], 8],
  [F.ppid[1], 12],
  [F.pcomm[1], 18],
];
const WHO_BYTES = WHO.reduce((n, [, len]) => n + len, 0);

const JSON_OPEN = bytesOf('{"type":"event","data":{"time":"');
const JSON_PID = bytesOf('","pid":');
const JSON_TID = bytesOf(',"tid":');
const JSON_UID = bytesOf(',"uid":');
const JSON_COMM = bytesOf(',"comm":"');
const JSON_FILENAME = bytesOf('","filename":"');
const JSON_RET = bytesOf('","ret":');
const JSON_ERROR = bytesOf(',"error":');
const JSON_LATENCY = bytesOf(',"latency_ns":');
const JSON_CLOSE = bytesOf("]}}\n");
const NULL = bytesOf("null");
const JSON_OPS = OPS.map((op) => bytesOf(`,"op":"${op}"`));
const JSON_PATH = bytesOf(',"path":"');
const JSON_NO_PATH = bytesOf(',"path":null');
const JSON_STATUS = Object.fromEntries(
  ["ok", "truncated", "partial", "unresolved"].map((s) => [s, bytesOf(`,"path_status":"${s}"`)]),
);
const JSON_DFD = bytesOf(',"dfd":');
const JSON_CWD = bytesOf('"AT_FDCWD"');
const JSON_INO = bytesOf(',"ino":');
const JSON_DEV = bytesOf(',"dev":"');
const JSON_TYPE = bytesOf('","type":');
const JSON_SIZE = bytesOf(',"size":');
const JSON_NLINK = bytesOf(',"nlink_after":');
const JSON_NO_INODE = bytesOf(',"ino":null,"dev":null,"type":null,"size":null,"nlink_after":null');
const JSON_PPID = bytesOf(',"ppid":');
const JSON_PCOMM = bytesOf(',"pcomm":"');
const JSON_AUID = bytesOf('","auid":');
const JSON_CGROUP_ID = bytesOf(',"cgroup_id":');
const JSON_MNTNS = bytesOf(',"mntns":');
const JSON_ARGV = bytesOf(',"argv":[');
const JSON_TYPES = new Map<number, Uint8Array>();

/** Where an {@linkcode EventWriter} writes: `Deno.stdout`, a file, ... */
export interface Writer {
  /** Writes some of `p`, returning how many bytes were written. */
  writeSync(p: Uint8Array): number;
}

/** The buffer is written out once it holds this much. */
const FLUSH_AT = 64 * 1024;

/** Output format of an {@linkcode EventWriter}. */
export type EventFormat = "json" | "text";

/** Options for an {@linkcode EventWriter}. */
export interface EventWriterOptions {
  /**
   * Names a cgroup id ({@linkcode UnlinkTracer.cgroupName}); without it
   * `cgroup` is null. The writer keeps no names of its own (only the last
   * one's JSON), so writers that share a tracer share its one bounded cache.
   */
  cgroupName?: (id: number) => string | null;
  /** Text: the FILENAME column shows the name as passed, not the absolute path. */
  rawNames?: boolean;
}

/**
 * Buffers event lines as bytes and writes them out in one call per batch.
 *
 * @example Append failed unlinks to a JSON lines file (needs root)
 * ```ts
 * import { EventWriter } from "./event_writer.ts";
 * import { UnlinkTracer } from "./tracer.ts";
 *
 * export async function logFailures(path: string): Promise<void> {
 *   using file = Deno.openSync(path, { append: true, create: true });
 *   using tracer = UnlinkTracer.open({ failedOnly: true });
 *   Deno.addSignalListener("SIGTERM", () => tracer.stop());
 *   const out = new EventWriter("json", file);
 *   while (await tracer.wait()) {
 *     tracer.drain((bytes, offset) => out.record(bytes, offset));
 *     out.flush();
 *   }
 * }
 * ```
 */
export class EventWriter {
  #format: EventFormat;
  #out: Writer;
  #buf = new Uint8Array(FLUSH_AT + 64 * 1024);
  #view = new DataView(this.#buf.buffer);
  #pos = 0;
  #minute = -1;
  #minuteBytes = new Uint8Array(0);
  #second = -1;
  #secondBytes = new Uint8Array(0);
  #errors = new Map<number, Uint8Array>();
  #source: ArrayBufferLike | undefined;
  #sourceView!: DataView;
  #cgroupName: (id: number) => string | null;
  #rawNames: boolean;
  /** The last cgroup id named, its name, and its `,"cgroup":...,"container":...`. */
  #cgroupId = -1;
  #cgroupText: string | null = null;
  #cgroupJson: Uint8Array | undefined;
  /** The raw attribution bytes of the last JSON line (see WHO), and their JSON. */
  #whoKey = new Uint8Array(WHO_BYTES + 256);
  #whoArgvLen = -1;
  #whoJson = new Uint8Array(0);

  /**
   * A writer of JSON lines or (uncoloured) text lines to `out`. It buffers up
   * to 64 KiB; call {@linkcode flush} after each batch.
   */
  constructor(format: EventFormat, out: Writer = Deno.stdout, options: EventWriterOptions = {}) {
    this.#format = format;
    this.#out = out;
    this.#cgroupName = options.cgroupName ?? (() => null);
    this.#rawNames = options.rawNames ?? false;
  }

  /** Appends the event whose `struct unlink_event` starts at `offset`. */
  record(bytes: Uint8Array, offset: number): void {
    if (this.#pos >= FLUSH_AT) this.flush();
    this.#reserve(16 * 1024);
    if (this.#format === "json") this.#json(bytes, offset);
    else this.#text(bytes, offset);
  }

  /** Appends one line of text (a newline is added). */
  line(text: string): void {
    // Encoded in place: a long line makes no array of its own to collect.
    this.#reserve(text.length * 3 + 1); // the most UTF-8 a UTF-16 unit takes
    this.#pos += encoder.encodeInto(text, this.#buf.subarray(this.#pos)).written;
    this.#buf[this.#pos++] = 0x0a;
  }

  /** Writes everything buffered and empties the buffer. */
  flush(): void {
    let data = this.#buf.subarray(0, this.#pos);
    while (data.length > 0) data = data.subarray(this.#out.writeSync(data));
    this.#pos = 0;
  }

  #reserve(n: number) {
    if (this.#pos + n <= this.#buf.length) return;
    const bigger = new Uint8Array(Math.max(this.#buf.length * 2, this.#pos + n));
    bigger.set(this.#buf.subarray(0, this.#pos));
    this.#buf = bigger;
    this.#view = new DataView(bigger.buffer);
  }

  #put(b: Uint8Array) {
    const n = b.length;
    // A byte loop beats TypedArray#set for the short constants written per event.
    if (n > 64) this.#buf.set(b, this.#pos);
    else for (let i = 0, buf = this.#buf, pos = this.#pos; i < n; i++) buf[pos + i] = b[i];
    this.#pos += n;
  }

  #int(n: number) {
    if (n < 0) {
      this.#buf[this.#pos++] = 0x2d;
      n = -n;
    }
    let width = 1;
    for (let p = 10; p <= n; p *= 10) width++;
    this.#digits(n, width);
  }

  #digits(n: number, width: number) {
    for (let i = width - 1; i >= 0; i--) {
      this.#buf[this.#pos + i] = 0x30 + (n % 10);
      n = Math.floor(n / 10);
    }
    this.#pos += width;
  }

  /**
   * Copies the C string at `at` if it is plain printable ASCII with nothing
   * to escape (for JSON, no `"` or `\`); returns false, writing nothing, if not.
   */
  #plain(bytes: Uint8Array, at: number, max: number, json: boolean): boolean {
    if (json) this.#reserve(max * 6);
    const buf = this.#buf;
    const start = this.#pos;
    let pos = start;
    for (let i = at, end = at + max; i < end; i++) {
      const b = bytes[i];
      if (b === 0) break;
      if (b > 0x7e || (b < 0x20 && !json)) {
        this.#pos = start;
        return false;
      }
      if (json && (b < 0x20 || b === 0x22 || b === 0x5c)) pos = jsonEscape(buf, pos, b);
      else buf[pos++] = b;
    }
    this.#pos = pos;
    return true;
  }

  /** A DataView over the ring's whole buffer, made once per buffer. */
  #viewOf(bytes: Uint8Array): DataView {
    if (bytes.buffer !== this.#source) {
      this.#source = bytes.buffer;
      this.#sourceView = new DataView(bytes.buffer);
    }
    return this.#sourceView;
  }

  #json(bytes: Uint8Array, offset: number) {
    const start = this.#pos;
    const v = this.#viewOf(bytes);
    const at = bytes.byteOffset + offset;
    const flags = v.getUint32(at + F.flags[1], true);
    if (flags & SLOW) return this.#slow(start, bytes, offset);
    const ret = v.getInt32(at + F.ret[1], true);
    this.#put(JSON_OPEN);
    this.#isoTime(u64(v, at + F.ts_ns[1]));
    this.#put(JSON_PID);
    this.#int(v.getUint32(at + F.tgid[1], true));
    this.#put(JSON_TID);
    this.#int(v.getUint32(at + F.tid[1], true));
    this.#put(JSON_UID);
    this.#int(v.getUint32(at + F.uid[1], true));
    this.#put(JSON_COMM);
    if (!this.#plain(bytes, offset + COMM, COMM_LEN, true)) return this.#slow(start, bytes, offset);
    this.#put(JSON_FILENAME);
    if (!this.#plain(bytes, offset + FILENAME, FILENAME_LEN, true)) {
      return this.#slow(start, bytes, offset);
    }
    this.#put(JSON_RET);
    this.#int(ret);
    this.#put(JSON_ERROR);
    this.#put(ret < 0 ? this.#errorName(-ret, true) : NULL);
    this.#put(JSON_LATENCY);
    this.#int(u64(v, at + F.latency_ns[1]));
    const op = JSON_OPS[v.getUint16(at + F.op[1], true)];
    if (!op) return this.#slow(start, bytes, offset);
    this.#put(op);
    if (flags & UNLINK_F_PATH_UNRESOLVED) {
      this.#put(JSON_NO_PATH);
      this.#put(JSON_STATUS.unresolved);
    } else {
      this.#put(JSON_PATH);
      if (!this.#path(bytes, offset, v.getUint16(at + F.path_len[1], true), flags, true)) {
        return this.#slow(start, bytes, offset);
      }
      this.#buf[this.#pos++] = 0x22;
      this.#put(
        JSON_STATUS[
          flags & UNLINK_F_PATH_TRUNCATED
            ? "truncated"
            : flags & UNLINK_F_PATH_PARTIAL
            ? "partial"
            : "ok"
        ],
      );
    }
    this.#put(JSON_DFD);
    const dfd = v.getInt32(at + F.dfd[1], true);
    if (dfd === AT_FDCWD) this.#put(JSON_CWD);
    else this.#int(dfd);
    if (flags & UNLINK_F_INODE) {
      this.#put(JSON_INO);
      this.#int(u64(v, at + F.ino[1]));
      this.#put(JSON_DEV);
      this.#ascii(devText(v.getUint32(at + F.dev[1], true)));
      this.#put(JSON_TYPE);
      this.#put(jsonType(v.getUint16(at + F.mode[1], true)));
      this.#put(JSON_SIZE);
      this.#int(u64(v, at + F.size[1]));
      this.#put(JSON_NLINK);
      this.#int(v.getUint32(at + F.nlink_after[1], true));
    } else {
      this.#put(JSON_NO_INODE);
    }
    // Who deleted, and where, is the same for a process's every deletion:
    // its JSON is reused while the bytes it comes from do not change.
    const argvLen = v.getUint16(at + F.argv_len[1], true);
    if (this.#sameWho(bytes, offset, argvLen)) {
      this.#put(this.#whoJson);
      return;
    }
    const who = this.#pos;
    this.#put(JSON_PPID);
    this.#int(v.getUint32(at + F.ppid[1], true));
    this.#put(JSON_PCOMM);
    if (!this.#plain(bytes, offset + PCOMM, COMM_LEN, true)) {
      return this.#slow(start, bytes, offset);
    }
    this.#put(JSON_AUID);
    this.#int(v.getUint32(at + F.auid[1], true));
    this.#put(JSON_CGROUP_ID);
    const cgroupId = u64(v, at + F.cgroup_id[1]);
    this.#int(cgroupId);
    this.#put(this.#cgroup(cgroupId));
    this.#put(JSON_MNTNS);
    this.#int(v.getUint32(at + F.mntns[1], true));
    this.#put(JSON_ARGV);
    if (!this.#argv(bytes, offset + ARGV, argvLen)) return this.#slow(start, bytes, offset);
    this.#put(JSON_CLOSE);
    // A cgroup not named yet may be named later: its lines are not reused.
    if (this.#cgroupText !== null) {
      this.#whoJson = this.#buf.slice(who, this.#pos);
      this.#keepWho(bytes, offset, argvLen);
    } else {
      this.#whoArgvLen = -1;
    }
  }

  /** Whether the attribution bytes at `offset` are those of the last line's. */
  #sameWho(bytes: Uint8Array, offset: number, argvLen: number): boolean {
    if (argvLen !== this.#whoArgvLen) return false;
    const key = this.#whoKey;
    let k = 0;
    for (const [from, n] of WHO) {
      for (let i = offset + from, end = i + n; i < end; i++) {
        if (bytes[i] !== key[k++]) return false;
      }
    }
    for (let i = offset + ARGV, end = i + argvLen; i < end; i++) {
      if (bytes[i] !== key[k++]) return false;
    }
    return true;
  }

  #keepWho(bytes: Uint8Array, offset: number, argvLen: number) {
    let k = 0;
    for (const [from, n] of WHO) {
      this.#whoKey.set(bytes.subarray(offset + from, offset + from + n), k);
      k += n;
    }
    this.#whoKey.set(bytes.subarray(offset + ARGV, offset + ARGV + argvLen), k);
    this.#whoArgvLen = argvLen;
  }

  /**
   * Copies the record's path if it is plain printable ASCII (for JSON, no
   * `"` or `\`) and needs no folding; returns false, writing nothing, if not.
   */
  #path(bytes: Uint8Array, offset: number, len: number, flags: number, json: boolean): boolean {
    const at = offset + PATH;
    if (flags & UNLINK_F_PATH_JOINED && !(flags & CUT)) {
      // A joined path with "/." or "//" is folded by the string path.
      for (let i = at, end = at + len - 1; i < end; i++) {
        if (bytes[i] === 0x2f && (bytes[i + 1] === 0x2e || bytes[i + 1] === 0x2f)) return false;
      }
    }
    if (flags & CUT && !json) this.#put(ELLIPSIS);
    return this.#plain(bytes, at, len, json);
  }

  /** The argv array's elements and its closing bracket are written by the caller's close. */
  #argv(bytes: Uint8Array, at: number, len: number): boolean {
    if (len === 0) return true;
    const end = bytes[at + len - 1] === 0 ? at + len - 1 : at + len;
    this.#reserve(len * 6 + 2);
    const buf = this.#buf;
    const start = this.#pos;
    let pos = start;
    buf[pos++] = 0x22;
    for (let i = at; i < end; i++) {
      const b = bytes[i];
      if (b === 0) {
        buf[pos++] = 0x22;
        buf[pos++] = 0x2c;
        buf[pos++] = 0x22;
        continue;
      }
      if (b > 0x7e) {
        this.#pos = start;
        return false;
      }
      if (b < 0x20 || b === 0x22 || b === 0x5c) pos = jsonEscape(buf, pos, b);
      else buf[pos++] = b;
    }
    buf[pos++] = 0x22;
    this.#pos = pos;
    return true;
  }

  /**
   * `,"cgroup":...,"container":...` for a cgroup id, made again only when the
   * id or its name changed since the last call.
   */
  #cgroup(id: number): Uint8Array {
    const name = this.#cgroupName(id);
    if (this.#cgroupJson && id === this.#cgroupId && name === this.#cgroupText) {
      return this.#cgroupJson;
    }
    this.#cgroupId = id;
    this.#cgroupText = name;
    this.#cgroupJson = bytesOf(
      escapeJson(
        `,"cgroup":${JSON.stringify(name)},"container":${
          JSON.stringify(name === null ? null : containerOf(name))
        }`,
      ),
    );
    return this.#cgroupJson;
  }

  #ascii(s: string) {
    for (let i = 0; i < s.length; i++) this.#buf[this.#pos++] = s.charCodeAt(i);
  }

  #text(bytes: Uint8Array, offset: number) {
    const start = this.#pos;
    const v = this.#viewOf(bytes);
    const at = bytes.byteOffset + offset;
    const flags = v.getUint32(at + F.flags[1], true);
    if (
      flags & (UNLINK_F_NAME_TRUNCATED | UNLINK_F_PATH_HEAD) ||
      v.getUint16(at + F.op[1], true) !== 0
    ) {
      return this.#slow(start, bytes, offset);
    }
    const ret = v.getInt32(at + F.ret[1], true);
    this.#clock(u64(v, at + F.ts_ns[1]));
    this.#padStart(String(v.getUint32(at + F.tgid[1], true)), 8);
    this.#space();
    const comm = this.#pos;
    if (!this.#plain(bytes, offset + COMM, COMM_LEN, false)) {
      return this.#slow(start, bytes, offset);
    }
    this.#padTo(comm + 16);
    this.#space();
    const retAt = this.#pos;
    if (ret < 0) this.#put(this.#errorName(-ret, false));
    else this.#int(ret);
    this.#padTo(retAt + 12);
    this.#padStart((u64(v, at + F.latency_ns[1]) / 1000).toFixed(1), 10);
    this.#space();
    const named = this.#rawNames || flags & UNLINK_F_PATH_UNRESOLVED
      ? this.#plain(bytes, offset + FILENAME, FILENAME_LEN, false)
      : this.#path(bytes, offset, v.getUint16(at + F.path_len[1], true), flags, false);
    if (!named) return this.#slow(start, bytes, offset);
    this.#buf[this.#pos++] = 0x0a;
  }

  /** Rewinds to `start` and writes the event through the string formatters. */
  #slow(start: number, bytes: Uint8Array, offset: number) {
    this.#pos = start;
    const e = unlinkEvent.decode(bytes, offset);
    e.cgroup = this.#cgroupName(e.cgroup_id);
    this.line(this.#format === "json" ? formatJson(e) : formatText(e, undefined, this.#rawNames));
  }

  #space() {
    this.#buf[this.#pos++] = 0x20;
  }

  #padStart(s: string, width: number) {
    for (let i = s.length; i < width; i++) this.#space();
    for (let i = 0; i < s.length; i++) this.#buf[this.#pos++] = s.charCodeAt(i);
  }

  #padTo(end: number) {
    while (this.#pos < end) this.#space();
  }

  #errorName(errno: number, json: boolean): Uint8Array {
    const key = json ? errno : -errno;
    let b = this.#errors.get(key);
    if (!b) {
      b = bytesOf(json ? `"${errnoName(errno)}"` : errnoName(errno));
      this.#errors.set(key, b);
    }
    return b;
  }

  /** `YYYY-MM-DDTHH:MM:SS.mmmZ`, as Date#toISOString. */
  #isoTime(tsNs: number) {
    const ms = Math.floor(monotonicToEpochMs(tsNs));
    const minute = Math.floor(ms / 60_000);
    if (minute !== this.#minute) {
      this.#minute = minute;
      this.#minuteBytes = bytesOf(new Date(minute * 60_000).toISOString().slice(0, 17));
    }
    this.#put(this.#minuteBytes);
    this.#digits(Math.floor(ms / 1000) % 60, 2);
    this.#buf[this.#pos++] = 0x2e;
    this.#digits(ms % 1000, 3);
    this.#buf[this.#pos++] = 0x5a;
  }

  /** `HH:MM:SS.mmm` in local time, as {@linkcode formatText}. */
  #clock(tsNs: number) {
    const ms = Math.floor(monotonicToEpochMs(tsNs));
    const second = Math.floor(ms / 1000);
    if (second !== this.#second) {
      this.#second = second;
      const d = new Date(second * 1000);
      const two = (n: number) => String(n).padStart(2, "0");
      this.#secondBytes = bytesOf(
        `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.`,
      );
    }
    this.#put(this.#secondBytes);
    this.#digits(ms % 1000, 3);
  }
}

function u64(v: DataView, at: number): number {
  return v.getUint32(at, true) + v.getUint32(at + 4, true) * 0x1_0000_0000;
}

const ELLIPSIS = bytesOf("…");

/** `"file"`, or `null`, as JSON bytes, for an i_mode. */
function jsonType(mode: number): Uint8Array {
  const key = mode & 0o170000;
  let b = JSON_TYPES.get(key);
  if (!b) {
    b = bytesOf(JSON.stringify(fileType(mode)));
    JSON_TYPES.set(key, b);
  }
  return b;
}
