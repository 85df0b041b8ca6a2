/**
 * The bench's unlink storm (bench/storm.c) and its library consumer
 * (bench/lib_consumer.ts), driven from tests: the storm runs under its own
 * comm and says exactly how many unlinks it did; the consumer runs in a child
 * whose counts can be read at any moment and whose memory can be sampled.
 *
 * @module
 */

import { compile } from "../bench/_peers.ts";
import { ROOT, rssKiB } from "./_helpers.ts";

/** The comm of the tests' storms: not the bench's, so a bench run nearby cannot add events. */
export const SOAK_COMM = "dbpf_soak";

/** What one storm run reports: unlink calls made (every one succeeded), and how fast. */
export interface StormReport {
  unlinks: number;
  seconds: number;
  rate: number;
}

/** Builds bench/storm.c into `dir` with the C compiler on PATH; returns the binary's path. */
export async function buildStorm(dir: string): Promise<string> {
  const bin = `${dir}/storm`;
  await compile("storm", bin);
  return bin;
}

/**
 * Runs the storm to its end (`full WRITERS PAIRS` or `paced RATE SECONDS`,
 * see bench/storm.c) under the comm {@linkcode SOAK_COMM}.
 */
export async function runStorm(bin: string, args: string[]): Promise<StormReport> {
  const out = await new Deno.Command(bin, {
    args,
    env: { DBPF_STORM_COMM: SOAK_COMM },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`storm ${args.join(" ")} failed: ${text.decode(out.stderr).trim()}`);
  }
  return JSON.parse(text.decode(out.stdout).trim().split("\n").at(-1)!);
}

/** Records delivered from the ring, and the kernel's count of drops. */
export interface Counts {
  events: number;
  lost: number;
}

/** Counts, and the bytes its JavaScript kept (heap and array buffers) when it answered. */
export interface Progress extends Counts {
  kept: number;
}

/** bench/lib_consumer.ts running in a child process. */
export interface Consumer {
  pid: number;
  /** Its counts so far (it answers SIGUSR1); calls may overlap. */
  counts(): Promise<Progress>;
  /** Its resident memory now, in KiB (VmRSS). */
  rssKiB(): number;
  /** Stops it with SIGINT; resolves with its final counts once it has drained the ring and exited. */
  stop(): Promise<Counts>;
  /** Ends it at once if it still runs (for cleanup after a failure). */
  kill(): Promise<void>;
}

/**
 * Starts bench/lib_consumer.ts with `args` (and `v8Flags` for its V8) and
 * resolves once it has attached.
 */
export async function startConsumer(args: string[], v8Flags: string[] = []): Promise<Consumer> {
  const flags = v8Flags.length ? [`--v8-flags=${v8Flags.join(",")}`] : [];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...flags, `${ROOT}bench/lib_consumer.ts`, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let from = 0;
  let exited = false;
  const status = child.status.finally(() => exited = true);
  /** The next match of `pattern` in the output after the last one found. */
  const next = async (pattern: RegExp) => {
    for (;;) {
      const m = pattern.exec(text.slice(from));
      if (m) {
        from += m.index + m[0].length;
        return m;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error(`lib_consumer ended without ${pattern}: ${text.trim()}`);
      text += value;
    }
  };
  await next(/attached via \S+/);
  let asking: Promise<unknown> = Promise.resolve();
  return {
    pid: child.pid,
    counts() {
      // One question at a time, so each answer is read by the caller who asked it.
      const asked = asking.then(async () => {
        child.kill("SIGUSR1");
        const [, events, lost, kept] = await next(
          /progress: events=(\d+) lost=(\d+) kept=(\d+)/,
        );
        return { events: Number(events), lost: Number(lost), kept: Number(kept) };
      });
      asking = asked.catch(() => {});
      return asked;
    },
    rssKiB: () => rssKiB(child.pid),
    async stop() {
      child.kill("SIGINT");
      const [, events, lost] = await next(/^(\d+) events, (\d+) lost$/m);
      const { code } = await status;
      if (code !== 0) throw new Error(`lib_consumer exited with ${code}: ${text.trim()}`);
      return { events: Number(events), lost: Number(lost) };
    },
    async kill() {
      if (!exited) child.kill("SIGKILL");
      await status;
      await reader.cancel().catch(() => {});
    },
  };
}
