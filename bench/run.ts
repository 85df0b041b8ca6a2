/**
 * The unlink benchmark: one storm of create+unlink pairs, traced in turn by
 * two C references (plain libbpf on the same bpf/unlink.bpf.o), the batched
 * one again on the unenriched object of commit b5bb32d (312-byte records, no
 * path), bpftrace, the deno_bpf library and scripts/trace.ts; prints one table
 * and the targets of issues 4 and 8 as PASS/FAIL lines.
 *
 *   sudo deno task bench                          # = deno run -A bench/run.ts
 *   sudo deno run -A bench/run.ts --quick         # small counts, a smoke run
 *   sudo deno run -A bench/run.ts --mode fentry   # on a kernel where fentry loads
 *   sudo deno run -A bench/run.ts --repeat 3      # each cell the median of 3 runs
 *   sudo deno run -A bench/run.ts --quick --only full1w   # one storm scenario
 *   sudo deno run -A bench/run.ts --quick --tracers batched,json   # some tracers
 *
 * What the selected tracers need besides Deno (a C compiler, libbpf-dev,
 * bpftrace) is installed with apt-get when run as root, unless
 * DENO_BPF_NO_INSTALL=1; a peer still missing is reported in one line and its
 * rows are skipped (bench/_peers.ts). A peer no selected row needs is neither.
 *
 * The b5bb32d object comes from `git show b5bb32d:bpf/unlink.bpf.o` at bench
 * time; without git or that commit its rows are skipped, said in one line.
 *
 * Every tracer filters on the storm's comm ("dbpf_st<bench pid>"), so it sees exactly
 * the unlinks the storm reports. CPU and peak RSS are the tracer process's own
 * (wait4 through bench/rusage.c), including start-up and the final drain.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DEFAULT_RING_SIZE, ensureTracefs } from "../mod.ts";
import { compile, installMissing, missingLine, PEERS, which } from "./_peers.ts";

const BENCH = decodeURIComponent(new URL(".", import.meta.url).pathname);
const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);
const OUT = `${BENCH}out/`;
const BPF_OBJECT = `${ROOT}bpf/unlink.bpf.o`;
/** The last commit before issue 8: the unenriched tracer, a fixed 312-byte record. */
const BEFORE = "b5bb32d";
const BEFORE_OBJECT = `${OUT}unlink.${BEFORE}.bpf.o`;
const BEFORE_TRACER = `C batched ${BEFORE}`;
/** Issue 8: the storm traced by the new object keeps at least this share of its rate under the old. */
const MIN_RATE_VS_BEFORE = 0.9;
const TRACE_SCRIPT = `${ROOT}scripts/trace.ts`;
/**
 * The storm's comm, which every tracer filters on: this run's own, so that a
 * bench or test running at the same time on a shared machine is not counted.
 * Its files keep storm.c's names, /dev/shm/dbpf_storm.<writer pid>.
 */
const COMM = `dbpf_st${Deno.pid}`;
const STORM_FILES = "dbpf_storm.";
const BPFTRACE_OUT = `/dev/shm/dbpf_bench_bpftrace.${Deno.pid}.out`;
/** The tracers use their default ring; the memory target allows for it. */
const RING_BYTES = DEFAULT_RING_SIZE;
const IDLE = "idle";
const IDLE_MS = 1000;
/** Zero-event runs per tracer (the median is its fixed cost); --quick takes 1. */
const IDLE_RUNS = 5;
const TRICKLE = "trickle";
const METRICS = "trace.ts --metrics";
const PACED = "paced";
const LOSS_SCENARIO = "full 2w";
const ATTACH_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 60_000;
const STORM_TIMEOUT_MS = 600_000;

// ---------------------------------------------------------------- options

/** The scenarios `--only` can pick, by key. */
const SCENARIO_KEYS = ["full1w", "full2w", "paced", "trickle"] as const;
type ScenarioKey = typeof SCENARIO_KEYS[number];

/** The tracers `--tracers` can pick: key -> row name, in the table's order. */
const TRACER_KEYS = {
  each: "C each",
  batched: "C batched",
  [BEFORE]: BEFORE_TRACER,
  bpftrace: "bpftrace",
  lib: "deno lib",
  text: "trace.ts text",
  json: "trace.ts json",
  metrics: METRICS,
} as const;

const TRACER_NAMES: string[] = Object.values(TRACER_KEYS);

const USAGE = "usage: deno run -A bench/run.ts [--quick] [--mode tracepoint|fentry] " +
  "[--pairs N] [--rate N] [--seconds N] [--samples N] [--repeat N] " +
  `[--only ${SCENARIO_KEYS.join(",")}] [--tracers ${Object.keys(TRACER_KEYS).join(",")}]`;

/** The values of a comma-separated option, each checked against `allowed`. */
function listOption<T extends string>(flag: string, text: string | undefined, allowed: T[]): T[] {
  const picked = text?.split(",") ?? allowed;
  for (const key of picked) {
    if (!allowed.includes(key as T)) {
      throw new Error(`--${flag} takes ${allowed.join(", ")}; got "${key}"`);
    }
  }
  return picked as T[];
}

