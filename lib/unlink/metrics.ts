/**
 * Prometheus metrics of the unlink tracer, in the text exposition format
 * (version 0.0.4). Pure: counting and rendering, no sockets; `scripts/trace.ts
 * --metrics` serves {@linkcode UnlinkMetrics.expose} on `/metrics`.
 *
 * - `deno_bpf_unlinks_total{op,result,comm}`: counter. `result` is `ok` or the
 *   errno name (`ENOENT`); `comm` is the task's command name, with at most
 *   `maxComms` distinct values: the rest are counted under `comm="other"`, so a
 *   storm of random names cannot grow memory or series without limit. (A task
 *   really named `other` is counted there too.)
 * - `deno_bpf_lost_events_total`: counter, events the kernel could not report.
 * - `deno_bpf_attach_info{method}`: 1, the attach method in use.
 * - `deno_bpf_ring_buffer_size_bytes`, `deno_bpf_ring_buffer_fill_bytes` and
 *   `deno_bpf_ring_buffer_fill_max_bytes`: gauges, the ring's size and how much
 *   was waiting at the last drain and at the fullest one.
 * - `deno_bpf_unlink_latency_seconds{op}`: histogram of `do_unlinkat`'s time.
 * - `deno_bpf_comm_labels` and `deno_bpf_comm_labels_max`: gauges, distinct
 *   `comm` values in use and the bound.
 * - `deno_bpf_syslog_dropped_total`: counter, present once a syslog output
 *   reports drops through {@linkcode UnlinkMetrics.syslogDropped}.
 * - `deno_bpf_metrics_rejected_total{reason}`: counter, connections to the
 *   metrics endpoint turned away (see `MetricsServer`), present once
 *   {@linkcode UnlinkMetrics.rejected} was called.
 *
 * Counting from the ring ({@linkcode UnlinkMetrics.record}) reads only `ret`,
 * `latency_ns` and the 16 bytes of `comm` at their offsets in the record, and
 * decodes a name to a string once, the first time it is seen.
 *
 * @module
 */

import { errnoName } from "../errno.ts";
import { OPS, unlinkEvent } from "./tracer.ts";

/** The default bound on distinct `comm` label values. */
export const DEFAULT_MAX_COMMS = 100;

/** The label value that holds every comm past the bound. */
export const OTHER_COMM = "other";

/** Upper bounds of the latency histogram's buckets, in ns (1 µs to 1 s), then +Inf. */
export const LATENCY_BUCKETS_NS: readonly number[] = [
  1_000,
  2_500,
  5_000,
  10_000,
  25_000,
  50_000,
  100_000,
  250_000,
  500_000,
  1_000_000,
  2_500_000,
  10_000_000,
  100_000_000,
  1_000_000_000,
];

/** What {@linkcode UnlinkMetrics.count} needs of an event; `op` defaults to `"unlink"`. */
export interface CountedEvent {
  /** The operation; records without one are unlinks. */
  op?: string | number;
  /** 0 or -errno. */
  ret: number;
  /** The task's command name. */
  comm: string;
  /** How long the call took, in ns. */
  latency_ns: number;
}

/** Counts of one (op, comm): successes, and failures by -errno. */
class Series {
  ok = 0;
  failed = new Map<number, number>();
  constructor(readonly op: string, readonly comm: string) {}
}

/** Latency counts of one op: one per bucket, the last being +Inf. */
class Histogram {
  buckets = new Array<number>(LATENCY_BUCKETS_NS.length + 1).fill(0);
  count = 0;
  sumNs = 0;

  add(ns: number) {
    let i = 0;
    while (i < LATENCY_BUCKETS_NS.length && ns > LATENCY_BUCKETS_NS[i]) i++;
    this.buckets[i]++;
    this.count++;
    this.sumNs += ns;
  }
}

/** The 16 comm bytes as four u32 words, kept beside the series they name. */
interface CommKey {
  w0: number;
  w1: number;
  w2: number;
  w3: number;
  series: Series;
}

