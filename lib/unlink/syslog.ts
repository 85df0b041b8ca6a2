/**
 * Unlink events to a syslog relay (rsyslog, syslog-ng, journald's /dev/log):
 * RFC 5424 messages whose MSG is the event's JSON line, exactly as
 * `scripts/trace.ts --json` prints it (`{"type":"event","data":{...}}`).
 *
 * Message format, one per event:
 *
 *     <30>1 2026-11-26T04:40:00.123Z host deno_bpf 4242 event [meta sequenceId="7"] {"type":"event",...}
 *
 * - PRI: facility `daemon` (3); severity `info` (6) for events, `warning` (4)
 *   for `lost` records, `notice` (5) for the others (`attach`).
 * - TIMESTAMP is when the message was made; the event's own time is `data.time`.
 * - MSGID is the JSON line's `type`. STRUCTURED-DATA is RFC 5424's
 *   `[meta sequenceId="N"]`, N counting this sender's messages from 1.
 * - MSG is the JSON line as UTF-8 with no BOM (RFC 5424's MSG-ANY), so every
 *   field the JSON output has, now or later, reaches the relay unchanged, and
 *   a relay template of `%msg%` gives back JSON lines.
 *
 * Transports, from the URL:
 * - `udp://HOST:PORT` (default port 514): one datagram per message. UDP has no
 *   delivery confirmation: a relay that is down shows only as ICMP errors on
 *   later sends, which are counted as drops, but the datagram sent just
 *   before the error is lost uncounted.
 * - `tcp://HOST:PORT` (default port 601): RFC 6587 octet counting
 *   (`LEN SP MSG`), a queue bounded in bytes (`queueBytes`, default
 *   {@linkcode DEFAULT_SYSLOG_QUEUE_BYTES}: the frames waiting and those kept
 *   for resending, together), and reconnection with exponential backoff
 *   (0.1 s doubling to 5 s) while the relay is away.
 *   The connection is watched for the relay closing it, so messages queue
 *   instead of going to a dead socket. A relay that stops loses what it had
 *   not read yet, and TCP cannot say how much: so messages written in the
 *   last {@linkcode RESEND_MS} before a connection ended are sent again on
 *   the next one (at least once, never silently lost), and the relay can drop
 *   repeats by their `sequenceId`.
 * - `unix:///dev/log` (or another path): one datagram per message.
 *
 * Every message is at most `maxMessage` bytes (default
 * {@linkcode DEFAULT_SYSLOG_MAX_MESSAGE}, rsyslog's default limit): a longer
 * one is shortened by {@linkcode fitJson} so that it stays one valid JSON
 * line, marked with the fields it cut in `data.syslog_truncated`.
 *
 * HOST must be an IP address (or `localhost`). A message that is not sent (a
 * full queue, an unreachable relay, a failed write, or still queued when the
 * sender closes) is counted in {@linkcode SyslogSender.dropped}, never
 * silently lost; once the relay takes messages again it is first sent a
 * `{"type":"lost","data":{"count":N,"output":"syslog"}}` record for the drops
 * it missed.
 *
 * Deno permissions: `tcp://` needs `--allow-net=HOST:PORT`; `udp://` and
 * `unix://` go through libc and need only `--allow-ffi`.
 *
 * @module
 */

import { c } from "../_ffi.ts";
import { type DatagramAddress, DatagramSocket } from "./_socket.ts";
import { errnoName } from "../errno.ts";
import { escapeJson } from "./format.ts";

/** Where to send: parsed from `udp://`, `tcp://` or `unix://` URLs. */
export type SyslogTarget =
  | { transport: "udp" | "tcp"; hostname: string; port: number }
  | { transport: "unix"; path: string };

/** Parses a syslog URL; throws a `TypeError` that says what is accepted. */
export function parseSyslogUrl(url: string): SyslogTarget {
  const bad = (why: string) =>
    new TypeError(
      `Bad syslog URL "${url}": ${why}; use udp://HOST:514, tcp://HOST:601 or unix:///dev/log`,
    );
  const unix = /^unix:\/\/(\/.*)$/.exec(url);
  if (unix) return { transport: "unix", path: unix[1] };
  const m = /^(udp|tcp):\/\/(\[[0-9a-fA-F:]+\]|[^:/\[\]]+)(?::(\d+))?\/?$/.exec(url);
  if (!m) throw bad("not a udp://, tcp:// or unix:// address");
  const port = m[3] === undefined ? (m[1] === "udp" ? 514 : 601) : Number(m[3]);
  if (port < 1 || port > 65535) throw bad(`port ${m[3]} is out of range`);
  return { transport: m[1] as "udp" | "tcp", hostname: m[2].replace(/^\[(.*)\]$/, "$1"), port };
}

/** The URL of a target, as {@linkcode parseSyslogUrl} reads it. */
export function syslogUrl(t: SyslogTarget): string {
  if (t.transport === "unix") return `unix://${t.path}`;
  return `${t.transport}://${t.hostname.includes(":") ? `[${t.hostname}]` : t.hostname}:${t.port}`;
}

