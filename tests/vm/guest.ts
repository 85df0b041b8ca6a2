/**
 * Runs inside a VM booted by tests/vm/vm_test.ts: the kernel tests once per
 * rung of the fallback ladder: `auto` must pick `$DENO_BPF_VM_AUTO` (fentry by
 * default), and the same assertions must pass with each lower rung forced. On
 * arm64 it runs {@linkcode smoke} first, and then only tests/unlink_test.ts,
 * plus tests/printk_test.ts in auto mode where auto must pick fentry (6.12).
 *
 *   deno run -A tests/vm/guest.ts       # inside the guest, from the checkout
 *
 * @module
 */

// What depends on the attach method runs once per method; the rest once, in auto mode.
const LADDER = [
  "tests/unlink_test.ts",
  "tests/trace_script_test.ts",
  "tests/names_test.ts",
  "tests/which_file_test.ts",
];
const ALL = [
  ...LADDER,
  ..."trace_exit handles permissions attach_target printk url_import doctor"
    .split(" ").map((name) => `tests/${name}_test.ts`),
];
const ARM64 = ["tests/unlink_test.ts"];
/** printk.ts needs fentry, which arm64 5.10 and 6.1 refuse at attach (ENOTSUPP). */
const ARM64_FENTRY = ["tests/printk_test.ts"];
const TRACE = ["run", "--allow-ffi", "--allow-env", "scripts/trace.ts"];

type Run = { title: string; env?: Record<string, string>; args: string[] };
const test = (title: string, env: Run["env"], files: string[]): Run => ({
  title,
  env,
  args: ["test", "-A", "--no-check", ...files],
});
// auto must pick the method the table in tests/vm/fetch.ts names; each lower rung is forced.
const auto = Deno.env.get("DENO_BPF_VM_AUTO") ?? "fentry";
const METHODS = ["fentry", "kprobe", "tracepoint"];
const arm = Deno.build.arch === "aarch64";
const RUNS: Run[] = [
  test(
    `auto (must pick ${auto})`,
    { DENO_BPF_EXPECT_METHOD: auto },
    arm ? [...ARM64, ...(auto === "fentry" ? ARM64_FENTRY : [])] : ALL,
  ),
  ...METHODS.slice(METHODS.indexOf(auto) + 1).map((mode) =>
    test(`--mode ${mode}`, { DENO_BPF_TEST_MODE: mode }, arm ? ARM64 : LADDER)
  ),
];

/** Runs `args` with Deno; its stdout is echoed, and `onFirstLine` runs once the first line arrives. */
async function deno(run: Run, onFirstLine = () => {}): Promise<{ ok: boolean; stdout: string }> {
  console.log(`\n=== guest: ${run.title} on ${Deno.osRelease()} (${Deno.build.arch}) ===`);
  const child = new Deno.Command(Deno.execPath(), {
    args: run.args,
    env: { CI: "true", ...run.env },
    stdout: "piped",
  }).spawn();
  let stdout = "";
  for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
    if (!stdout.includes("\n") && (stdout + text).includes("\n")) onFirstLine();
    stdout += text;
    Deno.stdout.writeSync(new TextEncoder().encode(text));
  }
  return { ok: (await child.status).success, stdout };
}

/**
 * The smoke test arm64 guests run first: Deno runs, the doctor reports every
 * method as JSON, and a tracepoint trace sees a busybox `rm` succeed and a
 * busybox `unlink` of a missing file fail (both are unlinkat: arm64 has no unlink(2)).
 */
async function smoke(): Promise<boolean> {
  const version = await deno({ title: "deno --version", args: ["--version"] });
  const doctor = await deno({
    title: "trace.ts --doctor --json",
    args: [...TRACE, "--doctor", "--json"],
  });
  const { auto, methods } = JSON.parse(doctor.stdout.trim() || "{}");
  const reasons = (methods ?? []).map((m: { method: string; reason?: string }) =>
    `${m.method}: ${m.reason ?? "works"}`
  );
  const title = "trace.ts --mode tracepoint --json --duration 3";
  const trace = await deno(
    { title, args: [...TRACE, "--mode", "tracepoint", "--json", "--duration", "3"] },
    () => {
      Deno.writeTextFileSync("/tmp/smoke_victim", "x");
      for (const args of [["rm", "/tmp/smoke_victim"], ["unlink", "/tmp/smoke_missing"]]) {
        const { code } = new Deno.Command("busybox", { args }).outputSync();
        console.log(`busybox ${args.join(" ")}: exit ${code}`);
      }
    },
  );
  const saw = trace.ok && trace.stdout.includes(`"/tmp/smoke_victim","ret":0,`) &&
    trace.stdout.includes(`"/tmp/smoke_missing","ret":-2,`);
  console.log(
    `\nguest smoke: deno ${version.ok ? "ran" : "FAILED"}; the doctor: auto ${auto}, ${
      reasons.join(", ")
    }; the trace ${saw ? "saw the rm and the failed unlink" : "FAILED"}`,
  );
  return version.ok && reasons.length === 3 && saw;
}

let failed = arm && !await smoke() ? 1 : 0;
for (const run of RUNS) if (!(await deno(run)).ok) failed++;
console.log(`\nguest: ${failed} of ${RUNS.length} runs failed`);
Deno.exit(failed ? 1 : 0);
