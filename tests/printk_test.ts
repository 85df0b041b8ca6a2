/**
 * scripts/printk.ts, the bpf_printk + trace_pipe variant. Where fentry loads
 * (the VM suite) an rm shows up as an enter line and an exit line; where the
 * kernel refuses fentry (at load on our hosts, at attach on arm64 5.10 and 6.1)
 * the script says so in one line.
 */

import assert from "node:assert/strict";
import { UnlinkTracer } from "../mod.ts";
import { AUTO_METHOD, kernelTest, readUntil, ROOT, runDeno, scratch } from "./_helpers.ts";

const SCRIPT = `${ROOT}scripts/printk.ts`;

function fentryWorks(): boolean {
  if (AUTO_METHOD) return AUTO_METHOD === "fentry";
  try {
    UnlinkTracer.open({ mode: "fentry" }).close();
    return true;
  } catch {
    return false;
  }
}

kernelTest(
  "printk.ts shows an rm as an enter line and an exit line, and exits 0 on Ctrl-C",
  async () => {
    if (!fentryWorks()) {
      const out = await runDeno(["run", "--allow-ffi", "--allow-env", SCRIPT]);
      const stderr = out.stderr;
      assert.equal(out.code, 1);
      assert.match(
        stderr,
        /^printk: Cannot run the printk probes: fentry (load refused|attach failed) \(E[A-Z]+\) on this kernel; scripts\/trace\.ts falls back to kprobes or tracepoints\n$/,
      );
      console.log("fentry is refused here: checked the one-line error instead");
      return;
    }
    const dir = scratch(["gone"]);
    const proc = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", "--allow-env", SCRIPT],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = proc.stderr.pipeThrough(new TextDecoderStream()).getReader();
    const err = await readUntil(stderr, "attached via fentry");
    if (!err.includes("attached via fentry")) throw new Error(`printk.ts exited early: ${err}`);
    const rm = await new Deno.Command("rm", { args: [`${dir}/gone`] }).spawn();
    const rmPid = rm.pid;
    await rm.status;
    const lines: string[] = [];
    const stdout = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const want = [
      `deno_bpf-unlink: enter pid=${rmPid} filename=${dir}/gone`,
      `deno_bpf-unlink: exit pid=${rmPid} filename=${dir}/gone ret=0`,
    ];
    const deadline = setTimeout(() => proc.kill("SIGKILL"), 30_000);
    while (!want.every((w) => lines.some((l) => l.endsWith(w)))) {
      const { value, done } = await stdout.read();
      if (done) break;
      text += value;
      lines.push(...text.split("\n").slice(0, -1));
      text = text.slice(text.lastIndexOf("\n") + 1);
    }
    clearTimeout(deadline);
    proc.kill("SIGINT");
    const status = await proc.status;
    Deno.removeSync(dir, { recursive: true });
    for (const w of want) {
      assert.ok(
        lines.some((l) => l.endsWith(w)),
        `${w}\nin:\n${lines.join("\n")}`,
      );
    }
    const mine = lines.filter((l) => l.includes(`pid=${rmPid} `));
    assert.ok(
      mine.every((l) => /^\s*\S+-\d+\s+\[\d+\]/.test(l) || l.includes("bpf_trace_printk")),
      mine.join("\n"),
    );
    assert.equal(status.code, 0);
  },
);