function options() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      mode: { type: "string", default: "tracepoint" },
      pairs: { type: "string" },
      rate: { type: "string" },
      seconds: { type: "string" },
      samples: { type: "string" },
      repeat: { type: "string" },
      only: { type: "string" },
      tracers: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (values.mode !== "tracepoint" && values.mode !== "fentry") {
    throw new Error(`--mode must be tracepoint or fentry, got "${values.mode}"`);
  }
  const positive = (flag: string, text: string | undefined, fallback: number) => {
    if (text === undefined) return fallback;
    if (!/^[1-9]\d*$/.test(text)) throw new Error(`--${flag} needs a positive integer`);
    return Number(text);
  };
  const only = listOption("only", values.only, [...SCENARIO_KEYS]);
  const keys = Object.keys(TRACER_KEYS) as (keyof typeof TRACER_KEYS)[];
  const tracers = listOption("tracers", values.tracers, keys).map((k) => TRACER_KEYS[k]);
  const quick = values.quick;
  const repeat = positive("repeat", values.repeat, 1);
  return {
    mode: values.mode,
    pairs: positive("pairs", values.pairs, quick ? 20_000 : 200_000),
    rate: positive("rate", values.rate, 20_000),
    seconds: positive("seconds", values.seconds, quick ? 1 : 5),
    samples: positive("samples", values.samples, quick ? 3 : 15),
    trickleMs: quick ? 300 : 1000,
    repeat,
    idleRuns: Math.max(quick ? 1 : IDLE_RUNS, repeat),
    only: new Set(only),
    tracers: new Set<string>(tracers),
  };
}

// ---------------------------------------------------------------- processes

/** A line of a child's output and when it arrived (epoch ms). */
interface Line {
  text: string;
  at: number;
}

/** A running child: its output so far and its end. */
interface Proc {
  child: Deno.ChildProcess;
  started: number;
  out: Line[];
  err: Line[];
  exited: boolean;
  done: Promise<Deno.CommandStatus>;
}

const live = new Set<Proc>();
const epochMs = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function readLines(stream: ReadableStream<Uint8Array>, lines: Line[]) {
  const decoder = new TextDecoder();
  let partial = "";
  for await (const chunk of stream) {
    const at = epochMs();
    const parts = (partial + decoder.decode(chunk, { stream: true })).split("\n");
    partial = parts.pop()!;
    for (const text of parts) lines.push({ text, at });
  }
  if (partial) lines.push({ text: partial, at: epochMs() });
}

function spawn(
  argv: string[],
  stdout: "null" | "piped" = "null",
  env: Record<string, string> = {},
): Proc {
  const started = performance.now();
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    env,
    stdin: "null",
    stdout,
    stderr: "piped",
  }).spawn();
  const proc: Proc = { child, started, out: [], err: [], exited: false, done: child.status };
  const reading = [readLines(child.stderr, proc.err)];
  if (stdout === "piped") reading.push(readLines(child.stdout, proc.out));
  live.add(proc);
  proc.done = Promise.all([child.status, ...reading]).then(([status]) => status).finally(() => {
    proc.exited = true;
    live.delete(proc);
  });
  return proc;
}

const lastWords = (p: Proc) => p.err.map((l) => l.text).filter(Boolean).at(-1) ?? "no output";
/** A failed child's stderr, its last 3 lines on one line: the storm says why, then that it failed. */
const allWords = (p: Proc) =>
  p.err.map((l) => l.text).filter(Boolean).slice(-3).join(" / ") || "no output";

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * SIGINT, again every 2 s until the child exits. bpftrace 0.17 sometimes
 * misses one: idle in epoll_wait, it stayed up for minutes after a single
 * SIGINT in about one start in three here, and exited on the next. The other
 * tracers stop once and ignore the repeats.
 */
async function interrupt(p: Proc): Promise<Deno.CommandStatus> {
  for (;;) {
    try {
      p.child.kill("SIGINT");
    } catch { /* exited meanwhile */ }
    const status = await Promise.race([p.done, sleep(2000).then(() => undefined)]);
    if (status) return status;
  }
}

/** Ends a child that is still running: SIGTERM (the wrapper passes it on), then SIGKILL. */
async function kill(p: Proc) {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    if (p.exited) return;
    try {
      p.child.kill(signal);
    } catch { /* already gone */ }
    await Promise.race([p.done.catch(() => {}), sleep(3000)]);
  }
}

async function runToEnd(
  argv: string[],
  what: string,
  ms: number,
  stdout?: "piped",
  env?: Record<string, string>,
) {
  const p = spawn(argv, stdout, env);
  try {
    const status = await within(p.done, ms, what);
    if (!status.success) throw new Error(`${what} failed: ${allWords(p)}`);
    return p;
  } finally {
    await kill(p);
  }
}

// ---------------------------------------------------------------- storm

interface Storm {
  unlinks: number;
  rate: number;
  /** Trickle only: path -> epoch ms just before its unlink. */
  unlinkedAt: Map<string, number>;
}

async function storm(args: string[]): Promise<Storm> {
  const p = await runToEnd([`${OUT}storm`, ...args], "the storm", STORM_TIMEOUT_MS, "piped", {
    DBPF_STORM_COMM: COMM,
  });
  const summary = JSON.parse(p.out.at(-1)?.text ?? "{}");
  const unlinkedAt = new Map<string, number>();
  for (const { text } of p.out) {
    const m = /^T (\d+) (\S+)$/.exec(text);
    if (m) unlinkedAt.set(m[2], Number(m[1]) / 1e6);
  }
  return { unlinks: summary.unlinks, rate: summary.rate, unlinkedAt };
}

