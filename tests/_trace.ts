/**
 * Running scripts/trace.ts as users do: a subprocess with the least Deno
 * permissions it documents, its output read from pipes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { readUntil, ROOT, type Run, runDeno, TEST_MODE } from "./_helpers.ts";

export type { Run };

/** The documented least permissions of scripts/trace.ts. */
export const PERMS = ["--allow-ffi", "--allow-env"];

export const SCRIPT = `${ROOT}scripts/trace.ts`;

/** Runs trace.ts to completion with no kernel involvement expected. */
export function runScript(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return runDeno(["run", ...PERMS, SCRIPT, ...args], env);
}

/**
 * Starts trace.ts, waits until it reports attached, runs `during`, then
 * SIGINTs it and returns everything it printed.
 */
export async function traceWhile(args: string[], during: () => Promise<void>): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMS, SCRIPT, "--mode", TEST_MODE, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let stderr = await readUntil(reader, "attached via");
  await during();
  await new Promise((r) => setTimeout(r, 300));
  child.kill("SIGINT");
  stderr = await readUntil(reader, undefined, stderr);
  const status = await child.status;
  return { code: status.code, stdout: await stdout, stderr };
}

/** The ids of programs some live process holds an fd (program or link) for. */
export function heldProgramIds(): Set<number> {
  const held = new Set<number>();
  for (const proc of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(proc.name)) continue;
    try {
      for (const fd of Deno.readDirSync(`/proc/${proc.name}/fdinfo`)) {
        const info = Deno.readTextFileSync(`/proc/${proc.name}/fdinfo/${fd.name}`);
        const id = /^prog_id:\s*(\d+)$/m.exec(info)?.[1];
        if (id) held.add(Number(id));
      }
    } catch { /* the process ended meanwhile */ }
  }
  return held;
}

/**
 * deno_bpf programs still loaded with no process holding them: a leak.
 * Programs that another live process holds (say, a benchmark) are not.
 */
export function orphanedPrograms(): string[] {
  const out = new Deno.Command("bpftool", { args: ["-j", "prog", "show"] }).outputSync();
  assert.ok(out.success, "bpftool prog show failed: is bpftool installed?");
  const progs: { id: number; name?: string }[] = JSON.parse(new TextDecoder().decode(out.stdout));
  const ours = /^(fentry|fexit|kprobe|kretprobe|tp_enter|tp_exit)_unlin/;
  const held = heldProgramIds();
  return progs.filter((p) => ours.test(p.name ?? "") && !held.has(p.id)).map((p) => p.name!);
}
