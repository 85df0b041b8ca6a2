#!/usr/bin/env -S deno run --allow-ffi --allow-env
/**
 * Live unlink events: who deletes which file, and whether it worked.
 *
 *   sudo deno run --allow-ffi --allow-env scripts/trace.ts              # Ctrl-C stops
 *   sudo deno run --allow-ffi --allow-env scripts/trace.ts --json | jq  # JSON lines
 *   sudo deno run --allow-ffi --allow-env scripts/trace.ts -x -n rm     # failed, by rm
 *
 * Deno permissions: `--allow-ffi` (plain, not scoped to a path: it binds
 * libbpf and libc, and reads /proc and /sys through libc) and `--allow-env`
 * (LIBBPF_PATH, NO_COLOR). `-A` works too. Run with --help for every option.
 *
 * @module
 */

import { parseArgs, styleText } from "node:util";
import { errorLine, joinDashValues, status, STOP_SIGNALS } from "./_cli.ts";
import { main as doctorMain } from "./doctor.ts";
import { outputClosed } from "../lib/_sys.ts";
import { checkRingSize, logToStderr, releaseFreedMemory, setLogHandler } from "../mod.ts";
import {
  ARGV_MODES,
  type ArgvMode,
  ArgvRedactor,
  ATTACH_METHODS,
  type AttachMethod,
  attachText,
  cgroupIdOf,
  checkPaths,
  DEFAULT_RING_SIZE,
  envelope,
  EventWriter,
  formatText,
  TEXT_HEADER,
  unlinkEvent,
  UnlinkTracer,
  type UnlinkTracerOptions,
} from "../lib/unlink/mod.ts";
import {
  droppedEnvelope,
  parseListenAddress,
  type ServiceOptions,
  ServiceOutputs,
} from "../lib/unlink/service.ts";
import { DEFAULT_MAX_COMMS } from "../lib/unlink/metrics.ts";
import { DEFAULT_MAX_CONNECTIONS, HEADER_TIMEOUT_MS } from "../lib/unlink/metrics_server.ts";
import {
  DEFAULT_SYSLOG_MAX_MESSAGE,
  DEFAULT_SYSLOG_QUEUE_BYTES,
  MAX_SYSLOG_MAX_MESSAGE,
  MIN_SYSLOG_MAX_MESSAGE,
  MIN_SYSLOG_QUEUE_BYTES,
  parseSyslogUrl,
} from "../lib/unlink/syslog.ts";