// ---------------------------------------------------------------- tracers

interface Counts {
  delivered: number;
  lost: number;
  /** Ring buffer bytes the delivered records took, headers included (C references only). */
  ringBytes?: number;
}

/** One kind of tracer: how to start it, see it attached, and read its counts. */
interface Tracer {
  name: string;
  argv: string[];
  stdout?: "piped";
  /** Runs before each start. */
  reset?(): Promise<void>;
  attached(p: Proc): boolean | Promise<boolean>;
  counts(p: Proc): Counts | Promise<Counts>;
  /** For the delay: filename -> epoch ms when the event reached user space. */
  received?(p: Proc): Map<string, number>;
}

const attachLine = (p: Proc) => p.err.some((l) => l.text.startsWith("attached via"));

/**
 * `N events, M lost` on stderr: the C references (which add `, B ring bytes`),
 * lib_consumer.ts and trace.ts.
 */
function summaryLine(p: Proc): Counts {
  for (const { text } of p.err) {
    const m = /(\d+) events, (\d+) lost(?:, (\d+) ring bytes)?/.exec(text);
    if (!m) continue;
    const counts: Counts = { delivered: Number(m[1]), lost: Number(m[2]) };
    if (m[3] !== undefined) counts.ringBytes = Number(m[3]);
    return counts;
  }
  throw new Error(`no "N events, M lost" line (last: ${lastWords(p)})`);
}

/** A C reference on `object`: bpf/unlink.bpf.o, or the unenriched one of {@linkcode BEFORE}. */
function cReference(
  wakeup: "each" | "batched",
  mode: string,
  object = BPF_OBJECT,
  name = `C ${wakeup}`,
): Tracer {
  return {
    name,
    argv: [
      `${OUT}ref_consumer`,
      object,
      `--wakeup=${wakeup}`,
      `--mode=${mode}`,
      `--comm=${COMM}`,
    ],
    attached: attachLine,
    counts: summaryLine,
  };
}

function denoTracer(name: string, script: string, args: string[], stamp = false): Tracer {
  const json = args.includes("--json");
  return {
    name,
    argv: [Deno.execPath(), "run", "-A", script, ...args, ...(stamp && !json ? ["--stamp"] : [])],
    stdout: stamp ? "piped" : undefined,
    attached: attachLine,
    counts: summaryLine,
    // lib_consumer.ts --stamp prints "<epoch ms> <filename>"; trace.ts --json
    // lines are stamped when they reach this process.
    received: (p) => {
      const seen = new Map<string, number>();
      for (const { text, at } of p.out) {
        if (json) {
          const line = JSON.parse(text);
          if (line.type === "event") seen.set(line.data.filename, at);
        } else {
          const [ms, filename] = text.split(" ", 2);
          seen.set(filename, Number(ms));
        }
      }
      return seen;
    },
  };
}

/** bpftrace scripts printing pid, comm, filename and ret for each unlink of the storm. */
const BPFTRACE_SCRIPTS: Record<string, string> = {
  tracepoint: `
tracepoint:syscalls:sys_enter_unlink /comm == "${COMM}"/ { @path[tid] = args->pathname; }
tracepoint:syscalls:sys_enter_unlinkat /comm == "${COMM}" && !(args->flag & 0x200)/ {
  @path[tid] = args->pathname;
}
tracepoint:syscalls:sys_exit_unlink, tracepoint:syscalls:sys_exit_unlinkat /@path[tid]/ {
  printf("%d %s %s %d\\n", pid, comm, str(@path[tid]), args->ret);
  delete(@path[tid]);
}`,
  fentry: `
kfunc:do_unlinkat /comm == "${COMM}"/ { @name[tid] = str(args->name->name); }
kretfunc:do_unlinkat /@name[tid] != ""/ {
  printf("%d %s %s %d\\n", pid, comm, @name[tid], retval);
  delete(@name[tid]);
}`,
};

/**
 * bpftrace (it says "Lost N events" itself). Its stdout goes to a tmpfs file,
 * not /dev/null: the event lines and "Lost" lines are its only counts.
 */
function bpftrace(mode: string): Tracer {
  const script = `BEGIN { printf("attached\\n"); }${BPFTRACE_SCRIPTS[mode]}`;
  const lines = async () => (await Deno.readTextFile(BPFTRACE_OUT).catch(() => "")).split("\n");
  return {
    name: "bpftrace",
    argv: ["sh", "-c", 'exec bpftrace -e "$1" > "$2"', "sh", script, BPFTRACE_OUT],
    reset: () => Deno.remove(BPFTRACE_OUT).catch(() => {}),
    attached: async () => (await lines()).includes("attached"),
    counts: async () => {
      const counts = { delivered: 0, lost: 0 };
      for (const line of await lines()) {
        const lost = /^Lost (\d+) events/.exec(line);
        if (lost) counts.lost += Number(lost[1]);
        else if (line.includes(` ${COMM} `)) counts.delivered++;
      }
      return counts;
    },
  };
}

// ---------------------------------------------------------------- measuring

/** What one run accounted for: every unlink done is delivered or counted lost. */
interface Account {
  delivered: number;
  lost: number;
  done: number;
}