const F = unlinkEvent.fields;
const RET = F.ret[1];
const LATENCY = F.latency_ns[1];
const COMM = F.comm[1];
const OP = F.op[1];
const PATH_LEN = F.path_len[1];
const utf8 = new TextDecoder();

/** Options for {@linkcode UnlinkMetrics}. */
export interface UnlinkMetricsOptions {
  /** At most this many distinct `comm` label values (default 100); the rest are `other`. */
  maxComms?: number;
  /** The attach method, for `deno_bpf_attach_info`. */
  method?: string;
  /** The ring buffer's size in bytes. */
  ringBufferSize?: number;
}

/**
 * The tracer's counters, and their rendering for Prometheus.
 *
 * @example Count two records and render them
 * ```ts
 * import { UnlinkMetrics } from "./metrics.ts";
 *
 * const metrics = new UnlinkMetrics({ maxComms: 10, method: "tracepoint" });
 * metrics.count({ ret: 0, comm: "rm", latency_ns: 4_000 });
 * metrics.count({ ret: -2, comm: "rm", latency_ns: 1_500 });
 * const text = metrics.expose();
 * console.assert(text.includes('deno_bpf_unlinks_total{op="unlink",result="ENOENT",comm="rm"} 1'));
 * ```
 */
export class UnlinkMetrics {
  readonly #maxComms: number;
  #method: string | undefined;
  #ringSize: number | undefined;
  /** (op, comm) -> series, for decoded events. */
  #series = new Map<string, Series>();
  /** Hash of the comm bytes -> the comms with that hash, for raw records (op unlink). */
  #byBytes = new Map<number, CommKey[]>();
  #comms = new Set<string>();
  #other = new Map<string, Series>();
  #latency = new Map<string, Histogram>();
  #unlinkLatency: Histogram;
  /** Whether {@linkcode count} was used too: then not every labelled comm is indexed by bytes. */
  #decodedToo = false;
  #lost = 0;
  #syslogDropped: number | undefined;
  #rejected: Map<string, number> | undefined;
  #fill = 0;
  #fillMax = 0;
  /** Ring bytes of the records counted since the last {@linkcode drained}. */
  #drainedBytes = 0;
  #source: ArrayBufferLike | undefined;
  #view!: DataView;

