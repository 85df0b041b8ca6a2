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
 *   (`LEN SP MSG`), a queue bounded at `queueSize` messages, and reconnection
 *   with exponential backoff (0.1 s doubling to 5 s) while the relay is away.
 *   The connection is watched for the relay closing it, so messages queue
 *   instead of going to a dead socket. A relay that stops loses what it had
 *   not read yet, and TCP cannot say how much: so messages written in the
 *   last {@linkcode RESEND_MS} before a connection ended are sent again on
 *   the next one (at least once, never silently lost), and the relay can drop
 *   repeats by their `sequenceId`.
 * - `unix:///dev/log` (or another path): one datagram per message.
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
import { type DatagramAddress, DatagramSocket } from "../_socket.ts";
import { errnoName } from "../errno.ts";

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

/** One message: the prefix's bytes, then `msg`'s. */
export function syslogMessage(h: SyslogHeader, msg: Uint8Array): Uint8Array<ArrayBuffer> {
  const prefix = encoder.encode(syslogPrefix(h));
  const out = new Uint8Array(prefix.length + msg.length);
  out.set(prefix);
  out.set(msg, prefix.length);
  return out;
}

/** RFC 6587 octet counting: `LEN SP MSG`, LEN the byte length of MSG. */
export function octetFrame(msg: Uint8Array): Uint8Array<ArrayBuffer> {
  const len = encoder.encode(`${msg.length} `);
  const out = new Uint8Array(len.length + msg.length);
  out.set(len);
  out.set(msg, len.length);
  return out;
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

/** Options for {@linkcode SyslogSender.open}. */
export interface SyslogOptions {
  /** TCP only: at most this many messages wait for the relay (default 10,000). */
  queueSize?: number;
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

/** The default bound on queued TCP messages. */
export const DEFAULT_SYSLOG_QUEUE = 10_000;

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
  readonly #queueSize: number;
  readonly #appName: string;
  readonly #hostname = hostName();
  readonly #procId = String(Deno.pid);
  readonly #firstBackoff: number;
  readonly #maxBackoff: number;
  readonly #onState: (line: string) => void;
  #dgram: DatagramSocket | undefined;
  #conn: Deno.TcpConn | undefined;
  /** TCP frames waiting, each marked if it is an event (only events are counted). */
  #queue: Queued[] = [];
  /** TCP frames written lately, sent again if the connection ends (see {@linkcode RESEND_MS}). */
  #recent: Queued[] = [];
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
    this.#queueSize = options.queueSize ?? DEFAULT_SYSLOG_QUEUE;
    if (!Number.isInteger(this.#queueSize) || this.#queueSize < 1) {
      throw new RangeError(`queueSize must be a positive integer, got ${this.#queueSize}`);
    }
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
   * Sends what is queued, waiting at most `timeoutMs`, then closes. What is
   * still queued is counted as dropped.
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.#closing) return;
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length > 0 && !this.#down && Date.now() < deadline) await sleep(10);
    this.#closing = true;
    this.#drop(this.#queue.filter((q) => q.event).length);
    this.#queue = [];
    this.#wake?.();
    this.#disconnect();
    await this.#pumping;
  }

  /** Calls {@linkcode close}, for `await using` declarations. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #message(msgId: string, severity: number, msg: Uint8Array): Uint8Array<ArrayBuffer> {
    this.#sequence = this.#sequence >= 2 ** 31 - 1 ? 1 : this.#sequence + 1;
    return syslogMessage({
      structuredData: metaSequence(this.#sequence),
      severity,
      timestamp: new Date().toISOString(),
      hostname: this.#hostname,
      appName: this.#appName,
      procId: this.#procId,
      msgId,
    }, msg);
  }

  #lostRecord(): Uint8Array<ArrayBuffer> {
    const json = JSON.stringify({ type: "lost", data: { count: this.#untold, output: "syslog" } });
    return this.#message("lost", SEVERITY.warning, encoder.encode(json));
  }

  #drop(n: number) {
    this.#dropped += n;
    this.#untold += n;
  }

  #send(msgId: string, severity: number, msg: Uint8Array) {
    const event = msgId === "event";
    if (this.#closing) return this.#drop(event ? 1 : 0);
    const message = this.#message(msgId, severity, msg);
    if (this.target.transport !== "tcp") return this.#sendDatagram(message, event);
    if (this.#queue.length >= this.#queueSize) return this.#drop(event ? 1 : 0);
    this.#queue.push({ frame: octetFrame(message), event, written: 0 });
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
      if (this.#dgram.send(this.#lostRecord()) === 0) this.#untold -= told;
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
    this.#pumping ??= this.#pump().finally(() => {
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
      const items = this.#queue.splice(0, 512);
      const frames = items.map((q) => q.frame);
      const told = this.#untold;
      if (told > 0) frames.unshift(octetFrame(this.#lostRecord()));
      const batch = concat(frames);
      try {
        for (let at = 0; at < batch.length;) at += await this.#conn.write(batch.subarray(at));
        this.#untold -= told;
        const now = Date.now();
        for (const q of items) {
          if (q.event && q.written === 0) this.#sent++;
          q.written = now;
          this.#recent.push(q);
        }
        const old = this.#recent.findIndex((q) => q.written >= now - RESEND_MS);
        this.#recent.splice(0, old < 0 ? this.#recent.length : old);
        if (this.#recent.length > this.#queueSize) {
          this.#recent.splice(0, this.#recent.length - this.#queueSize);
        }
      } catch {
        this.#queue.unshift(...items); // not written: they go first on the next connection
        this.#connectionLost();
        this.#failed("write failed");
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
    this.#queue.unshift(...this.#recent.filter((q) => q.written >= since));
    this.#recent = [];
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

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
