/**
 * The bench as a user runs it on a machine that lacks one of its peers:
 * bpftrace missing is one line of report and a run of every other row; git
 * missing skips only the row of the b5bb32d object, which it extracts. A peer
 * that no selected row needs is not reported, so each report here is the same
 * whether bpftrace is installed or not. No run here may install anything.
 */

import assert from "node:assert/strict";
import { missingLine, PEERS, which } from "../bench/_peers.ts";
import { kernelTest, ROOT, runDeno } from "./_helpers.ts";

/**
 * PATH as it is, except that each directory holding one of `hidden` is
 * replaced by a mirror of it (symlinks to everything else). Returns the PATH
 * and the mirrors' parent.
 */
function pathWithout(hidden: string[]): { path: string; dir: string } {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_path_" });
  const path = (Deno.env.get("PATH") ?? "").split(":").map((entry, i) => {
    if (!hidden.some((name) => which(name, entry))) return entry;
    const mirror = `${dir}/${i}`;
    Deno.mkdirSync(mirror);
    for (const e of Deno.readDirSync(entry)) {
      if (!hidden.includes(e.name)) Deno.symlinkSync(`${entry}/${e.name}`, `${mirror}/${e.name}`);
    }
    return mirror;
  });
  return { path: path.join(":"), dir };
}

/**
 * Whether git can show the b5bb32d object from this checkout: a shallow
 * clone, or a tree that is no clone, lacks it, and the bench skips its rows.
 */
const HAS_BEFORE = which("git") !== undefined &&
  (await new Deno.Command("git", {
    args: ["-C", ROOT, "cat-file", "-e", "b5bb32d:bpf/unlink.bpf.o"],
    stdout: "null",
    stderr: "null",
  }).output()).success;

