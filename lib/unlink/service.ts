/**
 * The outputs of `scripts/trace.ts` beyond stdout, for running it as a
 * service: Prometheus metrics served over HTTP (`--metrics ADDR`) and events
 * sent to a syslog relay (`--syslog URL`). The tracer's loop calls a few
 * hooks: {@linkcode ServiceOutputs.record} per record, then per batch
 * {@linkcode ServiceOutputs.drained}, {@linkcode ServiceOutputs.lost} and
 * {@linkcode ServiceOutputs.flush}; SIGHUP calls
 * {@linkcode ServiceOutputs.reopen}.
 *
 * Deno permissions: `--metrics HOST:PORT` needs `--allow-net=HOST:PORT`
 * (`0.0.0.0:PORT` for `:PORT`); `--syslog tcp://HOST:PORT` needs
 * `--allow-net=HOST:PORT`; `--syslog udp://...` and `unix://...` need nothing
 * beyond `--allow-ffi` (see {@linkcode SyslogSender}).
 *
 * @module
 */

import { EventWriter } from "./event_writer.ts";
import { METRICS_CONTENT_TYPE, UnlinkMetrics } from "./metrics.ts";
import { MetricsServer, REJECT_REASONS } from "./metrics_server.ts";
import { SyslogSender } from "./syslog.ts";

/** Where `--metrics` listens. */
export interface ListenAddress {
  /** The address to bind: `0.0.0.0` for every interface. */
  hostname: string;
  /** The TCP port; 0 picks a free one. */
  port: number;
}

/**
 * Parses `--metrics`'s ADDR: `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` for every
 * IPv4 address (`[::]:PORT` for every address). Port 0 picks a free port (the
 * state line says which).
 */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\[\]]*):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new TypeError(`"${text}" is not HOST:PORT (e.g. 127.0.0.1:9469, or :9469 for all)`);
  }
  return { hostname: m[1] === "" ? "0.0.0.0" : m[1].replace(/^\[(.*)\]$/, "$1"), port };
}

/** What {@linkcode ServiceOutputs.open} serves and sends. */
export interface ServiceOptions {
  /** `--metrics`: where to serve `/metrics`. */
  metrics?: ListenAddress;
  /** At most this many distinct `comm` label values. */
  maxComms?: number;
  /** `--syslog`: the relay's URL. */
  syslog?: string;
  /** TCP syslog: the bound on messages waiting or kept for resending, in bytes. */
  syslogQueueBytes?: number;
  /** Syslog: the cap on one message, in bytes. */
  syslogMaxMessage?: number;
  /** The tracer's attach method and ring size, for the metrics. */
  method: string;
  /** The ring buffer's size in bytes. */
  ringBufferSize: number;
  /** State lines (listening, relay up or down); trace.ts prints them on stderr. */
  onState: (line: string) => void;
  /** Names cgroup ids for the events sent to syslog ({@linkcode UnlinkTracer.cgroupName}). */
  cgroupName?: (id: number) => string | null;
}

/** The metrics server and the syslog sender, with the hooks the tracer's loop calls. */
export class ServiceOutputs implements AsyncDisposable {
  /** The counters, with `--metrics`. */
  readonly metrics: UnlinkMetrics | undefined;
  /** The syslog sender, with `--syslog`. */
  readonly syslog: SyslogSender | undefined;
  #server: MetricsServer | undefined;
  #syslogEvents: EventWriter | undefined;

  private constructor(options: ServiceOptions) {
    // The syslog sender first: a refused permission then stops before any
    // server listens.
    if (options.syslog) {
      this.syslog = SyslogSender.open(options.syslog, {
        queueBytes: options.syslogQueueBytes,
        maxMessage: options.syslogMaxMessage,
        onState: options.onState,
      });
      this.#syslogEvents = new EventWriter("json", this.syslog, {
        cgroupName: options.cgroupName,
      });
    }
    if (options.metrics) {
      const metrics = new UnlinkMetrics({
        maxComms: options.maxComms,
        method: options.method,
        ringBufferSize: options.ringBufferSize,
      });
      if (this.syslog) metrics.syslogDropped(0);
      this.metrics = metrics;
      for (const reason of REJECT_REASONS) metrics.rejected(reason, 0);
      try {
        this.#server = MetricsServer.listen({
          hostname: options.metrics.hostname,
          port: options.metrics.port,
          path: "/metrics",
          body: () => metrics.expose(),
          contentType: METRICS_CONTENT_TYPE,
          onReject: (reason) => metrics.rejected(reason),
        });
        options.onState(listeningLine(this.#server.addr));
      } catch (error) {
        this.syslog?.close(0); // its connection must not outlive a failed start
        throw error;
      }
    }
  }

  /**
   * Starts what `options` asks for; undefined if it asks for neither. The
   * `attach` line goes to syslog at once.
   */
  static open(options: ServiceOptions, attachLine: string): ServiceOutputs | undefined {
    if (!options.metrics && !options.syslog) return undefined;
    const outputs = new ServiceOutputs(options);
    outputs.syslog?.line("attach", attachLine);
    return outputs;
  }

  /** Counts and sends the record at `offset`, as it sits in the ring. */
  record(bytes: Uint8Array, offset: number): void {
    this.metrics?.record(bytes, offset);
    if (this.syslog?.dropIfFull()) return; // dropped and counted, so not formatted
    this.#syslogEvents?.record(bytes, offset);
  }

  /** After a drain: the records counted since the last one were the ring's fill. */
  drained(): void {
    this.metrics?.drained();
  }

  /** `n` more events were lost in the kernel: counted, and told to the relay. */
  lost(n: number): void {
    this.metrics?.lost(n);
    this.syslog?.line("lost", JSON.stringify({ type: "lost", data: { count: n } }));
  }

  /** Sends the batch to syslog; returns how many more messages it dropped since the last call. */
  flush(): number {
    if (!this.syslog) return 0;
    this.#syslogEvents!.flush();
    this.metrics?.syslogDropped(this.syslog.dropped);
    return this.syslog.newlyDropped();
  }

  /** SIGHUP: reconnects to the syslog relay at once. The metrics keep serving. */
  reopen(): void {
    this.syslog?.reopen();
  }

  /** Sends what is queued (at most `timeoutMs`), stops serving, and closes. Idempotent. */
  async close(timeoutMs = 2000): Promise<void> {
    await this.syslog?.close(timeoutMs);
    const server = this.#server;
    this.#server = undefined;
    await server?.close();
  }

  /** Calls {@linkcode close}, for `await using` declarations. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Fields for the summary line: `syslog_dropped` when sending to syslog. */
  summary(): { syslog_dropped?: number } {
    return this.syslog ? { syslog_dropped: this.syslog.dropped } : {};
  }
}

/**
 * The state line of a metrics server listening on `addr`; a wildcard
 * address says that it binds every address.
 */
export function listeningLine(addr: Deno.NetAddr): string {
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const every = addr.hostname === "0.0.0.0"
    ? " (all IPv4 addresses)"
    : addr.hostname === "::"
    ? " (all addresses)"
    : "";
  return `metrics on http://${host}:${addr.port}/metrics${every}`;
}

/** The JSON `lost` line for `count` events that syslog did not take. */
export function droppedEnvelope(count: number): string {
  return JSON.stringify({ type: "lost", data: { count, output: "syslog" } });
}