/** One cell of the table: one run, or the medians of a cell's runs (see {@linkcode combine}). */
interface Row {
  scenario: string;
  tracer: string;
  storm?: Storm;
  counts?: Counts;
  cpuS?: number;
  rssKiB?: number;
  attachMs?: number;
  delayMs?: [p50: number, p99: number, missing: number];
  /** Each run's own accounting; exactness is a property of a run, not of medians. */
  accounts?: Account[];
  /** A median cell's own runs, round by round, for the spread of a verdict. */
  runs?: Row[];
  error?: string;
}

interface Usage {
  user_s: number;
  sys_s: number;
  maxrss_kib: number;
}

/** Starts `t`, waits until attached, runs `action`, stops `t` with SIGINT and collects. */
async function measure(
  t: Tracer,
  scenario: string,
  action: () => Promise<Storm | undefined>,
): Promise<Row> {
  const usageFile = `${OUT}usage.json`;
  await Deno.remove(usageFile).catch(() => {});
  await t.reset?.();
  const p = spawn([`${OUT}rusage`, usageFile, ...t.argv], t.stdout);
  const row: Row = { scenario, tracer: t.name };
  try {
    const deadline = performance.now() + ATTACH_TIMEOUT_MS;
    while (!(await t.attached(p))) {
      if (p.exited) throw new Error(`exited before attaching: ${lastWords(p)}`);
      if (performance.now() > deadline) throw new Error("did not attach within 30 s");
      await sleep(2);
    }
    row.attachMs = performance.now() - p.started;
    row.storm = await action();
    const status = await within(interrupt(p), STOP_TIMEOUT_MS, `stopping ${t.name}`);
    if (!status.success) throw new Error(`exit status ${status.code}: ${lastWords(p)}`);
    const usage: Usage = JSON.parse(await Deno.readTextFile(usageFile));
    row.cpuS = usage.user_s + usage.sys_s;
    row.rssKiB = usage.maxrss_kib;
    row.counts = await t.counts(p);
    if (row.storm) row.accounts = [{ ...row.counts, done: row.storm.unlinks }];
    const received = t.received?.(p);
    if (received && row.storm?.unlinkedAt.size) row.delayMs = delays(row.storm, received);
  } catch (error) {
    row.error = error instanceof Error ? error.message : String(error);
  } finally {
    await kill(p);
  }
  return row;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
}

function delays(s: Storm, received: Map<string, number>): Row["delayMs"] {
  const all: number[] = [];
  for (const [path, at] of s.unlinkedAt) {
    const seen = received.get(path);
    if (seen !== undefined) all.push(seen - at);
  }
  all.sort((a, b) => a - b);
  return [percentile(all, 0.5), percentile(all, 0.99), s.unlinkedAt.size - all.length];
}