/** bench/run.ts with `args`, PATH without `hidden`, and no installing. */
async function runBench(args: string[], hidden: string[]) {
  const { path, dir } = pathWithout(hidden);
  try {
    return await runDeno(["run", "-A", `${ROOT}bench/run.ts`, ...args], {
      PATH: path,
      DENO_BPF_NO_INSTALL: "1",
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("which finds executables on PATH and nothing else", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_which_" });
  try {
    Deno.writeTextFileSync(`${dir}/tool`, "#!/bin/sh\n", { mode: 0o755 });
    Deno.writeTextFileSync(`${dir}/data`, "", { mode: 0o644 });
    Deno.mkdirSync(`${dir}/folder`);
    assert.equal(which("tool", `/nonexistent:${dir}`), `${dir}/tool`);
    assert.equal(which("data", dir), undefined);
    assert.equal(which("folder", dir), undefined);
    assert.equal(which("tool", "/nonexistent"), undefined);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a missing peer is reported in one line that says how to install it", () => {
  const bpftrace = PEERS.find((p) => p.name === "bpftrace")!;
  assert.equal(
    missingLine(bpftrace),
    "bench: bpftrace not installed (apt-get install bpftrace): its rows are skipped",
  );
  for (const peer of PEERS) assert.doesNotMatch(missingLine(peer), /\n/);
});

kernelTest(
  "the bench without bpftrace reports it in one line and runs every other row",
  async () => {
    const { code, stdout, stderr } = await runBench(
      ["--quick", "--only", "full1w", "--pairs", "2000"],
      ["bpftrace"],
    );
    assert.equal(code, 0, `exit ${code}\n${stdout}\n${stderr}`);
    const lines = stdout.split("\n");
    const mentions = [...lines, ...stderr.split("\n")].filter((l) => l.includes("bpftrace"));
    assert.deepEqual(
      mentions.filter((l) => !l.startsWith("machine:") && !l.startsWith("bpftrace prints")),
      ["bench: bpftrace not installed (apt-get install bpftrace): its rows are skipped"],
    );
    const report = lines.filter((l) => l.startsWith("bench:") && !l.includes("bpftrace"));
    assert.deepEqual(
      report.map((l) => l.replace(/ \(git show: .*\)/, "")),
      HAS_BEFORE ? [] : [
        "bench: no bpf/unlink.bpf.o of commit b5bb32d: the C batched b5bb32d rows are skipped",
      ],
    );
    assert.match(stdout, /^machine: .*; no bpftrace;/m);
    const rows = (scenario: string, tracer: string) =>
      lines.filter((l) => {
        const [s, t] = l.split(/\s{2,}/);
        return s === scenario && t === tracer;
      });
    assert.deepEqual(rows("full 1w", "bpftrace"), []);
    const tracers = [
      "C each",
      "C batched",
      ...(HAS_BEFORE ? ["C batched b5bb32d"] : []),
      "deno lib",
      "trace.ts text",
      "trace.ts json",
    ];
    for (const tracer of tracers) {
      const idle = rows("idle", tracer);
      const storm = rows("full 1w", tracer);
      assert.equal(idle.length, 1, `no idle row for ${tracer}:\n${stdout}`);
      assert.equal(storm.length, 1, `no storm row for ${tracer}:\n${stdout}`);
      assert.match(storm[0], /\s2000\s+2000\s+0\s+ok\s/, `${tracer} lost events:\n${storm[0]}`);
    }
    // Every storm here names a file of /dev/shm/dbpf_storm.<pid>: 21 to 27 bytes of path,
    // so a schema-2 record takes 8 + 640 + 21..27, rounded up to 8: 672 or 680 bytes.
    const ringBytes = (tracer: string) => Number(rows("full 1w", tracer)[0].split(/\s{2,}/)[8]);
    assert.ok([672, 680].includes(ringBytes("C each")), rows("full 1w", "C each")[0]);
    assert.equal(ringBytes("C batched"), ringBytes("C each"));
    const verdict = /\[full 1w\] storm rate traced by C batched vs by C batched b5bb32d /;
    if (HAS_BEFORE) {
      assert.equal(ringBytes("C batched b5bb32d"), 320, rows("full 1w", "C batched b5bb32d")[0]);
      assert.match(
        stdout,
        /^\[full 1w\] ring bytes per event: 320 before \(b5bb32d\), 6[78]\d after \(bpf\/unlink\.bpf\.o\): 2\.1\dx;/m,
      );
      assert.ok(lines.some((l) => /^(PASS|FAIL) {2}/.test(l) && verdict.test(l)), stdout);
    } else {
      assert.deepEqual(rows("full 1w", "C batched b5bb32d"), []);
      assert.match(
        stdout,
        /^\[full 1w\] ring bytes per event: no data before \(b5bb32d\), 6[78]\d after \(bpf\/unlink\.bpf\.o\);/m,
      );
      assert.ok(lines.some((l) => l.startsWith("N/A   ") && verdict.test(l)), stdout);
    }
    assert.doesNotMatch(stdout, /^ERROR/m);
  },
);

kernelTest(
  "the bench without git skips the b5bb32d row in one line and runs the rest",
  async () => {
    const { code, stdout, stderr } = await runBench(
      ["--quick", "--only", "full1w", "--pairs", "2000", "--tracers", "batched,b5bb32d"],
      ["git"],
    );
    assert.equal(code, 0, `exit ${code}\n${stdout}\n${stderr}`);
    const report = stdout.split("\n").filter((l) => l.startsWith("bench:"));
    assert.deepEqual(report, ["bench: git not found: the C batched b5bb32d rows are skipped"]);
    assert.match(stdout, /^full 1w\s+C batched\s+\d+\s+\d+\s+2000\s+2000\s+0\s+ok\s/m);
    assert.doesNotMatch(stdout, /b5bb32d\s+\d/);
    assert.match(
      stdout,
      /^N\/A {3}\[full 1w\] storm rate traced by C batched vs by C batched b5bb32d/m,
    );
  },
);

Deno.test("--tracers refuses a tracer it does not know, naming the ones it does", async () => {
  const out = await runDeno(["run", "-A", `${ROOT}bench/run.ts`, "--tracers", "batched,perf"], {
    DENO_BPF_NO_INSTALL: "1",
  });
  assert.equal(out.code, 1);
  assert.match(
    out.stderr,
    /^bench: --tracers takes each, batched, b5bb32d, bpftrace, lib, text, json, metrics; got "perf"$/m,
  );
});

kernelTest(
  "the bench without a C compiler says so in one line and stops with exit 1",
  async () => {
    // Only the storm's own needs: a peer of another row (bpftrace, libbpf-dev) is not reported.
    const { code, stdout, stderr } = await runBench(["--quick", "--tracers", "lib"], [
      "cc",
      "gcc",
      "clang",
    ]);
    assert.equal(code, 1, `exit ${code}\n${stdout}\n${stderr}`);
    const report = stdout.split("\n").filter((l) => l.startsWith("bench:"));
    assert.deepEqual(report, [
      "bench: C compiler not installed (apt-get install gcc libc6-dev): " +
      "the storm and the CPU meter are C, so the bench cannot run",
    ]);
    assert.doesNotMatch(stdout, /^scenario/m);
  },
);
