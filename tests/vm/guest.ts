/**
 * Runs inside a VM booted by tests/vm/vm_test.ts: the kernel tests once per
 * rung of the fallback ladder. On x86_64 `auto` must pick fentry, and the same
 * assertions must pass with kprobe and tracepoint forced. With `--smoke` (the
 * arm64 guests, until an arm64 BPF object exists) it runs Deno, the doctor and
 * a 3 s tracepoint trace of a busybox `rm` and a failing `unlink` instead.
 *
 *   deno run -A tests/vm/guest.ts [--smoke]   # inside the guest, from the checkout
 *
 * @module
 */

// What depends on the attach method runs once per method; the rest once, in auto mode.
const LADDER = [
  "tests/unlink_test.ts",
  "tests/trace_script_test.ts",
  "tests/names_test.ts",
];
const ALL = [
  ...LADDER,
  "tests/trace_exit_test.ts",
  "tests/handles_test.ts",
  "tests/permissions_test.ts",
  "tests/attach_target_test.ts",
  "tests/printk_test.ts",
  "tests/url_import_test.ts",
  "tests/doctor_test.ts",
];
const TRACE = ["run", "--allow-ffi", "--allow-env", "scripts/trace.ts"];

type Run = { title: string; env?: Record<string, string>; args: string[] };
const RUNS: Run[] = ([
  { title: "auto (must pick fentry)", env: { DENO_BPF_EXPECT_METHOD: "fentry" }, args: ALL },
  { title: "--mode kprobe", env: { DENO_BPF_TEST_MODE: "kprobe" }, args: LADDER },
  { title: "--mode tracepoint", env: { DENO_BPF_TEST_MODE: "tracepoint" }, args: LADDER },
] as Run[]).map((run) => ({ ...run, args: ["test", "-A", "--no-check", ...run.args] }));

const SMOKE: Run[] = [
  { title: "deno --version", args: ["--version"] },
  { title: "trace.ts --doctor --json", args: [...TRACE, "--doctor", "--json"] },
  {
    title: "trace.ts --mode tracepoint while busybox rm and unlink run",
    args: [...TRACE, "--mode", "tracepoint", "--json", "--duration", "3"],
  },
];

const runs = Deno.args.includes("--smoke") ? SMOKE : RUNS;
let failed = 0;
for (const run of runs) {
  console.log(`\n=== guest: ${run.title} on ${Deno.osRelease()} (${Deno.build.arch}) ===`);
  const child = new Deno.Command(Deno.execPath(), {
    args: run.args,
    env: { CI: "true", ...run.env },
  }).spawn();
  if (run.args.includes("--duration")) {
    await new Promise((done) => setTimeout(done, 2000));
    Deno.writeTextFileSync("/tmp/smoke_victim", "x");
    for (const args of [["rm", "/tmp/smoke_victim"], ["unlink", "/tmp/smoke_missing"]]) {
      const { code } = new Deno.Command("busybox", { args }).outputSync();
      console.log(`busybox ${args.join(" ")}: exit ${code}`);
    }
  }
  if (!(await child.status).success) failed++;
}
console.log(`\nguest: ${runs.length - failed} passed, ${failed} failed`);
Deno.exit(failed ? 1 : 0);