/** The median of the numbers given (the mean of the middle two for an even count). */
function median(values: (number | undefined)[]): number | undefined {
  const sorted = values.filter((v) => v !== undefined).sort((a, b) => a - b);
  const mid = sorted.length / 2;
  if (sorted.length === 0) return undefined;
  return sorted.length % 2 ? sorted[Math.floor(mid)] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * One cell from its runs: every measured figure is the median over the runs,
 * and each run's accounting is kept. A cell with a failed run reports that failure.
 */
function combine(runs: Row[]): Row {
  const failed = runs.findIndex((r) => r.error);
  if (failed >= 0) {
    const which = runs.length > 1 ? ` (run ${failed + 1} of ${runs.length})` : "";
    return { ...runs[failed], error: `${runs[failed].error}${which}` };
  }
  if (runs.length === 1) return runs[0];
  const mid = (pick: (r: Row) => number | undefined) => median(runs.map(pick));
  const [first] = runs;
  const row: Row = {
    scenario: first.scenario,
    tracer: first.tracer,
    cpuS: mid((r) => r.cpuS),
    rssKiB: mid((r) => r.rssKiB),
    attachMs: mid((r) => r.attachMs),
  };
  if (first.storm) {
    row.storm = {
      unlinks: mid((r) => r.storm?.unlinks)!,
      rate: mid((r) => r.storm?.rate)!,
      unlinkedAt: new Map(),
    };
  }
  if (first.counts) {
    row.counts = { delivered: mid((r) => r.counts?.delivered)!, lost: mid((r) => r.counts?.lost)! };
    const ringBytes = mid((r) => r.counts?.ringBytes);
    if (ringBytes !== undefined) row.counts.ringBytes = ringBytes;
  }
  if (first.delayMs) {
    row.delayMs = [0, 1, 2].map((i) => mid((r) => r.delayMs?.[i])!) as Row["delayMs"];
  }
  if (first.accounts) row.accounts = runs.flatMap((r) => r.accounts ?? []);
  row.runs = runs;
  return row;
}

/** A tracer attached with no events: a warm-up start (file and code caches), then `n` runs. */
async function fixedCost(t: Tracer, n: number): Promise<Row> {
  const idle = () => sleep(IDLE_MS).then(() => undefined);
  await measure(t, "warm-up", () => sleep(100).then(() => undefined));
  const runs = [];
  for (let i = 0; i < n; i++) runs.push(await measure(t, IDLE, idle));
  return combine(runs);
}

/** `deno run` of an empty script, `n` times: its start to exit, CPU and peak RSS. */
async function emptyDeno(n: number): Promise<Row> {
  const usageFile = `${OUT}usage.json`;
  const runs: Row[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    await runToEnd(
      [`${OUT}rusage`, usageFile, Deno.execPath(), "run", "-A", `${BENCH}empty.ts`],
      "deno run empty.ts",
      ATTACH_TIMEOUT_MS,
    );
    const usage: Usage = JSON.parse(await Deno.readTextFile(usageFile));
    runs.push({
      scenario: IDLE,
      tracer: "deno empty",
      attachMs: performance.now() - started,
      cpuS: usage.user_s + usage.sys_s,
      rssKiB: usage.maxrss_kib,
    });
  }
  return combine(runs);
}

// ---------------------------------------------------------------- report

const fixed = (rows: Row[], tracer: string) =>
  rows.find((r) => r.scenario === IDLE && r.tracer === tracer)?.cpuS;
/** CPU µs per delivered event, less `minus` seconds; NaN where it means nothing. */
const perEventUs = (r: Row | undefined, minus = 0) =>
  r?.scenario !== TRICKLE && r?.cpuS !== undefined && r.counts?.delivered
    ? ((r.cpuS - minus) * 1e6) / r.counts.delivered
    : NaN;
const marginalUs = (rows: Row[], r: Row | undefined) =>
  perEventUs(r, (r && fixed(rows, r.tracer)) ?? NaN);
const find = (rows: Row[], scenario: string, tracer: string) =>
  rows.find((r) => r.scenario === scenario && r.tracer === tracer);
/** Ring buffer bytes per delivered event, headers included; NaN without the count. */
const ringPerEvent = (r: Row | undefined) =>
  r?.counts?.ringBytes !== undefined && r.counts.delivered
    ? r.counts.ringBytes / r.counts.delivered
    : NaN;
/** What tracing added to each unlink of the storm, in wall-clock ns: 1/rate - 1/untraced rate. */
const addedNs = (rows: Row[], r: Row | undefined) => {
  const bare = r && find(rows, r.scenario, "(untraced)")?.storm?.rate;
  return r?.storm && bare && r.tracer !== "(untraced)" && r.scenario !== TRICKLE
    ? 1e9 / r.storm.rate - 1e9 / bare
    : NaN;
};
const num = (x: number | undefined, digits = 0) =>
  x === undefined || Number.isNaN(x) ? "" : x.toFixed(digits);

const COLUMNS = [
  "scenario",
  "tracer",
  "storm/s",
  "%bare",
  "done",
  "delivered",
  "lost",
  "d+l",
  "ring B/ev",
  "+ns/ev",
  "cpu µs/ev",
  "marg µs/ev",
  "×each",
  "×batched",
  "RSS MiB",
  "attach ms",
  "delay p50/p99 ms",
];

function cells(rows: Row[], r: Row): string[] {
  const bare = find(rows, r.scenario, "(untraced)")?.storm?.rate;
  const done = r.storm?.unlinks;
  const counts = r.counts;
  const offs = r.accounts?.map((a) => a.delivered + a.lost - a.done);
  const balance = offs?.find((off) => off !== 0) ?? (offs?.length ? 0 : undefined);
  const each = perEventUs(find(rows, r.scenario, "C each"));
  const batched = marginalUs(rows, find(rows, r.scenario, "C batched"));
  const idle = r.scenario === IDLE && r.cpuS !== undefined;
  return [
    r.scenario,
    r.tracer,
    num(r.storm?.rate),
    r.storm && bare && r.tracer !== "(untraced)" ? num((100 * r.storm.rate) / bare) : "",
    num(done),
    r.error ? "ERROR" : num(counts?.delivered),
    num(counts?.lost),
    balance === undefined || !done
      ? ""
      : balance === 0
      ? "ok"
      : `${balance > 0 ? "+" : ""}${balance}!`,
    num(ringPerEvent(r)),
    num(addedNs(rows, r)),
    idle ? `${num(r.cpuS! * 1e3, 1)} ms` : num(perEventUs(r), 2),
    num(marginalUs(rows, r), 2),
    num(perEventUs(r) / each, 2),
    num(marginalUs(rows, r) / batched, 2),
    num(r.rssKiB && r.rssKiB / 1024, 1),
    num(r.attachMs),
    r.delayMs
      ? `${num(r.delayMs[0], 2)}/${num(r.delayMs[1], 2)}${
        r.delayMs[2] ? ` (${r.delayMs[2]} unseen)` : ""
      }`
      : "",
  ];
}

function table(rows: Row[]): string {
  const grid = [COLUMNS, ...rows.map((r) => cells(rows, r))];
  const widths = COLUMNS.map((_, i) => Math.max(...grid.map((row) => row[i].length)));
  return grid.map((row) =>
    row.map((cell, i) => i < 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])).join("  ")
      .trimEnd()
  ).join("\n");
}

/**
 * Ring bytes per event before (the b5bb32d object) and after (bpf/unlink.bpf.o),
 * as the batched C references counted them in each storm scenario.
 */
function ringFigures(rows: Row[], scenarios: string[]): string[] {
  return scenarios.flatMap((s) => {
    const after = ringPerEvent(find(rows, s, "C batched") ?? find(rows, s, "C each"));
    const before = ringPerEvent(find(rows, s, BEFORE_TRACER));
    if (Number.isNaN(after) && Number.isNaN(before)) return [];
    return [
      `[${s}] ring bytes per event: ${num(before) || "no data"} before (${BEFORE}), ${
        num(after) || "no data"
      } after (bpf/unlink.bpf.o)${
        before && after ? `: ${num(after / before, 2)}x` : ""
      }; the default ring (${RING_BYTES / 2 ** 20} MiB) holds ${
        num(RING_BYTES / after) || "?"
      } events`,
    ];
  });
}

