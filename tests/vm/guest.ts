/**
 * Runs inside a VM booted by tests/vm/vm_test.ts: the kernel tests once per
 * rung of the fallback ladder. `auto` must pick fentry there, and the same
 * assertions must pass with kprobe and tracepoint forced.
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

const RUNS: { title: string; env: Record<string, string>; files: string[] }[] = [
  { title: "auto (must pick fentry)", env: { DENO_BPF_EXPECT_METHOD: "fentry" }, files: ALL },
  { title: "--mode kprobe", env: { DENO_BPF_TEST_MODE: "kprobe" }, files: LADDER },
  { title: "--mode tracepoint", env: { DENO_BPF_TEST_MODE: "tracepoint" }, files: LADDER },
];

let failed = 0;
for (const run of RUNS) {
  console.log(`\n=== guest: ${run.title} on ${Deno.osRelease()} ===`);
  const status = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check", ...run.files],
    env: { CI: "true", ...run.env },
  }).spawn().status;
  if (!status.success) failed++;
}
console.log(`\nguest: ${RUNS.length - failed} passed, ${failed} failed`);
Deno.exit(failed ? 1 : 0);