/** Syslog severities used here (RFC 5424 table 2). */
export const SEVERITY = { warning: 4, notice: 5, info: 6 } as const;
/** The `daemon` facility (RFC 5424 table 1). */
export const FACILITY_DAEMON = 3;

/** The header fields of an RFC 5424 message. */
export interface SyslogHeader {
  /** 0 to 23; default {@linkcode FACILITY_DAEMON}. */
  facility?: number;
  /** 0 (emergency) to 7 (debug). */
  severity: number;
  /** `YYYY-MM-DDTHH:MM:SS.mmmZ`, or `-`. */
  timestamp: string;
  /** HOSTNAME: this host's name. */
  hostname: string;
  /** APP-NAME: `deno_bpf`. */
  appName: string;
  /** PROCID: the tracer's pid. */
  procId: string;
  /** MSGID: the JSON line's `type`. */
  msgId: string;
  /** STRUCTURED-DATA, already formatted; default `-` (nil). */
  structuredData?: string;
}

/**
 * A header field as RFC 5424 allows it: printable US-ASCII without spaces,
 * cut to `max` characters, and `-` (nil) when empty.
 */
export function headerField(value: string, max: number): string {
  const clean = value.replace(/[^\x21-\x7e]/g, "_").slice(0, max);
  return clean === "" ? "-" : clean;
}

/** `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD ` : everything before MSG. */
export function syslogPrefix(h: SyslogHeader): string {
  const pri = (h.facility ?? FACILITY_DAEMON) * 8 + h.severity;
  return `<${pri}>1 ${h.timestamp} ${headerField(h.hostname, 255)} ${headerField(h.appName, 48)} ${
    headerField(h.procId, 128)
  } ${headerField(h.msgId, 32)} ${h.structuredData ?? "-"} `;
}

const encoder = new TextEncoder();
const utf8 = new TextDecoder();