/**
 * The ratio `value(a) / value(b)` of each round of a repeated run, as the
 * spread behind a verdict judged on medians: ` (per run: 0.84, 0.88, 0.91)`,
 * or "" with fewer than two runs.
 */
function spread(a: Row | undefined, b: Row | undefined, value: (r: Row) => number): string {
  const ratios = (a?.runs ?? []).map((r, i) => {
    const other = b?.runs?.[i];
    return other ? value(r) / value(other) : NaN;
  }).filter(Number.isFinite).sort((x, y) => x - y);
  return ratios.length > 1 ? ` (per run: ${ratios.map((x) => num(x, 2)).join(", ")})` : "";
}

function targets(rows: Row[], full: string[]): string[] {
  const out: string[] = [];
  /** One verdict line; `atLeast` turns the limit into a floor, `note` follows the figures. */
  const check = (
    label: string,
    value: number,
    limit: number,
    unit = "",
    { atLeast = false, note = "" } = {},
  ) => {
    const ok = atLeast ? value >= limit : value <= limit;
    const verdict = Number.isNaN(value) ? "N/A " : ok ? "PASS" : "FAIL";
    const shown = Number.isNaN(value) ? "no data" : `${num(value, 2)}${unit}`;
    out.push(
      `${verdict}  ${label}: ${shown} ${atLeast ? ">=" : "<="} ${num(limit, 2)}${unit}${note}`,
    );
  };
  for (const s of full) {
    const each = perEventUs(find(rows, s, "C each"));
    const limits = [["deno lib", 0.35], ["trace.ts json", 0.5], ["trace.ts text", 0.6]] as const;
    for (const [t, limit] of limits) {
      const row = find(rows, s, t);
      const runs = spread(row, find(rows, s, "C each"), (r) => perEventUs(r));
      check(`[${s}] ${t} CPU/event vs C each`, perEventUs(row) / each, limit, "x", { note: runs });
    }
    const batched = marginalUs(rows, find(rows, s, "C batched"));
    const lib = marginalUs(rows, find(rows, s, "deno lib"));
    check(
      `[${s}] deno lib marginal CPU/event (${num(lib, 2)} µs) vs C batched's (${
        num(batched, 2)
      } µs)`,
      batched > 0 ? lib / batched : NaN, // at or below 0: lost in the fixed cost's noise
      3,
      "x",
    );
    if (s.startsWith(PACED)) continue; // a paced storm keeps its rate whatever traces it
    const [after, prior] = [find(rows, s, "C batched"), find(rows, s, BEFORE_TRACER)];
    const [now, before] = [after?.storm?.rate, prior?.storm?.rate];
    const runs = spread(after, prior, (r) => r.storm?.rate ?? NaN);
    check(
      `[${s}] storm rate traced by C batched vs by ${BEFORE_TRACER} (${num(now)}/s vs ${
        num(before)
      }/s)`,
      now && before ? now / before : NaN,
      MIN_RATE_VS_BEFORE,
      "x",
      { atLeast: true, note: runs },
    );
  }
  const deno = ["deno lib", "trace.ts text", "trace.ts json", METRICS];
  for (const t of full.includes(LOSS_SCENARIO) ? deno : []) {
    check(
      `[${LOSS_SCENARIO}] ${t} events lost`,
      find(rows, LOSS_SCENARIO, t)?.counts?.lost ?? NaN,
      0,
    );
  }
  for (const r of rows.filter((r) => deno.includes(r.tracer))) {
    r.accounts?.forEach(({ delivered, lost, done }, i, all) => {
      if (delivered + lost === done) return;
      const run = all.length > 1 ? ` (run ${i + 1} of ${all.length})` : "";
      out.push(
        `FAIL  [${r.scenario}] ${r.tracer}: delivered + lost = ${
          delivered + lost
        } != ${done} done${run}`,
      );
    });
  }
  for (const s of full) {
    const json = perEventUs(find(rows, s, "trace.ts json"));
    const metrics = perEventUs(find(rows, s, METRICS));
    if (Number.isNaN(json) || Number.isNaN(metrics)) continue;
    out.push(
      `INFO  [${s}] metrics cost: ${num(metrics - json, 2)} µs/event ` +
        `(trace.ts --metrics ${num(metrics, 2)} vs trace.ts json ${num(json, 2)} µs/event)`,
    );
  }
  for (const r of rows.filter((r) => r.delayMs)) {
    check(`${r.tracer} delay p99`, r.delayMs![1], 100, " ms");
  }
  const empty = find(rows, IDLE, "deno empty")!;
  for (const t of deno) {
    check(
      `${t} start to attached beyond empty deno run`,
      (find(rows, IDLE, t)?.attachMs ?? NaN) - empty.attachMs!,
      100,
      " ms",
    );
    const peaks = rows.filter((r) => r.tracer === t && r.rssKiB).map((r) => r.rssKiB!);
    const peak = peaks.length ? Math.max(...peaks) : NaN;
    check(
      `${t} peak RSS vs empty deno + ring + 16 MB`,
      peak / 1024,
      (empty.rssKiB! * 1024 + RING_BYTES + 16e6) / 2 ** 20,
      " MiB",
    );
  }
  return out;
}

