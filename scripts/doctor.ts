#!/usr/bin/env -S deno run --allow-ffi --allow-env
/**
 * Can the unlink tracer run here, and if not, why and what to do.
 *
 *   sudo deno run --allow-ffi --allow-env scripts/doctor.ts          # one line per check
 *   sudo deno run --allow-ffi --allow-env scripts/doctor.ts --json   # one JSON object
 *
 * Needs exactly `--allow-ffi --allow-env` (and root for the trial attaches):
 * /proc and /sys are read through libc. Exit status 0 if some attach method
 * works, 1 if none does, 2 for a bad command line. Run with --help for more.
 *
 * @module
 */

import { parseArgs, styleText } from "node:util";
import { type Check, doctor, type DoctorReport, summaryLine } from "../lib/unlink/doctor.ts";
import { errorLine, status } from "./_cli.ts";

/** The help text. */
export const USAGE = `Usage: sudo deno run --allow-ffi --allow-env scripts/doctor.ts [options]

Checks whether scripts/trace.ts can run on this machine: the kernel version,
BTF, lockdown, capabilities, libbpf (version and path), BPF ring buffers, a
real trial load, attach and detach of each attach method (fentry, kprobe,
tracepoint), tracefs, and this process's Deno permissions. Prints one line
per check, ✓ or ✗ (? when it cannot be told), with the fix for each ✗, then
the method trace.ts --mode auto would pick. The tracepoint trial mounts
tracefs at /sys/kernel/tracing if it is not mounted, as trace.ts does.

Options:
  -j, --json   print one JSON object instead:
               {"ok": bool, "auto": "fentry"|"kprobe"|"tracepoint"|null,
                "summary": string, "kernel": string|null,
                "libbpf": {"version", "path"}|null,
                "methods": [{"method", "ok", "stage"?, "code"?, "reason"?, "ms"}],
                "permissions": {"ffi": bool, "env": bool, ...},
                "checks": [{"name", "ok": true|false|null, "detail", "fix": string|null}]}
  -h, --help   show this help

Exit status: 0 if some attach method works, 1 if none does, 2 for a bad option.`;

const MARKS = { true: "✓", false: "✗", null: "?" } as const;
const COLORS = { true: "green", false: "red", null: "yellow" } as const;

/** The width of the name column: the longest name ("deno permissions") and two spaces. */
const NAME_WIDTH = 18;

/** One line for a check: mark, name, detail, and the fix for a ✗. Pure. */
export function formatCheck(check: Check, color = false): string {
  const key = String(check.ok) as "true" | "false" | "null";
  const mark = color ? styleText(COLORS[key], MARKS[key], { validateStream: false }) : MARKS[key];
  const fix = check.ok === false && check.fix ? ` — fix: ${check.fix}` : "";
  return `${mark} ${check.name.padEnd(NAME_WIDTH)}${check.detail}${fix}`;
}

/** The whole text report: one line per check, then the summary. Pure. */
export function formatReport(report: DoctorReport, color = false): string {
  const lines = report.checks.map((c) => formatCheck(c, color));
  const summary = summaryLine(report);
  const mark = report.ok ? "→" : MARKS.false;
  lines.push(`${mark} ${color ? styleText("bold", summary, { validateStream: false }) : summary}`);
  return lines.join("\n");
}

/** The `--json` object: the report plus its summary line. */
export function reportJson(report: DoctorReport): string {
  return JSON.stringify({ ...report, summary: summaryLine(report) });
}

/** Colour only on a terminal, and not with NO_COLOR (read only if --allow-env was given). */
function useColor(): boolean {
  if (!Deno.stdout.isTerminal()) return false;
  if (Deno.permissions.querySync({ name: "env", variable: "NO_COLOR" }).state !== "granted") {
    return false;
  }
  return !Deno.env.get("NO_COLOR");
}

/**
 * The script's entry point, also for `trace.ts --doctor`: parses `argv`,
 * prints the report, and returns the exit status (0 the tracer can run,
 * 1 it cannot, 2 bad command line). Never prints a stack trace.
 */
export function main(argv: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        json: { type: "boolean", short: "j" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    status(`doctor: ${errorLine(error, "scripts/doctor.ts")}; run with --help for usage`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let report: DoctorReport;
  try {
    report = doctor();
  } catch (error) {
    // doctor() turns what it finds into checks; this is for what it could not foresee.
    status(`doctor: ${errorLine(error, "scripts/doctor.ts")}`);
    return 1;
  }
  console.log(values.json ? reportJson(report) : formatReport(report, useColor()));
  return report.ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(main(Deno.args));