const USAGE = `Usage: sudo deno run --allow-ffi --allow-env scripts/trace.ts [options]

Trace unlinks (file deletions) system-wide: who, which file, and the result.

Options:
  -p, --pid PID          only this process id
      --tid TID          only this thread id
  -u, --uid UID          only this user id
  -n, --name COMM        only tasks with exactly this command name (<= 15 bytes)
      --cgroup PATH      only tasks in this cgroup v2 (not its children): a
                         directory of the cgroup2 mount, or a path like /x.scope
      --path PREFIX      only files at or under this absolute path (<= 255 bytes;
                         repeat for up to 8); /tmp/a matches /tmp/a/x, not /tmp/ab;
                         ., .. and // are folded first (/a/../b is /b)
  -x, --failed           only failed unlinks
      --rmdir            also directories removed (rmdir, unlinkat AT_REMOVEDIR)
      --rename           also renames that replace an existing file (fentry and
                         kprobe only)
  -j, --json             one JSON object per line on stdout (fields: README)
      --raw-names        text: show names as passed, not absolute paths
      --argv MODE        how much of the command line leaves the kernel: full
                         (default, 256 bytes), argv0 (the first argument), none
      --redact REGEX     replace each capture group's match (the whole match
                         without groups) in the command line, its arguments
                         joined by spaces, with *****, in every output; a
                         JavaScript regular expression; repeatable; write
                         --redact=REGEX for one that starts with - (README:
                         the recommended set)
      --count N          exit after N events
      --duration SECONDS exit after this many seconds
      --mode MODE        auto (default), ${ATTACH_METHODS.join(", ")}
      --ringbuf-size N   ring buffer bytes: a power of two from 4096 to 2G; K/M/G
                         suffixes allowed (default ${DEFAULT_RING_SIZE / 1024 / 1024}M)
  -q, --quiet            no output on stdout (for --metrics or --syslog)
      --metrics ADDR     serve Prometheus metrics on http://ADDR/metrics, e.g.
                         127.0.0.1:9469 (needs --allow-net=ADDR); :9469 is
                         every IPv4 address. At most ${DEFAULT_MAX_CONNECTIONS} connections at once
                         (a new one replaces the oldest still waiting), ${
  HEADER_TIMEOUT_MS / 1000
} s
                         to send a request; each turned away is counted
      --metrics-comms N  at most N distinct comm label values; the rest are
                         counted as comm="other" (default ${DEFAULT_MAX_COMMS})
      --syslog URL       send each event to syslog as RFC 5424 with the JSON
                         line as MSG: udp://HOST:514, tcp://HOST:601 (needs
                         --allow-net=HOST:PORT) or unix:///dev/log
      --syslog-queue-bytes N
                         tcp: at most N bytes of messages wait for the relay
                         or are kept to resend; the rest are dropped and
                         counted (default ${DEFAULT_SYSLOG_QUEUE_BYTES / 2 ** 20}M; K/M/G suffixes)
      --syslog-max-message N
                         at most N bytes per message (default ${DEFAULT_SYSLOG_MAX_MESSAGE},
                         rsyslog's limit; ${MIN_SYSLOG_MAX_MESSAGE} to ${MAX_SYSLOG_MAX_MESSAGE}): longer events
                         lose their _b64 fields, then have their longest
                         strings cut, marked in "syslog_truncated"
  -v, --verbose          show libbpf's log
      --doctor           check whether the tracer can run here, and exit
                         (the same as scripts/doctor.ts; --json works too)
  -h, --help             show this help

Text columns: TIME PID COMM RET LAT(us) FILENAME; RET is 0 or the errno name,
FILENAME the absolute path (… starts one whose beginning was lost).
State lines (attached via ..., lost N) go to stderr. Ctrl-C, SIGTERM, SIGHUP,
--count and --duration all detach, print a summary and exit 0; so does a
closed stdout (e.g. | head -1). With --metrics or --syslog, SIGHUP instead
reconnects to the syslog relay and tracing goes on. Tracepoints need
tracefs: if none is mounted, trace.ts mounts it at /sys/kernel/tracing.
Cgroup names are cached for every output at once: at most 4096 names and
1 MiB of their text, least recently used out first.`;

/** What the command line asks for. */
export interface TraceArgs {
  tracer: UnlinkTracerOptions;
  json: boolean;
  rawNames: boolean;
  quiet: boolean;
  service: Omit<ServiceOptions, "method" | "ringBufferSize" | "onState">;
  count?: number;
  durationMs?: number;
  verbose: boolean;
  doctor: boolean;
  help: boolean;
}

/** A bad command line: the message is printed with the usage, exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

function integer(flag: string, text: string | undefined, min: number, max: number) {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    throw new UsageError(`${flag} needs an integer from ${min} to ${max}, got "${text}"`);
  }
  return n;
}

const SUFFIXES: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 };

/** A byte count with an optional K/M/G suffix, from `min` to `max`. */
function byteCount(flag: string, text: string | undefined, min: number, max: number) {
  if (text === undefined) return undefined;
  const m = /^(\d+)([kKmMgG]?)$/.exec(text);
  const n = m ? Number(m[1]) * SUFFIXES[m[2].toLowerCase()] : NaN;
  if (!(n >= min && n <= max)) {
    throw new UsageError(
      `${flag} needs ${min} to ${max} bytes, got "${text}" (K/M/G suffixes allowed)`,
    );
  }
  return n;
}