/** `parts` joined in one new array. */
function join(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The bytes of `LEN SP` that RFC 6587 octet counting puts before a message of `n` bytes. */
const octetCount = (n: number) => encoder.encode(`${n} `);

/**
 * RFC 6587 octet counting: `LEN SP MSG`, MSG the parts joined and LEN its
 * byte length, in one allocation.
 */
export function octetFrame(...msg: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return join([octetCount(msg.reduce((n, p) => n + p.length, 0)), ...msg]);
}

/** Splits JSON lines (bytes) at newlines; the last part, if not ended, is returned as rest. */
export function splitLines(bytes: Uint8Array): { lines: Uint8Array[]; rest: Uint8Array } {
  const lines: Uint8Array[] = [];
  let start = 0;
  for (let i = bytes.indexOf(0x0a); i >= 0; i = bytes.indexOf(0x0a, start)) {
    lines.push(bytes.subarray(start, i));
    start = i + 1;
  }
  return { lines, rest: bytes.subarray(start) };
}

/** The next wait after `ms` failed: doubled, at most `max`. */
export function nextBackoff(ms: number, max: number): number {
  return Math.min(max, ms * 2);
}

/**
 * The default cap on one message, in bytes (header and MSG): 8096, the
 * longest message rsyslog takes whole with its default `maxMessageSize`
 * ("8k"; measured: it cuts longer ones).
 */
export const DEFAULT_SYSLOG_MAX_MESSAGE = 8096;

/** The smallest cap {@linkcode SyslogSender} accepts: RFC 5425's minimum for receivers. */
export const MIN_SYSLOG_MAX_MESSAGE = 2048;

/** The largest cap: the most a UDP datagram can carry over IPv4. */
export const MAX_SYSLOG_MAX_MESSAGE = 65_507;

/** The default bound on TCP messages waiting or kept for resending, in bytes (16 MiB). */
export const DEFAULT_SYSLOG_QUEUE_BYTES = 16 * 1024 * 1024;

/** The smallest queue bound `--syslog-queue-bytes` takes: a few messages at the largest cap. */
export const MIN_SYSLOG_QUEUE_BYTES = 256 * 1024;

/**
 * What a queued message costs beyond its bytes, as counted against the
 * queue's bound: the JS objects that hold it.
 */
export const QUEUED_OVERHEAD_BYTES = 128;

/** The fields {@linkcode fitJson} drops first: exact bytes that the text fields repeat. */
export const DROPPED_FIRST: readonly string[] = ["argv_b64", "filename_b64", "path_b64"];

/** What a cut string holds where its cut part was: U+2026. */
export const CUT_MARK = "\u2026";

/**
 * Whether JSON output escapes code unit `c` beyond what JSON.stringify does:
 * DEL, C1 controls, bidi marks and overrides, U+2028 and U+2029 (as
 * {@linkcode escapeJson} does for every JSON line).
 */
function escapedToo(c: number): boolean {
  return (c >= 0x7f && c <= 0x9f) || c === 0x61c || c === 0x200e || c === 0x200f ||
    (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/** The bytes code unit `c` takes inside a JSON string as the outputs write it, in UTF-8. */
function jsonCost(c: number): number {
  if (c === 0x22 || c === 0x5c) return 2;
  if (c < 0x20) return c === 8 || c === 9 || c === 10 || c === 12 || c === 13 ? 2 : 6;
  if (c < 0x7f) return 1;
  if (escapedToo(c)) return 6;
  if (c < 0x800) return 2;
  if (c >= 0xd800 && c <= 0xdfff) return 6; // a lone surrogate: escaped
  return 3;
}

/**
 * The length of the character at `i` of `s` in code units (2 for a
 * surrogate pair), and its JSON bytes, packed as `bytes * 4 + units`.
 */
function charAt(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
    const d = s.charCodeAt(i + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return 4 * 4 + 2;
  }
  return jsonCost(c) * 4 + 1;
}

/** The bytes of `s` written as a JSON string by the outputs, in UTF-8, quotes included. */
export function jsonStringBytes(s: string): number {
  let n = 2;
  for (let i = 0; i < s.length;) {
    const ch = charAt(s, i);
    n += ch >> 2;
    i += ch & 3;
  }
  return n;
}

/** A code unit outside ASCII less DEL, the only kind that takes more or less than one byte. */
const WIDE = /[\x7f-\uffff]/g;

/** The UTF-8 bytes of JSON text `json` (its strings as the outputs write them). */
function jsonTextBytes(json: string): number {
  // Every character outside strings is ASCII; inside, a JSON.stringify
  // output holds no raw C0 control, quote or backslash: escapes are ASCII.
  // So only the wide code units change the count, and a regular expression
  // finds them faster than a loop over every unit.
  let n = json.length;
  WIDE.lastIndex = 0;
  for (let m = WIDE.exec(json); m; m = WIDE.exec(json)) {
    const ch = charAt(json, m.index);
    n += (ch >> 2) - (ch & 3);
    WIDE.lastIndex = m.index + (ch & 3);
  }
  return n;
}

const MARK_BYTES = jsonStringBytes(CUT_MARK) - 2;

/**
 * The bytes of the unit of JSON string text at `i` (an escape, a surrogate
 * pair or one code unit) as the outputs write it, and its length in code
 * units, packed as `bytes * 8 + units`.
 */
function unitAt(text: string, i: number): number {
  if (text.charCodeAt(i) === 0x5c) return text.charCodeAt(i + 1) === 0x75 ? 6 * 8 + 6 : 2 * 8 + 2;
  const ch = charAt(text, i);
  return (ch >> 2) * 8 + (ch & 3);
}

/**
 * A JSON string token (quotes included, as JSON text writes it) cut so that
 * it takes at most `bytes` of UTF-8, with {@linkcode CUT_MARK} where the cut
 * part was: its end kept (`keepEnd`, for a path, whose end names the file)
 * or its start. Never splits a character or an escape.
 */
export function cutJsonString(token: string, bytes: number, keepEnd: boolean): string {
  const end = token.length - 1;
  let budget = bytes - 2 - MARK_BYTES;
  if (jsonTextBytes(token) <= bytes) return token;
  if (!keepEnd) {
    for (let i = 1; i < end;) {
      const u = unitAt(token, i);
      if ((budget -= u >> 3) < 0) return `${token.slice(0, i)}${CUT_MARK}"`;
      i += u & 7;
    }
    return token;
  }
  // Skip from the start until what is left fits.
  let left = jsonTextBytes(token) - 2;
  let i = 1;
  while (i < end && left > budget) {
    const u = unitAt(token, i);
    left -= u >> 3;
    i += u & 7;
  }
  return `"${CUT_MARK}${token.slice(i)}`;
}

/** The index just past the JSON string token that starts at `i`, or -1. */
function stringEnd(text: string, i: number): number {
  for (let j = text.indexOf('"', i + 1); j >= 0; j = text.indexOf('"', j + 1)) {
    // A quote ends the string unless an odd run of backslashes escapes it.
    let k = j - 1;
    while (text.charCodeAt(k) === 0x5c) k--;
    if ((j - 1 - k) % 2 === 0) return j + 1;
  }
  return -1;
}

/** The index just past the compact JSON value that starts at `i`, or -1. */
function valueEnd(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return stringEnd(text, i);
  if (c === "{" || c === "[") {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const d = text[j];
      if (d === '"') {
        j = stringEnd(text, j) - 1;
        if (j < 0) return -1;
      } else if (d === "{" || d === "[") depth++;
      else if ((d === "}" || d === "]") && --depth === 0) return j + 1;
    }
    return -1;
  }
  SCALAR.lastIndex = i;
  const m = SCALAR.exec(text);
  return m ? i + m[0].length : -1;
}

/** A JSON number, true, false or null, where the text is read. */
const SCALAR =
  /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?(?=[,}\]]|$)|(?:true|false|null)(?=[,}\]]|$)/y;

/** A member of a compact JSON object: its key, and where its `"key":` and value are in the text. */
interface Member {
  key: string;
  start: number;
  value: number;
  end: number;
}

/** The members of the compact JSON object at `open` (a `{`), and its `}`'s index; undefined if it is not one. */
function membersOf(text: string, open: number): { members: Member[]; close: number } | undefined {
  const members: Member[] = [];
  let i = open + 1;
  if (text[i] === "}") return { members, close: i };
  for (;;) {
    if (text[i] !== '"') return undefined;
    const k = stringEnd(text, i);
    if (k < 0 || text[k] !== ":") return undefined;
    const end = valueEnd(text, k + 1);
    if (end < 0) return undefined;
    members.push({ key: JSON.parse(text.slice(i, k)), start: i, value: k + 1, end });
    if (text[end] === "}") return { members, close: end };
    if (text[end] !== ",") return undefined;
    i = end + 1;
  }
}

