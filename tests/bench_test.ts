/**
 * The bench as a user runs it on a machine that lacks one of its peers:
 * bpftrace missing is one line of report and a run of every other row.
 */

import assert from "node:assert/strict";
import { missingLine, PEERS, which } from "../bench/_peers.ts";
import { kernelTest, ROOT } from "./_helpers.ts";

/**
 * PATH as it is, except that each directory holding `hidden` is replaced by a
 * mirror of it (symlinks to everything else). Returns the PATH and the mirrors' parent.
 */
function pathWithout(hidden: string): { path: string; dir: string } {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_path_" });
  const path = (Deno.env.get("PATH") ?? "").split(":").map((entry, i) => {
    if (!which(hidden, entry)) return entry;
    const mirror = `${dir}/${i}`;
    Deno.mkdirSync(mirror);
    for (const e of Deno.readDirSync(entry)) {
      if (e.name !== hidden) Deno.symlinkSync(`${entry}/${e.name}`, `${mirror}/${e.name}`);
    }
    return mirror;
  });
  return { path: path.join(":"), dir };
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
    const { path, dir } = pathWithout("bpftrace");
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}bench/run.ts`,
          "--quick",
          "--only",
          "full1w",
          "--pairs",
          "2000",
        ],
        env: { PATH: path, DENO_BPF_NO_INSTALL: "1", NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `exit ${out.code}\n${stdout}\n${stderr}`);
      const lines = stdout.split("\n");
      const mentions = [...lines, ...stderr.split("\n")].filter((l) => l.includes("bpftrace"));
      assert.deepEqual(
        mentions.filter((l) => !l.startsWith("machine:") && !l.startsWith("bpftrace prints")),
        ["bench: bpftrace not installed (apt-get install bpftrace): its rows are skipped"],
      );
      assert.match(stdout, /^machine: .*; no bpftrace;/m);
      const rows = (scenario: string, tracer: string) =>
        lines.filter((l) => {
          const [s, t] = l.split(/\s{2,}/);
          return s === scenario && t === tracer;
        });
      assert.deepEqual(rows("full 1w", "bpftrace"), []);
      for (const tracer of ["C each", "C batched", "deno lib", "trace.ts text", "trace.ts json"]) {
        const idle = rows("idle", tracer);
        const storm = rows("full 1w", tracer);
        assert.equal(idle.length, 1, `no idle row for ${tracer}:\n${stdout}`);
        assert.equal(storm.length, 1, `no storm row for ${tracer}:\n${stdout}`);
        assert.match(storm[0], /\s2000\s+2000\s+0\s+ok\s/, `${tracer} lost events:\n${storm[0]}`);
      }
      assert.doesNotMatch(stdout, /^ERROR/m);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);