  /** Empty counters; `maxComms` must be a positive integer. */
  constructor(options: UnlinkMetricsOptions = {}) {
    const max = options.maxComms ?? DEFAULT_MAX_COMMS;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`maxComms must be a positive integer, got ${max}`);
    }
    this.#maxComms = max;
    this.#method = options.method;
    this.#ringSize = options.ringBufferSize;
    this.#unlinkLatency = this.#histogram("unlink");
  }

  /** Counts the `struct unlink_event` that starts at `offset`, read straight from the ring. */
  record(bytes: Uint8Array, offset: number): void {
    if (bytes.buffer !== this.#source) {
      this.#source = bytes.buffer;
      this.#view = new DataView(bytes.buffer);
    }
    const v = this.#view;
    const at = bytes.byteOffset + offset;
    // In the ring: an 8-byte header, then the head and its path, 8-aligned.
    this.#drainedBytes += (8 + unlinkEvent.size + v.getUint16(at + PATH_LEN, true) + 7) & ~7;
    // rmdir and renames are rare: they go through the decoder, for their op's name.
    if (v.getUint16(at + OP, true) !== 0) {
      this.count(unlinkEvent.decode(bytes, offset));
      this.#decodedToo = true;
      return;
    }
    const ret = v.getInt32(at + RET, true);
    const ns = v.getUint32(at + LATENCY, true) + v.getUint32(at + LATENCY + 4, true) * 2 ** 32;
    const w0 = v.getUint32(at + COMM, true);
    const w1 = v.getUint32(at + COMM + 4, true);
    const w2 = v.getUint32(at + COMM + 8, true);
    const w3 = v.getUint32(at + COMM + 12, true);
    const hash = Math.imul(Math.imul(Math.imul(w0, 31) ^ w1, 31) ^ w2, 31) ^ w3;
    let series: Series | undefined;
    const keys = this.#byBytes.get(hash);
    if (keys) {
      for (const k of keys) {
        if (k.w0 === w0 && k.w1 === w1 && k.w2 === w2 && k.w3 === w3) {
          series = k.series;
          break;
        }
      }
    }
    if (!series && this.#comms.size >= this.#maxComms && !this.#decodedToo) {
      // Every comm with its own label is indexed by its bytes: a miss past
      // the bound is other, with no name to decode.
      series = this.#otherOf("unlink");
    }
    if (!series) {
      const end = bytes.subarray(offset + COMM, offset + COMM + 16).indexOf(0);
      const comm = utf8.decode(bytes.subarray(offset + COMM, offset + COMM + (end < 0 ? 16 : end)));
      series = this.#seriesOf("unlink", comm);
      // Remember the bytes only for a comm with its own label: past the bound,
      // new names must not grow memory.
      if (series.comm !== OTHER_COMM) {
        const key = { w0, w1, w2, w3, series };
        if (keys) keys.push(key);
        else this.#byBytes.set(hash, [key]);
      }
    }
    if (ret === 0) series.ok++;
    else series.failed.set(ret, (series.failed.get(ret) ?? 0) + 1);
    this.#unlinkLatency.add(ns);
  }

  /** Counts one decoded event; `e.op` (absent: `"unlink"`) becomes the `op` label. */
  count(e: CountedEvent): void {
    this.#decodedToo = true;
    const op = typeof e.op === "number" ? OPS[e.op] ?? String(e.op) : e.op ?? "unlink";
    const series = this.#seriesOf(op, e.comm);
    if (e.ret === 0) series.ok++;
    else series.failed.set(e.ret, (series.failed.get(e.ret) ?? 0) + 1);
    (op === "unlink" ? this.#unlinkLatency : this.#histogram(op)).add(e.latency_ns);
  }

  /** Adds to the count of events the kernel lost. */
  lost(n: number): void {
    this.#lost += n;
  }

  /** Sets the count of events the syslog output dropped (a running total). */
  syslogDropped(total: number): void {
    this.#syslogDropped = total;
  }

  /** Adds `n` (default 1) to the connections turned away for `reason`; 0 makes the series appear. */
  rejected(reason: string, n = 1): void {
    this.#rejected ??= new Map();
    this.#rejected.set(reason, (this.#rejected.get(reason) ?? 0) + n);
  }

  /**
   * Records that a drain ended: the ring bytes of the records counted since
   * the last call are the ring's fill at that drain.
   */
  drained(): void {
    this.#fill = this.#drainedBytes;
    this.#drainedBytes = 0;
    if (this.#fill > this.#fillMax) this.#fillMax = this.#fill;
  }

  /** Sets the attach method and ring size once the tracer is attached. */
  attached(method: string, ringBufferSize: number): void {
    this.#method = method;
    this.#ringSize = ringBufferSize;
  }

  /** Distinct `comm` label values in use, `other` included. */
  get commLabels(): number {
    return this.#comms.size + (this.#other.size > 0 ? 1 : 0);
  }

  #histogram(op: string): Histogram {
    let h = this.#latency.get(op);
    if (!h) this.#latency.set(op, h = new Histogram());
    return h;
  }

  #otherOf(op: string): Series {
    let series = this.#other.get(op);
    if (!series) this.#other.set(op, series = new Series(op, OTHER_COMM));
    return series;
  }

  #seriesOf(op: string, comm: string): Series {
    const key = `${op}\0${comm}`;
    let series = this.#series.get(key);
    if (series) return series;
    if (comm === OTHER_COMM || (!this.#comms.has(comm) && this.#comms.size >= this.#maxComms)) {
      return this.#otherOf(op);
    }
    this.#comms.add(comm);
    series = new Series(op, comm);
    this.#series.set(key, series);
    return series;
  }

  /** Every metric in the Prometheus text exposition format 0.0.4. */
  expose(): string {
    const out: string[] = [];
    const family = (name: string, type: string, help: string) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    family(
      "deno_bpf_unlinks_total",
      "counter",
      "Unlinks traced, by operation, result (ok or the errno name) and command name.",
    );
    for (const s of [...this.#series.values(), ...this.#other.values()]) {
      const labels = `op="${escapeLabel(s.op)}",result="`;
      const comm = `",comm="${escapeLabel(s.comm)}"}`;
      if (s.ok > 0) out.push(`deno_bpf_unlinks_total{${labels}ok${comm} ${s.ok}`);
      for (const [ret, n] of s.failed) {
        out.push(`deno_bpf_unlinks_total{${labels}${errnoName(-ret)}${comm} ${n}`);
      }
    }
    family(
      "deno_bpf_lost_events_total",
      "counter",
      "Unlinks the kernel could not report (ring buffer full).",
    );
    out.push(`deno_bpf_lost_events_total ${this.#lost}`);
    if (this.#syslogDropped !== undefined) {
      family(
        "deno_bpf_syslog_dropped_total",
        "counter",
        "Events not sent to syslog (relay unreachable or queue full).",
      );
      out.push(`deno_bpf_syslog_dropped_total ${this.#syslogDropped}`);
    }
    if (this.#rejected !== undefined) {
      family(
        "deno_bpf_metrics_rejected_total",
        "counter",
        "Connections to this endpoint turned away, by reason (full, timeout, bad_request, or an accept error such as EMFILE).",
      );
      for (const [reason, n] of this.#rejected) {
        out.push(`deno_bpf_metrics_rejected_total{reason="${escapeLabel(reason)}"} ${n}`);
      }
    }
    if (this.#method !== undefined) {
      family("deno_bpf_attach_info", "gauge", "The attach method in use.");
      out.push(`deno_bpf_attach_info{method="${escapeLabel(this.#method)}"} 1`);
    }
    if (this.#ringSize !== undefined) {
      family("deno_bpf_ring_buffer_size_bytes", "gauge", "The ring buffer's size.");
      out.push(`deno_bpf_ring_buffer_size_bytes ${this.#ringSize}`);
    }
    family(
      "deno_bpf_ring_buffer_fill_bytes",
      "gauge",
      "Bytes waiting in the ring at the last drain.",
    );
    out.push(`deno_bpf_ring_buffer_fill_bytes ${this.#fill}`);
    family(
      "deno_bpf_ring_buffer_fill_max_bytes",
      "gauge",
      "The most bytes found waiting in the ring at a drain.",
    );
    out.push(`deno_bpf_ring_buffer_fill_max_bytes ${this.#fillMax}`);
    family("deno_bpf_comm_labels", "gauge", "Distinct comm label values in use, other included.");
    out.push(`deno_bpf_comm_labels ${this.commLabels}`);
    family("deno_bpf_comm_labels_max", "gauge", "The bound on distinct comm values before other.");
    out.push(`deno_bpf_comm_labels_max ${this.#maxComms}`);
    family(
      "deno_bpf_unlink_latency_seconds",
      "histogram",
      "How long each traced call took in the kernel.",
    );
    for (const [op, h] of this.#latency) {
      if (h.count === 0) continue;
      const name = `deno_bpf_unlink_latency_seconds`;
      const o = `op="${escapeLabel(op)}"`;
      let cumulative = 0;
      LATENCY_BUCKETS_NS.forEach((ns, i) => {
        cumulative += h.buckets[i];
        out.push(`${name}_bucket{${o},le="${ns / 1e9}"} ${cumulative}`);
      });
      out.push(`${name}_bucket{${o},le="+Inf"} ${h.count}`);
      out.push(`${name}_sum{${o}} ${h.sumNs / 1e9}`);
      out.push(`${name}_count{${o}} ${h.count}`);
    }
    return out.join("\n") + "\n";
  }
}

/** A label value escaped as the exposition format requires: `\`, `"` and newline. */
export function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (ch) => ch === "\n" ? "\\n" : `\\${ch}`);
}

/** The `Content-Type` of {@linkcode UnlinkMetrics.expose}'s text. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