/** A string of `data` that can be cut: a field's value, or an element of a field's array of strings. */
interface Cuttable {
  key: string;
  token: string;
  cost: number;
}

/** A member of `data` as it will be written: its `"key":`, and its value in parts. */
interface Field {
  key: string;
  head: string;
  parts: (string | Cuttable)[];
  /** The bytes of `head` and of the parts that are not cuttable. */
  fixed: number;
}

/** `data`'s member `m` of `text` as a field, its strings (alone or in an array) cuttable. */
function fieldOf(text: string, m: Member): Field {
  const field = (parts: (string | Cuttable)[]): Field => {
    const head = text.slice(m.start, m.value);
    const fixed = parts.reduce((n, p) => typeof p === "string" ? n + jsonTextBytes(p) : n, 0);
    return { key: m.key, head, parts, fixed: jsonTextBytes(head) + fixed };
  };
  const cuttable = (from: number, to: number): Cuttable => {
    const token = text.slice(from, to);
    return { key: m.key, token, cost: jsonTextBytes(token) };
  };
  if (text[m.value] === '"') return field([cuttable(m.value, m.end)]);
  if (text[m.value] !== "[") return field([text.slice(m.value, m.end)]);
  const parts: (string | Cuttable)[] = [];
  let i = m.value + 1;
  let from = m.value; // the start of the text not yet in parts
  while (i < m.end - 1) {
    const end = valueEnd(text, i);
    if (end < 0) return field([text.slice(m.value, m.end)]);
    if (text[i] === '"') {
      parts.push(text.slice(from, i), cuttable(i, end));
      from = end;
    }
    i = end + 1;
  }
  parts.push(text.slice(from, m.end));
  return field(parts);
}

/**
 * A JSON line (`{"type":...,"data":{...}}`) shortened to at most `maxBytes`
 * of UTF-8, still one valid JSON object: first the fields of
 * {@linkcode DROPPED_FIRST} are dropped, then the longest strings of `data`
 * (an element of an array of strings counts as its array's field) are cut to
 * one length, the longest that fits, each marked with
 * {@linkcode CUT_MARK}; `path` keeps its end (the file's name), the others
 * their start. `data.syslog_truncated` lists the fields dropped, then those
 * cut. A line that is no such object becomes
 * `{"type":TYPE,"data":{"syslog_truncated":["data"]}}`. A line that fits is
 * returned as it is. What it returns has DEL, C1 controls, bidi characters
 * and U+2028/U+2029 escaped, as every JSON line of the outputs does.
 *
 * It works on the line's text, without parsing it into objects: a flood of
 * long events makes little to collect.
 *
 * @example Shorten an event with a long path
 * ```ts
 * import { fitJson } from "./syslog.ts";
 *
 * const line = JSON.stringify({ type: "event", data: { pid: 1, path: "/" + "a".repeat(9000) } });
 * const short = JSON.parse(fitJson(line, 2048));
 * console.assert(short.data.syslog_truncated[0] === "path");
 * console.assert(short.data.path.startsWith("\u2026a"));
 * ```
 */
