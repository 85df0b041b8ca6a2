/**
 * scripts/doctor.ts as a user runs it: a subprocess with exactly the
 * permissions its usage documents (--allow-ffi --allow-env), compared with
 * what the test itself finds (uname -r, the libbpf it loads, a direct trial
 * of each attach method); plus its pure parsers and formatting on text.
 */

import assert from "node:assert/strict";
import { type Check, type DoctorReport, summaryLine } from "../lib/unlink/doctor.ts";
import {
  kernelSupported,
  libbpfPathFromMaps,
  parseEffectiveUid,
  parseLockdown,
  tracingCapabilities,
} from "../lib/unlink/requirements.ts";
import { formatCheck } from "../scripts/doctor.ts";
import { ATTACH_METHODS, AttachError, libbpfVersionString, UnlinkTracer } from "../mod.ts";
import { AUTO_METHOD, kernelTest, ROOT, type Run, runDeno } from "./_helpers.ts";

const SCRIPT = `${ROOT}scripts/doctor.ts`;
/** The permissions the script's usage documents, and no more. */
const LEAST = ["--allow-ffi", "--allow-env"];

function runDoctor(args: string[], permissions = LEAST): Promise<Run> {
  return runDeno(["run", ...permissions, SCRIPT, ...args]);
}

async function unameR(): Promise<string> {
  const out = await new Deno.Command("uname", { args: ["-r"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** The line for check `name` in the text report, with the name column's padding squeezed. */
function line(stdout: string, name: string): string {
  const found = stdout.split("\n").find((l) => l.slice(2).startsWith(`${name} `));
  assert.ok(found, `no "${name}" line in:\n${stdout}`);
  return found.slice(0, 2) + name + " " + found.slice(2 + name.length).trimStart();
}

/** Each method tried directly, as the tracer reports it: `null` if it works, else the reason. */
function directTrials(): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const mode of ATTACH_METHODS) {
    try {
      UnlinkTracer.open({ mode, ringBufferSize: 4096 }).close();
      out[mode] = null;
    } catch (error) {
      if (!(error instanceof AttachError)) throw error;
      out[mode] = error.attempts[0].reason;
    }
  }
  return out;
}

/** The libbpf this process mapped, from its own /proc/self/maps. */
function ownLibbpfPath(): string {
  libbpfVersionString();
  const maps = Deno.readTextFileSync("/proc/self/maps");
  const path = /\s(\/\S*\/libbpf\.so[.\d]*)$/m.exec(maps)?.[1];
  assert.ok(path, "libbpf is not in this process's maps");
  return path;
}

Deno.test("doctor.ts with a bad flag prints one line on stderr and exits 2", async () => {
  const run = await runDoctor(["--bogus"]);
  assert.equal(run.code, 2);
  assert.equal(run.stdout, "");
  assert.equal(run.stderr, "doctor: Unknown option '--bogus'; run with --help for usage\n");
});

Deno.test("doctor.ts --help documents --json and its exact permissions, and exits 0", async () => {
  const run = await runDoctor(["--help"]);
  assert.equal(run.code, 0);
  assert.match(run.stdout, /^Usage: sudo deno run --allow-ffi --allow-env scripts\/doctor\.ts/);
  assert.match(run.stdout, /--json/);
  assert.match(run.stdout, /"checks": \[\{"name", "ok": true\|false\|null, "detail", "fix"/);
  const source = Deno.readTextFileSync(SCRIPT);
  assert.match(source, /^#!\/usr\/bin\/env -S deno run --allow-ffi --allow-env\n/);
  assert.match(source, /sudo deno run --allow-ffi --allow-env scripts\/doctor\.ts/);
});

Deno.test(
  "doctor.ts without --allow-env says which flag to add, on one line per check, with no stack trace",
  async () => {
    const run = await runDoctor([], ["--allow-ffi"]);
    assert.equal(run.code, 1);
    assert.equal(run.stderr, "");
    assert.doesNotMatch(run.stdout, /^\s+at /m);
    for (const name of ["libbpf", "ring buffer", ...ATTACH_METHODS]) {
      assert.equal(
        line(run.stdout, name),
        `✗ ${name} not checked: needs --allow-env — fix: run with --allow-ffi --allow-env`,
      );
    }
    assert.match(line(run.stdout, "deno permissions"), /granted: ffi; not granted: env,/);
  },
);

kernelTest(
  "doctor.ts with only --allow-ffi --allow-env reports this kernel, libbpf and each method " +
    "as the tracer finds them, and exits 0",
  async () => {
    const direct = directTrials();
    const run = await runDoctor([]);
    assert.equal(run.stderr, "");
    assert.equal(run.code, 0, run.stdout);

    // Debian's releases hold regex characters (6.12.117+deb13-amd64): compare as text.
    const kernel = line(run.stdout, "kernel");
    assert.ok(kernel.startsWith(`✓ kernel ${await unameR()} (`), kernel);
    assert.match(line(run.stdout, "btf"), /^✓ /);
    assert.match(line(run.stdout, "capabilities"), /^✓ capabilities root with CAP_SYS_ADMIN/);
    assert.equal(
      line(run.stdout, "libbpf"),
      `✓ libbpf ${libbpfVersionString()} from ${ownLibbpfPath()}`,
    );
    assert.match(line(run.stdout, "ring buffer"), /^✓ /);
    assert.match(line(run.stdout, "tracefs"), /^✓ tracefs (mounted at|was not mounted)/);
    assert.match(line(run.stdout, "deno permissions"), /^✓ .*granted: ffi, env; not granted:/);

    // Each method as a direct trial in this process finds it, with the same errno.
    for (const method of ATTACH_METHODS) {
      const reason = direct[method];
      const got = line(run.stdout, method);
      if (reason === null) assert.match(got, new RegExp(`^✓ ${method} loads and attaches`));
      else {
        assert.match(
          reason,
          /^(load refused|attach failed|rejected by the verifier) \(E[A-Z0-9]+\)$/,
        );
        assert.doesNotMatch(reason, /EUNKNOWN/, "the kernel's errno, not a made-up one");
        assert.ok(got.startsWith(`✗ ${method}`) && got.includes(` ${reason} — fix: `), got);
      }
    }
    const auto = AUTO_METHOD ?? ATTACH_METHODS.find((m) => direct[m] === null);
    if (AUTO_METHOD) assert.equal(direct[AUTO_METHOD], null, `${AUTO_METHOD} must work here`);
    const last = run.stdout.trimEnd().split("\n").at(-1)!;
    assert.match(last, new RegExp(`^→ trace\\.ts --mode auto would pick ${auto}\\b`));
    console.log(`doctor: ${JSON.stringify(direct)}; auto picks ${auto}`);
  },
);

kernelTest("doctor.ts --json prints one object with the same facts, and exits 0", async () => {
  const [json, text] = [await runDoctor(["--json"]), await runDoctor([])];
  assert.equal(json.code, 0);
  assert.equal(json.stdout.trimEnd().split("\n").length, 1, "one JSON object on one line");
  const report = JSON.parse(json.stdout) as DoctorReport & { summary: string };

  assert.equal(report.ok, true);
  assert.equal(report.kernel, await unameR());
  assert.deepEqual(report.libbpf, { version: libbpfVersionString(), path: ownLibbpfPath() });
  assert.deepEqual(report.permissions, {
    ffi: true,
    env: true,
    read: false,
    write: false,
    run: false,
    sys: false,
  });
  if (AUTO_METHOD) assert.equal(report.auto, AUTO_METHOD);
  assert.equal(report.auto, report.methods.find((m) => m.ok)?.method);
  assert.deepEqual(report.methods.map((m) => m.method), [...ATTACH_METHODS]);
  for (const m of report.methods) {
    // A refusal carries the kernel's errno, as in the text.
    if (!m.ok) assert.ok(m.code && m.reason.endsWith(` (${m.code})`), JSON.stringify(m));
  }
  // The text report says the same, check by check (trial times aside).
  const lines = text.stdout.trimEnd().split("\n");
  assert.equal(lines.length, report.checks.length + 1);
  report.checks.forEach((c: Check, i) => {
    const strip = (s: string) => s.replace(/\(trial took [\d.]+ ms\)/, "");
    assert.equal(strip(lines[i]), strip(formatCheck(c)));
  });
  assert.equal(lines.at(-1), `→ ${report.summary}`);
});

Deno.test("every line of the doctor's report has its detail in one column, two spaces after the longest name", async () => {
  const [json, text] = [await runDoctor(["--json"]), await runDoctor([])];
  const names = (JSON.parse(json.stdout) as DoctorReport).checks.map((c) => c.name);
  const lines = text.stdout.trimEnd().split("\n").slice(0, -1);
  assert.equal(lines.length, names.length, text.stdout);
  const column = 2 + Math.max(...names.map((n) => n.length)) + 2;
  lines.forEach((l, i) => {
    assert.equal(l.slice(2, 2 + names[i].length), names[i], l);
    assert.match(l.slice(2 + names[i].length, column), /^ {2,}$/, `gap after the name: ${l}`);
    assert.match(l.slice(column), /^\S/, `the detail starts at column ${column}: ${l}`);
  });
});

Deno.test("doctor's parsers read lockdown, status, maps and kernel versions", () => {
  assert.equal(parseLockdown("none [integrity] confidentiality\n"), "integrity");
  assert.equal(parseLockdown("[none] integrity confidentiality\n"), "none");
  assert.equal(parseEffectiveUid("Name:\tdeno\nUid:\t1000\t0\t0\t0\nGid:\t0\n"), 0);
  assert.equal(parseEffectiveUid("Name:\tdeno\n"), undefined);
  assert.deepEqual(tracingCapabilities(0x1fffeffffffn), [
    "CAP_SYS_ADMIN",
    "CAP_BPF",
    "CAP_PERFMON",
  ]);
  assert.deepEqual(tracingCapabilities((1n << 39n) | (1n << 38n)), ["CAP_BPF", "CAP_PERFMON"]);
  assert.deepEqual(tracingCapabilities(0n), []);
  const maps = [
    "55d0c0000000-55d0c0001000 r--p 00000000 fe:01 1 /usr/bin/deno",
    "7f0000000000-7f0000001000 r-xp 00000000 fe:01 2 /usr/lib/x86_64-linux-gnu/libbpf.so.1.1.2",
    "7f0000002000-7f0000003000 rw-p 00000000 00:00 0 ",
  ].join("\n");
  assert.equal(libbpfPathFromMaps(maps), "/usr/lib/x86_64-linux-gnu/libbpf.so.1.1.2");
  assert.equal(libbpfPathFromMaps("7f00-7f01 r--p 0 00:00 0 [heap]\n"), undefined);
  assert.equal(kernelSupported("6.18.44-fc-v595"), true);
  assert.equal(kernelSupported("5.8.0"), true);
  assert.equal(kernelSupported("5.4.0-150-generic"), false);
  assert.equal(kernelSupported("4.19.0"), false);
  assert.equal(kernelSupported("weird"), undefined);
});

Deno.test("a failed check prints its fix on the same line; a passed or unknown one does not", () => {
  const fail = { name: "kprobe", ok: false, detail: "attach failed (ENOENT)", fix: "do X" };
  assert.equal(formatCheck(fail), `✗ kprobe            attach failed (ENOENT) — fix: do X`);
  assert.equal(formatCheck({ ...fail, ok: true }), `✓ kprobe            attach failed (ENOENT)`);
  assert.equal(formatCheck({ ...fail, ok: null }), `? kprobe            attach failed (ENOENT)`);
});

Deno.test("the summary names the method auto picks and why the better ones failed", () => {
  const base: DoctorReport = {
    ok: true,
    auto: "tracepoint",
    kernel: "6.18",
    libbpf: null,
    methods: [
      {
        method: "fentry",
        ok: false,
        stage: "load",
        code: "EPERM",
        reason: "load refused (EPERM)",
        ms: 1,
      },
      {
        method: "kprobe",
        ok: false,
        stage: "attach",
        code: "ENOENT",
        reason: "attach failed (ENOENT)",
        ms: 1,
      },
      { method: "tracepoint", ok: true, ms: 1 },
    ],
    permissions: { ffi: true, env: true, read: false, write: false, run: false, sys: false },
    checks: [],
  };
  assert.equal(
    summaryLine(base),
    "trace.ts --mode auto would pick tracepoint " +
      "(fentry: load refused (EPERM); kprobe: attach failed (ENOENT))",
  );
  assert.equal(
    summaryLine({ ...base, auto: "fentry", methods: [{ method: "fentry", ok: true, ms: 1 }] }),
    "trace.ts --mode auto would pick fentry",
  );
  assert.equal(
    summaryLine({ ...base, ok: false, auto: null, methods: base.methods.slice(0, 2) }),
    "trace.ts cannot run here: no attach method works " +
      "(fentry: load refused (EPERM); kprobe: attach failed (ENOENT))",
  );
  assert.match(summaryLine({ ...base, ok: false, auto: null, methods: [] }), /cannot tell/);
});

kernelTest(
  "trace.ts --doctor --json gives the doctor's report, with trace.ts's permissions",
  async () => {
    const out = await runDeno(["run", ...LEAST, `${ROOT}scripts/trace.ts`, "--doctor", "--json"]);
    assert.equal(out.code, 0, out.stderr);
    const report = JSON.parse(out.stdout) as DoctorReport;
    assert.equal(report.auto, report.methods.find((m) => m.ok)?.method);
    if (AUTO_METHOD) assert.equal(report.auto, AUTO_METHOD);
  },
);