// ---------------------------------------------------------------- main

/**
 * Writes bpf/unlink.bpf.o as of {@linkcode BEFORE} to {@linkcode BEFORE_OBJECT}
 * with git. Returns the one line that says why it could not, or undefined.
 */
async function beforeObject(): Promise<string | undefined> {
  const without = `the ${BEFORE_TRACER} rows are skipped`;
  if (!which("git")) return `bench: git not found: ${without}`;
  const out = await new Deno.Command("git", {
    args: ["-C", ROOT, "show", `${BEFORE}:bpf/unlink.bpf.o`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
    return `bench: no bpf/unlink.bpf.o of commit ${BEFORE} (git show: ${why}): ${without}`;
  }
  await Deno.writeFile(BEFORE_OBJECT, out.stdout);
  return undefined;
}

/** Checks what the bench runs on and builds bench/*.c; with `refs`, the C references too. */
async function build(refs: boolean) {
  await Deno.stat(BPF_OBJECT).catch(() => {
    throw new Error(`${BPF_OBJECT} is missing: run deno task build:bpf`);
  });
  ensureTracefs(); // libbpf and bpftrace attach through it; some hosts do not mount it at boot
  await Deno.mkdir(OUT, { recursive: true });
  await compile("storm", `${OUT}storm`);
  await compile("rusage", `${OUT}rusage`);
  if (refs) await compile("ref_consumer", `${OUT}ref_consumer`, ["-lbpf"]);
}

/**
 * Removes what storms left in /dev/shm, and this run's bpftrace output. A
 * file whose writer is still alive is left alone: it may be another bench's.
 */
async function cleanShm() {
  for await (const e of Deno.readDir("/dev/shm")) {
    const writer = e.name.startsWith(STORM_FILES) ? e.name.slice(STORM_FILES.length) : undefined;
    const alive = writer !== undefined &&
      await Deno.stat(`/proc/${Number.parseInt(writer)}`).then(() => true, () => false);
    if ((writer !== undefined && !alive) || e.name === BPFTRACE_OUT.slice(9)) {
      await Deno.remove(`/dev/shm/${e.name}`).catch(() => {});
    }
  }
}

/** How busy all CPUs are over half a second, in percent (from /proc/stat). */
async function busyPercent(): Promise<number> {
  const sample = async () => {
    const [, ...ticks] = (await Deno.readTextFile("/proc/stat")).split("\n")[0].trim().split(/\s+/);
    const n = ticks.map(Number);
    return { idle: n[3] + n[4], total: n.reduce((a, b) => a + b, 0) };
  };
  const a = await sample();
  await sleep(500);
  const b = await sample();
  return Math.round(100 * (1 - (b.idle - a.idle) / Math.max(1, b.total - a.total)));
}

async function machine(mode: string): Promise<string> {
  const cpu = /^model name\s*:\s*(.+)$/m.exec(await Deno.readTextFile("/proc/cpuinfo"))?.[1] ??
    "unknown CPU";
  const bt = await runToEnd(["bpftrace", "--version"], "bpftrace --version", 10_000, "piped")
    .then((p) => p.out[0]?.text ?? "bpftrace", () => "no bpftrace");
  const busy = await busyPercent();
  const warning = busy > 10
    ? `\nwarning: the machine is ${busy}% busy before the run: numbers will be noisy`
    : "";
  return `machine: Linux ${Deno.osRelease()}, ${navigator.hardwareConcurrency} CPUs, ${cpu}; deno ${Deno.version.deno}; ${bt}; mode ${mode}; ${busy}% CPU busy before start${warning}`;
}

/** Runs each of `cells` `repeat` times, round by round, and returns one row per cell. */
async function repeated(
  cells: (() => Promise<Row>)[],
  repeat: number,
  progress: (r: Row, round: number) => void,
): Promise<Row[]> {
  const runs = cells.map((): Row[] => []);
  for (let round = 1; round <= repeat; round++) {
    for (const [i, run] of cells.entries()) {
      const row = await run();
      progress(row, round);
      runs[i].push(row);
    }
  }
  return runs.map(combine);
}

async function main() {
  const o = options();
  if (Deno.uid() !== 0) {
    throw new Error("Run as root (sudo deno task bench): tracing needs CAP_BPF and CAP_PERFMON");
  }
  // Only what the selected tracers need is installed or reported: a run of
  // `--tracers batched` says nothing of bpftrace, wherever it runs.
  const needed = PEERS.filter((peer) => peer.essential || peer.rows.some((r) => o.tracers.has(r)));
  const missing = installMissing(needed);
  console.log(await machine(o.mode));
  for (const peer of missing) console.log(missingLine(peer));
  if (missing.some((peer) => peer.essential)) {
    Deno.exitCode = 1;
    return;
  }
  const skipped = new Set(missing.flatMap((peer) => peer.rows));
  for (const name of TRACER_NAMES) if (!o.tracers.has(name)) skipped.add(name);
  await build(!skipped.has("C each") || !skipped.has("C batched") || !skipped.has(BEFORE_TRACER));
  if (!skipped.has(BEFORE_TRACER)) {
    const why = await beforeObject();
    if (why) {
      console.log(why);
      skipped.add(BEFORE_TRACER);
    }
  }
  await cleanShm();
  const lib = (stamp = false) =>
    denoTracer("deno lib", `${BENCH}lib_consumer.ts`, ["--mode", o.mode, "--comm", COMM], stamp);
  const json = (stamp = false) =>
    denoTracer("trace.ts json", TRACE_SCRIPT, ["--mode", o.mode, "-n", COMM, "--json"], stamp);
  const tracers = [
    cReference("each", o.mode),
    cReference("batched", o.mode),
    cReference("batched", o.mode, BEFORE_OBJECT, BEFORE_TRACER),
    bpftrace(o.mode),
    lib(),
    denoTracer("trace.ts text", TRACE_SCRIPT, ["--mode", o.mode, "-n", COMM]),
    json(),
    // trace.ts json plus Prometheus counting: the difference is what metrics cost.
    denoTracer(METRICS, TRACE_SCRIPT, [
      "--mode",
      o.mode,
      "-n",
      COMM,
      "--json",
      "--metrics",
      "127.0.0.1:0",
    ]),
  ].filter((t) => !skipped.has(t.name));
  const scenarios: [ScenarioKey, string, string[]][] = [
    ["full1w", "full 1w", ["full", "1", String(o.pairs)]],
    ["full2w", LOSS_SCENARIO, ["full", "2", String(o.pairs)]],
    ["paced", `${PACED} ${o.rate / 1000}k/s`, ["paced", String(o.rate), String(o.seconds)]],
  ];
  const storms = scenarios.filter(([key]) => o.only.has(key));
  console.log(
    `storm: ${o.pairs} pairs per writer at full rate; ${o.rate}/s for ${o.seconds} s paced; ${o.samples} trickle samples ${o.trickleMs} ms apart; zero-event runs of ${IDLE_MS} ms${
      o.repeat > 1 ? `; each cell the median of ${o.repeat} runs` : ""
    }`,
  );
  const rows: Row[] = [await emptyDeno(o.idleRuns)];
  const report = (r: Row, round = 0) =>
    console.error(
      `  ${r.scenario} / ${r.tracer}${
        round && o.repeat > 1 ? ` (run ${round} of ${o.repeat})` : ""
      }${r.error ? `: ERROR ${r.error}` : ""}`,
    );
  for (const t of tracers) {
    const row = await fixedCost(t, o.idleRuns);
    report(row);
    rows.push(row);
  }
  const failed = new Set(rows.filter((r) => r.error).map((r) => r.tracer)); // reported once
  const working = tracers.filter((t) => !failed.has(t.name));
  for (const [, name, args] of storms) {
    const untraced = async (): Promise<Row> => {
      const row: Row = { scenario: name, tracer: "(untraced)" };
      try {
        row.storm = await storm(args);
      } catch (error) { // reported with the table, like a tracer's failure
        row.error = error instanceof Error ? error.message : String(error);
      }
      return row;
    };
    const traced = working.map((t) => () => measure(t, name, () => storm(args)));
    rows.push(...await repeated([untraced, ...traced], o.repeat, report));
  }
  if (o.only.has("trickle")) {
    const trickle = [TRICKLE, String(o.samples), String(o.trickleMs)];
    const stamped = [lib(true), json(true)].filter((t) =>
      !failed.has(t.name) && !skipped.has(t.name)
    )
      .map((t) => () => measure(t, TRICKLE, () => storm(trickle)));
    rows.push(...await repeated(stamped, o.repeat, report));
  }

  console.log();
  console.log(table(rows));
  console.log(`
cpu µs/ev: tracer user+sys CPU over its whole life / events delivered (idle rows: the fixed cost, median of ${o.idleRuns} runs attached ${IDLE_MS} ms with no events).
marg µs/ev: the same minus that fixed cost. ×each: cpu µs/ev / C each's; ×batched: marg µs/ev / C batched's.
d+l: delivered + lost vs the unlinks the storm did ("ok" when equal). %bare: storm rate vs untraced.
ring B/ev: ring buffer bytes per event, 8-byte header and padding included (C references only; ${BEFORE_TRACER}: the object of commit ${BEFORE}).
+ns/ev: what tracing added to each unlink of the storm, wall clock: 1e9/storm rate - 1e9/untraced rate.
attach ms: process start to attached (deno empty: \`deno run\` of an empty script, start to exit).
bpftrace prints each event to a tmpfs file, not /dev/null: its counts exist only in that output.${
    o.repeat > 1
      ? `\nEvery figure is the median of ${o.repeat} runs (CPU, RSS, rates and counts each on its own); d+l is checked run by run.`
      : ""
  }`);
  for (const r of rows.filter((r) => r.error)) {
    console.log(`ERROR [${r.scenario}] ${r.tracer}: ${r.error}`);
    Deno.exitCode = 1;
  }
  console.log();
  for (const line of ringFigures(rows, storms.map(([, name]) => name))) console.log(line);
  console.log();
  for (const line of targets(rows, storms.map(([, name]) => name))) console.log(line);
}

async function cleanup() {
  await Promise.all([...live].map(kill));
  await cleanShm();
}

Deno.addSignalListener("SIGINT", () => cleanup().finally(() => Deno.exit(130)));
try {
  await main();
} catch (error) {
  console.error(`bench: ${error instanceof Error ? error.message : String(error)}`);
  Deno.exitCode = 1;
} finally {
  await cleanup();
}