export function fitJson(line: string, maxBytes: number): string {
  if (jsonTextBytes(line) <= maxBytes) return line;
  let text = line;
  let top = text[0] === "{" ? membersOf(text, 0) : undefined;
  if (!top || top.close !== text.length - 1) {
    // Not compact JSON: written compact once, then read as such.
    try {
      text = JSON.stringify(JSON.parse(line));
    } catch { /* not JSON */ }
    top = text[0] === "{" ? membersOf(text, 0) : undefined;
  }
  const typeOf = top?.members.find((m) => m.key === "type");
  const type = typeOf && text[typeOf.value] === '"'
    ? JSON.parse(text.slice(typeOf.value, typeOf.end))
    : "unknown";
  const fallback = escapeJson(JSON.stringify({
    type: String(type).slice(0, 32),
    data: { syslog_truncated: ["data"] },
  }));
  const dataOf = top?.members.find((m) => m.key === "data");
  const data = dataOf && text[dataOf.value] === "{" ? membersOf(text, dataOf.value) : undefined;
  if (!dataOf || !data) return fallback;
  // Only this function writes syslog_truncated: one that came in goes.
  const fields = data.members.filter((m) => m.key !== "syslog_truncated").map((m) =>
    fieldOf(text, m)
  );
  const head = text.slice(0, dataOf.value + 1);
  const tail = text.slice(data.close);
  const fixed = jsonTextBytes(head) + jsonTextBytes(tail) + '"syslog_truncated":[]'.length;
  const cut: string[] = [];
  const fieldBytes = (f: Field) =>
    f.parts.reduce((n, p) => typeof p === "string" ? n : n + p.cost, f.fixed);
  const listed = () =>
    cut.reduce((n, k) => n + jsonTextBytes(JSON.stringify(k)) + 1, 0) - (cut.length > 0 ? 1 : 0);
  const size = () => fixed + fields.reduce((n, f) => n + fieldBytes(f) + 1, 0) + listed();
  for (const key of DROPPED_FIRST) {
    const at = fields.findIndex((f) => f.key === key);
    if (at < 0) continue;
    if (size() <= maxBytes) break;
    fields.splice(at, 1);
    cut.push(key);
  }
  // Cut every string longer than a level L to L, the highest L that makes it
  // fit: the long strings share the room, and each keeps some of itself.
  // Characters of several bytes can leave a cut a little short, never long.
  for (let excess = size() - maxBytes; excess > 0; excess = size() - maxBytes) {
    const strings = fields.flatMap((f) =>
      f.parts.filter((p): p is Cuttable => typeof p !== "string")
    );
    // The names of fields cut for the first time lengthen syslog_truncated.
    const named = (level: number) =>
      [...new Set(strings.filter((c) => c.cost > level && !cut.includes(c.key)).map((c) => c.key))]
        .reduce((n, key) => n + jsonTextBytes(JSON.stringify(key)) + 1, 0);
    const shed = (level: number) =>
      strings.reduce((n, c) => n + Math.max(0, c.cost - level), 0) - named(level);
    const least = MARK_BYTES + 2;
    if (shed(least) < excess) return jsonTextBytes(fallback) <= maxBytes ? fallback : "{}";
    let [low, high] = [least, Math.max(least, ...strings.map((c) => c.cost))];
    while (low < high) {
      const mid = Math.ceil((low + high) / 2);
      if (shed(mid) >= excess) low = mid;
      else high = mid - 1;
    }
    for (const c of strings) {
      if (c.cost <= low) continue;
      c.token = cutJsonString(c.token, low, c.key === "path");
      c.cost = jsonTextBytes(c.token);
      if (!cut.includes(c.key)) cut.push(c.key);
    }
  }
  const body = fields.map((f) =>
    f.head + f.parts.map((p) => typeof p === "string" ? p : p.token).join("")
  );
  body.push(`"syslog_truncated":${JSON.stringify(cut)}`);
  return escapeJson(head + body.join(",") + tail);
}

/** Options for {@linkcode SyslogSender.open}. */
export interface SyslogOptions {
  /**
   * TCP only: at most this many bytes of messages wait for the relay or are
   * kept for resending, together (default 16 MiB). Each message counts its
   * bytes plus {@linkcode QUEUED_OVERHEAD_BYTES}.
   */
  queueBytes?: number;
  /** The cap on one message, in bytes (default {@linkcode DEFAULT_SYSLOG_MAX_MESSAGE}). */
  maxMessage?: number;
  /** APP-NAME (default `deno_bpf`). */
  appName?: string;
  /** The first wait before reconnecting, in ms (default 100); it doubles up to `maxBackoffMs`. */
  backoffMs?: number;
  /** The longest wait before reconnecting, in ms (default 5000). */
  maxBackoffMs?: number;
  /** Receives one line on each change of state: connected, unreachable, closed by the relay. */
  onState?: (line: string) => void;
}

/**
 * TCP: messages written in this many ms before a connection ended are sent
 * again on the next one. A relay that stops reads nothing more, then closes:
 * what it had not read by then is gone, and TCP cannot say how much.
 */
export const RESEND_MS = 1000;

/** The RFC 5424 `meta` structured data with a message's sequence number (1 to 2^31-1). */
export function metaSequence(n: number): string {
  return `[meta sequenceId="${n}"]`;
}

