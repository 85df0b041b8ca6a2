/**
 * scripts/trace.ts as a user runs it: a subprocess, its flags, its output
 * envelope, its exit status, and what it leaves behind.
 */

import assert from "node:assert/strict";
import { parseTraceArgs, UsageError } from "../scripts/trace.ts";
import {
  checkoutForOthers,
  devOf,
  EXPECTED_METHOD,
  kernelTest,
  readUntil,
  ROOT,
  scratch,
  spawnBurst,
  spawnUnlinker,
  TEST_MODE,
  whereIs,
} from "./_helpers.ts";
import { orphanedPrograms, PERMS, runScript, SCRIPT, traceWhile } from "./_trace.ts";

kernelTest(
  "trace.ts --json prints the attach, event and summary envelope, exits 0 and leaves no program behind",
  async () => {
    const dir = Deno.realPathSync(scratch(["a", "b"]));
    const ops = [`unlink:${dir}/a`, `unlinkat:${dir}/b`, `unlinkat:${dir}/missing`];
    const inodes = ["a", "b"].map((name) => Deno.statSync(`${dir}/${name}`));
    const child = await spawnUnlinker(ops);
    const run = await traceWhile(
      ["--json", "-p", String(child.pid), "-n", "dbpf_unlinker", "--path", dir],
      async () => {
        await child.go();
      },
    );
    Deno.removeSync(dir, { recursive: true });
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
    const [attach, ...rest] = lines;
    assert.equal(attach.type, "attach");
    assert.ok(["fentry", "kprobe", "tracepoint"].includes(attach.data.method));
    if (EXPECTED_METHOD) assert.equal(attach.data.method, EXPECTED_METHOD);
    for (const s of attach.data.skipped) assert.deepEqual(Object.keys(s), ["method", "reason"]);
    assert.match(run.stderr, new RegExp(`^attached via ${attach.data.method}`, "m"));

    const events = rest.filter((l) => l.type === "event").map((l) => l.data);
    // Only fentry and kprobe see the file itself, and only where the name existed.
    const looksUp = attach.data.method !== "tracepoint";
    const inode = (i: number) => {
      const st = inodes[i];
      return looksUp && st
        ? { ino: st.ino, dev: devOf(st), type: "file", size: 0, nlink_after: 0 }
        : { ino: null, dev: null, type: null, size: null, nlink_after: null };
    };
    const where = whereIs(Deno.pid);
    assert.deepEqual(
      events.map(({ time: _t, latency_ns: _l, ...fixed }) => fixed),
      [
        ["a", 0, null],
        ["b", 0, null],
        ["missing", -2, "ENOENT"],
      ].map(([name, ret, error], i) => ({
        pid: child.pid,
        tid: child.pid,
        uid: 0,
        comm: "dbpf_unlinker",
        filename: `${dir}/${name}`,
        ret,
        error,
        op: "unlink",
        path: `${dir}/${name}`,
        path_status: "ok",
        dfd: "AT_FDCWD",
        ...inode(i),
        ppid: Deno.pid,
        pcomm: where.comm,
        auid: where.auid,
        cgroup_id: where.cgroupId,
        cgroup: where.cgroup,
        container: null,
        mntns: where.mntns,
        argv: [Deno.execPath(), "run", "-A", `${ROOT}tests/_unlinker.ts`, ...ops],
      })),
    );
    for (const e of events) {
      assert.ok(e.latency_ns > 0);
      assert.ok(Math.abs(Date.parse(e.time) - Date.now()) < 60_000, e.time);
      assert.match(e.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    }
    assert.deepEqual(lines.at(-1), { type: "summary", data: { events: 3, lost: 0 } });
    assert.deepEqual(orphanedPrograms(), [], "no deno_bpf program remains loaded after exit");
  },
);

kernelTest("trace.ts text mode aligns under the header and -x shows only failures", async () => {
  const dir = scratch(["ok"]);
  const child = await spawnUnlinker([`unlink:${dir}/ok`, `unlink:${dir}/gone`]);
  const run = await traceWhile(
    ["-x", "-p", String(child.pid), "-n", "dbpf_unlinker", "--path", dir],
    () => child.go().then(() => {}),
  );
  Deno.removeSync(dir, { recursive: true });
  assert.equal(run.code, 0, run.stderr);
  const [header, ...rows] = run.stdout.trimEnd().split("\n");
  assert.match(header, /^TIME\s+PID COMM\s+RET\s+LAT\(us\) FILENAME$/);
  assert.equal(rows.length, 1, run.stdout);
  assert.match(rows[0], /^\d\d:\d\d:\d\d\.\d{3}\s+\d+ dbpf_unlinker\s+ENOENT\s+\d+\.\d /);
  assert.ok(rows[0].endsWith(` ${dir}/gone`));
  assert.equal(
    rows[0].indexOf(String(child.pid)) + String(child.pid).length,
    header.indexOf("PID") + 3,
  );
  assert.equal(rows[0].indexOf("ENOENT"), header.indexOf("RET"));
  assert.equal(rows[0].indexOf(`${dir}/gone`), header.indexOf("FILENAME"));
  assert.match(run.stderr, /^1 events, 0 lost$/m);
});

kernelTest(
  "trace.ts shows rm deleting a file with comm rm, its pid and RET 0, and a missing file as ENOENT",
  async () => {
    const dir = scratch(["x"]);
    const pids: number[] = [];
    const run = await traceWhile(["-n", "rm"], async () => {
      for (const path of [`${dir}/x`, `${dir}/nonexistent`]) {
        const rm = new Deno.Command("rm", { args: [path], stderr: "null" }).spawn();
        pids.push(rm.pid);
        await rm.status;
      }
    });
    Deno.removeSync(dir, { recursive: true });
    assert.equal(run.code, 0, run.stderr);
    const rows = run.stdout.split("\n").filter((line) => line.includes(dir));
    assert.equal(rows.length, 2, run.stdout);
    assert.match(rows[0], new RegExp(`^\\S+\\s+${pids[0]} rm\\s+0\\s+[\\d.]+ ${dir}/x$`));
    assert.match(
      rows[1],
      new RegExp(`^\\S+\\s+${pids[1]} rm\\s+ENOENT\\s+[\\d.]+ ${dir}/nonexistent$`),
    );
  },
);

kernelTest(
  "trace.ts --path given with .., . and // folds it and reports a deletion under it",
  async () => {
    const dir = Deno.realPathSync(scratch(["in", "out"]));
    const [parent, base] = [
      dir.slice(0, dir.lastIndexOf("/")),
      dir.slice(dir.lastIndexOf("/") + 1),
    ];
    const prefix = `${parent}/./${base}/../${base}//in/`;
    const child = await spawnUnlinker([`unlink:${dir}/in`, `unlink:${dir}/out`]);
    const run = await traceWhile(
      ["--json", "-p", String(child.pid), "--path", prefix],
      () => child.go().then(() => {}),
    );
    Deno.removeSync(dir, { recursive: true });
    assert.equal(run.code, 0, run.stderr);
    const events = run.stdout.trimEnd().split("\n").map((l) => JSON.parse(l))
      .filter((l) => l.type === "event").map((l) => [l.data.path, l.data.ret]);
    assert.deepEqual(events, [[`${dir}/in`, 0]], run.stdout);
  },
);

kernelTest("trace.ts colours failures only on a terminal, and never with NO_COLOR", async () => {
  const dir = scratch([]);
  // `script` gives the tracer a pseudo-terminal as stdout.
  const onTty = async (env: Record<string, string>) => {
    const proc = new Deno.Command("script", {
      args: [
        "-qec",
        `${Deno.execPath()} run ${PERMS.join(" ")} ${SCRIPT} --mode ${TEST_MODE} -n rm --count 1`,
        "/dev/null",
      ],
      env: { TERM: "xterm", ...env },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = new Response(proc.stdout).text();
    // Unlink until the tracer is attached and counts one. A loaded emulated
    // guest can take a while to start it, but never forever: past the
    // deadline the tracer is killed and the test fails with its output.
    const deadline = Date.now() + 180_000;
    let status: Deno.CommandStatus | undefined;
    proc.status.then((s) => status = s);
    while (!status && Date.now() < deadline) {
      await new Deno.Command("rm", { args: [`${dir}/missing`], stderr: "null" }).output();
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!status) proc.kill("SIGKILL");
    await proc.status;
    const text = await out;
    assert.ok(status, `trace.ts on a terminal did not count one rm within 180 s:\n${text}`);
    return text;
  };
  // An empty NO_COLOR counts as unset (no-color.org); the VM harness sets it to 1.
  const coloured = await onTty({ NO_COLOR: "" });
  const plain = await onTty({ NO_COLOR: "1" });
  Deno.removeSync(dir, { recursive: true });
  const esc = "\x1b";
  assert.match(coloured, new RegExp(`${esc}\\[1mTIME .* FILENAME${esc}\\[22m`));
  assert.match(coloured, new RegExp(`${esc}\\[31mENOENT +${esc}\\[39m`));
  assert.match(plain, /^TIME /m);
  assert.match(plain, / ENOENT +[\d.]+ /);
  assert.ok(!plain.includes("\x1b["), JSON.stringify(plain));
});

kernelTest(
  "trace.ts --duration and --count stop by themselves with a summary and exit 0",
  async () => {
    const timed = await runScript([
      "--mode",
      TEST_MODE,
      "--json",
      "--duration",
      "0.5",
      "-p",
      "999999",
    ]);
    assert.equal(timed.code, 0, timed.stderr);
    assert.deepEqual(JSON.parse(timed.stdout.trimEnd().split("\n").at(-1)!), {
      type: "summary",
      data: { events: 0, lost: 0 },
    });

    const dir = scratch(["1", "2", "3"]);
    const child = await spawnUnlinker(["1", "2", "3"].map((f) => `unlink:${dir}/${f}`));
    const counted = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...PERMS,
        SCRIPT,
        "--mode",
        TEST_MODE,
        "--json",
        "--count",
        "2",
        "-p",
        String(child.pid),
        "-n",
        "dbpf_unlinker",
        "--path",
        dir,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = new Response(counted.stdout).text();
    await readUntil(
      counted.stderr.pipeThrough(new TextDecoderStream()).getReader(),
      "attached via",
    );
    await child.go();
    const status = await counted.status;
    Deno.removeSync(dir, { recursive: true });
    assert.equal(status.code, 0);
    const lines = (await stdout).trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.filter((l) => l.type === "event").map((l) => l.data.filename), [
      `${dir}/1`,
      `${dir}/2`,
    ]);
    assert.deepEqual(lines.at(-1), { type: "summary", data: { events: 2, lost: 0 } });
  },
);

kernelTest(
  "trace.ts with a one-page ring reports every drop: events + lost == unlinks done",
  async () => {
    const n = 3000;
    const { dir, child } = await spawnBurst(n);
    const run = await traceWhile(
      [
        "--json",
        "--ringbuf-size",
        "4096",
        "-p",
        String(child.pid),
        "-n",
        "dbpf_unlinker",
        "--path",
        dir,
      ],
      () => child.go().then(() => {}),
    );
    Deno.removeSync(dir, { recursive: true });
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
    const events = lines.filter((l) => l.type === "event").length;
    const lostLines = lines.filter((l) => l.type === "lost").reduce(
      (sum, l) => sum + l.data.count,
      0,
    );
    const summary = lines.at(-1);
    assert.deepEqual(summary, { type: "summary", data: { events, lost: summary.data.lost } });
    assert.equal(events + summary.data.lost, n, `${events} events + ${summary.data.lost} lost`);
    assert.ok(summary.data.lost > 0, "a 4 KiB ring should overflow on a burst of 3000");
    assert.equal(lostLines, summary.data.lost, "the lost lines add up to the summary");
  },
);

/** Runs trace.ts (no flags) behind `wrapper`, a command that execs the arguments after it. */
async function runWrapped(
  wrapper: string[],
  env: Record<string, string> = {},
  script = SCRIPT,
) {
  const out = await new Deno.Command(wrapper[0], {
    args: [...wrapper.slice(1), Deno.execPath(), "run", ...PERMS, script],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** A wrapper that runs `setup` in a private mount namespace first. */
const isolated = (setup: string) => ["unshare", "-m", "sh", "-c", `${setup} && exec "$@"`, "sh"];

kernelTest("trace.ts run without privileges says it needs root, in one line, exit 1", async () => {
  const run = await runWrapped(
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
    { DENO_DIR: Deno.makeTempDirSync(), HOME: "/tmp" },
    `${checkoutForOthers()}scripts/trace.ts`, // nobody may not read a clone under /root
  );
  assert.equal(run.code, 1, run.stderr);
  assert.equal(
    run.stderr,
    "trace: deno_bpf needs root (or CAP_BPF and CAP_PERFMON); run it with sudo\n",
  );
});

kernelTest(
  "trace.ts without libbpf names every path tried and the package to install",
  async () => {
    const lib = Deno.realPathSync(`/usr/lib/${Deno.build.arch}-linux-gnu/libbpf.so.1`);
    const run = await runWrapped(isolated(`mount --bind /dev/null ${lib}`), {
      LIBBPF_PATH: "/opt/nowhere/libbpf.so",
    });
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stderr.split("\n").length, 2, `one line: ${run.stderr}`);
    assert.match(
      run.stderr,
      /^trace: Cannot load libbpf >= 1\.0; tried \/opt\/nowhere\/libbpf\.so \(.*\), libbpf\.so\.1 \(.*\), libbpf\.so\.0 \(.*\)/,
    );
    assert.match(run.stderr, /apt-get install libbpf1/);
  },
);

kernelTest(
  "trace.ts on a kernel without BTF names the feature and the kernel it needs",
  async () => {
    const run = await runWrapped(isolated("mount -t tmpfs none /sys/kernel/btf"));
    assert.equal(run.code, 1, run.stderr);
    assert.equal(
      run.stderr,
      "trace: This kernel lacks BTF (/sys/kernel/btf/vmlinux): " +
        "deno_bpf needs Linux 5.5 or later built with CONFIG_DEBUG_INFO_BTF=y\n",
    );
  },
);

/** Every flag that takes a number, as a user may spell it, and its message (which names the long flag). */
const NUMERIC_FLAGS = [
  ["-p", "--pid needs an integer from 1 to 4294967294"],
  ["--tid", "--tid needs an integer from 1 to 4294967294"],
  ["-u", "--uid needs an integer from 0 to 4294967294"],
  ["--count", "--count needs an integer from 1 to 9007199254740991"],
  ["--duration", "--duration needs a positive number of seconds"],
  ["--ringbuf-size", "--ringbuf-size needs a power of two from 4096 to 2G bytes"],
  ["--metrics-comms", "--metrics-comms needs an integer from 1 to 1000000"],
  ["--syslog-queue-bytes", "--syslog-queue-bytes needs 262144 to 1073741824 bytes"],
] as const;

Deno.test("trace.ts rejects every bad flag and value in one line on stderr with exit 2", async () => {
  for (
    const [args, message] of [
      [["--bogus"], "Unknown option '--bogus'"],
      [["--pid", "abc"], '--pid needs an integer from 1 to 4294967294, got "abc"'],
      [["--pid", "0"], '--pid needs an integer from 1 to 4294967294, got "0"'],
      [["--pid", "4294967295"], '--pid needs an integer from 1 to 4294967294, got "4294967295"'],
      [["--uid", "-1"], "--uid"],
      [["--name", ""], "--name needs 1 to 15 bytes"],
      [["--name", "sixteen_bytes_xx"], "--name needs 1 to 15 bytes"],
      [["--count", "0"], "--count needs an integer from 1 to"],
      [["--count", "1.5"], "--count needs an integer"],
      [["--ringbuf-size", "5000"], "--ringbuf-size needs a power of two from 4096 to 2G"],
      [["--ringbuf-size", "2048"], "--ringbuf-size needs a power of two"],
      [["--ringbuf-size", "4G"], "--ringbuf-size needs a power of two"],
      [["--ringbuf-size", "12884901888"], "--ringbuf-size needs a power of two"],
      [["--mode", "uprobe"], '--mode must be auto, fentry, kprobe, tracepoint; got "uprobe"'],
      [["--duration", "0"], "--duration needs a positive number"],
      [["--duration=-1"], "--duration needs a positive number"],
      [["--duration", "soon"], "--duration needs a positive number"],
      [["--count"], "--count"],
      [["extra"], "extra"],
      [["--path", "relative"], '--path: paths must be absolute, got "relative"'],
      [["--cgroup", "/nonexistent"], '--cgroup: "/nonexistent" is not a cgroup v2 directory'],
      // A value that starts with "-" gets the flag's own message, however it is written.
      ...NUMERIC_FLAGS.flatMap(([flag, message]): [string[], string][] => [
        [[flag, "-5"], `${message}, got "-5"`],
        [[`${message.split(" ")[0]}=-5`], `${message}, got "-5"`],
      ]),
      [["--count", "--json"], '--count needs a value, got the option "--json"'],
      [["-p", "-x"], '-p needs a value, got the option "-x"'],
    ] as [readonly string[], string][]
  ) {
    const run = await runScript([...args]);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, /^trace: [^\n]+; see --help\n$/, `one line: ${run.stderr}`);
    assert.ok(run.stderr.includes(message), `${args}: ${run.stderr}`);
    assert.equal(run.stdout, "");
  }
});

Deno.test("trace.ts --help prints the usage on stdout and exits 0", async () => {
  const run = await runScript(["--help"]);
  assert.equal(run.code, 0);
  assert.match(run.stdout, /^Usage: sudo deno run --allow-ffi --allow-env scripts\/trace\.ts/);
  for (
    const flag of [
      "--pid",
      "--uid",
      "--name",
      "--failed",
      "--json",
      "--count",
      "--duration",
      "--mode",
      "--ringbuf-size",
      "--verbose",
    ]
  ) {
    assert.ok(run.stdout.includes(flag), flag);
  }
});

Deno.test("parseTraceArgs maps flags to tracer options", () => {
  const args = parseTraceArgs([
    "-p",
    "42",
    "-u",
    "0",
    "-n",
    "rm",
    "-x",
    "-j",
    "--count",
    "5",
    "--duration",
    "1.5",
    "--mode",
    "kprobe",
    "--ringbuf-size",
    "64K",
    "-v",
  ]);
  assert.deepEqual(args, {
    tracer: {
      pid: 42,
      uid: 0,
      comm: "rm",
      failedOnly: true,
      mode: "kprobe",
      ringBufferSize: 65536,
      tid: undefined,
      cgroup: undefined,
      paths: undefined,
      rmdir: false,
      rename: false,
    },
    json: true,
    rawNames: false,
    quiet: false,
    service: {
      metrics: undefined,
      maxComms: undefined,
      syslog: undefined,
      syslogQueueBytes: undefined,
      syslogMaxMessage: undefined,
    },
    count: 5,
    durationMs: 1500,
    verbose: true,
    doctor: false,
    help: false,
  });
  assert.deepEqual(parseTraceArgs([]).tracer, {
    pid: undefined,
    uid: undefined,
    comm: undefined,
    failedOnly: false,
    mode: "auto",
    ringBufferSize: undefined,
    tid: undefined,
    cgroup: undefined,
    paths: undefined,
    rmdir: false,
    rename: false,
  });
  const which = parseTraceArgs([
    "--tid",
    "7",
    "--cgroup",
    "/x.scope",
    "--path",
    "/etc",
    "--path",
    "/var/log/",
    "--rmdir",
    "--rename",
    "--raw-names",
  ]);
  assert.deepEqual(
    [which.tracer.tid, which.tracer.cgroup, which.tracer.paths, which.tracer.rmdir],
    [7, "/x.scope", ["/etc", "/var/log/"], true],
  );
  assert.deepEqual([which.tracer.rename, which.rawNames], [true, true]);
  for (
    const bad of [
      ["--path", "relative"],
      ["--path", "/" + "x".repeat(255)],
      [..."12345678".split("").flatMap((n) => ["--path", `/p${n}`]), "--path", "/p9"],
      ["--rename", "--mode", "tracepoint"],
      ["--tid", "0"],
    ]
  ) {
    assert.throws(() => parseTraceArgs(bad), UsageError, bad.join(" "));
  }
  assert.equal(parseTraceArgs(["--ringbuf-size", "4M"]).tracer.ringBufferSize, 4 * 1024 * 1024);
  assert.throws(() => parseTraceArgs(["-n", "sixteen_bytes_xx"]), UsageError);
  assert.throws(() => parseTraceArgs(["--ringbuf-size", "2048"]), UsageError);
  assert.equal(parseTraceArgs(["--ringbuf-size", "1G"]).tracer.ringBufferSize, 2 ** 30);
  assert.equal(parseTraceArgs(["--ringbuf-size", "2G"]).tracer.ringBufferSize, 2 ** 31);
});

Deno.test("parseTraceArgs maps the service flags, and rejects bad addresses in one line", () => {
  const args = parseTraceArgs([
    "-q",
    "--metrics",
    ":9469",
    "--metrics-comms",
    "20",
    "--syslog",
    "tcp://127.0.0.1:601",
    "--syslog-queue-bytes",
    "4M",
    "--syslog-max-message",
    "16384",
  ]);
  assert.equal(args.quiet, true);
  assert.deepEqual(args.service, {
    metrics: { hostname: "0.0.0.0", port: 9469 },
    maxComms: 20,
    syslog: "tcp://127.0.0.1:601",
    syslogQueueBytes: 4 * 1024 * 1024,
    syslogMaxMessage: 16384,
  });
  assert.throws(() => parseTraceArgs(["--syslog-queue", "500"]), /use --syslog-queue-bytes/);
  assert.throws(() => parseTraceArgs(["--syslog-queue-bytes", "1K"]), /needs 262144 to/);
  assert.throws(() => parseTraceArgs(["--syslog-max-message", "70000"]), /needs 2048 to 65507/);
  assert.throws(() => parseTraceArgs(["--metrics", "9469"]), /is not HOST:PORT/);
  assert.throws(() => parseTraceArgs(["--syslog", "syslog.example:514"]), /Bad syslog URL/);
  assert.throws(() => parseTraceArgs(["--metrics-comms", "0"]), /--metrics-comms needs/);
});