function ringSize(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)([kKmMgG]?)$/.exec(text);
  const n = m ? Number(m[1]) * SUFFIXES[m[2].toLowerCase()] : NaN;
  try {
    checkRingSize(n);
  } catch {
    throw new UsageError(
      `--ringbuf-size needs a power of two from 4096 to 2G bytes, got "${text}"`,
    );
  }
  return n;
}

/**
 * `check(value)`, the library's own check, with its TypeError or RangeError
 * as a {@linkcode UsageError} (prefixed with `flag` where the message does
 * not name it).
 */
function usage<A, T>(check: (value: A) => T, value: A, flag?: string): T {
  try {
    return check(value);
  } catch (error) {
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new UsageError(flag ? `${flag}: ${error.message}` : error.message);
    }
    throw error;
  }
}

/** Parses the command line; throws {@linkcode UsageError} on anything wrong. */
export function parseTraceArgs(args: string[]): TraceArgs {
  let values;
  try {
    const config = {
      args,
      strict: true,
      allowPositionals: false,
      options: {
        pid: { type: "string", short: "p" },
        tid: { type: "string" },
        cgroup: { type: "string" },
        path: { type: "string", multiple: true },
        rmdir: { type: "boolean" },
        rename: { type: "boolean" },
        "raw-names": { type: "boolean" },
        argv: { type: "string" },
        redact: { type: "string", multiple: true },
        uid: { type: "string", short: "u" },
        name: { type: "string", short: "n" },
        failed: { type: "boolean", short: "x" },
        json: { type: "boolean", short: "j" },
        count: { type: "string" },
        duration: { type: "string" },
        mode: { type: "string" },
        "ringbuf-size": { type: "string" },
        verbose: { type: "boolean", short: "v" },
        quiet: { type: "boolean", short: "q" },
        metrics: { type: "string" },
        "metrics-comms": { type: "string" },
        syslog: { type: "string" },
        "syslog-queue": { type: "string" },
        "syslog-queue-bytes": { type: "string" },
        "syslog-max-message": { type: "string" },
        doctor: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    } as const;
    ({ values } = parseArgs({ ...config, args: joinDashValues(args, config.options) }));
  } catch (error) {
    // parseArgs explains over several lines; the first says what is wrong.
    throw new UsageError((error instanceof Error ? error.message : String(error)).split("\n")[0]);
  }
  const mode = values.mode ?? "auto";
  if (mode !== "auto" && !ATTACH_METHODS.includes(mode as AttachMethod)) {
    throw new UsageError(`--mode must be auto, ${ATTACH_METHODS.join(", ")}; got "${mode}"`);
  }
  const name = values.name;
  if (name !== undefined && (name === "" || new TextEncoder().encode(name).length > 15)) {
    throw new UsageError(`--name needs 1 to 15 bytes (the kernel's comm limit), got "${name}"`);
  }
  const paths = values.path ?? [];
  usage(checkPaths, paths, "--path");
  if (values.argv !== undefined && !ARGV_MODES.includes(values.argv as ArgvMode)) {
    throw new UsageError(`--argv must be ${ARGV_MODES.join(", ")}; got "${values.argv}"`);
  }
  const redact = values.redact ?? [];
  try {
    new ArgvRedactor(redact);
  } catch (error) {
    if (error instanceof TypeError) throw new UsageError(`--${error.message}`);
    throw error;
  }
  if (values.rename && mode === "tracepoint") {
    throw new UsageError(
      "--rename needs fentry or kprobe: syscall tracepoints cannot see what a rename replaced",
    );
  }
  if (values["syslog-queue"] !== undefined) {
    throw new UsageError(
      "--syslog-queue (a count) is gone: the queue is bounded in bytes, use --syslog-queue-bytes " +
        `(default ${DEFAULT_SYSLOG_QUEUE_BYTES / 2 ** 20}M)`,
    );
  }
  let durationMs: number | undefined;
  if (values.duration !== undefined) {
    const s = Number(values.duration);
    if (!/^\d+(\.\d+)?$/.test(values.duration) || !(s > 0) || s > 31_536_000) {
      throw new UsageError(
        `--duration needs a positive number of seconds, got "${values.duration}"`,
      );
    }
    durationMs = s * 1000;
  }
  return {
    tracer: {
      pid: integer("--pid", values.pid, 1, 0xfffffffe),
      tid: integer("--tid", values.tid, 1, 0xfffffffe),
      cgroup: values.cgroup,
      paths: paths.length ? paths : undefined,
      rmdir: values.rmdir ?? false,
      rename: values.rename ?? false,
      uid: integer("--uid", values.uid, 0, 0xfffffffe),
      comm: name,
      failedOnly: values.failed ?? false,
      mode: mode as UnlinkTracerOptions["mode"],
      ringBufferSize: ringSize(values["ringbuf-size"]),
      ...(values.argv === undefined ? {} : { argv: values.argv as ArgvMode }),
      ...(redact.length ? { redact } : {}),
    },
    json: values.json ?? false,
    rawNames: values["raw-names"] ?? false,
    quiet: values.quiet ?? false,
    service: {
      metrics: values.metrics === undefined ? undefined : usage(parseListenAddress, values.metrics),
      maxComms: integer("--metrics-comms", values["metrics-comms"], 1, 1_000_000),
      syslog: values.syslog === undefined
        ? undefined
        : (usage(parseSyslogUrl, values.syslog), values.syslog),
      syslogQueueBytes: byteCount(
        "--syslog-queue-bytes",
        values["syslog-queue-bytes"],
        MIN_SYSLOG_QUEUE_BYTES,
        2 ** 30,
      ),
      syslogMaxMessage: byteCount(
        "--syslog-max-message",
        values["syslog-max-message"],
        MIN_SYSLOG_MAX_MESSAGE,
        MAX_SYSLOG_MAX_MESSAGE,
      ),
    },
    count: integer("--count", values.count, 1, Number.MAX_SAFE_INTEGER),
    durationMs,
    verbose: values.verbose ?? false,
    doctor: values.doctor ?? false,
    help: values.help ?? false,
  };
}

/** How often to check whether stdout's reader has gone, in ms. */
const CLOSED_CHECK_MS = 200;

const red = (text: string) => styleText("red", text, { validateStream: false });

/** Runs the tracer until stopped; returns the exit status. */
export async function trace(args: TraceArgs): Promise<number> {
  setLogHandler(args.verbose ? logToStderr : undefined);
  using tracer = UnlinkTracer.open({ ...args.tracer, mountTracefs: true });
  // Loading parsed the kernel's BTF; hand that heap back (about 10 MiB).
  releaseFreedMemory();
  const color = !args.json && Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
  const out = new EventWriter(args.json ? "json" : "text", Deno.stdout, {
    cgroupName: (id) => tracer.cgroupName(id),
    rawNames: args.rawNames,
  });

  const { method, skipped, probes } = tracer;
  const attach = envelope("attach", {
    schema: 2,
    method,
    skipped: skipped.map(({ method, reason }) => ({ method, reason })),
    probes,
  });
  const outputs = ServiceOutputs.open({
    ...args.service,
    method,
    ringBufferSize: tracer.ringBufferSize,
    onState: status,
    cgroupName: (id) => tracer.cgroupName(id),
  }, attach);
  const stop = () => tracer.stop();
  // A service reopens its outputs on SIGHUP; a terminal's hangup stops.
  const stopSignals = STOP_SIGNALS.filter((s) => !outputs || s !== "SIGHUP");
  const reopen = () => (outputs?.reopen(), status("SIGHUP: reopening outputs"));
  for (const signal of stopSignals) Deno.addSignalListener(signal, stop);
  if (outputs) Deno.addSignalListener("SIGHUP", reopen);
  const timer = args.durationMs === undefined ? undefined : setTimeout(stop, args.durationMs);
  // A reader that went away (`| head -1`) is noticed even when no event comes;
  // with --quiet nothing goes there, so a service outlives a restarted journal.
  const watch = setInterval(() => !args.quiet && outputClosed(1) && stop(), CLOSED_CHECK_MS);
  let stdoutClosed = false;

  // Readers wait for these lines before they act: they go out at once.
  status(attachText(method, skipped, probes));
  if (args.quiet) { /* nothing on stdout */ }
  else if (args.json) out.line(attach);
  else out.line(color ? styleText("bold", TEXT_HEADER, { validateStream: false }) : TEXT_HEADER);

  let events = 0;
  const limit = args.count ?? Infinity;
  const onRecord = (bytes: Uint8Array, offset: number) => {
    if (events >= limit) return;
    outputs?.record(bytes, offset);
    if (args.quiet) { /* counted and sent only */ }
    // A terminal gets colour through the string formatter; pipes and files
    // get bytes written straight from the ring.
    else if (color) out.line(formatText(unlinkEvent.decode(bytes, offset), red, args.rawNames));
    else out.record(bytes, offset);
    if (++events === limit) stop();
  };

  try {
    out.flush();
    for (;;) {
      const more = await tracer.wait();
      tracer.drain(onRecord);
      outputs?.drained();
      const lost = tracer.newlyLost();
      if (lost > 0) outputs?.lost(lost);
      if (lost > 0) {
        if (args.json && !args.quiet) out.line(envelope("lost", { count: lost }));
        else status(`lost ${lost} events (ring buffer full; try a larger --ringbuf-size)`);
      }
      const dropped = outputs?.flush() ?? 0;
      if (dropped > 0) {
        if (args.json && !args.quiet) out.line(droppedEnvelope(dropped));
        else status(`syslog: dropped ${dropped} events (relay unreachable or queue full)`);
      }
      out.flush();
      if (!more) break;
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
    stdoutClosed = true; // e.g. `| head`: stop, and say so on stderr
  } finally {
    clearTimeout(timer);
    clearInterval(watch);
    for (const signal of stopSignals) Deno.removeSignalListener(signal, stop);
    if (outputs) Deno.removeSignalListener("SIGHUP", reopen);
    tracer.stop();
    await outputs?.close();
  }
  const lost = tracer.lost;
  const extra = outputs?.summary() ?? {};
  if (args.json && !args.quiet && !stdoutClosed && !outputClosed(1)) {
    try {
      out.line(envelope("summary", { events, lost, ...extra }));
      out.flush();
    } catch (error) {
      if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
    }
  }
  const drops = extra.syslog_dropped === undefined
    ? ""
    : `, ${extra.syslog_dropped} not sent to syslog`;
  status(`${events} events, ${lost} lost${drops}`);
  return 0;
}

/** The script's entry point: parses, traces, and turns errors into one line. */
export async function main(argv: string[]): Promise<number> {
  let args: TraceArgs;
  try {
    args = parseTraceArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    status(`trace: ${error.message}; see --help`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  if (args.doctor) return doctorMain(args.json ? ["--json"] : []);
  try {
    // A cgroup is named on this machine's cgroup2 mount: checked here, before anything loads.
    if (args.tracer.cgroup !== undefined) usage(cgroupIdOf, args.tracer.cgroup, "--cgroup");
    return await trace(args);
  } catch (error) {
    if (error instanceof UsageError) {
      status(`trace: ${error.message}; see --help`);
      return 2;
    }
    status(`trace: ${errorLine(error, "scripts/trace.ts")}`);
    if (args.verbose && error instanceof Error && error.stack) status(error.stack);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