/** This host's name (uname's nodename), read through libc: no --allow-sys needed. */
function hostName(): string {
  const buf = new Uint8Array(6 * 65);
  if (c().uname(buf) !== 0) return "-";
  const field = buf.subarray(65, 130);
  return new TextDecoder().decode(field.subarray(0, Math.max(0, field.indexOf(0))));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Sends JSON lines to a syslog relay as RFC 5424 messages. Event lines come
 * in through {@linkcode writeSync}, so an `EventWriter("json", sender)` feeds
 * it the same bytes as trace.ts's JSON output.
 *
 * @example Send failed unlinks to the local syslog (needs root)
 * ```ts
 * import { EventWriter, SyslogSender, UnlinkTracer } from "./mod.ts";
 *
 * export async function sendFailures(): Promise<void> {
 *   using tracer = UnlinkTracer.open({ failedOnly: true });
 *   const syslog = SyslogSender.open("unix:///dev/log");
 *   const out = new EventWriter("json", syslog);
 *   while (await tracer.wait()) {
 *     tracer.drain((bytes, offset) => out.record(bytes, offset));
 *     out.flush();
 *   }
 *   await syslog.close();
 * }
 * ```
 */
export class SyslogSender implements AsyncDisposable {
  /** Where the messages go. */
  readonly target: SyslogTarget;
  readonly #queueBytes: number;
  readonly #maxMessage: number;
  /** Where {@linkcode #message} writes: a prefix (at most ~600 bytes) and a MSG that fits. */
  readonly #scratch: Uint8Array;
  readonly #appName: string;
  readonly #hostname = hostName();
  readonly #procId = String(Deno.pid);
  readonly #firstBackoff: number;
  readonly #maxBackoff: number;
  readonly #onState: (line: string) => void;
  #dgram: DatagramSocket | undefined;
  #conn: Deno.TcpConn | undefined;
  /** TCP frames waiting, each marked if it is an event (only events are counted). */
  #queue = new Fifo();
  /** TCP frames written lately, sent again if the connection ends (see {@linkcode RESEND_MS}). */
  #recent = new Fifo();
  /** The bytes counted against the bound: frames queued, being written, or in #recent. */
  #held = 0;
  #sequence = 0;
  #pumping: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #backoff: number;
  #nextTry = 0;
  #sent = 0;
  #dropped = 0;
  /** Drops the relay has not been told of yet. */
  #untold = 0;
  #reported = 0;
  #closing = false;
  #down = false;
  #partial = new Uint8Array(0);

  private constructor(target: SyslogTarget, options: SyslogOptions) {
    this.target = target;
    this.#queueBytes = options.queueBytes ?? DEFAULT_SYSLOG_QUEUE_BYTES;
    if (!Number.isInteger(this.#queueBytes) || this.#queueBytes < 1) {
      throw new RangeError(`queueBytes must be a positive integer, got ${this.#queueBytes}`);
    }
    this.#maxMessage = options.maxMessage ?? DEFAULT_SYSLOG_MAX_MESSAGE;
    const max = this.#maxMessage;
    if (!Number.isInteger(max) || max < MIN_SYSLOG_MAX_MESSAGE || max > MAX_SYSLOG_MAX_MESSAGE) {
      throw new RangeError(
        `maxMessage must be an integer from ${MIN_SYSLOG_MAX_MESSAGE} to ${MAX_SYSLOG_MAX_MESSAGE}, got ${max}`,
      );
    }
    this.#scratch = new Uint8Array(max + 1024);
    this.#appName = options.appName ?? "deno_bpf";
    this.#firstBackoff = options.backoffMs ?? 100;
    this.#maxBackoff = options.maxBackoffMs ?? 5000;
    this.#backoff = this.#firstBackoff;
    this.#onState = options.onState ?? (() => {});
  }

  /**
   * A sender to `url` (see {@linkcode parseSyslogUrl}). It connects on the
   * first message; an unreachable relay is retried, not an error.
   */
  static open(url: string, options: SyslogOptions = {}): SyslogSender {
    const sender = new SyslogSender(parseSyslogUrl(url), options);
    const t = sender.target;
    if (t.transport === "tcp") {
      const host = `${t.hostname.includes(":") ? `[${t.hostname}]` : t.hostname}:${t.port}`;
      if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") {
        throw new Deno.errors.NotCapable(
          `Requires net access to "${host}", run again with the --allow-net flag`,
        );
      }
      sender.#kick();
    }
    return sender;
  }

  /** Events handed to the relay's socket (the `attach` and `lost` records are not counted). */
  get sent(): number {
    return this.#sent;
  }

  /** Events not sent: queue full, relay unreachable, write failed, or unsent at close. */
  get dropped(): number {
    return this.#dropped;
  }

  /** TCP: the bytes of messages waiting or kept for resending, as counted against `queueBytes`. */
  get queuedBytes(): number {
    return this.#held;
  }

  /**
   * For an event about to be formatted: whether the TCP queue, once the
   * copies kept for resending have given way, has no room for a message of
   * the largest size. Then the event is counted as dropped here, and its
   * caller need not format it: a flood against a relay that is down costs
   * neither the JSON nor the garbage of each event it drops. Sends over UDP
   * and Unix sockets never wait, so they are never full.
   */
  dropIfFull(): boolean {
    if (this.target.transport !== "tcp") return false;
    if (this.#closing) {
      this.#drop(1);
      return true;
    }
    // What a message of the largest size costs the queue, framed.
    const largest = `${this.#maxMessage} `.length + this.#maxMessage + QUEUED_OVERHEAD_BYTES;
    if (this.#held + largest <= this.#queueBytes) return false;
    while (this.#held + largest > this.#queueBytes && this.#recent.length > 0) {
      this.#release(this.#recent.shift()!);
    }
    if (this.#held + largest <= this.#queueBytes) return false;
    this.#drop(1);
    return true;
  }

  /** How much {@linkcode dropped} grew since the last call. */
  newlyDropped(): number {
    const grew = this.#dropped - this.#reported;
    this.#reported = this.#dropped;
    return grew;
  }

  /** Takes JSON event lines (as `EventWriter` flushes them); each line is one message. */
  writeSync(p: Uint8Array): number {
    let bytes = p;
    if (this.#partial.length > 0) {
      bytes = new Uint8Array(this.#partial.length + p.length);
      bytes.set(this.#partial);
      bytes.set(p, this.#partial.length);
    }
    const { lines, rest } = splitLines(bytes);
    this.#partial = rest.slice();
    for (const line of lines) this.#send("event", SEVERITY.info, line);
    return p.length;
  }

  /** Sends one JSON line of another `type` (`attach`, `lost`): MSGID is the type. */
  line(type: string, json: string): void {
    this.#send(type, type === "lost" ? SEVERITY.warning : SEVERITY.notice, encoder.encode(json));
  }

  /** Drops the connection and connects again at once (SIGHUP), with the backoff reset. */
  reopen(): void {
    this.#disconnect();
    this.#backoff = this.#firstBackoff;
    this.#nextTry = 0;
    this.#wake?.();
    if (this.target.transport === "tcp") this.#kick();
  }

  /**
   * Sends what is queued, waiting at most `timeoutMs`, then closes. Events
   * still queued (or being written) are counted as dropped, unless they were
   * sent once already.
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.#closing) return;
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length > 0 && !this.#down && Date.now() < deadline) await sleep(10);
    this.#closing = true;
    this.#dropUnsent(this.#queue.drain());
    for (const q of this.#recent.drain()) this.#release(q);
    this.#wake?.();
    this.#disconnect();
    await this.#pumping;
  }

  /** Calls {@linkcode close}, for `await using` declarations. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** One message, at most `maxMessage` bytes: a longer MSG is shortened by {@linkcode fitJson}. */
  /**
   * One message's prefix and MSG, at most `maxMessage` bytes: a longer MSG is
   * shortened by {@linkcode fitJson}. What it makes is written into one
   * scratch buffer, valid until the next call: a flood of events makes no
   * arrays to collect.
   */
  #message(msgId: string, severity: number, msg: Uint8Array): [Uint8Array, Uint8Array] {
    this.#sequence = this.#sequence >= 2 ** 31 - 1 ? 1 : this.#sequence + 1;
    const scratch = this.#scratch;
    const p = encoder.encodeInto(
      syslogPrefix({
        structuredData: metaSequence(this.#sequence),
        severity,
        timestamp: new Date().toISOString(),
        hostname: this.#hostname,
        appName: this.#appName,
        procId: this.#procId,
        msgId,
      }),
      scratch,
    ).written;
    const prefix = scratch.subarray(0, p);
    const room = this.#maxMessage - p;
    if (msg.length <= room) return [prefix, msg];
    const n = encoder.encodeInto(fitJson(utf8.decode(msg), room), scratch.subarray(p)).written;
    return [prefix, scratch.subarray(p, p + n)];
  }

  #lostRecord(): [Uint8Array, Uint8Array] {
    const json = JSON.stringify({ type: "lost", data: { count: this.#untold, output: "syslog" } });
    return this.#message("lost", SEVERITY.warning, encoder.encode(json));
  }

  #drop(n: number) {
    this.#dropped += n;
    this.#untold += n;
  }

  /** Frees what `q` held against the bound. */
  #release(q: Queued) {
    this.#held -= q.frame.length + QUEUED_OVERHEAD_BYTES;
  }

  /** Frees `items`, counting as dropped the events among them never written. */
  #dropUnsent(items: Queued[]) {
    let n = 0;
    for (const q of items) {
      if (q.event && q.written === 0) n++;
      this.#release(q);
    }
    this.#drop(n);
  }

  #send(msgId: string, severity: number, msg: Uint8Array) {
    const event = msgId === "event";
    if (this.#closing) return this.#drop(event ? 1 : 0);
    const message = this.#message(msgId, severity, msg);
    if (this.target.transport !== "tcp") return this.#sendDatagram(join(message), event);
    // The frame is made only once it is known to fit: a full queue drops
    // without allocating, so a relay that is down costs no garbage.
    const bytes = message[0].length + message[1].length;
    const cost = octetCount(bytes).length + bytes + QUEUED_OVERHEAD_BYTES;
    // Copies kept for resending give way first; then the new message is dropped.
    while (this.#held + cost > this.#queueBytes && this.#recent.length > 0) {
      this.#release(this.#recent.shift()!);
    }
    if (this.#held + cost > this.#queueBytes) return this.#drop(event ? 1 : 0);
    this.#held += cost;
    this.#queue.push({ frame: octetFrame(...message), event, written: 0 });
    this.#kick();
  }

  #sendDatagram(message: Uint8Array<ArrayBuffer>, event: boolean) {
    const n = event ? 1 : 0;
    if (!this.#dgram) {
      if (Date.now() < this.#nextTry) return this.#drop(n);
      const t = this.target;
      const to: DatagramAddress = t.transport === "unix"
        ? { path: t.path }
        : { address: t.hostname, port: t.port };
      const socket = DatagramSocket.connect(to);
      if (typeof socket === "number") {
        this.#failed(errnoName(socket));
        return this.#drop(n);
      }
      this.#dgram = socket;
    }
    if (this.#untold > 0) {
      const told = this.#untold;
      if (this.#dgram.send(join(this.#lostRecord())) === 0) this.#untold -= told;
    }
    const error = this.#dgram.send(message);
    if (error === 0) {
      this.#sent += n;
      this.#up();
      return;
    }
    this.#drop(n);
    // A full buffer passes; anything else (the relay went away) reconnects later.
    if (errnoName(error) !== "EAGAIN") {
      this.#disconnect();
      this.#failed(errnoName(error));
    }
  }

  #up() {
    if (this.#down || this.#backoff !== this.#firstBackoff) {
      this.#onState(`syslog: sending to ${syslogUrl(this.target)}`);
    }
    this.#down = false;
    this.#backoff = this.#firstBackoff;
  }

  #failed(why: string) {
    if (!this.#down) {
      this.#onState(`syslog: ${syslogUrl(this.target)} unreachable (${why}); retrying`);
    }
    this.#down = true;
    this.#nextTry = Date.now() + this.#backoff;
    this.#backoff = nextBackoff(this.#backoff, this.#maxBackoff);
  }

  #disconnect() {
    this.#dgram?.close();
    this.#dgram = undefined;
    const conn = this.#conn;
    this.#conn = undefined;
    try {
      conn?.close();
    } catch { /* already closed */ }
  }

  #kick() {
    // #pump catches what it expects; anything else must not end the process.
    this.#pumping ??= this.#pump().catch((error) => this.#failed(String(error))).finally(() => {
      this.#pumping = undefined;
      if (this.#queue.length > 0 && !this.#closing) this.#kick();
    });
  }

  /** Waits `ms`, or less if {@linkcode reopen} or {@linkcode close} wakes it. */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  /** TCP: connects when needed and writes the queue in batches until it is empty. */
  async #pump(): Promise<void> {
    const t = this.target as { hostname: string; port: number };
    while (!this.#closing && (this.#queue.length > 0 || !this.#conn)) {
      if (!this.#conn) {
        const wait = this.#nextTry - Date.now();
        if (wait > 0) {
          await this.#pause(wait);
          continue;
        }
        try {
          const conn = await Deno.connect({ hostname: t.hostname, port: t.port });
          if (this.#closing) {
            conn.close();
            break;
          }
          this.#conn = conn;
          this.#watch(conn);
          this.#up();
        } catch (error) {
          this.#failed(error instanceof Error ? error.name : String(error));
          continue;
        }
      }
      if (this.#queue.length === 0) break;
      // The relay is told of drops first; that record is not sent again.
      const told = this.#untold;
      const items: Queued[] = [];
      for (let size = 0; this.#queue.length > 0 && size < BATCH_BYTES;) {
        const q = this.#queue.shift()!;
        items.push(q);
        size += q.frame.length;
      }
      const frames = items.map((q) => q.frame);
      const batch = join(told > 0 ? [octetFrame(...this.#lostRecord()), ...frames] : frames);
      try {
        for (let at = 0; at < batch.length;) at += await this.#conn.write(batch.subarray(at));
        this.#untold -= told;
        const now = Date.now();
        for (const q of items) {
          if (q.event && q.written === 0) this.#sent++;
          q.written = now;
          this.#recent.push(q);
        }
        while ((this.#recent.first()?.written ?? now) < now - RESEND_MS) {
          this.#release(this.#recent.shift()!);
        }
      } catch {
        if (this.#closing) this.#dropUnsent(items);
        else {
          this.#queue.prepend(items); // not written: they go first on the next connection
          this.#connectionLost();
          this.#failed("write failed");
        }
      }
    }
  }

  /**
   * The connection ended: what was written in the last {@linkcode RESEND_MS}
   * goes first on the next one, as the relay may not have read it. The
   * relay can tell repeats by their `sequenceId`.
   */
  #connectionLost() {
    const since = Date.now() - RESEND_MS;
    const again: Queued[] = [];
    for (const q of this.#recent.drain()) {
      if (q.written >= since) again.push(q);
      else this.#release(q);
    }
    this.#queue.prepend(again);
    this.#disconnect();
  }

  /** Notices the relay closing the connection, so later messages queue instead. */
  async #watch(conn: Deno.TcpConn) {
    const buf = new Uint8Array(512);
    try {
      while ((await conn.read(buf)) !== null) { /* relays send nothing; ignore it */ }
    } catch { /* reset, or closed by us */ }
    if (this.#conn !== conn) return;
    this.#connectionLost();
    this.#failed("the relay closed the connection");
    this.#nextTry = 0; // it may be restarting: try again at once, then back off
    this.#kick();
  }
}

/** A TCP frame waiting or lately written; only events are counted as sent or dropped. */
interface Queued {
  frame: Uint8Array;
  event: boolean;
  /** When it was last written (ms), 0 if never. */
  written: number;
}

/** At most about this many bytes go to the relay in one write. */
const BATCH_BYTES = 256 * 1024;

/** `first`, then the frames of `items`, one after the other. */
/**
 * A first-in first-out list of frames: taking from the front moves an index
 * instead of copying, and nothing is ever spread into a call's arguments.
 */
class Fifo {
  #items: (Queued | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(q: Queued) {
    this.#items.push(q);
  }

  first(): Queued | undefined {
    return this.#items[this.#head];
  }

  shift(): Queued | undefined {
    const q = this.#items[this.#head];
    if (q === undefined) return undefined;
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#items.length) this.#items = [], this.#head = 0;
    else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return q;
  }

  /** Puts `items` before the rest, in their order. */
  prepend(items: Queued[]) {
    if (items.length === 0) return;
    this.#items = (items as (Queued | undefined)[]).concat(this.#items.slice(this.#head));
    this.#head = 0;
  }

  /** Takes every frame, in order. */
  drain(): Queued[] {
    const all = this.#items.slice(this.#head) as Queued[];
    this.#items = [];
    this.#head = 0;
    return all;
  }
}
